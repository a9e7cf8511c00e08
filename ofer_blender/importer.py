"""Build Blender data from a result file: one rigged mesh whose hypotheses are shape keys.

All vertex data moves through ``foreach_set`` with numpy arrays. The scene is never half-built: the
datablocks are created first (only the rig is linked early, because bones can only be made in Edit Mode),
the mesh object is linked last, and on any failure everything created is removed again.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import bpy
import numpy as np
from mathutils import Quaternion

from ..inference_server.result import EYE_JOINTS, JOINT_NAMES, ReconstructionResult, ResultFileError, read_result
from . import camera_import, drivers, flame_controls, hypotheses, ids, material_import, placement, skinning

BONE_LENGTH = 0.02  # metres; bones point along +Y of the FLAME frame so their rest rotation is the identity
#: FLAME is y-up, Blender z-up: the rig object turns the head upright; mesh data stays in file coordinates.
FLAME_TO_BLENDER = (math.pi / 2, 0.0, 0.0)
P = ids.OBJECT_DATA_PREFIX


class ResultImportError(RuntimeError):
    """A result that cannot be imported; the message says why and what to do."""


def load_result(path: str | os.PathLike[str]) -> ReconstructionResult:
    try:
        return read_result(path)
    except ResultFileError as exc:
        raise ResultImportError(f"Cannot import the OFER result: {exc}") from exc


def import_result(
    context: Any, path: str | os.PathLike[str], name: str = "", *, with_flame_controls: bool = False
) -> bpy.types.Object:
    """Read, validate and build; returns the new mesh object (active and selected).

    What the user should know but that did not stop the import (no photo found, an untrusted fit) is
    in :func:`import_warnings` of the returned object.
    """
    result = load_result(path)
    return build_head(context, result, source_path=str(path), name=name, with_flame_controls=with_flame_controls)


def default_name(result: ReconstructionResult, source_path: str) -> str:
    image = result.meta.get("image")
    stem = Path(str(image.get("path", ""))).stem if isinstance(image, dict) else ""
    return f"OFER {stem or Path(source_path).stem}"


def build_head(
    context: Any,
    result: ReconstructionResult,
    *,
    source_path: str,
    name: str = "",
    with_flame_controls: bool = False,
) -> bpy.types.Object:
    """``with_flame_controls``: FLAME's Shape/Exp/Pose keys beside the hypothesis keys (flame_controls.py)."""
    if context.mode != "OBJECT":
        raise ResultImportError("Switch to Object Mode before importing an OFER result")
    name = name or default_name(result, source_path)
    controls = None
    if with_flame_controls:
        try:
            controls = flame_controls.plan_controls(result)
        except flame_controls.FlameControlsError as exc:
            raise ResultImportError(str(exc)) from None
    plan = hypotheses.plan_shape_keys(result) if controls is None else controls.keys
    collection = context.collection or context.scene.collection
    created: list[Any] = []
    warnings = fit_warnings(result)
    try:
        rig = _build_rig(context, result, name, collection, created)
        lift = placement.grid_lift(result.identity_vertices[0])
        rig.location = (0.0, 0.0, lift)  # stands on the grid facing −Y (placement.py says why)
        obj = _build_mesh(result, plan, name, created)
        if controls is not None:
            flame_controls.add_control_keys(obj, controls)
            flame_controls.store(obj, controls)
        _add_skinning(obj, rig, result)
        _store_data(obj, result, source_path)
        mesh_data: Any = obj.data
        _add_spread_colours(mesh_data, result)
        material_import.build_material(obj, result, source_path, created, warnings)
        state = getattr(obj, ids.OBJECT_PROP)
        state.is_result = True
        state.rig = rig
        state.n_identities = int(result.identity_vertices.shape[0])
        state.n_expressions = int(result.expression_vertices.shape[0])
        state.source_path = str(source_path)
        state.fit_note = fit_note(result)
        state.gaze_note = gaze_note(result)
        best = float(result.identity_scores[0])
        for k, score in enumerate(result.identity_scores, start=1):
            item = state.identities.add()
            item.name = f"ID {k:02d}"
            item.score = float(score)
            item.relative = float(score) / best if best > 0 else 0.0
        _add_drivers(obj, rig, plan, jaw=controls is None)  # with FLAME controls the jaw is a control
        pose_eyes(rig, result.eye_pose)
        camera = camera_import.build_camera(
            context, result, obj, placement.rig_matrix(lift), source_path, created, warnings
        )
        if camera is not None:
            collection.objects.link(camera)
            context.scene.camera = camera
            state.camera = camera
        obj[P + "import_warnings"] = json.dumps(warnings)
        collection.objects.link(obj)  # the last step: before this the scene holds no half-built head
        apply_hypothesis(obj)
        if controls is not None:
            flame_controls.set_from_hypothesis(obj, controls.chosen)
    except BaseException:
        _remove(created)
        raise
    for other in context.view_layer.objects:
        other.select_set(False)
    obj.select_set(True)
    context.view_layer.objects.active = obj
    return obj


