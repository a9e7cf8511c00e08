"""Animation out: FBX and glTF exports of an animated head, re-imported with Blender's own importers,
keep the keys on the morph targets and on the jaw bone (frame values)."""

from __future__ import annotations

import importlib
from pathlib import Path

import bpy
import numpy as np
import pytest
from registered import ofer_ops

from inference_server.sequence_result import read_sequence_result


def _fcurves(id_data):
    animation = id_data.animation_data
    assert animation is not None and animation.action is not None, f"{id_data.name} has no animation"
    slot = getattr(animation, "action_slot", None)
    if slot is not None:
        from bpy_extras import anim_utils

        # Blender 4.4+ (slotted actions); the stubs are 4.2's
        return anim_utils.action_get_channelbag_for_slot(animation.action, slot).fcurves  # type: ignore[attr-defined]
    return animation.action.fcurves


def _reimport(path: Path, fmt: str):
    bpy.ops.wm.read_factory_settings(use_empty=True)
    if fmt == "FBX":
        bpy.ops.import_scene.fbx(filepath=str(path), anim_offset=0)  # keys where they were written
    else:
        bpy.ops.import_scene.gltf(filepath=str(path))
    (mesh,) = [o for o in bpy.data.objects if o.type == "MESH" and o.data.shape_keys is not None]
    (rig,) = [o for o in bpy.data.objects if o.type == "ARMATURE"]
    return mesh, rig


def _values(fcurves, path: str, index: int, frames) -> np.ndarray:
    fcurve = fcurves.find(path, index=index)
    assert fcurve is not None, f"{path}[{index}] was not kept"
    return np.array([fcurve.evaluate(f) for f in frames])


@pytest.mark.parametrize(("fmt", "suffix"), [("FBX", ".fbx"), ("GLB", ".glb")])
def test_sequence_animation_survives_export(addon, sequence_file, tmp_path, fmt, suffix) -> None:
    seq = read_sequence_result(sequence_file)
    T = seq.frame_vertices.shape[0]
    module = importlib.import_module(addon.__name__ + ".sequence_import")
    head = module.build_sequence(bpy.context, seq, source_path=str(sequence_file))
    frames = range(1, T + 1)
    jaw_before = np.stack([_values(_fcurves(head.ofer.rig), 'pose.bones["jaw"].rotation_quaternion', i, frames)
                           for i in range(4)])  # fmt: skip
    out = tmp_path / f"clip{suffix}"
    assert ofer_ops().export(format=fmt, filepath=str(out)) == {"FINISHED"}
    mesh, rig = _reimport(out, fmt)
    keys = _fcurves(mesh.data.shape_keys)
    for e in (0, 4, 9):
        np.testing.assert_allclose(
            _values(keys, f'key_blocks["Exp{e + 1}"].value', 0, frames), seq.frame_expression_params[:, e], atol=1e-4
        )
    pose_jaw = _values(keys, 'key_blocks["Pose13"].value', 0, frames)  # (R_jaw − I)[1, 0]
    assert np.ptp(pose_jaw) > 1e-3
    jaw_after = np.stack([_values(_fcurves(rig), 'pose.bones["jaw"].rotation_quaternion', i, frames) for i in range(4)])
    np.testing.assert_allclose(np.abs(np.sum(jaw_after * jaw_before, axis=0)), 1.0, atol=1e-4)  # same rotations
    assert np.ptp(jaw_after[1]) > 0.05  # the jaw opens and closes


@pytest.mark.parametrize(("fmt", "suffix"), [("FBX", ".fbx"), ("GLB", ".glb")])
def test_keyframed_scrollers_play_back_in_the_export(addon, result_factory, tmp_path, fmt, suffix) -> None:
    path = result_factory(tmp_path / "r.npz", n_expressions=5, flame_controls=True)  # the quick FLAME-built file
    assert ofer_ops().import_result(filepath=str(path)) == {"FINISHED"}  # a plain head: scrollers drive keys and jaw
    head = bpy.context.view_layer.objects.active
    for frame in range(1, 6):
        head.ofer.expression = frame
        head.keyframe_insert("ofer.expression", frame=frame)
    bpy.context.scene.frame_start, bpy.context.scene.frame_end = 1, 5
    out = tmp_path / f"scroll{suffix}"
    assert ofer_ops().export(format=fmt, filepath=str(out)) == {"FINISHED"}
    mesh, rig = _reimport(out, fmt)
    keys = _fcurves(mesh.data.shape_keys)
    for m in range(1, 6):
        np.testing.assert_allclose(_values(keys, f'key_blocks["EXP {m:03d}"].value', 0, range(1, 6)),
                                   np.eye(5)[m - 1], atol=1e-6)  # fmt: skip
    jaw_x = _values(_fcurves(rig), 'pose.bones["jaw"].rotation_quaternion', 1, range(1, 6))
    assert jaw_x[0] == pytest.approx(0.0, abs=1e-6) and np.ptp(jaw_x) > 0.02  # expression 1 has the jaw closed
