from __future__ import annotations

import math

import numpy as np
import pytest

from inference_server.evaluate.metrics import hypothesis_errors, region_spread, vertex_errors_mm


def test_vertex_errors_are_mean_euclidean_distances() -> None:
    truth = np.zeros((4, 3))
    samples = np.zeros((2, 4, 3))
    samples[0, :, 0] = 3.0
    samples[1, 0] = [3.0, 4.0, 0.0]  # one vertex 5 mm off, the others exact
    np.testing.assert_allclose(vertex_errors_mm(samples, truth), [3.0, 1.25])
    with pytest.raises(ValueError):
        vertex_errors_mm(samples, np.zeros((5, 3)))


def test_ranked_average_oracle() -> None:
    errors = np.array([2.0, 1.0, 4.0, 3.0])
    scores = np.array([0.1, 0.2, 0.05, 0.9])
    result = hypothesis_errors(errors, scores)
    assert (result.ranked, result.average, result.oracle) == (3.0, 2.5, 1.0)


def test_region_spread() -> None:
    spread = np.array([1.0, 2.0, 3.0, 10.0])
    result = region_spread(spread, np.array([0, 0, 1, 1], bool), np.array([1, 1, 0, 0], bool))
    assert (result.occluded, result.visible) == (6.5, 1.5)
    assert math.isnan(region_spread(spread, np.zeros(4, bool), np.ones(4, bool)).occluded)