def fit_note(result: ReconstructionResult) -> str:
    """One line for the panel: how the head was placed on the photo, or why it was not."""
    raw = result.meta.get("fit")
    fit: dict[str, Any] = raw if isinstance(raw, dict) else {}
    if fit.get("status") == "untrusted":
        return f"Not placed on the photo: {fit.get('reason') or 'the fit was not trusted'}"
    if fit.get("status") == "skipped":  # the worker was asked for no fit (ofer-worker --no-fit)
        return f"Not placed on the photo: {fit.get('reason') or 'the fit was skipped'}"
    if result.head_pose is not None and result.camera is not None:
        error = fit.get("reprojection_px")
        return "On the photo" + (f" (landmarks {float(error):.1f} px off)" if isinstance(error, int | float) else "")
    return "No camera in the result: the head stands on the grid"


def gaze_note(result: ReconstructionResult) -> str:
    """One line for the panel: where the eye bones look, or why they stay at rest ("" without a fit)."""
    raw = result.meta.get("gaze")
    gaze: dict[str, Any] = raw if isinstance(raw, dict) else {}
    if result.eye_pose is not None:
        yaw, pitch = float(gaze.get("yaw_deg", 0.0)), float(gaze.get("pitch_deg", 0.0))
        side = "left" if yaw >= 0 else "right"
        return f"Eyes turned to the photo's gaze: {abs(yaw):.0f}° to the {side}, {pitch:+.0f}° up"
    if gaze.get("status") == "skipped" and result.head_pose is not None:
        reason = gaze.get("reason") or "the photo's eyes could not be read"
        return f"Eyes at rest: {reason}"
    return ""


def fit_warnings(result: ReconstructionResult) -> list[str]:
    """The result's own warnings (``meta["warnings"]``) and an untrusted fit, as messages."""
    out: list[str] = []
    raw = result.meta.get("warnings")
    for item in raw if isinstance(raw, list) else []:
        message = item.get("message") if isinstance(item, dict) else item
        if message:
            out.append(str(message))
    fit = result.meta.get("fit")
    if isinstance(fit, dict) and fit.get("status") == "untrusted":
        reason = str(fit.get("reason") or "")
        if not reason or not any(reason in m for m in out):  # the worker's own warning may say it already
            out.append(fit_note(result))
    return out


def import_warnings(obj: bpy.types.Object) -> list[str]:
    """What the import of ``obj`` warned about (kept with the object in a saved .blend)."""
    raw: Any = obj.get(P + "import_warnings")  # type: ignore[func-returns-value]
    return [str(m) for m in json.loads(raw)] if isinstance(raw, str) else []


def _add_drivers(obj: bpy.types.Object, rig: bpy.types.Object, plan: hypotheses.ShapeKeyPlan, *, jaw: bool) -> None:
    """Shape keys and the jaw follow Identity/Expression through drivers, so keyframes on them play back."""
    mesh: Any = obj.data
    blocks = mesh.shape_keys.key_blocks
    for number, key_name in enumerate(plan.identity_names, start=2):
        drivers.drive_switch(blocks[key_name], obj, "identity", number)
    for number, key_name in enumerate(plan.expression_names, start=1):
        drivers.drive_switch(blocks[key_name], obj, "expression", number)
    pose: Any = rig.pose
    if not jaw or "jaw" not in pose.bones:
        return
    jaw_pose = np.asarray(obj[P + "jaw_pose"]).reshape(-1, 3)
    table = np.stack([bone_rotation(rig, "jaw", aa) for aa in np.vstack([np.zeros((1, 3)), jaw_pose])])
    for axis in range(4):
        drivers.drive_table(pose.bones["jaw"], "rotation_quaternion", axis, obj, "expression", table[:, axis])


