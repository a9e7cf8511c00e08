"""Linear blend skinning with FLAME's conventions, in numpy (no bpy).

FLAME joints have the identity rest rotation in world space, and a pose is one axis-angle vector per
joint, relative to its parent. Blender's Armature modifier computes the same linear blend (weights
normalised per vertex), so a shape posed here and the same shape posed by the rig agree to float
precision. :func:`unpose` inverts the blend per vertex; the importer uses it to store expressions in the
rig's rest space so that posing the jaw bone brings back exactly the worker's mesh.
"""

from __future__ import annotations

import numpy as np


def axis_angle_to_matrix(axis_angle: np.ndarray) -> np.ndarray:
    """Rodrigues' formula for (..., 3) axis-angle vectors → (..., 3, 3) rotation matrices."""
    aa = np.asarray(axis_angle, dtype=np.float64)
    angle = np.linalg.norm(aa, axis=-1, keepdims=True)
    safe = np.where(angle > 1e-12, angle, 1.0)
    axis = aa / safe
    x, y, z = axis[..., 0], axis[..., 1], axis[..., 2]
    zero = np.zeros_like(x)
    K = np.stack([zero, -z, y, z, zero, -x, -y, x, zero], axis=-1).reshape(*aa.shape[:-1], 3, 3)
    s = np.sin(angle)[..., None]
    c = np.cos(angle)[..., None]
    eye = np.broadcast_to(np.eye(3), K.shape)
    R = eye + s * K + (1.0 - c) * (K @ K)
    return np.where((angle > 1e-12)[..., None], R, eye)


def axis_angle_to_quaternion(axis_angle: np.ndarray) -> np.ndarray:
    """One axis-angle vector → unit quaternion (w, x, y, z), Blender's component order."""
    aa = np.asarray(axis_angle, dtype=np.float64).reshape(3)
    angle = float(np.linalg.norm(aa))
    if angle < 1e-12:
        return np.array([1.0, 0.0, 0.0, 0.0])
    axis = aa / angle
    return np.concatenate([[np.cos(angle / 2.0)], np.sin(angle / 2.0) * axis])


def continuous_quaternions(quaternions: np.ndarray) -> np.ndarray:
    """(N, 4) with signs flipped so neighbours agree: q and −q are one rotation, but keys or a driver table
    interpolated across a flip swing the long way round."""
    out = np.array(quaternions, dtype=np.float64)
    for i in range(1, len(out)):
        if float(out[i] @ out[i - 1]) < 0:
            out[i] = -out[i]
    return out


def joint_transforms(joints: np.ndarray, parents: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """(J, 3, 4) transforms taking a rest-space point to its posed position for each joint."""
    joints = np.asarray(joints, dtype=np.float64)
    rotations = axis_angle_to_matrix(np.asarray(pose, dtype=np.float64).reshape(-1, 3))
    J = joints.shape[0]
    world = np.zeros((J, 4, 4))
    for j in range(J):  # J is 5: a loop over joints, never over vertices
        local = np.eye(4)
        local[:3, :3] = rotations[j]
        parent = int(parents[j])
        local[:3, 3] = joints[j] - (joints[parent] if parent >= 0 else 0.0)
        world[j] = local if parent < 0 else world[parent] @ local
    relative = world.copy()
    relative[:, :3, 3] -= np.einsum("jab,jb->ja", world[:, :3, :3], joints)
    return relative[:, :3, :]


def blended_transforms(weights: np.ndarray, transforms: np.ndarray) -> np.ndarray:
    """(V, 3, 4) per-vertex blend of the joint transforms, weights normalised like Blender does."""
    w = np.asarray(weights, dtype=np.float64)
    total = w.sum(axis=1, keepdims=True)
    w = np.where(total > 0, w / np.where(total > 0, total, 1.0), 0.0)
    blended = np.einsum("vj,jab->vab", w, transforms)
    unweighted = total[:, 0] <= 0  # Blender leaves vertices without weights where they are
    blended[unweighted] = np.hstack([np.eye(3), np.zeros((3, 1))])
    return blended


def lbs(rest: np.ndarray, joints: np.ndarray, parents: np.ndarray, weights: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """Pose rest-space vertices (V, 3)."""
    M = blended_transforms(weights, joint_transforms(joints, parents, pose))
    return np.einsum("vab,vb->va", M[:, :, :3], np.asarray(rest, dtype=np.float64)) + M[:, :, 3]


def unpose(
    posed: np.ndarray, joints: np.ndarray, parents: np.ndarray, weights: np.ndarray, pose: np.ndarray
) -> np.ndarray:
    """The rest-space vertices that :func:`lbs` maps onto ``posed`` (exact inverse of the blend)."""
    M = blended_transforms(weights, joint_transforms(joints, parents, pose))
    rhs = np.asarray(posed, dtype=np.float64) - M[:, :, 3]
    return np.linalg.solve(M[:, :, :3], rhs[..., None])[..., 0]
