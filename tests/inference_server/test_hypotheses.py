from __future__ import annotations

import numpy as np
import pytest

from inference_server.hypotheses import (
    order_expressions,
    per_vertex_spread,
    softmax,
    top_k,
    typicality_distance,
)


def test_top_k_descending_and_stable() -> None:
    scores = np.array([0.1, 0.4, 0.4, 0.05, 0.05])
    assert top_k(scores, 3).tolist() == [1, 2, 0]
    assert top_k(scores, 10).tolist() == [1, 2, 0, 3, 4]


def test_typical_order_puts_outliers_last() -> None:
    rng = np.random.default_rng(0)
    params = rng.normal(size=(50, 5))
    params[7] = 0.0  # exactly the consensus
    params[3] = 8.0  # far outlier
    order = order_expressions(params, "typical")
    assert order[0] == 7 and order[-1] == 3
    assert sorted(order.tolist()) == list(range(50))
    d = typicality_distance(params)
    assert np.all(np.diff(d[order]) >= 0)


def test_diverse_order_visits_clusters_early() -> None:
    rng = np.random.default_rng(1)
    centres = np.array([[0, 0], [10, 0], [0, 10], [10, 10]], float)
    params = np.concatenate([c + 0.1 * rng.normal(size=(10, 2)) for c in centres])
    order = order_expressions(params, "diverse")
    first_clusters = {int(i) // 10 for i in order[:4]}
    assert first_clusters == {0, 1, 2, 3}
    assert sorted(order.tolist()) == list(range(40))


def test_spread_matches_independent_definition() -> None:
    rng = np.random.default_rng(2)
    verts = rng.normal(size=(30, 8, 3))
    expected = [np.sqrt(np.mean(np.sum((verts[:, i] - verts[:, i].mean(0)) ** 2, axis=1))) for i in range(8)]
    np.testing.assert_allclose(per_vertex_spread(verts), expected, rtol=1e-6)
    assert per_vertex_spread(verts[:1]).tolist() == [0.0] * 8


def test_softmax_and_bad_mode() -> None:
    np.testing.assert_allclose(softmax(np.array([1000.0, 1000.0])), [0.5, 0.5])
    with pytest.raises(ValueError, match="typical"):
        order_expressions(np.zeros((3, 2)), "random")  # type: ignore[arg-type]


def test_best_fit_puts_the_lowest_error_first_and_spreads_ties() -> None:
    from inference_server.hypotheses import order_expressions

    rng = np.random.default_rng(0)
    params = rng.normal(size=(6, 4))
    error = np.array([3.0, 1.0, 1.02, 5.0, 1.01, 2.0])
    order = order_expressions(params, "best_fit", fit_error=error)
    assert order[0] == 1 and sorted(order.tolist()) == list(range(6))
    assert set(order[:3].tolist()) == {1, 2, 4}  # the three tied samples before any worse one
    assert order[3:].tolist() == [5, 0, 3]
    with pytest.raises(ValueError):
        order_expressions(params, "best_fit")