def _remove(created: list[Any]) -> None:
    for datablock in reversed(created):  # objects were appended after their data: remove them first
        if isinstance(datablock, bpy.types.Object):
            bpy.data.objects.remove(datablock)
        elif isinstance(datablock, bpy.types.Mesh):
            bpy.data.meshes.remove(datablock)
        elif isinstance(datablock, bpy.types.Armature):
            bpy.data.armatures.remove(datablock)
        elif isinstance(datablock, bpy.types.Camera):
            bpy.data.cameras.remove(datablock)
        elif isinstance(datablock, bpy.types.Material):
            bpy.data.materials.remove(datablock)
        elif isinstance(datablock, bpy.types.Image):
            bpy.data.images.remove(datablock)
        elif isinstance(datablock, bpy.types.MovieClip):
            bpy.data.movieclips.remove(datablock)


def _build_rig(
    context: Any,
    result: ReconstructionResult,
    name: str,
    collection: bpy.types.Collection,
    created: list[Any],
) -> bpy.types.Object:
    armature = bpy.data.armatures.new(f"{name} rig")
    created.append(armature)
    rig = bpy.data.objects.new(f"{name} rig", armature)
    created.append(rig)
    rig.rotation_euler = FLAME_TO_BLENDER
    armature.display_type = "STICK"
    collection.objects.link(rig)
    view_layer = context.view_layer
    previous = view_layer.objects.active
    view_layer.objects.active = rig
    try:
        bpy.ops.object.mode_set(mode="EDIT")
        bones: list[Any] = []
        for j, joint in enumerate(result.joints.astype(np.float64)):
            bone = armature.edit_bones.new(_joint_name(j))
            bone.head = tuple(joint)
            bone.tail = (joint[0], joint[1] + BONE_LENGTH, joint[2])
            bone.roll = 0.0
            parent = int(result.parents[j])
            if parent >= 0:
                bone.parent = bones[parent]
            bones.append(bone)
    finally:
        if rig.mode != "OBJECT":
            bpy.ops.object.mode_set(mode="OBJECT")
        view_layer.objects.active = previous
    pose: Any = rig.pose
    for pose_bone in pose.bones:
        pose_bone.rotation_mode = "QUATERNION"
    return rig


def _joint_name(j: int) -> str:
    return JOINT_NAMES[j] if j < len(JOINT_NAMES) else f"joint_{j}"


def _build_mesh(result: ReconstructionResult, plan: hypotheses.ShapeKeyPlan, name: str, created: list[Any]) -> Any:
    faces = result.faces.astype(np.int32)
    F = faces.shape[0]
    mesh = bpy.data.meshes.new(name)
    created.append(mesh)
    mesh.vertices.add(plan.basis.shape[0])
    mesh.vertices.foreach_set("co", plan.basis.ravel())
    mesh.loops.add(3 * F)
    mesh.loops.foreach_set("vertex_index", faces.ravel())
    mesh.polygons.add(F)
    mesh.polygons.foreach_set("loop_start", np.arange(0, 3 * F, 3, dtype=np.int32))
    if result.uv is not None and result.uv_faces is not None:
        layer = mesh.uv_layers.new(name="UVMap")
        layer.data.foreach_set("uv", result.uv[result.uv_faces.ravel()].astype(np.float32).ravel())
    mesh.update(calc_edges=True)
    if mesh.validate(verbose=False):
        raise ResultImportError("The result's triangles are not a valid mesh (Blender had to repair them)")
    mesh.polygons.foreach_set("use_smooth", np.ones(F, dtype=bool))
    obj = bpy.data.objects.new(name, mesh)
    created.append(obj)
    basis = obj.shape_key_add(name="Basis", from_mix=False)
    basis.data.foreach_set("co", plan.basis.ravel())
    for key_name, shape in [
        *zip(plan.identity_names, plan.identity_shapes, strict=True),
        *zip(plan.expression_names, plan.expression_shapes, strict=True),
    ]:
        block = obj.shape_key_add(name=key_name, from_mix=False)
        block.data.foreach_set("co", shape.ravel())
        block.slider_min = hypotheses.KEY_SLIDER_MIN
        block.slider_max = hypotheses.KEY_SLIDER_MAX
        block.value = 0.0
    return obj


