"""Batched FLAME forward pass in torch: blendshapes, pose correctives, joints, linear blend skinning.

Conventions (FLAME): vertices in metres; ``pose`` is 15 axis-angle values [global, neck, jaw, left eye,
right eye]; pose correctives are ``posedirs`` applied to the flattened (R - I) of joints 1..J-1 (row-major
per joint); shape and expression coefficients beyond those given are zero (DECA/EMOCA give 100 / 50).
Inputs with batch size 1 broadcast against the others, so one identity can be posed with B expressions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .model_data import FlameModelData

__all__ = ["FlameInputError", "FlameLayer", "FlameOutput", "batch_rodrigues"]


class FlameInputError(ValueError):
    """Coefficients or poses with the wrong shape for this FLAME model."""


@dataclass
class FlameOutput:
    vertices: torch.Tensor  # (B, V, 3) metres, posed and translated
    joints: torch.Tensor  # (B, J, 3) posed joint positions (translated)
    landmarks: torch.Tensor | None  # (B, L, 3) when the model has a landmark embedding
    rest_joints: torch.Tensor  # (B, J, 3) joints of the shaped mesh before posing


def _skew(vectors: torch.Tensor) -> torch.Tensor:
    """(N, 3) → (N, 3, 3) cross-product matrices."""
    x, y, z = vectors.unbind(-1)
    zero = torch.zeros_like(x)
    return torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(*vectors.shape[:-1], 3, 3)


def batch_rodrigues(axis_angle: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (..., 3, 3) from axis-angle vectors (..., 3); exact and smooth at angle 0.

    R = I + sin(t)/t K + (1 - cos t)/t^2 K^2 with K the cross-product matrix of the (unnormalised)
    vector; the two factors are written with ``sinc`` (and 1 - cos t = 2 sin^2(t/2)) so that small
    angles lose no precision and need no branch.
    """
    if axis_angle.shape[-1] != 3:
        raise FlameInputError(f"axis-angle vectors must have 3 values in the last dimension, got {axis_angle.shape}")
    angle = torch.linalg.vector_norm(axis_angle, dim=-1, keepdim=True).unsqueeze(-1)  # (..., 1, 1)
    sin_term = torch.sinc(angle / torch.pi)
    cos_term = 0.5 * torch.sinc(angle / (2 * torch.pi)) ** 2
    skew = _skew(axis_angle)
    eye = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device)
    return eye + sin_term * skew + cos_term * (skew @ skew)


