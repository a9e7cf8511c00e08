"""The batched pose solver gives, problem by problem, what fit_pose gives alone (it replaced ~100
fit_pose calls per photo in the fit stage; see docs/texture.md, "Cost")."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inference_server.fit.camera import Intrinsics, default_intrinsics, project, rotation_matrix, to_camera
from inference_server.fit.pose import PoseFit, eye_distance, fit_pose
from inference_server.fit.pose_batch import _Batch, fit_poses, rotation_matrices
from inference_server.flame.layer import FlameLayer

#: Poses agree to this (radians for the rotation, metres for the translation): the two solvers take the
#: same steps, but a batched matmul sums in another order than a single one, so the last bits differ and
#: an LM accept/reject decision at the noise floor can shift the end point by far less than this.
POSE_TOL = 1e-6
#: Focal lengths and residuals (pixels) agree to this, relative.
PIXEL_RTOL = 1e-6


def _expressions(layer: FlameLayer, rng: np.random.Generator, n: int) -> np.ndarray:
    shape = torch.as_tensor(rng.normal(0, 1, (1, 32))).expand(n, -1)
    out = layer.with_expression(shape, torch.as_tensor(rng.normal(0, 0.5, (n, 50))))
    assert out.landmarks is not None
    return out.landmarks.numpy()


def _photo(lmk: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image points of ``lmk`` seen from a random view, with noise and a guessed (scrambled) mouth."""
    pose = np.concatenate([np.radians([rng.uniform(-15, 15), rng.uniform(-40, 40), rng.uniform(-10, 10)]),
                           [rng.uniform(-0.04, 0.04), rng.uniform(-0.04, 0.04), -rng.uniform(0.35, 0.9)]])  # fmt: skip
    camera = np.array([rng.uniform(0.7, 2.2) * 640, 320.0, 240.0])
    seen = project(lmk, pose, camera) + rng.normal(0, 1.0, (68, 2))
    seen[48:68] += rng.normal(0, 0.25 * eye_distance(seen), (20, 2))
    return seen, pose, camera


