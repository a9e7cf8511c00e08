"""Robust pose + focal from 68 landmark pairs, against poses and cameras drawn at random."""

from __future__ import annotations

import numpy as np
import torch

from inference_server.fit.camera import Intrinsics, default_intrinsics, project, rotation_angle_deg, rotation_matrix
from inference_server.fit.pose import eye_distance, fit_pose
from inference_server.flame.layer import FlameLayer


def _landmarks(layer: FlameLayer, rng: np.random.Generator) -> np.ndarray:
    shape = torch.as_tensor(rng.normal(0, 1, (1, 32)))
    out = layer.with_expression(shape, torch.as_tensor(rng.normal(0, 0.3, (1, 50))))
    assert out.landmarks is not None
    return out.landmarks[0].numpy()


def _random_view(rng: np.random.Generator, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    aa = np.radians([rng.uniform(-15, 15), rng.uniform(-40, 40), rng.uniform(-10, 10)])
    t = np.array([rng.uniform(-0.04, 0.04), rng.uniform(-0.04, 0.04), -rng.uniform(0.35, 0.9)])
    return np.concatenate([aa, t]), np.array([rng.uniform(0.7, 2.2) * max(width, height), width / 2, height / 2])


def test_pose_and_reprojection_with_noise_and_a_covered_mouth(layer: FlameLayer) -> None:
    """1 px noise and the 20 mouth points moved by an occluder: median rotation error ≤ 3°, median
    reprojection of the uncovered points ≤ 2 % of the eye distance, with the focal length estimated."""
    rng = np.random.default_rng(7)
    width, height = 640, 480
    rotation_errors, reprojection = [], []
    for _ in range(20):
        lmk = _landmarks(layer, rng)
        pose, camera = _random_view(rng, width, height)
        truth = project(lmk, pose, camera)
        seen = truth + rng.normal(0, 1.0, truth.shape)
        seen[48:68] += rng.normal(0, 0.25 * eye_distance(truth), (20, 2))  # the detector guesses the mouth
        fit = fit_pose(lmk, seen, np.ones(68), default_intrinsics(width, height), fit_focal=True)
        rotation_errors.append(rotation_angle_deg(rotation_matrix(fit.pose[:3]), rotation_matrix(pose[:3])))
        back = project(lmk, fit.pose, np.array([fit.focal, width / 2, height / 2]))
        reprojection.append(np.median(np.linalg.norm(back - truth, axis=1)[:48]) / eye_distance(truth))
        assert fit.robust_weights[48:68].mean() < fit.robust_weights[:48].mean()  # the mouth was distrusted
    assert np.median(rotation_errors) <= 3.0, rotation_errors
    assert np.median(reprojection) <= 0.02, reprojection


def test_known_focal_recovers_the_translation(layer: FlameLayer) -> None:
    rng = np.random.default_rng(1)
    lmk = _landmarks(layer, rng)
    pose, camera = _random_view(rng, 800, 600)
    truth = project(lmk, pose, camera)
    intr = Intrinsics(float(camera[0]), 400.0, 300.0, "exif")
    fit = fit_pose(lmk, truth, np.ones(68), intr, fit_focal=False)
    np.testing.assert_allclose(fit.pose[3:], pose[3:], atol=1e-4)
    assert fit.focal == camera[0]
