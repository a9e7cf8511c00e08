"""Robust perspective pose (and focal length) from 2D-3D landmark pairs (numpy only).

Levenberg-Marquardt on the reprojection residuals with iteratively reweighted Cauchy weights: a landmark
the detector placed on an occluder (or that follows another landmark convention) ends up with a small
weight instead of pulling the pose. Several starting yaws are tried, so a turned head does not fall into
the mirror solution. With ``fit_focal`` the log focal length is a seventh parameter held near its start by
a weak prior: a face alone barely constrains perspective strength, and the prior makes the fit fall back
to the starting focal length rather than wander when the data say nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .camera import Intrinsics, project_camera, rotation_matrix

#: Starting yaws (degrees) for the pose search.
START_YAWS = (0.0, -35.0, 35.0, -70.0, 70.0)
#: Cauchy scale of the robust loss as a fraction of the eye distance in the photo.
ROBUST_SCALE_IOD = 0.04
#: Standard deviation of the focal prior in log units (a factor e^0.7 ≈ 2 either way is one sigma).
FOCAL_PRIOR_SIGMA = 0.7
ITERATIONS = 40
#: An accepted step that moves no projected point by more than this many pixels ends the solve. The IRLS
#: reweighting converges linearly (each step ~0.7 of the last), so the old stop alone (a step under 1e-8)
#: ran nearly every solve to ITERATIONS; at this tolerance what is left of the pose moves the points by a
#: few hundredths of a pixel, far under the detector's scatter (~2 px; docs/texture.md, "Fit").
MOTION_PX = 0.005


@dataclass(frozen=True)
class PoseFit:
    pose: np.ndarray  # (6,) axis-angle + translation, metres
    focal: float
    residuals: np.ndarray  # (N,) pixel distances of the projected model points from the image points
    robust_weights: np.ndarray  # (N,) final weights (prior × precision × Cauchy), in [0, 1]
    cost: float


def eye_distance(points: np.ndarray) -> float:
    """Distance between the two eye centres of 68 iBUG landmarks (2D or 3D)."""
    p = np.asarray(points, dtype=np.float64)
    return float(np.linalg.norm(p[36:42].mean(axis=0) - p[42:48].mean(axis=0)))


def _initial_pose(
    model: np.ndarray, image: np.ndarray, weights: np.ndarray, intr: Intrinsics, focal: float, yaw_deg: float
) -> np.ndarray:
    """A pose that puts the model at the image points' place and size, turned by ``yaw_deg``."""
    aa = np.array([0.0, math.radians(yaw_deg), 0.0])
    depth = focal * eye_distance(model) / max(eye_distance(image), 1e-6)
    w = weights / max(float(weights.sum()), 1e-12)
    centre_px = (image * w[:, None]).sum(axis=0)
    centre_model = rotation_matrix(aa) @ (model * w[:, None]).sum(axis=0)
    ray = np.array([(centre_px[0] - intr.cx) / focal, -(centre_px[1] - intr.cy) / focal, -1.0])
    return np.concatenate([aa, ray * depth - centre_model])


def _residuals(
    params: np.ndarray, model: np.ndarray, image: np.ndarray, intr: Intrinsics, focal0: float, fit_focal: bool
) -> tuple[np.ndarray, float]:
    """Per-point 2D errors (N, 2) and the focal length these parameters mean."""
    focal = focal0 * math.exp(params[6]) if fit_focal else focal0
    cam = model @ rotation_matrix(params[:3]).T + params[3:6]
    return project_camera(cam, focal, intr.cx, intr.cy) - image, focal


