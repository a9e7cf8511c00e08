"""Where the photos' IdGen clouds agree: leave-one-out Gaussian densities of pooled samples (numpy only)."""

from __future__ import annotations

import numpy as np
import pytest

from inference_server.identity_consensus import cloud_log_densities


def _clouds(centres: list[list[float]], n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([np.asarray(c) + rng.normal(0.0, 1.0, (n, len(c))) for c in centres])


def test_the_sample_where_every_cloud_overlaps_scores_highest() -> None:
    # Three views that each are unsure along a different axis; they agree only near the origin.
    points = _clouds([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]], 12)
    points[:12, 0] *= 6  # view 0 spreads along x, view 1 along y, view 2 along z
    points[12:24, 1] *= 6
    points[24:, 2] *= 6
    total = cloud_log_densities(points, 3).sum(axis=0)
    distance = np.linalg.norm(points, axis=1)
    assert distance[np.argmax(total)] < np.median(distance)
    assert np.corrcoef(total, distance)[0, 1] < -0.5  # nearer the common centre, denser under all views


def test_a_sample_is_no_evidence_for_itself() -> None:
    points = _clouds([[0.0, 0.0], [0.0, 0.0]], 8, seed=1)
    points[3] = [40.0, 40.0]  # an outlier of view 0: far from every other sample
    density = cloud_log_densities(points, 2)
    # Counting itself it could not fall below log(1/8) under its own cloud; left out, it is far below, like
    # under the other view's cloud, and far below every other sample.
    assert density[0, 3] < np.log(1 / 8) - 3 and density[1, 3] < np.log(1 / 8) - 3
    others = density[:, np.arange(16) != 3]
    assert density[0, 3] < others[0].min() - 3 and density[1, 3] < others[1].min() - 3


def test_a_density_needs_a_cloud_with_spread() -> None:
    with pytest.raises(ValueError, match="samples per photo"):
        cloud_log_densities(np.zeros((6, 3)), 2)
    with pytest.raises(ValueError, match="identical"):
        cloud_log_densities(np.ones((8, 3)), 2)
