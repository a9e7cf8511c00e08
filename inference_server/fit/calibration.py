"""The detector-to-68 correspondence measured on the head model itself.

:mod:`.landmarks68` reads the 68 points off MediaPipe's contours by what they mean. A head model's own
embedding places them by its author's judgement (the jaw line especially), and MediaPipe's mesh sits on
a given head with its own habits. Both biases are systematic, so they can be measured: render the
model's heads through a known camera, run the detector, and for every landmark find the affine
combination of a few nearby detector points that lands on the model's projected landmark in all renders
at once. The result replaces the semantic table for this model; when the detector cannot find the
rendered heads, the semantic table stays.

The renders are the mean head in seven poses plus RANDOM_VIEWS draws from the model's own prior
(identity, expression, jaw, pose, focal length), from a fixed seed: the detector's habits depend on the
face it sees (an open jaw, a wide face), and a correspondence measured on the mean head alone carries
them into every fit (docs/texture.md, "Fit").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..flame.layer import FlameLayer
from ..flame.model_data import FlameModelData
from ..render import PinholeCamera, render_mesh
from .camera import axis_angle, euler_rotation, project
from .landmarks68 import N_LANDMARKS, correspondence_matrix

#: Poses (pitch, yaw in degrees) of the mean-head calibration renders.
VIEWS = ((0.0, 0.0), (0.0, -20.0), (0.0, 20.0), (0.0, -35.0), (0.0, 35.0), (-12.0, 0.0), (12.0, 0.0))
#: Renders of random heads of the model (fixed seed) added to VIEWS: 40 renders took 35 s against 7-13 s
#: for VIEWS alone (shared 2-core machine at load 7), once per worker and model.
RANDOM_VIEWS = 33
SEED = 20251
#: Detector points each landmark is combined from (the nearest ones to the semantic table's point).
NEIGHBOURS = 4
#: Pull of the weights towards the semantic table's, relative to one render's squared error in eye
#: distances (each render counts the same whatever its size).
PRIOR = 0.1
#: Precision of a landmark (inverse variance of its calibrated position over the renders) relative to
#: the eyes' median, clipped to [MIN_PRECISION, 1]: the solver's weight for how exactly it is placed.
#: The floor keeps the jaw line (measured ~0.15) pulling: past ~50° of yaw it alone fixes the turn, and
#: without the floor a 73° profile was fitted as 52° with status ok (test_stage.py).
MIN_PRECISION = 0.3
#: Renders the detector must find for the calibration to be used.
MIN_VIEWS = 4
SIZE = 512

Detector = Callable[[np.ndarray], list[np.ndarray]]


@dataclass(frozen=True)
class Correspondence:
    """The detector-to-68 map measured on one head model, and how exactly each landmark lands."""

    matrix: np.ndarray  # (68, 478): rows sum to 1; ``matrix @ mesh_points`` = the 68 landmarks
    precision: np.ndarray  # (68,) in [MIN_PRECISION, 1]: relative inverse variance, the eyes ≈ 1


@dataclass(frozen=True)
class _Draw:
    shape: np.ndarray
    expression: np.ndarray
    jaw: np.ndarray
    angles_deg: np.ndarray  # pitch, yaw, roll
    focal_per_side: float


def _draws(model: FlameModelData) -> list[_Draw]:
    """The mean head in VIEWS, then RANDOM_VIEWS heads drawn like the synthetic photos (fit/synthetic.py)."""
    n_shape, n_expr = int(model.n_shape), min(int(model.n_expression), 50)
    zero = _Draw(np.zeros(n_shape), np.zeros(n_expr), np.zeros(3), np.zeros(3), 1.5)
    draws = [_Draw(zero.shape, zero.expression, zero.jaw, np.array([p, y, 0.0]), 1.5) for p, y in VIEWS]
    rng = np.random.default_rng(SEED)
    for _ in range(RANDOM_VIEWS):
        shape = rng.normal(0, 1, n_shape) * np.where(np.arange(n_shape) < 32, 1.0, 0.3)
        expression = rng.normal(0, 0.3, n_expr)
        jaw = np.array([abs(rng.normal(0, 0.12)), 0.0, 0.0])
        angles = np.array([rng.uniform(-15, 15), rng.uniform(-35, 35), rng.uniform(-8, 8)])
        draws.append(_Draw(shape, expression, jaw, angles, float(rng.uniform(0.8, 2.2))))
    return draws


def _views(model: FlameModelData) -> list[tuple[np.ndarray, np.ndarray]]:
    """(image, the model's 68 projected landmarks) per calibration render."""
    layer = FlameLayer(model, dtype=torch.float64)
    draws = _draws(model)
    with torch.no_grad():
        out = layer.with_expression(*(torch.as_tensor(np.stack([getattr(d, name) for d in draws]))
                                      for name in ("shape", "expression", "jaw")))  # fmt: skip
    assert out.landmarks is not None
    colours = model.extra.get("vertex_colors")
    views = []
    for draw, vertices, landmarks in zip(draws, out.vertices.numpy(), out.landmarks.numpy(), strict=True):
        iod = float(np.linalg.norm(landmarks[36:42].mean(axis=0) - landmarks[42:48].mean(axis=0)))
        focal = draw.focal_per_side * SIZE
        depth = focal * iod / (0.2 * SIZE)
        rotation = euler_rotation(np.radians(draw.angles_deg))
        centre = landmarks[[27, 30, 33]].mean(axis=0)
        pose = np.concatenate([axis_angle(rotation), np.array([0.0, 0.0, -depth]) - rotation @ centre])
        pinhole = PinholeCamera(tuple(pose.tolist()), focal, SIZE / 2.0, SIZE / 2.0, SIZE, SIZE)
        image = render_mesh(
            vertices, model.faces, width=SIZE, height=SIZE, camera=pinhole, ambient=0.5,
            background=(110, 120, 130), colors=None if colours is None else np.asarray(colours),
        )  # fmt: skip
        views.append((image, project(landmarks, pose, np.array([focal, SIZE / 2.0, SIZE / 2.0]))))
    return views


def calibrate_correspondence(model: FlameModelData, detect: Detector) -> Correspondence | None:
    """The (68, 478) correspondence for ``model`` and each landmark's precision, or None when the
    detector found the rendered heads in fewer than MIN_VIEWS views or the model has no 68-point
    embedding."""
    if model.lmk_faces_idx is None or len(model.lmk_faces_idx) != N_LANDMARKS:
        return None
    found: list[tuple[np.ndarray, np.ndarray]] = []
    for image, truth in _views(model):
        meshes = detect(image)
        if meshes and meshes[0].shape[0] >= 468:
            # In eye distances, so that every render weighs the same in the solve.
            scale = float(np.linalg.norm(truth[36:42].mean(axis=0) - truth[42:48].mean(axis=0)))
            found.append((np.asarray(meshes[0], dtype=np.float64)[:, :2] / scale, truth / scale))
    if len(found) < MIN_VIEWS:
        return None
    semantic = correspondence_matrix(found[0][0].shape[0])
    matrix = np.zeros_like(semantic)
    for k in range(N_LANDMARKS):
        # The detector points nearest to the semantic table's point, on average over the renders.
        distance = np.mean([np.linalg.norm(m - semantic[k] @ m, axis=1) for m, _ in found], axis=0)
        near = np.argsort(distance)[:NEIGHBOURS]
        matrix[k, near] = _affine_weights([m[near] for m, _ in found], [t[k] for _, t in found],
                                          semantic[k, near])  # fmt: skip
    return Correspondence(matrix, _precision(matrix, found))


def _precision(matrix: np.ndarray, found: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """(68,) inverse variance of each calibrated landmark's miss (eye distances) over the renders,
    relative to the eyes' median. The misses are scatter, not bias (docs/texture.md): weighing the
    solve by them lets the eyes fix the pose and the jaw contour only nudge it."""
    misses = np.stack([matrix @ m - t for m, t in found])  # (R, 68, 2)
    variance = np.maximum((misses**2).sum(axis=2).mean(axis=0), 1e-12)
    reference = float(np.median(variance[36:48]))
    return np.clip(reference / variance, MIN_PRECISION, 1.0)


def _affine_weights(points: list[np.ndarray], targets: list[np.ndarray], prior: np.ndarray) -> np.ndarray:
    """Weights w (sum 1) with Σ w_i p_i ≈ target in every view; ridge towards ``prior`` (or uniform)."""
    n = len(prior)
    start = prior / prior.sum() if prior.sum() > 0.5 else np.full(n, 1.0 / n)
    # Substitute w = start + N z with N a basis of {z : sum z = 0}, so the constraint always holds.
    basis = np.linalg.svd(np.ones((1, n)))[2][1:].T  # (n, n-1)
    a = np.concatenate([p.T @ basis for p in points])  # (2R, n-1)
    b = np.concatenate([t - p.T @ start for p, t in zip(points, targets, strict=True)])
    z = np.linalg.solve(a.T @ a + PRIOR * np.eye(n - 1), a.T @ b)
    return start + basis @ z
