"""FLAME's own controls as Blender data, the numpy half (no bpy): key values, basis, jaw pivot offset.

The MPI FLAME add-on's names: ``Shape1..`` (identity), ``Exp1..`` (expression), ``Pose1..`` (pose
correctives: the flattened (R_j − I) of joints 1..J−1, neck and jaw first, then the eyes). A rig with
fixed bones plus these linear keys is FLAME except for one thing: FLAME regresses its joints from the
shaped mesh *including the expression*, so the jaw turns about J(ψ), not about the rig's joint J0. For a
jaw-only pose the difference is one vector for every jaw-weighted vertex, w·(I − R)(J(ψ) − J0): the jaw
bone's location carries it (:func:`jaw_offset`), which makes the rig reproduce the worker's mesh exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import skinning

#: Blender's widest shape-key slider range; a value beyond it is clamped (docs: spec/blender-addon.md §4).
KEY_LIMIT = 10.0
JAW = 2  # FLAME's joint order: root, neck, jaw, left eye, right eye


def shape_key_names(prefix: str, count: int) -> list[str]:
    """``Shape1``.. / ``Exp1``.. / ``Pose1``.. as the MPI FLAME add-on names them."""
    return [f"{prefix}{i}" for i in range(1, count + 1)]


def jaw_pose(jaw: np.ndarray, n_joints: int) -> np.ndarray:
    """(J, 3) axis-angle pose with only the jaw turned."""
    pose = np.zeros((n_joints, 3))
    pose[JAW] = np.asarray(jaw, dtype=np.float64).reshape(3)
    return pose


def pose_feature(pose: np.ndarray) -> np.ndarray:
    """(9 (J − 1),) FLAME's pose-corrective input: the flattened (R_j − I) of joints 1..J−1, row-major."""
    rotations = skinning.axis_angle_to_matrix(np.asarray(pose, dtype=np.float64)[1:])
    return (rotations - np.eye(3)).reshape(-1)


@dataclass(frozen=True)
class ShapeControls:
    """The identity as ``Shape`` keys over a basis that holds what the keys cannot (see :func:`shape_controls`)."""

    basis: np.ndarray  # (V, 3): identity − Σ values·directions
    values: np.ndarray  # (Sc,) the Shape key values, within ±KEY_LIMIT


def shape_controls(
    identity_vertices: np.ndarray, identity_params: np.ndarray, shape_basis: np.ndarray
) -> ShapeControls:
    """Shape keys set to the identity's first Sc coefficients reproduce it exactly: the basis is the
    identity minus those keys, i.e. the model's mean plus the coefficients beyond Sc (and any part of a
    coefficient beyond Blender's ±10 slider limit, which would otherwise be clamped)."""
    n = shape_basis.shape[0]
    values = np.clip(np.asarray(identity_params, dtype=np.float64)[:n], -KEY_LIMIT, KEY_LIMIT)
    values = np.pad(values, (0, n - values.shape[0]))
    basis = np.asarray(identity_vertices, dtype=np.float64) - np.einsum("k,kvc->vc", values, shape_basis)
    return ShapeControls(basis=basis, values=values)


def rest_mesh(
    base: np.ndarray,
    expression_basis: np.ndarray,
    expression: np.ndarray,
    pose_basis: np.ndarray,
    feature: np.ndarray,
) -> np.ndarray:
    """(V, 3) FLAME's posed-but-unskinned mesh: identity + expression + pose correctives."""
    psi = np.asarray(expression, dtype=np.float64)
    return (
        np.asarray(base, dtype=np.float64)
        + np.einsum("e,evc->vc", psi, expression_basis[: psi.shape[0]])
        + np.einsum("p,pvc->vc", feature, pose_basis)
    )


def jaw_vertices(weights: np.ndarray) -> np.ndarray:
    """Indices of the vertices the jaw moves: the only ones :func:`jaw_offset` needs (a fraction of the head)."""
    return np.flatnonzero(np.asarray(weights)[:, JAW] > 0)


def _jaw_share(weights: np.ndarray) -> np.ndarray:
    """(V,) each vertex's normalised skin weight on the jaw bone: how much of the jaw's offset it follows."""
    w = np.asarray(weights, dtype=np.float64)
    total = w.sum(axis=1)
    return np.where(total > 0, w[:, JAW] / np.where(total > 0, total, 1.0), 0.0)


def jaw_offset(
    rest: np.ndarray, posed: np.ndarray, joints: np.ndarray, parents: np.ndarray, weights: np.ndarray, pose: np.ndarray
) -> np.ndarray:
    """(3,) d with ``posed`` = skinning about the fixed ``joints`` + w_jaw · d (least squares over the
    jaw-weighted vertices; exact for FLAME, where d = (I − R)(J(ψ) − J0))."""
    about_rig = skinning.lbs(rest, joints, parents, weights, pose)
    w_jaw = _jaw_share(weights)
    norm = float(w_jaw @ w_jaw)
    if norm <= 0.0:
        return np.zeros(3)
    return (w_jaw @ (np.asarray(posed, dtype=np.float64) - about_rig)) / norm


def skin_with_offset(
    rest: np.ndarray,
    joints: np.ndarray,
    parents: np.ndarray,
    weights: np.ndarray,
    pose: np.ndarray,
    offset: np.ndarray,
) -> np.ndarray:
    """What the rig computes: skinning about the fixed joints with the jaw bone moved by ``offset``."""
    w_jaw = _jaw_share(weights)
    return skinning.lbs(rest, joints, parents, weights, pose) + w_jaw[:, None] * np.asarray(offset)[None, :]


def unpose_with_offset(
    posed: np.ndarray,
    joints: np.ndarray,
    parents: np.ndarray,
    weights: np.ndarray,
    pose: np.ndarray,
    offset: np.ndarray,
) -> np.ndarray:
    """The rest-space vertices that :func:`skin_with_offset` maps onto ``posed`` (exact inverse)."""
    w_jaw = _jaw_share(weights)
    return skinning.unpose(
        np.asarray(posed) - w_jaw[:, None] * np.asarray(offset)[None, :], joints, parents, weights, pose
    )
