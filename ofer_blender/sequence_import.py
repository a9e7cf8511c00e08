"""Import a sequence result (``ofer-sequence/1``): one head whose FLAME controls play the clip.

The head is built like a photo result's (importer.py: mesh in model coordinates, rig, skinning) with
the clip's identity as the Basis and FLAME's ``Exp1..ExpE`` and ``Pose1..PoseP`` keys (the MPI FLAME
add-on's names, flame_controls.py). Per frame it keyframes those keys, the jaw bone (rotation, and the
location offset that lets the fixed rig turn the jaw about FLAME's expression-dependent joint, flame_rig.py),
the eye bones when the file has the gaze (``frame_eye_pose``) and the head pose: the rig object moves, the
clip's camera stays where frame 1's pose puts it, so the head stands on the grid at the first frame and an
export carries the head's motion. The camera reproduces the clip's pinhole (placement.py) with the clip
behind it. The scene's frame range and frame rate follow the clip.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import bpy
import numpy as np

from ..inference_server.result import EYE_JOINTS
from . import flame_controls, flame_rig, hypotheses, ids, importer, keyframes, placement, skinning

P = ids.OBJECT_DATA_PREFIX
FORMAT = "ofer-sequence/1"  # inference_server.sequence_result.FORMAT (imported lazily with the reader)


class SequenceImportError(RuntimeError):
    """A sequence result that cannot be imported; the message says why and what to do."""


def read_sequence(path: str | os.PathLike[str]) -> Any:
    from ..inference_server.result import ResultFileError
    from ..inference_server.sequence_result import read_sequence_result

    try:
        return read_sequence_result(path)
    except ResultFileError as exc:
        raise SequenceImportError(f"Cannot import the OFER sequence: {exc}") from exc


def import_sequence(context: Any, path: str | os.PathLike[str], *, frame_start: int = 1, name: str = "") -> Any:
    """Read, validate and build; returns the head's mesh object (active and selected)."""
    return build_sequence(context, read_sequence(path), source_path=str(path), frame_start=frame_start, name=name)


def frame_controls(seq: Any) -> dict[str, np.ndarray]:
    """Per frame: Pose key values (T, P), jaw offsets (T, 3) recovered from the file's meshes (on the jaw's
    vertices only: the others do not take part in the offset)."""
    T, J = seq.frame_vertices.shape[0], seq.joints.shape[0]
    jaw = flame_rig.jaw_vertices(seq.skin_weights)
    poses = [flame_rig.jaw_pose(aa, J) for aa in seq.frame_jaw_pose]
    features = np.stack([flame_rig.pose_feature(pose) for pose in poses])
    identity = seq.identity_vertices[0][jaw].astype(np.float64).reshape(-1)
    # one product for all frames: (T, E) @ (E, 3n) + (T, P) @ (P, 3n)
    expression_basis = seq.expression_basis[:, jaw].astype(np.float64).reshape(seq.expression_basis.shape[0], -1)
    pose_basis = seq.pose_basis[:, jaw].astype(np.float64).reshape(seq.pose_basis.shape[0], -1)
    rests = identity + seq.frame_expression_params.astype(np.float64) @ expression_basis + features @ pose_basis
    weights = seq.skin_weights[jaw]
    offsets = [
        flame_rig.jaw_offset(
            rests[t].reshape(-1, 3), seq.frame_vertices[t][jaw], seq.joints, seq.parents, weights, poses[t]
        )
        for t in range(T)
    ]
    return {"features": features, "offsets": np.stack(offsets)}


def build_sequence(context: Any, seq: Any, *, source_path: str, frame_start: int = 1, name: str = "") -> Any:
    if context.mode != "OBJECT":
        raise SequenceImportError("Switch to Object Mode before importing an OFER sequence")
    name = name or f"OFER {Path(source_path).stem}"
    collection = context.collection or context.scene.collection
    created: list[Any] = []
    warnings: list[str] = []
    T = int(seq.frame_vertices.shape[0])
    frames = np.arange(frame_start, frame_start + T, dtype=np.float64)
    try:
        rig = importer._build_rig(context, seq, name, collection, created)
        rig.rotation_mode = "QUATERNION"
        empty = np.zeros((0, seq.template.shape[0], 3), dtype=np.float32)
        plan = hypotheses.ShapeKeyPlan(seq.identity_vertices[0].astype(np.float32), [], empty, [], empty)
        obj = importer._build_mesh(seq, plan, name, created)
        flame_controls.add_direction_keys(obj, plan.basis, (("Exp", seq.expression_basis), ("Pose", seq.pose_basis)))
        importer._add_skinning(obj, rig, seq)
        _store(obj, seq, source_path)
        state = getattr(obj, ids.OBJECT_PROP)
        state.is_result, state.rig, state.source_path = True, rig, str(source_path)
        per_frame = frame_controls(seq)
        _key_controls(obj, rig, seq, per_frame, frames)
        _key_eyes(rig, seq.frame_eye_pose, frames)
        world = _head_motion(rig, seq, frames)
        camera = _build_camera(context, seq, obj, world, source_path, frame_start, created, warnings)
        if camera is not None:
            collection.objects.link(camera)
            context.scene.camera = camera
            state.camera = camera
        obj[P + "import_warnings"] = json.dumps(warnings)
        collection.objects.link(obj)
    except BaseException:
        _remove_actions(created)
        importer._remove(created)
        raise
    _set_timeline(context.scene, seq, frame_start, T)
    for other in context.view_layer.objects:
        other.select_set(False)
    obj.select_set(True)
    context.view_layer.objects.active = obj
    context.scene.frame_set(frame_start)
    return obj


