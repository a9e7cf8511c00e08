from __future__ import annotations

import math

import numpy as np
import pytest

from inference_server.evaluate.metrics import hypothesis_errors, region_spread, vertex_errors_mm
from inference_server.hypotheses import per_vertex_spread


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


def _rotation_z(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def test_similarity_alignment_removes_size_and_placement_but_keeps_shape_differences() -> None:
    from inference_server.evaluate.metrics import similarity_aligned

    rng = np.random.default_rng(4)
    base = rng.normal(0, 30, (200, 3))
    # Five copies of one shape at other sizes, turns and places: all of their spread is similarity.
    sizes, turns, places = (0.8, 0.9, 1.0, 1.1, 1.25), (0.0, 0.1, -0.2, 0.3, 0.05), rng.normal(0, 5, (5, 3))
    copies = np.stack([s * base @ _rotation_z(a).T + t for s, a, t in zip(sizes, turns, places, strict=True)])
    assert per_vertex_spread(copies).mean() > 3.0
    np.testing.assert_allclose(per_vertex_spread(similarity_aligned(copies)), 0.0, atol=1e-6)
    # A local bump on one sample survives the alignment where it is, and almost nowhere else.
    bumped = np.stack([base, base, base, base])
    bumped[0, :10] += [0.0, 0.0, 8.0]
    spread = per_vertex_spread(similarity_aligned(bumped))
    assert spread[:10].mean() > 2.5 and spread[10:].mean() < 0.3
    with pytest.raises(ValueError):
        similarity_aligned(base)
