"""The detector-to-68 correspondence measured on the head model itself.

:mod:`.landmarks68` reads the 68 points off MediaPipe's contours by what they mean. A head model's own
embedding places them by its author's judgement (the jaw line especially), and MediaPipe's mesh sits on
a given head with its own habits. Both biases are systematic, so they can be measured: render the
model's mean head in a few poses through a known camera, run the detector, and for every landmark find
the affine combination of a few nearby detector points that lands on the model's projected landmark in
all renders at once. The result replaces the semantic table for this model; when the detector cannot
find the rendered head, the semantic table stays.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..flame.layer import FlameLayer
from ..flame.model_data import FlameModelData
from ..render import PinholeCamera, render_mesh
from .camera import axis_angle, euler_rotation, project
from .landmarks68 import N_LANDMARKS, correspondence_matrix

#: Poses (pitch, yaw in degrees) of the calibration renders.
VIEWS = ((0.0, 0.0), (0.0, -20.0), (0.0, 20.0), (0.0, -35.0), (0.0, 35.0), (-12.0, 0.0), (12.0, 0.0))
#: Detector points each landmark is combined from (the nearest ones in the frontal render).
NEIGHBOURS = 4
#: Pull of the weights towards the semantic table's, relative to one render's squared pixel error.
PRIOR = 1.0
#: Renders the detector must find for the calibration to be used.
MIN_VIEWS = 4
SIZE = 512

Detector = Callable[[np.ndarray], list[np.ndarray]]


def _views(model: FlameModelData) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(image, the model's 68 projected landmarks, camera) per calibration view of the mean head."""
    layer = FlameLayer(model, dtype=torch.float64)
    with torch.no_grad():
        out = layer.neutral(torch.zeros(1, 1, dtype=torch.float64))
    vertices = out.vertices[0].numpy()
    assert out.landmarks is not None
    landmarks = out.landmarks[0].numpy()
    colours = model.extra.get("vertex_colors")
    iod = float(np.linalg.norm(landmarks[36:42].mean(axis=0) - landmarks[42:48].mean(axis=0)))
    focal = 1.5 * SIZE
    depth = focal * iod / (0.2 * SIZE)
    centre = landmarks[[27, 30, 33]].mean(axis=0)
    views = []
    for pitch, yaw in VIEWS:
        rotation = euler_rotation(np.radians([pitch, yaw, 0.0]))
        pose = np.concatenate([axis_angle(rotation), np.array([0.0, 0.0, -depth]) - rotation @ centre])
        camera = np.array([focal, SIZE / 2.0, SIZE / 2.0])
        pinhole = PinholeCamera(tuple(pose.tolist()), focal, SIZE / 2.0, SIZE / 2.0, SIZE, SIZE)
        image = render_mesh(
            vertices, model.faces, width=SIZE, height=SIZE, camera=pinhole, ambient=0.5,
            background=(110, 120, 130), colors=None if colours is None else np.asarray(colours),
        )  # fmt: skip
        views.append((image, project(landmarks, pose, camera), camera))
    return views


def calibrate_correspondence(model: FlameModelData, detect: Detector) -> np.ndarray | None:
    """(68, 478) correspondence matrix for ``model`` (rows sum to 1), or None when the detector found
    the rendered head in fewer than MIN_VIEWS views or the model has no 68-point embedding."""
    if model.lmk_faces_idx is None or len(model.lmk_faces_idx) != N_LANDMARKS:
        return None
    found: list[tuple[np.ndarray, np.ndarray]] = []
    for image, truth, _ in _views(model):
        meshes = detect(image)
        if meshes and meshes[0].shape[0] >= 468:
            found.append((np.asarray(meshes[0], dtype=np.float64)[:, :2], truth))
    if len(found) < MIN_VIEWS:
        return None
    semantic = correspondence_matrix(found[0][0].shape[0])
    matrix = np.zeros_like(semantic)
    frontal = found[0][0]
    for k in range(N_LANDMARKS):
        guess = semantic[k] @ frontal
        near = np.argsort(np.linalg.norm(frontal - guess, axis=1))[:NEIGHBOURS]
        matrix[k, near] = _affine_weights([m[near] for m, _ in found], [t[k] for _, t in found],
                                          semantic[k, near])  # fmt: skip
    return matrix


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
