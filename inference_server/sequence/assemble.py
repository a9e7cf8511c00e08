"""From the frames' hypotheses to the clip's animation: the path, the bridging and smoothing, the meshes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import NoFaceError
from ..flame.layer import FlameLayer
from ..flame.model_data import FlameModelData
from ..pipeline import EXPGEN_EXPRESSIONS
from .controls import expression_basis, pose_basis, rig_vertices
from .frames import EncodedFrame, FittedFrame
from .path import best_path, continuous_rotations, fill_gaps, gaussian_smooth, unary_costs, vertex_metric

#: Step of the numerical jaw derivative (radians) for the vertex metric.
JAW_STEP = 1e-3


@dataclass
class Animation:
    params: np.ndarray  # (T, E + 3) chosen, bridged and smoothed: expression ‖ jaw
    head_pose: np.ndarray  # (T, 6)
    choice: np.ndarray  # (T,) -1 where the frame had no hypotheses
    observed: np.ndarray  # (T,) bool: a trusted fit
    hypotheses: np.ndarray  # (T, M, E + 3); frames without hypotheses repeat their bridged value
    path_meta: dict[str, Any]
    eye_pose: np.ndarray | None = None  # (T, 2, 3) the gaze, bridged and smoothed; None: read on no frame


@dataclass
class Rig:
    """The clip's head with FLAME's own controls (the sequence contract's arrays)."""

    identity_vertices: np.ndarray  # (V, 3)
    joints: np.ndarray  # (J, 3)
    expression_basis: np.ndarray  # (E, V, 3)
    pose_basis: np.ndarray  # (P, V, 3)

    def vertices(self, model: FlameModelData, params: np.ndarray) -> np.ndarray:
        e = EXPGEN_EXPRESSIONS
        return rig_vertices(self.identity_vertices, self.joints, model.parents, model.weights,
                            self.expression_basis, self.pose_basis, params[:, :e], params[:, e:])  # fmt: skip


def build_rig(model: FlameModelData, flame: FlameLayer, shape: np.ndarray) -> Rig:
    with torch.no_grad():
        rest = flame.neutral(torch.as_tensor(shape, device=flame.device, dtype=flame.dtype))
    return Rig(
        identity_vertices=rest.vertices[0].cpu().numpy().astype(np.float32),
        joints=rest.rest_joints[0].cpu().numpy().astype(np.float32),
        expression_basis=expression_basis(model, EXPGEN_EXPRESSIONS),
        pose_basis=pose_basis(model),
    )


def hypothesis_metric(model: FlameModelData, rig: Rig, region: np.ndarray | None) -> np.ndarray:
    """(E + 3, E + 3) L: ‖(a − b) @ L‖ ≈ RMS distance (mm) of the meshes of a and b over ``region``
    (expression columns exactly; the jaw linearised at rest)."""
    zero = np.zeros((1, EXPGEN_EXPRESSIONS + 3))
    base = rig.vertices(model, zero)[0].astype(np.float64)
    jaw_columns = []
    for axis in range(3):
        bumped = zero.copy()
        bumped[0, EXPGEN_EXPRESSIONS + axis] = JAW_STEP
        jaw_columns.append((rig.vertices(model, bumped)[0] - base) / JAW_STEP)
    columns = np.concatenate([rig.expression_basis.astype(np.float64), np.stack(jaw_columns)])
    return vertex_metric(columns if region is None else columns[:, region])


def animate(fitted: list[FittedFrame], metric: np.ndarray, smoothness: float, sigma: float) -> Animation:
    """The path through the hypotheses, bridged over frames without them, smoothed; the head pose alike."""
    embeddings = [f.hypotheses @ metric if len(f.hypotheses) else None for f in fitted]
    unary = [unary_costs(f.errors_px, f.eye_px) if f.trusted else None for f in fitted]
    path = best_path(unary, embeddings, smoothness)
    has = path.choice >= 0
    if not has.any():
        raise NoFaceError("no frame of the clip shows a face", "Check that the clip shows a face, large enough.")
    width = EXPGEN_EXPRESSIONS + 3
    chosen = np.zeros((len(fitted), width))
    for f in fitted:
        if path.choice[f.index] >= 0:
            chosen[f.index] = f.hypotheses[path.choice[f.index]]
    params = gaussian_smooth(fill_gaps(chosen, has), sigma)
    observed = np.array([f.trusted for f in fitted])
    if not observed.any():
        raise NoFaceError(
            "the head pose could not be fitted on any frame of the clip",
            "Use a clip where the face is seen from the front or the side (not in profile), unhidden.",
        )
    poses = np.zeros((len(fitted), 6))
    for f in fitted:
        if f.trusted:
            poses[f.index] = f.poses[path.choice[f.index]]
    poses[observed, :3] = continuous_rotations(poses[observed, :3])
    head_pose = gaussian_smooth(fill_gaps(poses, observed), sigma)
    m = max(len(f.hypotheses) for f in fitted)
    hypotheses = np.repeat(params[:, None, :], m, axis=1)
    for f in fitted:
        if len(f.hypotheses):
            hypotheses[f.index, : len(f.hypotheses)] = f.hypotheses
    meta = {"smoothness": smoothness, "total_cost": round(path.total_cost, 4), "unary_cost": round(path.unary_cost, 4),
            "pairwise_cost": round(path.pairwise_cost, 4),
            "smoothing": {"kind": "gaussian" if sigma > 0 else "none", "sigma_frames": sigma}}  # fmt: skip
    return Animation(params, head_pose, path.choice, observed, hypotheses, meta, eye_poses(fitted, sigma))


def eye_poses(fitted: list[FittedFrame], sigma: float) -> np.ndarray | None:
    """(T, 2, 3) the frames' gaze, bridged over frames where it was not read and smoothed like the head pose
    (a frame's reading scatters by several degrees: docs/texture.md, "Gaze"); None when no frame was read."""
    read = np.array([f.eye_pose is not None for f in fitted])
    if not read.any():
        return None
    series = np.zeros((len(fitted), 6))
    for f in fitted:
        if f.eye_pose is not None:
            series[f.index] = np.asarray(f.eye_pose, np.float64).reshape(6)
    return gaussian_smooth(fill_gaps(series, read), sigma).reshape(-1, 2, 3)


def frame_records(encoded: list[EncodedFrame], fitted: list[FittedFrame], anim: Animation) -> list[dict[str, Any]]:
    """``meta["frames"]``: index, name, status, warnings, fit_px of the chosen hypothesis, choice."""
    records = []
    for e, f in zip(encoded, fitted, strict=True):
        k = int(anim.choice[f.index])
        error = f.errors_px[k] if k >= 0 and f.trusted else None
        records.append({
            "index": e.index, "name": e.name, "status": f.status, "warnings": e.warnings + f.warnings,
            "fit_px": None if error is None else round(float(error), 3), "choice": None if k < 0 else k,
            "visible": f.visible, "gaze_read": f.eye_pose is not None,
        })  # fmt: skip
    return records
