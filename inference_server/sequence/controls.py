"""FLAME's own controls for a clip: the expression and pose-corrective bases, and the meshes they make.

A rig in Blender deforms with fixed bones: shape keys (identity + expression + pose correctives) first,
then linear blend skinning about the identity's rest joints. ``frame_vertices`` are computed exactly
that way (the sequence contract's formula), so an imported clip plays back the stored meshes. FLAME
proper regresses its joints after the expression is added; on the DEMO head a unit expression
coefficient moves the jaw joint by at most 1 mm, so the two differ by a fraction of a millimetre
where the jaw is open (measured in docs/sequence-result.md).
"""

from __future__ import annotations

import numpy as np

from ..flame.model_data import FlameModelData

#: Frames skinned per block (bounds the temporary (block, V, J, ...) arrays).
BLOCK_FRAMES = 64


def expression_basis(model: FlameModelData, n_expressions: int) -> np.ndarray:
    """(E, V, 3) float32: the first ``n_expressions`` expression directions, metres per unit coefficient."""
    columns = model.shapedirs[:, :, model.n_shape : model.n_shape + n_expressions]
    return np.ascontiguousarray(np.transpose(columns, (2, 0, 1)), dtype=np.float32)


def pose_basis(model: FlameModelData) -> np.ndarray:
    """(P, V, 3) float32: pose-corrective directions per element of the flattened (R_j - I), j = 1..J-1."""
    return np.ascontiguousarray(np.transpose(np.asarray(model.posedirs), (2, 0, 1)), dtype=np.float32)


def rodrigues(axis_angle: np.ndarray) -> np.ndarray:
    """(..., 3) axis-angle → (..., 3, 3) rotation matrices (float64)."""
    aa = np.asarray(axis_angle, dtype=np.float64)
    angle = np.linalg.norm(aa, axis=-1, keepdims=True)
    axis = aa / np.maximum(angle, 1e-12)
    x, y, z = axis[..., 0], axis[..., 1], axis[..., 2]
    zero = np.zeros_like(x)
    k = np.stack([zero, -z, y, z, zero, -x, -y, x, zero], axis=-1).reshape(*aa.shape[:-1], 3, 3)
    s, c = np.sin(angle)[..., None], np.cos(angle)[..., None]
    return np.eye(3) + s * k + (1.0 - c) * (k @ k)


def rig_vertices(
    identity: np.ndarray,
    joints: np.ndarray,
    parents: np.ndarray,
    weights: np.ndarray,
    expr_basis: np.ndarray,
    corrective_basis: np.ndarray,
    expressions: np.ndarray,
    jaw: np.ndarray,
) -> np.ndarray:
    """(T, V, 3) float32 = LBS(identity + Σ_e p_e·expr_basis_e + Σ_k feat_k·corrective_basis_k, jaw) about the
    fixed rest ``joints`` (every joint but the jaw (index 2) unrotated). Computed in float64, in blocks."""
    out = np.empty((len(expressions), *identity.shape), dtype=np.float32)
    n_joints = len(parents)
    rest = np.asarray(joints, np.float64)
    flat_expr = np.asarray(expr_basis, np.float64).reshape(len(expr_basis), -1)
    flat_pose = np.asarray(corrective_basis, np.float64).reshape(len(corrective_basis), -1)
    w = np.asarray(weights, np.float64)
    for start in range(0, len(expressions), BLOCK_FRAMES):
        stop = min(start + BLOCK_FRAMES, len(expressions))
        pose = np.zeros((stop - start, n_joints, 3))
        pose[:, 2] = jaw[start:stop]
        local = rodrigues(pose)  # (B, J, 3, 3)
        feature = (local[:, 1:] - np.eye(3)).reshape(stop - start, -1)
        shaped = identity[None].astype(np.float64) + (
            np.asarray(expressions[start:stop], np.float64) @ flat_expr + feature @ flat_pose
        ).reshape(stop - start, *identity.shape)
        world_r, world_t = _chain(local, rest, parents)
        skin_t = world_t - np.einsum("bjik,jk->bji", world_r, rest)
        blended_r = np.einsum("vj,bjik->bvik", w, world_r)
        blended_t = np.einsum("vj,bji->bvi", w, skin_t)
        out[start:stop] = np.einsum("bvik,bvk->bvi", blended_r, shaped) + blended_t
    return out


def _chain(local: np.ndarray, rest: np.ndarray, parents: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World rotation (B, J, 3, 3) and position (B, J, 3) of every joint; parents precede children."""
    rotations, positions = [], []
    for j, parent in enumerate(int(p) for p in parents):
        if parent < 0:
            rotations.append(local[:, j])
            positions.append(np.broadcast_to(rest[j], (len(local), 3)))
            continue
        rotations.append(rotations[parent] @ local[:, j])
        positions.append(np.einsum("bik,k->bi", rotations[parent], rest[j] - rest[parent]) + positions[parent])
    return np.stack(rotations, axis=1), np.stack(positions, axis=1)