def _remove_actions(created: list[Any]) -> None:
    """The actions the keys made (the rig's, the shape keys'): removing their objects would leave them behind
    as orphans, so a failed import would not leave the file as it found it."""
    objects = [d for d in created if isinstance(d, bpy.types.Object)]
    keys = [o.data.shape_keys for o in objects if isinstance(o.data, bpy.types.Mesh) and o.data.shape_keys]
    owners: list[Any] = [*objects, *keys]
    for owner in owners:
        animation = owner.animation_data
        action = animation.action if animation is not None else None
        if action is not None and action.users <= 1:  # only ever this import's: never another object's
            bpy.data.actions.remove(action)


def _store(obj: Any, seq: Any, source_path: str) -> None:
    obj[P + "format"] = seq.format
    obj[P + "meta_json"] = json.dumps(seq.meta, sort_keys=True)
    obj[P + "source_path"] = str(source_path)
    obj[P + "flame_controls"] = 1  # the jaw is a control: the hypothesis machinery leaves it alone


def _key_controls(obj: Any, rig: Any, seq: Any, per_frame: dict[str, np.ndarray], frames: np.ndarray) -> None:
    blocks = obj.data.shape_keys.key_blocks
    limit = flame_rig.KEY_LIMIT
    for prefix, values in (("Exp", seq.frame_expression_params), ("Pose", per_frame["features"])):
        for i, name in enumerate(flame_rig.shape_key_names(prefix, values.shape[1])):
            keyframes.set_keys(blocks[name], "value", -1, frames, np.clip(values[:, i], -limit, limit))
    if "jaw" not in rig.pose.bones:
        return
    bone = rig.pose.bones["jaw"]
    bone.rotation_mode = "QUATERNION"
    pairs = [
        flame_controls.jaw_bone_values(rig, jaw, d)
        for jaw, d in zip(seq.frame_jaw_pose, per_frame["offsets"], strict=True)
    ]
    quaternions = skinning.continuous_quaternions(np.stack([q for q, _ in pairs]))
    locations = np.stack([loc for _, loc in pairs])
    for axis in range(4):
        keyframes.set_keys(bone, "rotation_quaternion", axis, frames, quaternions[:, axis])
    for axis in range(3):
        keyframes.set_keys(bone, "location", axis, frames, locations[:, axis])


def _key_eyes(rig: Any, frame_eye_pose: np.ndarray | None, frames: np.ndarray) -> None:
    """Keyframe the eye bones with each frame's gaze (left then right eye, FLAME's joints relative to the head).

    Keys rather than the photo import's one pose: the gaze moves through the clip. Without ``frame_eye_pose``
    (no frame's irises could be read) the eye bones keep their rest pose and get no keys.
    """
    if frame_eye_pose is None:
        return
    bones = rig.pose.bones
    per_eye = np.asarray(frame_eye_pose, dtype=np.float64).transpose(1, 0, 2)  # (2, T, 3)
    for joint, axis_angles in zip(EYE_JOINTS, per_eye, strict=True):
        name = importer._joint_name(joint)
        if name not in bones:
            continue
        bone = bones[name]
        bone.rotation_mode = "QUATERNION"
        rotations = np.stack([importer.bone_rotation(rig, name, aa) for aa in axis_angles])
        quaternions = skinning.continuous_quaternions(rotations)
        for axis in range(4):
            keyframes.set_keys(bone, "rotation_quaternion", axis, frames, quaternions[:, axis])


