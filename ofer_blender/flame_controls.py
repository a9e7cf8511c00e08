"""FLAME's own controls on an imported head: ``Shape``/``Exp``/``Pose`` keys beside the hypothesis keys.

The import option "FLAME controls" (a result reconstructed with ``flame_controls``) builds:

* **Basis**: the identity minus its ``Shape`` keys (the model's mean plus what the first Sc directions do
  not hold), so the keys at the identity's coefficients give the identity exactly;
* ``Shape1..ShapeSc``, ``Exp1..ExpE``, ``Pose1..Pose36`` (the MPI FLAME add-on's names, range ±10), free to
  edit and keyframe, set to the chosen hypothesis (identity 1, expression 1) — with the jaw bone's rotation
  and the location offset that makes the fixed rig turn the jaw about FLAME's expression-dependent joint
  (flame_rig.py);
* the hypothesis keys, as offsets from that chosen state: with the controls untouched the Identity and
  Expression scrollers (and keyframes on them) show every hypothesis exactly, as on a plain import.

:func:`set_from_hypothesis` puts any hypothesis into the controls (and the scroller to 0).

The eye bones are not among the controls: they hold the photo's gaze (importer.pose_eyes), which no
hypothesis changes, so neither the scrollers nor :func:`set_from_hypothesis` touch them. Their ``Pose``
keys (Pose19..36) stay at 0, as in the file's meshes (the eyes at rest): the gaze turns the eyeballs by
skinning alone, as the worker turns them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from mathutils import Vector

from ..inference_server.result import ReconstructionResult
from . import flame_rig, hypotheses, ids

P = ids.OBJECT_DATA_PREFIX
MISSING = (
    "This result has no FLAME controls (shape, expression and pose bases): reconstruct again with "
    "FLAME controls on (Reconstruct ▸ FLAME controls, or ofer-worker reconstruct --flame-controls)"
)


class FlameControlsError(RuntimeError):
    """The result cannot give FLAME controls; the message says what to do."""


@dataclass(frozen=True)
class ControlPlan:
    keys: hypotheses.ShapeKeyPlan  # hypothesis keys as offsets from the chosen state, over the controls' basis
    shape_basis: np.ndarray  # (Sc, V, 3)
    expression_basis: np.ndarray  # (E, V, 3)
    pose_basis: np.ndarray  # (P, V, 3)
    shape_values: np.ndarray  # (Sc,)
    features: np.ndarray  # (M, P) pose-corrective values of each hypothesis
    offsets: np.ndarray  # (M, 3) jaw bone offset of each hypothesis (rig space)
    chosen: int  # 1-based hypothesis the controls hold at import


def plan_controls(result: ReconstructionResult, chosen: int = 1) -> ControlPlan:
    if result.shape_basis is None or result.expression_basis is None or result.pose_basis is None:
        raise FlameControlsError(MISSING)
    J = result.joints.shape[0]
    shapes = flame_rig.shape_controls(result.identity_vertices[0], result.identity_params[0], result.shape_basis)
    M = result.expression_vertices.shape[0]
    identity = result.identity_vertices[0].astype(np.float64)
    rests, features, offsets = [], [], []
    for m in range(M):
        pose = flame_rig.jaw_pose(result.jaw_pose[m], J)
        feature = flame_rig.pose_feature(pose)
        rest = flame_rig.rest_mesh(
            identity, result.expression_basis, result.expression_params[m], result.pose_basis, feature
        )
        offsets.append(
            flame_rig.jaw_offset(
                rest, result.expression_vertices[m], result.joints, result.parents, result.skin_weights, pose
            )
        )
        rests.append(rest)
        features.append(feature)
    c = min(max(chosen, 1), M) - 1
    pose_c = flame_rig.jaw_pose(result.jaw_pose[c], J)
    args = (result.joints, result.parents, result.skin_weights, pose_c, offsets[c])
    # a hypothesis key moves the chosen state's rest mesh to the mesh that the chosen jaw turns into hypothesis m
    expression_shapes = np.stack(
        [shapes.basis + flame_rig.unpose_with_offset(result.expression_vertices[m], *args) - rests[c] for m in range(M)]
    )
    scores = result.identity_scores
    keys = hypotheses.ShapeKeyPlan(
        basis=shapes.basis.astype(np.float32),
        identity_names=[
            hypotheses.identity_key_name(k, float(scores[k - 1]), float(scores[0])) for k in range(2, len(scores) + 1)
        ],
        identity_shapes=(shapes.basis + (result.identity_vertices[1:] - identity)).astype(np.float32),
        expression_names=[hypotheses.expression_key_name(m) for m in range(1, M + 1)],
        expression_shapes=expression_shapes.astype(np.float32),
    )
    return ControlPlan(
        keys=keys,
        shape_basis=result.shape_basis,
        expression_basis=result.expression_basis,
        pose_basis=result.pose_basis,
        shape_values=shapes.values,
        features=np.stack(features),
        offsets=np.stack(offsets),
        chosen=c + 1,
    )


def add_control_keys(obj: Any, plan: ControlPlan) -> None:
    """``Shape1..``, ``Exp1..``, ``Pose1..`` keys (range ±10) after the hypothesis keys; values 0."""
    groups = (("Shape", plan.shape_basis), ("Exp", plan.expression_basis), ("Pose", plan.pose_basis))
    add_direction_keys(obj, plan.keys.basis, groups)


def add_direction_keys(obj: Any, basis: np.ndarray, groups: tuple[tuple[str, np.ndarray], ...]) -> None:
    """One key per direction, named ``<prefix>1..``: basis + direction, so the value is the coefficient."""
    base = np.asarray(basis, dtype=np.float64)
    for prefix, directions in groups:
        for name, direction in zip(flame_rig.shape_key_names(prefix, directions.shape[0]), directions, strict=True):
            block = obj.shape_key_add(name=name, from_mix=False)
            block.data.foreach_set("co", (base + direction).astype(np.float32).ravel())
            block.slider_min, block.slider_max = -flame_rig.KEY_LIMIT, flame_rig.KEY_LIMIT
            block.value = 0.0


def store(obj: Any, plan: ControlPlan) -> None:
    obj[P + "flame_controls"] = 1
    for key, value in (
        ("shape_values", plan.shape_values),
        ("pose_features", plan.features),
        ("jaw_offset", plan.offsets),
    ):
        obj[P + key] = np.ascontiguousarray(value, dtype=np.float64).ravel()
        obj[P + key + "_shape"] = np.asarray(value.shape, dtype=np.int32)


def has_controls(obj: Any) -> bool:
    return bool(obj.get(P + "flame_controls"))


def _stored(obj: Any, key: str) -> np.ndarray:
    return np.asarray(obj[P + key]).reshape(tuple(int(s) for s in obj[P + key + "_shape"]))


def jaw_bone_values(rig: Any, jaw: np.ndarray, offset: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The jaw pose bone's (quaternion w x y z, location) for a FLAME jaw axis-angle and a rig-space offset."""
    from .importer import bone_rotation

    rest = rig.data.bones["jaw"].matrix_local.to_3x3()
    location = np.asarray(rest.inverted() @ Vector(tuple(float(v) for v in offset)), dtype=np.float64)
    return bone_rotation(rig, "jaw", jaw), location


