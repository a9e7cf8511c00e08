"""The temporal path: Viterbi against brute force, bridging, smoothing."""

from __future__ import annotations

import itertools

import numpy as np

from inference_server.sequence.path import best_path, continuous_rotations, fill_gaps, gaussian_smooth, vertex_metric


def _brute_force(unary: list, embeddings: list, smoothness: float) -> tuple[float, tuple[int, ...]]:
    frames = [t for t, z in enumerate(embeddings) if z is not None]
    best: tuple[float, tuple[int, ...]] = (np.inf, ())
    for picks in itertools.product(*(range(len(embeddings[t])) for t in frames)):
        cost = sum(0.0 if unary[t] is None else unary[t][k] for t, k in zip(frames, picks, strict=True))
        for i in range(1, len(frames)):
            gap = frames[i] - frames[i - 1]
            step = embeddings[frames[i]][picks[i]] - embeddings[frames[i - 1]][picks[i - 1]]
            cost += smoothness * float(step @ step) / gap
        best = min(best, (cost, picks))
    return best


def test_viterbi_finds_the_brute_force_minimum() -> None:
    rng = np.random.default_rng(0)
    for trial in range(20):
        m, t = 3, 5
        embeddings: list = [rng.normal(0, 1, (m, 2)) for _ in range(t)]
        unary: list = [rng.uniform(0, 3, m) for _ in range(t)]
        if trial % 2:
            embeddings[2] = None  # no face: bridged
            unary[2] = None
            unary[3] = None  # hidden: no unary term
        result = best_path(unary, embeddings, smoothness=0.7)
        cost, picks = _brute_force(unary, embeddings, 0.7)
        assert abs(result.total_cost - cost) < 1e-9
        assert [int(k) for k in result.choice if k >= 0] == list(picks)
        assert (result.choice[2] == -1) == (trial % 2 == 1)


def test_smoothness_trades_fit_for_consistency() -> None:
    # two tracks: "a" fits slightly better in frame 1 but jumps; smoothness makes the path stay on "b"
    embeddings = [np.array([[0.0], [5.0]])] * 3
    unary = [np.array([1.0, 0.0]), np.array([0.0, 0.5]), np.array([1.0, 0.0])]
    assert best_path(unary, embeddings, 0.0).choice.tolist() == [1, 0, 1]
    assert best_path(unary, embeddings, 1.0).choice.tolist() == [1, 1, 1]


def test_gaps_are_interpolated_and_smoothing_keeps_lines() -> None:
    series = np.array([[0.0], [9.0], [9.0], [3.0], [4.0]])
    known = np.array([True, False, False, True, True])
    assert fill_gaps(series, known)[:, 0].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    line = np.arange(8.0)[:, None] * 2.0
    assert np.allclose(gaussian_smooth(line, 1.5), line)  # a steady motion is kept, to the last frame
    assert np.allclose(gaussian_smooth(np.ones((6, 2)), 2.0), 1.0)
    spike = np.zeros((9, 1))
    spike[4] = 1.0
    smoothed = gaussian_smooth(spike, 1.0)[:, 0]
    assert smoothed[4] < 0.5 and abs(smoothed.sum() - 1.0) < 1e-9  # a one-frame jump is spread, not lost


def test_vertex_metric_is_the_rms_vertex_distance() -> None:
    rng = np.random.default_rng(1)
    columns = rng.normal(0, 1e-3, (4, 50, 3))
    metric = vertex_metric(columns)
    a, b = rng.normal(0, 1, 4), rng.normal(0, 1, 4)
    mesh = lambda p: np.tensordot(p, columns, axes=1) * 1000.0  # noqa: E731
    rms = np.sqrt(((mesh(a) - mesh(b)) ** 2).sum(axis=1).mean())
    assert abs(np.linalg.norm((a - b) @ metric) - rms) < 1e-9


def test_rotations_are_made_continuous() -> None:
    angle = np.pi - 0.05
    flipped = -(2 * np.pi - (angle + 0.1)) * np.array([0, 1.0, 0])  # the same rotation as angle + 0.1 about +y
    out = continuous_rotations(np.array([[0, angle, 0], flipped]))
    assert np.allclose(out[1], [0, angle + 0.1, 0])
