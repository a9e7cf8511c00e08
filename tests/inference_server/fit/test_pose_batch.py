"""The batched pose solver gives, problem by problem, what fit_pose gives alone (it replaced ~100
fit_pose calls per photo in the fit stage; see docs/texture.md, "Cost")."""

from __future__ import annotations

import numpy as np
import torch

from inference_server.fit.camera import Intrinsics, default_intrinsics, project, rotation_matrix
from inference_server.fit.pose import PoseFit, eye_distance, fit_pose
from inference_server.fit.pose_batch import fit_poses, rotation_matrices
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