def set_values(obj: Any, prefix: str, values: np.ndarray) -> None:
    blocks = obj.data.shape_keys.key_blocks
    for name, value in zip(flame_rig.shape_key_names(prefix, len(values)), values, strict=True):
        blocks[name].value = float(np.clip(value, -flame_rig.KEY_LIMIT, flame_rig.KEY_LIMIT))


def set_from_hypothesis(obj: Any, expression: int) -> None:
    """Controls = identity 1 with hypothesis ``expression`` (1-based); the Expression scroller goes to 0."""
    from .importer import stored_array

    if not has_controls(obj):
        raise FlameControlsError(MISSING)
    state = getattr(obj, ids.OBJECT_PROP)
    m = min(max(expression, 1), state.n_expressions) - 1
    set_values(obj, "Shape", _stored(obj, "shape_values"))
    set_values(obj, "Exp", stored_array(obj, "expression_params")[m])
    set_values(obj, "Pose", _stored(obj, "pose_features")[m])
    rig = state.rig
    if rig is not None and "jaw" in rig.pose.bones:
        quaternion, location = jaw_bone_values(rig, stored_array(obj, "jaw_pose")[m], _stored(obj, "jaw_offset")[m])
        bone = rig.pose.bones["jaw"]
        bone.rotation_mode = "QUATERNION"
        bone.rotation_quaternion = tuple(quaternion)
        bone.location = tuple(location)
    state.identity = 1
    state.expression = 0


def result_has_controls(result: ReconstructionResult) -> bool:
    return result.shape_basis is not None


__all__ = ["MISSING", "ControlPlan", "FlameControlsError", "add_control_keys", "plan_controls", "set_from_hypothesis"]