def _head_motion(rig: Any, seq: Any, frames: np.ndarray) -> np.ndarray:
    """Keyframe the rig object with each frame's head pose relative to the fixed camera; returns the
    camera's world matrix (frame 1's pose puts the head on the grid, as a photo import does)."""
    lift = placement.grid_lift(seq.identity_vertices[0])
    camera_world = placement.camera_world_matrix(seq.frame_head_pose[0], placement.rig_matrix(lift))
    placed = [
        placement.matrix_to_location_quaternion(camera_world @ placement.pose_matrix(pose))
        for pose in seq.frame_head_pose
    ]
    locations = np.stack([p[0] for p in placed])
    quaternions = skinning.continuous_quaternions(np.stack([p[1] for p in placed]))
    for axis in range(3):
        keyframes.set_keys(rig, "location", axis, frames, locations[:, axis])
    for axis in range(4):
        keyframes.set_keys(rig, "rotation_quaternion", axis, frames, quaternions[:, axis])
    return camera_world


def _source(seq: Any) -> dict[str, Any]:
    source = seq.meta.get("source")
    return source if isinstance(source, dict) else {}


def _build_camera(
    context: Any,
    seq: Any,
    head: Any,
    world: np.ndarray,
    source_path: str,
    frame_start: int,
    created: list[Any],
    warnings: list[str],
) -> Any:
    source = _source(seq)
    try:
        width, height = int(source["width"]), int(source["height"])
        lens = placement.intrinsics(seq.camera, width, height)
    except (KeyError, TypeError, ValueError) as exc:
        warnings.append(f"The sequence names no usable frame size (meta source width/height: {exc}): no camera made")
        return None
    data: Any = bpy.data.cameras.new(f"{head.name} camera")
    created.append(data)
    data.sensor_fit = "HORIZONTAL"
    data.sensor_width, data.lens = lens.sensor_width_mm, lens.lens_mm
    data.shift_x, data.shift_y = lens.shift_x, lens.shift_y
    data.clip_start, data.clip_end = placement.CLIP_START_M, placement.CLIP_END_M
    camera: Any = bpy.data.objects.new(f"{head.name} camera", data)
    created.append(camera)
    camera.rotation_mode = "QUATERNION"
    location, quaternion = placement.matrix_to_location_quaternion(world)
    camera.location, camera.rotation_quaternion = tuple(location), tuple(quaternion)
    _add_clip(data, seq, source_path, frame_start, created, warnings)
    scene = context.scene
    scene.render.resolution_x, scene.render.resolution_y = lens.width, lens.height
    scene.render.resolution_percentage = 100
    scene.render.pixel_aspect_x = scene.render.pixel_aspect_y = 1.0
    return camera


def _clip_file(seq: Any, source_path: str) -> Path | None:
    """The video, or the folder's first frame (Blender finds the numbered frames after it)."""
    source = _source(seq)
    recorded = Path(str(source.get("path", "")))
    candidates = [recorded, Path(source_path).parent / recorded.name]
    for candidate in candidates:
        if str(source.get("kind")) == "folder" and candidate.is_dir():
            frames = seq.meta.get("frames")
            names = [str(f.get("name", "")) for f in frames if isinstance(f, dict)] if isinstance(frames, list) else []
            first = [candidate / n for n in names if n and (candidate / n).is_file()]
            listed = sorted(p for p in candidate.iterdir() if p.is_file())
            return first[0] if first else (listed[0] if listed else None)
        if candidate.is_file():
            return candidate
    return None


def _add_clip(data: Any, seq: Any, source_path: str, frame_start: int, created: list[Any], warnings: list[str]) -> None:
    path = _clip_file(seq, source_path)
    if path is None:
        warnings.append(
            f"The clip '{_source(seq).get('path', '')}' was not found (nor beside the sequence file): the camera has "
            "no background. Add the clip under the camera's Background Images."
        )
        return
    try:
        clip = bpy.data.movieclips.load(os.fspath(path))
    except RuntimeError as exc:
        warnings.append(f"The clip '{path}' could not be read ({exc}): the camera has no background")
        return
    created.append(clip)
    clip.frame_start = frame_start
    background = data.background_images.new()
    background.source = "MOVIE_CLIP"
    background.clip = clip
    background.frame_method = "STRETCH"
    background.alpha = 1.0
    data.show_background_images = True


def _set_timeline(scene: Any, seq: Any, frame_start: int, n_frames: int) -> None:
    scene.frame_start = frame_start
    scene.frame_end = frame_start + n_frames - 1
    fps = _source(seq).get("fps")
    if isinstance(fps, int | float) and fps > 0:
        scene.render.fps = max(1, round(float(fps)))
        scene.render.fps_base = scene.render.fps / float(fps)  # 29.97 fps: 30 / 1.001


def import_warnings(obj: Any) -> list[str]:
    return importer.import_warnings(obj)