def _assert_same(alone: PoseFit, batched: PoseFit) -> None:
    np.testing.assert_allclose(batched.pose, alone.pose, atol=POSE_TOL, rtol=0)
    np.testing.assert_allclose(batched.focal, alone.focal, rtol=PIXEL_RTOL)
    np.testing.assert_allclose(batched.residuals, alone.residuals, rtol=PIXEL_RTOL, atol=1e-6)
    np.testing.assert_allclose(batched.robust_weights, alone.robust_weights, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(batched.cost, alone.cost, rtol=1e-6)


def test_rotation_matrices_match_rodrigues() -> None:
    rng = np.random.default_rng(0)
    aa = np.concatenate([rng.normal(0, 1, (20, 3)), np.zeros((1, 3)), np.full((1, 3), 1e-14)])
    for a, m in zip(aa, rotation_matrices(aa), strict=True):
        np.testing.assert_allclose(m, rotation_matrix(a), atol=1e-14)


def test_every_expression_from_a_start_as_fit_pose_alone(layer: FlameLayer) -> None:
    """The fit stage's scoring: one camera, many expressions, each from the reference pose."""
    rng = np.random.default_rng(3)
    lmk = _expressions(layer, rng, 12)
    seen, pose, camera = _photo(lmk[0], rng)
    weights = rng.uniform(0.0, 1.0, 68)
    intr = Intrinsics(float(camera[0]), 320.0, 240.0, "exif")
    start = pose + np.concatenate([rng.normal(0, 0.05, 3), rng.normal(0, 0.01, 3)])
    batched = fit_poses(lmk, seen, weights, intr, fit_focal=False, starts=start)
    assert len(batched) == len(lmk)
    for points, fit in zip(lmk, batched, strict=True):
        _assert_same(fit_pose(points, seen, weights, intr, fit_focal=False, start=start), fit)


def test_yaw_search_with_the_focal_as_fit_pose_alone(layer: FlameLayer) -> None:
    """The camera fit: five starting yaws, focal length estimated, per-problem weights."""
    rng = np.random.default_rng(4)
    lmk = _expressions(layer, rng, 3)
    seen, _, _ = _photo(lmk[0], rng)
    weights = rng.uniform(0.0, 1.0, (3, 68))
    weights[1, 48:] = 0.0  # a group left out, as the group consensus does
    intr = default_intrinsics(640, 480)
    batched = fit_poses(lmk, seen, weights, intr, fit_focal=True)
    for points, w, fit in zip(lmk, weights, batched, strict=True):
        _assert_same(fit_pose(points, seen, w, intr, fit_focal=True), fit)


def test_a_start_with_its_focal_lands_where_the_yaw_search_does(layer: FlameLayer) -> None:
    """The fit of both detector runs starts from the direct run's pose and focal (stage.SEED_FROM_DIRECT):
    a 7-parameter start, the focal as its log-ratio to the guessed focal. From near the yaw search's end it
    ends at the same place; a 6-parameter start keeps the guessed focal as before."""
    rng = np.random.default_rng(6)
    lmk = _expressions(layer, rng, 1)
    seen, _, _ = _photo(lmk[0], rng)
    weights = rng.uniform(0.3, 1.0, 68)
    intr = default_intrinsics(640, 480)
    searched = fit_poses(lmk, seen, weights, intr, fit_focal=True)[0]
    near = np.append(searched.pose + rng.normal(0, 0.01, 6), np.log(1.05 * searched.focal / intr.focal))
    seeded = fit_poses(lmk, seen, weights, intr, fit_focal=True, starts=near)[0]
    # within the solver's stop (points moving < MOTION_PX): 0.01° and a fraction of a millimetre here
    np.testing.assert_allclose(seeded.pose, searched.pose, atol=1e-3)
    np.testing.assert_allclose(seeded.focal, searched.focal, rtol=1e-3)
    from_pose = fit_poses(lmk, seen, weights, intr, fit_focal=True, starts=near[:6])[0]
    np.testing.assert_allclose(from_pose.focal, searched.focal, rtol=1e-3)  # the focal refitted from the guess


def _reference_errors(batch: _Batch, params: np.ndarray, rows: np.ndarray, rotations: int | None = None) -> np.ndarray:
    """The pixel errors of :meth:`_Batch.errors` the slow way: one problem and one parameter column at a
    time, the model turned by :func:`.camera.rotation_matrix` as a matrix product (the solver's own path
    keeps the model's axes apart and turns them elementwise, and turns the model once for the Jacobian's
    columns that share a rotation; ``rotations`` is ignored here: every column is turned on its own)."""
    out = np.empty((*params.shape[:2], batch.model.shape[1], 2 if batch.depth is None else 3))
    for i, row in enumerate(rows):
        for k, p in enumerate(params[i]):
            focal = batch.intr.focal * (np.exp(p[6]) if batch.fit_focal else 1.0)
            cam = batch.model[row] @ rotation_matrix(p[:3]).T + p[3:6]
            depth = np.maximum(-cam[:, 2], 1e-9)
            out[i, k, :, 0] = batch.intr.cx + focal * cam[:, 0] / depth - batch.image[:, 0]
            out[i, k, :, 1] = batch.intr.cy - focal * cam[:, 1] / depth - batch.image[:, 1]
            if batch.depth is not None:
                mean = float(depth @ batch.depth_w[row])
                out[i, k, :, 2] = (focal * (depth - mean) / mean - batch.depth[row]) * batch.depth_gain
    return out


def test_the_solver_matches_a_slow_per_problem_projection(layer: FlameLayer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fit stage's three kinds of solve (yaw search with the focal, group left out, expressions from a
    start) with depth and a second detector run, as the solver computes them and as the slow projection
    above does: same poses (rad, m) to 1e-6, residuals to 1e-4 px, same costs to rounding."""
    rng = np.random.default_rng(5)
    lmk = _expressions(layer, rng, 6)
    seen, pose, camera = _photo(lmk[0], rng)
    depth = -to_camera(lmk[0], pose)[:, 2]
    z = camera[0] * (depth - depth.mean()) / depth.mean()  # the detector's relative depth, in pixels
    first = np.column_stack([seen, z + rng.normal(0, 2.0, 68)])
    second = np.column_stack([seen + rng.normal(0, 1.0, (68, 2)), np.full(68, np.nan)])
    weights = rng.uniform(0.2, 1.0, (6, 68))
    weights[2, 36:48] = 0.0
    start = pose + np.concatenate([rng.normal(0, 0.05, 3), rng.normal(0, 0.01, 3)])
    calls = [
        dict(intrinsics=default_intrinsics(640, 480), fit_focal=True, second=second),
        dict(intrinsics=Intrinsics(float(camera[0]), 320.0, 240.0, "exif"), fit_focal=False, starts=start,
             second=second),
        dict(intrinsics=Intrinsics(float(camera[0]), 320.0, 240.0, "exif"), fit_focal=False, starts=start),
    ]  # fmt: skip
    fast = [fit_poses(lmk[:3], first, weights[:3], **kw) for kw in calls]
    monkeypatch.setattr(_Batch, "errors", _reference_errors)
    slow = [fit_poses(lmk[:3], first, weights[:3], **kw) for kw in calls]
    for ours, theirs in zip(fast, slow, strict=True):
        for a, b in zip(ours, theirs, strict=True):
            np.testing.assert_allclose(a.pose, b.pose, atol=POSE_TOL, rtol=0)
            np.testing.assert_allclose(a.residuals, b.residuals, atol=1e-4, rtol=0)
            np.testing.assert_allclose(a.focal, b.focal, rtol=PIXEL_RTOL)
            np.testing.assert_allclose(a.cost, b.cost, rtol=1e-9)


def test_the_motion_stop_leaves_the_points_where_full_polishing_puts_them(
    layer: FlameLayer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The solves stop once a step moves no projected point by MOTION_PX (0.005 px) instead of polishing
    for ITERATIONS: the projected landmarks land within 0.05 px of where the polished solve puts them (the
    detector scatters ~2 px), for the camera's yaw search with the focal and for expressions from a start."""
    rng = np.random.default_rng(6)
    lmk = _expressions(layer, rng, 8)
    seen, pose, camera = _photo(lmk[0], rng)
    weights = rng.uniform(0.2, 1.0, 68)
    start = pose + np.concatenate([rng.normal(0, 0.05, 3), rng.normal(0, 0.01, 3)])
    calls = [
        (lmk[:1], dict(intrinsics=default_intrinsics(640, 480), fit_focal=True)),
        (lmk, dict(intrinsics=Intrinsics(float(camera[0]), 320.0, 240.0, "exif"), fit_focal=False, starts=start)),
    ]
    stopped = [fit_poses(points, seen, weights, **kw) for points, kw in calls]
    monkeypatch.setattr("inference_server.fit.pose_batch.MOTION_PX", 0.0)
    polished = [fit_poses(points, seen, weights, **kw) for points, kw in calls]
    for (points, _), ours, full in zip(calls, stopped, polished, strict=True):
        for p, a, b in zip(points, ours, full, strict=True):
            here = project(p, a.pose, np.array([a.focal, 320.0, 240.0]))
            there = project(p, b.pose, np.array([b.focal, 320.0, 240.0]))
            assert np.abs(here - there).max() < 0.05
            assert a.cost <= b.cost * (1 + 1e-3)


def test_the_jacobian_columns_that_share_a_rotation_give_the_same_bits(layer: FlameLayer) -> None:
    """The solver turns the model once for the columns that only shift translation or focal: the errors
    must be the very numbers the full computation gives (with depth and a fitted focal)."""
    rng = np.random.default_rng(11)
    lmk = _expressions(layer, rng, 4)
    seen, pose, camera = _photo(lmk[0], rng)
    image = np.column_stack([seen, rng.normal(0, 5.0, 68)])
    batch = _Batch(lmk, image, rng.uniform(0.2, 1.0, (4, 68)), Intrinsics(float(camera[0]), 320.0, 240.0, "fitted"),
                   True, 2.0)  # fmt: skip
    x = np.concatenate([np.tile(pose, (4, 1)) + rng.normal(0, 0.05, (4, 6)), rng.normal(0, 0.1, (4, 1))], axis=1)
    shifted = np.repeat(x[:, None], 8, axis=1)
    shifted[:, 1:][:, np.arange(7), np.arange(7)] += 1e-6 * np.maximum(1.0, np.abs(x))
    rows = np.arange(4)
    np.testing.assert_array_equal(batch.errors(shifted, rows, rotations=4), batch.errors(shifted, rows))


def test_problems_shared_out_over_threads_fit_as_in_one_batch(
    layer: FlameLayer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """100 expressions on two threads (the fit stage's scoring), with per-problem weights and a second run:
    each expression keeps its own result, in order, to rounding; and two threads did solve them."""
    import threading

    from inference_server.fit import pose_batch

    rng = np.random.default_rng(12)
    lmk = _expressions(layer, rng, 70)
    seen, pose, camera = _photo(lmk[0], rng)
    mirrored = seen + rng.normal(0, 1.0, seen.shape)
    weights = rng.uniform(0.0, 1.0, (70, 68))
    intr = Intrinsics(float(camera[0]), 320.0, 240.0, "exif")
    start = pose + np.concatenate([rng.normal(0, 0.05, 3), rng.normal(0, 0.01, 3)])
    one = fit_poses(lmk, seen, weights, intr, fit_focal=False, starts=start, second=mirrored)
    solvers: set[int] = set()
    solve = pose_batch.solve_batch

    def watched(starts: np.ndarray, batch: _Batch) -> tuple[np.ndarray, np.ndarray]:
        solvers.add(threading.get_ident())
        return solve(starts, batch)

    monkeypatch.setattr(pose_batch, "solve_batch", watched)
    two = fit_poses(lmk, seen, weights, intr, fit_focal=False, starts=start, second=mirrored, threads=2)
    assert len(solvers) == 2
    assert len(two) == len(one)
    for a, b in zip(one, two, strict=True):
        np.testing.assert_allclose(b.pose, a.pose, atol=1e-8, rtol=0)
        np.testing.assert_allclose(b.residuals, a.residuals, atol=1e-6, rtol=0)
        assert b.residuals.shape == (68,)
    solvers.clear()
    fit_poses(lmk[:40], seen, weights[:40], intr, fit_focal=False, starts=start, threads=2)
    assert len(solvers) == 1  # 20 problems a thread would be too few: one batch