class FlameLayer(nn.Module):
    """FLAME as a torch module. Model arrays are buffers (``dtype``, default float32), so ``.to(device)``
    moves everything; inputs are cast to the layer's dtype and device."""

    v_template: torch.Tensor  # (V, 3)
    shapedirs_flat: torch.Tensor  # (K, 3V)
    joint_template: torch.Tensor  # (J, 3)
    joint_dirs_flat: torch.Tensor  # (K, 3J)
    posedirs_flat: torch.Tensor  # (9 (J - 1), 3V)
    weights: torch.Tensor  # (V, J)
    weight_sums: torch.Tensor  # (V,) Σ_j weights
    faces: torch.Tensor  # (F, 3) long
    landmark_vertex_ids: torch.Tensor  # (L, 3) long: the corners of each landmark's triangle
    landmark_bary: torch.Tensor  # (L, 3)

    def __init__(self, data: FlameModelData, *, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        n_vertices, n_joints = data.n_vertices, data.n_joints
        n_columns = data.shapedirs.shape[2]
        if data.n_shape + data.n_expression != n_columns:
            raise FlameInputError(
                f"model data says {data.n_shape} shape + {data.n_expression} expression columns, "
                f"but shapedirs has {n_columns}"
            )
        self.n_shape = int(data.n_shape)
        self.n_expression = int(data.n_expression)
        self.n_vertices = n_vertices
        self.n_joints = n_joints
        self.version = data.version
        self.is_demo = data.is_demo
        self.parents: list[int] = [int(p) for p in data.parents]

        def buffer(name: str, array: np.ndarray, kind: torch.dtype = dtype) -> None:
            self.register_buffer(name, torch.as_tensor(np.ascontiguousarray(array), dtype=kind))

        shapedirs = np.asarray(data.shapedirs, dtype=np.float64)
        j_regressor = np.asarray(data.J_regressor, dtype=np.float64)
        v_template = np.asarray(data.v_template, dtype=np.float64)
        buffer("v_template", v_template)
        # (K, 3V): coefficients @ this = per-vertex offsets, one matmul for a whole batch.
        buffer("shapedirs_flat", shapedirs.reshape(n_vertices * 3, n_columns).T)
        # The joint regressor is linear, so regressing the template and every blendshape once here gives
        # the same joints as regressing each shaped mesh, at a fraction of the cost.
        buffer("joint_template", j_regressor @ v_template)
        buffer(
            "joint_dirs_flat",
            np.einsum("jv,vck->kjc", j_regressor, shapedirs).reshape(n_columns, n_joints * 3),
        )
        n_pose = data.posedirs.shape[2]
        buffer("posedirs_flat", np.asarray(data.posedirs, dtype=np.float64).reshape(n_vertices * 3, n_pose).T)
        buffer("weights", data.weights)
        weights = np.asarray(data.weights, dtype=np.float64)
        # Sparse skinning (``_skin``): each joint's influenced vertices and weights, and the per-vertex sum.
        buffer("weight_sums", weights.sum(axis=1))
        self.unit_weights = bool(torch.all(torch.eq(self.weight_sums, 1.0)))
        for joint in range(n_joints):
            touched = np.flatnonzero(weights[:, joint])
            self.register_buffer(f"skin_vertices_{joint}", torch.as_tensor(touched, dtype=torch.long), persistent=False)
            self.register_buffer(
                f"skin_weights_{joint}", torch.as_tensor(weights[touched, joint], dtype=dtype), persistent=False
            )
        buffer("faces", np.asarray(data.faces, dtype=np.int64), torch.long)
        self.has_landmarks = data.lmk_faces_idx is not None and data.lmk_bary_coords is not None
        if self.has_landmarks:
            assert data.lmk_faces_idx is not None and data.lmk_bary_coords is not None
            buffer("landmark_vertex_ids", np.asarray(data.faces)[data.lmk_faces_idx].astype(np.int64), torch.long)
            buffer("landmark_bary", data.lmk_bary_coords)

    # ------------------------------------------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        return self.v_template.dtype

    @property
    def device(self) -> torch.device:
        return self.v_template.device

    def _as_batch(self, name: str, value: torch.Tensor | None, width: int, exact: bool) -> torch.Tensor | None:
        if value is None:
            return None
        value = torch.as_tensor(value).to(device=self.device, dtype=self.dtype)
        if value.dim() == 1:
            value = value.unsqueeze(0)
        if value.dim() != 2:
            raise FlameInputError(
                f"{name} must have shape (B, {'' if exact else '≤'}{width}), got {tuple(value.shape)}"
            )
        if (exact and value.shape[1] != width) or value.shape[1] > width:
            limit = f"exactly {width}" if exact else f"at most {width}"
            raise FlameInputError(f"{name} has {value.shape[1]} values per sample; this FLAME model takes {limit}")
        return value

    @staticmethod
    def _batch_size(inputs: dict[str, torch.Tensor | None]) -> int:
        sizes = {name: value.shape[0] for name, value in inputs.items() if value is not None}
        batch = max(sizes.values(), default=1)
        wrong = {name: size for name, size in sizes.items() if size not in (1, batch)}
        if wrong:
            raise FlameInputError(f"batch sizes do not match: {sizes} (size 1 broadcasts, others must agree)")
        return batch

    def _padded(self, value: torch.Tensor | None, width: int, batch: int) -> torch.Tensor:
        if value is None:
            return self.v_template.new_zeros(batch, width)
        value = value.expand(batch, -1)
        if value.shape[1] == width:
            return value
        return torch.nn.functional.pad(value, (0, width - value.shape[1]))

    def forward(
        self,
        shape: torch.Tensor | None = None,
        expression: torch.Tensor | None = None,
        pose: torch.Tensor | None = None,
        translation: torch.Tensor | None = None,
    ) -> FlameOutput:
        """shape (B, ≤n_shape), expression (B, ≤n_expression), pose (B, 15) or (B, J, 3) axis-angle,
        translation (B, 3); any may be omitted (zeros) or have batch size 1 (broadcast)."""
        n_pose_values = 3 * self.n_joints
        if pose is not None:
            pose = torch.as_tensor(pose)
            if pose.dim() == 3:
                pose = pose.reshape(pose.shape[0], -1)
        inputs = {
            "shape": self._as_batch("shape", shape, self.n_shape, exact=False),
            "expression": self._as_batch("expression", expression, self.n_expression, exact=False),
            "pose": self._as_batch("pose", pose, n_pose_values, exact=True),
            "translation": self._as_batch("translation", translation, 3, exact=True),
        }
        batch = self._batch_size(inputs)
        full_pose = self._padded(inputs["pose"], n_pose_values, batch)
        offset = self._padded(inputs["translation"], 3, batch)

        # Blendshapes per input at its own batch size, then broadcast: one identity posed with 100
        # expressions costs one shape product, not 100. Coefficients left out multiply zero, so the
        # columns they would use are skipped (same result as zero padding, less work).
        # Each product accumulates into the running sum in one pass (addmm), starting from the template.
        flat_vertices = self.v_template.view(1, -1)
        flat_joints = self.joint_template.view(1, -1)
        for name, first_column in (("shape", 0), ("expression", self.n_shape)):
            given = inputs[name]
            if given is not None:
                columns = slice(first_column, first_column + given.shape[1])
                flat_vertices = torch.addmm(flat_vertices, given, self.shapedirs_flat[columns])
                flat_joints = torch.addmm(flat_joints, given, self.joint_dirs_flat[columns])
        v_shaped = flat_vertices.view(-1, self.n_vertices, 3).expand(batch, -1, -1)
        rest_joints = flat_joints.view(-1, self.n_joints, 3).expand(batch, -1, -1)

        rotations = batch_rodrigues(full_pose.view(batch, self.n_joints, 3))  # (B, J, 3, 3)
        eye = torch.eye(3, dtype=self.dtype, device=self.device)
        v_posed = v_shaped
        if inputs["pose"] is not None:  # a zero pose has zero correctives
            pose_feature = (rotations[:, 1:] - eye).reshape(batch, -1)
            v_posed = torch.addmm(v_shaped.reshape(-1, 3 * self.n_vertices), pose_feature, self.posedirs_flat)
            v_posed = v_posed.view(batch, self.n_vertices, 3)

        world_rotations, world_translations = self._kinematic_chain(rotations, rest_joints)
        # Skinning transform of joint j maps a rest-pose point p to R_j (p - rest_j) + t_j.
        skin_translations = world_translations - (world_rotations @ rest_joints.unsqueeze(-1)).squeeze(-1)
        moving = self._moving_joints(inputs["pose"])
        vertices = self._skin(v_posed, world_rotations, skin_translations, moving)

        vertices = vertices + offset[:, None, :]
        joints = world_translations + offset[:, None, :]
        landmarks = None
        if self.has_landmarks:
            corners = vertices[:, self.landmark_vertex_ids]  # (B, L, 3 corners, 3)
            landmarks = (corners * self.landmark_bary.unsqueeze(-1)).sum(dim=2)
        return FlameOutput(vertices=vertices, joints=joints, landmarks=landmarks, rest_joints=rest_joints)

    def _moving_joints(self, pose: torch.Tensor | None) -> list[int]:
        """Joints whose world transform is not the identity: a non-zero rotation on them or an ancestor.

        Every joint counts as moving when autograd needs the pose's gradient (it is not zero at zero pose).
        """
        if pose is None:
            return []
        if pose.requires_grad and torch.is_grad_enabled():
            return list(range(self.n_joints))
        turned = (pose.reshape(-1, self.n_joints, 3) != 0).any(dim=2).any(dim=0).tolist()
        moving: list[int] = []
        for joint, parent in enumerate(self.parents):  # parents precede children
            if turned[joint] or parent in moving:
                moving.append(joint)
        return moving

    def _skin(
        self, v_posed: torch.Tensor, rotations: torch.Tensor, translations: torch.Tensor, moving: list[int]
    ) -> torch.Tensor:
        """Linear blend skinning Σ_j w_vj (R_j v + t_j), written as (Σ_j w_vj) v + Σ_moving w_vj ((R_j − I) v + t_j).

        The two are the same algebra: a joint at rest (R_j = I, t_j = 0) adds w_vj v, which the weight sum
        already holds. So a neutral head costs one scale of the mesh and an open jaw touches only the
        vertices the jaw weighs, instead of blending a (B, V, 3, 4) transform for every vertex (16 k vertices
        × 100 expressions: 79 MB per pass).
        """
        # Skin weights that sum to exactly 1 in this dtype leave the unmoved part as it is.
        vertices = v_posed.contiguous() if self.unit_weights else v_posed * self.weight_sums.unsqueeze(-1)
        eye = torch.eye(3, dtype=v_posed.dtype, device=v_posed.device)
        for joint in moving:
            index: torch.Tensor = getattr(self, f"skin_vertices_{joint}")
            weight: torch.Tensor = getattr(self, f"skin_weights_{joint}")
            local = v_posed[:, index]  # (B, n_j, 3)
            moved = local @ (rotations[:, joint] - eye).transpose(1, 2) + translations[:, joint].unsqueeze(1)
            vertices = vertices.index_add(1, index, moved * weight.unsqueeze(-1))
        return vertices

    def _kinematic_chain(self, rotations: torch.Tensor, rest_joints: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """World rotation (B, J, 3, 3) and position (B, J, 3) of every joint; parents precede children."""
        world_rotations: list[torch.Tensor] = []
        world_translations: list[torch.Tensor] = []
        for joint, parent in enumerate(self.parents):
            if parent < 0:
                world_rotations.append(rotations[:, joint])
                world_translations.append(rest_joints[:, joint])
                continue
            parent_rotation = world_rotations[parent]
            local_offset = (rest_joints[:, joint] - rest_joints[:, parent]).unsqueeze(-1)
            world_rotations.append(parent_rotation @ rotations[:, joint])
            world_translations.append((parent_rotation @ local_offset).squeeze(-1) + world_translations[parent])
        return torch.stack(world_rotations, dim=1), torch.stack(world_translations, dim=1)

    # ------------------------------------------------------------------------------------------
    def neutral(self, shape: torch.Tensor) -> FlameOutput:
        """Neutral head: shape only (expression, jaw, neck, eyes and global rotation zero)."""
        return self(shape=shape)

    def with_expression(
        self, shape: torch.Tensor, expression: torch.Tensor, jaw: torch.Tensor | None = None
    ) -> FlameOutput:
        """Shape + expression + jaw axis-angle (B, 3); every other pose value zero. A single shape row
        broadcasts over a batch of expressions."""
        if jaw is None:
            return self(shape=shape, expression=expression)
        jaw = torch.as_tensor(jaw).to(device=self.device, dtype=self.dtype)
        if jaw.dim() == 1:
            jaw = jaw.unsqueeze(0)
        if jaw.dim() != 2 or jaw.shape[1] != 3:
            raise FlameInputError(f"jaw must have shape (B, 3), got {tuple(jaw.shape)}")
        pose = jaw.new_zeros(jaw.shape[0], 3 * self.n_joints)
        pose[:, 6:9] = jaw  # [global, neck, jaw, eyes]: the jaw is joint 2
        return self(shape=shape, expression=expression, pose=pose)