def _solve(
    start: np.ndarray, model: np.ndarray, image: np.ndarray, prior_w: np.ndarray, intr: Intrinsics,
    fit_focal: bool, scale: float,
) -> tuple[np.ndarray, float]:  # fmt: skip
    """LM + IRLS from ``start``; returns the parameters and the final robust cost."""
    params = start.copy()
    lam = 1e-3

    def evaluate(p: np.ndarray, robust: np.ndarray, err: np.ndarray | None = None) -> tuple[np.ndarray, float]:
        if err is None:  # the caller's residuals of ``p`` when it has them
            err, _ = _residuals(p, model, image, intr, intr.focal, fit_focal)
        r = (err * np.sqrt(prior_w * robust)[:, None]).ravel()
        if fit_focal:
            r = np.append(r, scale * p[6] / FOCAL_PRIOR_SIGMA)
        return r, float(r @ r)

    err, _ = _residuals(params, model, image, intr, intr.focal, fit_focal)  # kept current with ``params``
    for _ in range(ITERATIONS):
        robust = 1.0 / (1.0 + (np.linalg.norm(err, axis=1) / scale) ** 2)
        r, cost = evaluate(params, robust, err)
        jac = np.empty((len(r), len(params)))
        for k in range(len(params)):
            step = 1e-6 * max(1.0, abs(params[k]))
            shifted = params.copy()
            shifted[k] += step
            jac[:, k] = (evaluate(shifted, robust)[0] - r) / step
        normal = jac.T @ jac
        gradient = jac.T @ r
        improved, motion = False, np.inf
        for _ in range(8):
            delta = np.linalg.solve(normal + lam * np.diag(np.diag(normal) + 1e-9), -gradient)
            trial = params + delta
            moved, _ = _residuals(trial, model, image, intr, intr.focal, fit_focal)
            if evaluate(trial, robust, moved)[1] < cost:
                motion = float(np.abs(moved - err).max())
                params, err, lam, improved = trial, moved, max(lam / 3.0, 1e-7), True
                break
            lam *= 4.0
        if not improved or float(np.abs(delta).max()) < 1e-8 or motion < MOTION_PX:
            break
    robust = 1.0 / (1.0 + (np.linalg.norm(err, axis=1) / scale) ** 2)
    return params, evaluate(params, robust, err)[1]


def fit_pose(
    model_points: np.ndarray,
    image_points: np.ndarray,
    weights: np.ndarray,
    intrinsics: Intrinsics,
    *,
    fit_focal: bool,
    start: np.ndarray | None = None,
    precision: np.ndarray | None = None,
) -> PoseFit:
    """Pose (and with ``fit_focal`` the focal length) putting ``model_points`` (68, 3, model frame) onto
    ``image_points`` (68, 2, pixels); ``weights`` (68,) in [0, 1] say how far each point is trusted.
    ``start``: a pose to start from (other expressions of the same photo) instead of the yaw search.
    ``precision`` (68,) in (0, 1]: how exactly the detector places each point (:mod:`.calibration`);
    it scales the trust in the solve, so a scattered contour point pulls less than an eye corner."""
    model = np.asarray(model_points, dtype=np.float64)
    image = np.asarray(image_points, dtype=np.float64)
    prior_w = np.clip(np.asarray(weights, dtype=np.float64), 0.0, 1.0)
    if precision is not None:
        prior_w = prior_w * np.clip(np.asarray(precision, dtype=np.float64), 0.0, 1.0)
    scale = max(ROBUST_SCALE_IOD * eye_distance(image), 0.5)
    extra = [0.0] if fit_focal else []
    starts = (
        [np.concatenate([start, extra])]
        if start is not None
        else [
            np.concatenate([_initial_pose(model, image, prior_w, intrinsics, intrinsics.focal, y), extra])
            for y in START_YAWS
        ]
    )
    best: tuple[np.ndarray, float] | None = None
    for s in starts:
        params, cost = _solve(s, model, image, prior_w, intrinsics, fit_focal, scale)
        if best is None or cost < best[1]:
            best = (params, cost)
    assert best is not None
    params, cost = best
    err, focal = _residuals(params, model, image, intrinsics, intrinsics.focal, fit_focal)
    distance = np.linalg.norm(err, axis=1)
    robust = prior_w / (1.0 + (distance / scale) ** 2)
    return PoseFit(pose=params[:6].copy(), focal=focal, residuals=distance, robust_weights=robust, cost=cost)