def _add_skinning(obj: bpy.types.Object, rig: bpy.types.Object, result: ReconstructionResult) -> None:
    weights = result.skin_weights
    for j in range(weights.shape[1]):
        group = obj.vertex_groups.new(name=_joint_name(j))
        column = weights[:, j]
        (nonzero,) = np.nonzero(column > 0)
        # vertex_groups.add takes one weight per call: group the vertices by equal weight instead of one
        # call per vertex (a handful of calls for FLAME's piecewise-constant weights)
        values, inverse = np.unique(column[nonzero], return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        splits = np.cumsum(np.bincount(inverse, minlength=len(values)))[:-1]
        for value, members in zip(values, np.split(nonzero[order], splits), strict=True):
            group.add(members.tolist(), float(value), "REPLACE")
    modifier: Any = obj.modifiers.new(name="Armature", type="ARMATURE")
    modifier.object = rig
    modifier.use_vertex_groups = True
    modifier.use_deform_preserve_volume = False
    obj.parent = rig


def _store_data(obj: bpy.types.Object, result: ReconstructionResult, source_path: str) -> None:
    """Metadata and parameters as custom properties, so a saved .blend keeps everything."""
    obj[P + "format"] = result.format
    obj[P + "meta_json"] = json.dumps(result.meta, sort_keys=True)
    obj[P + "source_path"] = str(source_path)
    for key in ("identity_params", "identity_scores", "expression_params", "jaw_pose", "joints", "parents"):
        value = np.ascontiguousarray(getattr(result, key))
        obj[P + key] = value.ravel()
        obj[P + key + "_shape"] = np.asarray(value.shape, dtype=np.int32)
    for key in ("head_pose", "camera", "eye_pose"):  # fixed shapes (the contract's): stored flat
        value = getattr(result, key)
        if value is not None:
            obj[P + key] = np.asarray(value, dtype=np.float32).ravel()


def stored_array(obj: bpy.types.Object, key: str) -> np.ndarray:
    """An array stored by the importer, with its shape restored."""
    flat = np.asarray(obj[P + key])
    shape = tuple(int(s) for s in obj[P + key + "_shape"])
    return flat.reshape(shape)


def _spread_colours(spread: np.ndarray) -> np.ndarray:
    """Blue (low) → red (high), normalised by the largest spread; RGBA per vertex."""
    top = float(spread.max())
    t = spread / top if top > 0 else np.zeros_like(spread)
    return np.stack([t, 0.2 * (1 - np.abs(2 * t - 1)), 1 - t, np.ones_like(t)], axis=1).astype(np.float32)


def _add_spread_colours(mesh: bpy.types.Mesh, result: ReconstructionResult) -> None:
    for name, spread in (
        (ids.COLOR_SPREAD_IDENTITY, result.spread_identity),
        (ids.COLOR_SPREAD_EXPRESSION, result.spread_expression),
    ):
        raw: Any = mesh.attributes.new(name=name.lower().replace(" ", "_") + "_m", type="FLOAT", domain="POINT")
        raw.data.foreach_set("value", spread.astype(np.float32))
        colour: Any = mesh.color_attributes.new(name=name, type="FLOAT_COLOR", domain="POINT")
        colour.data.foreach_set("color", _spread_colours(spread).ravel())


def show_spread(obj: Any, mode: str) -> None:
    """Make the chosen spread the active colour attribute (the viewport's Attribute colour shows it)."""
    mesh = obj.data
    if not isinstance(mesh, bpy.types.Mesh):
        return
    attributes: Any = mesh.color_attributes
    name = {"IDENTITY": ids.COLOR_SPREAD_IDENTITY, "EXPRESSION": ids.COLOR_SPREAD_EXPRESSION}.get(mode)
    if name is not None and name in attributes:
        attributes.active_color_name = name
        attributes.render_color_index = attributes.active_color_index


def apply_hypothesis(obj: Any) -> None:
    """Set the shape keys and the jaw bone for the object's Identity and Expression properties."""
    state = getattr(obj, ids.OBJECT_PROP)
    if not state.is_result or obj.data.shape_keys is None:
        return
    if state.identity > state.n_identities:
        state.identity = state.n_identities  # re-enters with a valid value
        return
    if state.expression > state.n_expressions:
        state.expression = state.n_expressions
        return
    id_values, exp_values = hypotheses.key_values(
        state.identity, state.expression, state.n_identities, state.n_expressions
    )
    blocks = obj.data.shape_keys.key_blocks
    by_prefix = {block.name.split(" (")[0] + " ": block for block in blocks}
    for number, value in enumerate(id_values, start=2):
        block = by_prefix.get(hypotheses.identity_key_prefix(number))
        if block is not None:
            block.value = float(value)
    for number, value in enumerate(exp_values, start=1):
        block = blocks.get(hypotheses.expression_key_name(number))
        if block is not None:
            block.value = float(value)
    pose_jaw(obj, state.expression)
    place_camera(obj, state.expression)


def pose_jaw(obj: Any, expression: int) -> None:
    """Pose the rig's jaw bone with the jaw rotation of ``expression`` (0: rest)."""
    state = getattr(obj, ids.OBJECT_PROP)
    rig = state.rig
    if rig is None or "jaw" not in rig.pose.bones or flame_controls.has_controls(obj):
        return  # with FLAME controls the jaw bone is one of them: the hypothesis keys allow for its pose
    jaw_pose = stored_array(obj, "jaw_pose")
    axis_angle = jaw_pose[expression - 1] if 0 < expression <= len(jaw_pose) else np.zeros(3)
    bone = rig.pose.bones["jaw"]
    bone.rotation_mode = "QUATERNION"
    bone.rotation_quaternion = tuple(bone_rotation(rig, "jaw", axis_angle))


def bone_rotation(rig: Any, bone: str, axis_angle: np.ndarray) -> np.ndarray:
    """The pose bone ``bone``'s local quaternion (w, x, y, z) for a FLAME joint rotation (axis-angle)."""
    # FLAME's rotation is in the rig's (armature) space about the joint; a pose bone rotates in its own
    # rest frame, so conjugate by the bone's rest orientation (the identity for bones built here)
    world = Quaternion(tuple(skinning.axis_angle_to_quaternion(axis_angle))).to_matrix()
    rest = rig.data.bones[bone].matrix_local.to_3x3()
    return np.asarray((rest.inverted() @ world @ rest).to_quaternion(), dtype=np.float64)


def pose_eyes(rig: Any, eye_pose: np.ndarray | None) -> None:
    """Turn the eye bones to the photo's gaze (``eye_pose``: the left then the right eye, as FLAME's joints).

    Set once, not driven: the gaze is the photo's, whatever hypothesis is shown, and the bones stay free to
    turn or keyframe by hand. Without ``eye_pose`` the eyes keep their rest pose (looking straight ahead).
    """
    if eye_pose is None:
        return
    bones = rig.pose.bones
    for joint, axis_angle in zip(EYE_JOINTS, np.asarray(eye_pose, dtype=np.float64), strict=True):
        name = _joint_name(joint)
        if name in bones:
            bones[name].rotation_mode = "QUATERNION"
            bones[name].rotation_quaternion = tuple(bone_rotation(rig, name, axis_angle))


def place_camera(obj: Any, expression: int) -> None:
    """Move the photo camera to the pose of ``expression`` (what its drivers do during playback)."""
    state = getattr(obj, ids.OBJECT_PROP)
    camera = state.camera
    if camera is None or camera.animation_data is None:
        return
    for fcurve in camera.animation_data.drivers:
        if fcurve.data_path in ("location", "rotation_quaternion"):
            getattr(camera, fcurve.data_path)[fcurve.array_index] = fcurve.evaluate(float(expression))


def evaluated_vertices(obj: bpy.types.Object, depsgraph: bpy.types.Depsgraph) -> np.ndarray:
    """(V, 3) positions of the evaluated mesh in the object's own coordinates (shape keys + rig)."""
    evaluated = obj.evaluated_get(depsgraph)
    mesh = evaluated.to_mesh()
    try:
        out = np.empty(len(mesh.vertices) * 3, dtype=np.float32)
        mesh.vertices.foreach_get("co", out)
    finally:
        evaluated.to_mesh_clear()
    return out.reshape(-1, 3)
