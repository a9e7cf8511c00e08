"""The photo's gaze (``eye_pose``) on the rig: the evaluated eyeballs are where FLAME's linear blend skinning
puts them, whatever hypothesis is shown. Ground truth is the file's own meshes turned here with numpy,
independently of the add-on; the factory's gaze turns the two eyes by different amounts, so a swapped or
shared eye shows."""

from __future__ import annotations

import importlib
import math
from pathlib import Path

import bpy
import numpy as np
import pytest
from mesh_probe import evaluated_local
from registered import ofer_ops, ofer_state

from inference_server.result import EYE_JOINTS, ReconstructionResult, read_result, write_result

JAW = 2  # FLAME's joint order: root, neck, jaw, left eye, right eye
TURN_TOL = 1e-5  # metres: the rig's float32 rotations against float64 here
SAME_TOL = 1e-6  # metres: what the importer's tests hold an unturned mesh to


def _rodrigues(aa: np.ndarray) -> np.ndarray:
    angle = float(np.linalg.norm(aa))
    if angle == 0.0:
        return np.eye(3)
    k = aa / angle
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + math.sin(angle) * K + (1 - math.cos(angle)) * K @ K


def _turned(vertices: np.ndarray, result: ReconstructionResult) -> np.ndarray:
    """``vertices`` with FLAME's blend for the eye joints added: w_e (R_e − I)(v − j_e) per eye. The other
    joints' share is already in the vertices (root and neck at rest; the jaw shares no vertex with an eye)."""
    assert result.eye_pose is not None
    v = vertices.astype(np.float64)
    w = result.skin_weights.astype(np.float64)
    w = w / w.sum(axis=1, keepdims=True)
    out = v.copy()
    for joint, aa in zip(EYE_JOINTS, result.eye_pose.astype(np.float64), strict=True):
        offset = (v - result.joints[joint].astype(np.float64)) @ (_rodrigues(aa) - np.eye(3)).T
        out += w[:, joint, None] * offset
    return out


def _eye_weighted(result: ReconstructionResult) -> np.ndarray:
    return result.skin_weights[:, list(EYE_JOINTS)].sum(axis=1) > 0


@pytest.fixture
def gaze_file(result_factory, tmp_path) -> Path:
    path = result_factory(tmp_path / "gaze.npz", fit="ok", eye_pose=True)
    result = read_result(path)
    eyes = _eye_weighted(result)
    # what _turned relies on, and what makes the test mean something: eyeballs, not touched by the jaw
    assert eyes.sum() > 100 and not (result.skin_weights[eyes, JAW] > 0).any()
    return path


def _import(path: Path, flame_controls: bool = False):
    assert ofer_ops().import_result(filepath=str(path), flame_controls=flame_controls) == {"FINISHED"}
    return bpy.context.view_layer.objects.active


def _assert_gaze(obj, expected_unturned: np.ndarray, result: ReconstructionResult, what: str) -> None:
    """The evaluated head is ``expected_unturned`` with the eyes turned: eyeballs as skinning turns them,
    every other vertex where the file has it, and the eyes visibly turned (the check can fail)."""
    shown = evaluated_local(obj).astype(np.float64)
    eyes = _eye_weighted(result)
    expected = _turned(expected_unturned, result)
    np.testing.assert_allclose(shown[eyes], expected[eyes], atol=TURN_TOL, err_msg=f"{what}: eyeballs")
    np.testing.assert_allclose(shown[~eyes], expected_unturned[~eyes], atol=SAME_TOL, err_msg=f"{what}: the rest")
    assert np.linalg.norm(shown[eyes] - expected_unturned[eyes], axis=1).max() > 2e-3, f"{what}: eyes not turned"


def test_the_eyes_look_where_the_photo_looked_for_every_hypothesis(addon, gaze_file) -> None:
    result = read_result(gaze_file)
    obj = _import(gaze_file)
    state = ofer_state(obj)
    _assert_gaze(obj, result.identity_vertices[0], result, "imported")
    for m in range(1, result.expression_vertices.shape[0] + 1):
        state.expression = m
        _assert_gaze(obj, result.expression_vertices[m - 1], result, f"EXP {m}")
    state.expression = 0
    for k in range(1, result.identity_vertices.shape[0] + 1):
        state.identity = k  # each eye turns about the rig's joint (identity 1's), as the jaw does
        _assert_gaze(obj, result.identity_vertices[k - 1], result, f"ID {k}")


def test_the_gaze_stays_through_playback_and_a_saved_file(addon, gaze_file, tmp_path) -> None:
    result = read_result(gaze_file)
    assert result.eye_pose is not None
    obj = _import(gaze_file)
    m = int(np.argmax(np.linalg.norm(result.jaw_pose, axis=1))) + 1
    for frame, expression in ((1, 0), (10, m)):
        ofer_state(obj).expression = expression
        obj.keyframe_insert(data_path="ofer.expression", frame=frame)
    blend = tmp_path / "gaze.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.wm.open_mainfile(filepath=str(blend))
    obj = next(o for o in bpy.data.objects if o.type == "MESH")
    np.testing.assert_allclose(np.asarray(obj["ofer_eye_pose"]).reshape(2, 3), result.eye_pose)
    scene = bpy.context.scene
    for frame, unturned in ((10, result.expression_vertices[m - 1]), (1, result.identity_vertices[0])):
        scene.frame_set(frame)
        _assert_gaze(obj, unturned, result, f"frame {frame}")


def test_without_eye_pose_the_eyes_look_ahead_as_before(addon, gaze_file, tmp_path) -> None:
    result = read_result(gaze_file)
    result.eye_pose = None  # what the worker writes when it cannot read the irises
    plain = write_result(tmp_path / "no-gaze.npz", result)
    obj = _import(plain)
    assert "ofer_eye_pose" not in obj
    rig = ofer_state(obj).rig
    for name in ("left_eye", "right_eye"):
        assert tuple(rig.pose.bones[name].rotation_quaternion) == (1.0, 0.0, 0.0, 0.0)
    for m in (0, result.expression_vertices.shape[0]):
        ofer_state(obj).expression = m
        expected = result.identity_vertices[0] if m == 0 else result.expression_vertices[m - 1]
        np.testing.assert_allclose(evaluated_local(obj), expected, atol=SAME_TOL, err_msg=f"EXP {m}")


def test_flame_controls_keep_the_gaze(addon, result_factory, tmp_path) -> None:
    """The eye bones are no FLAME control: setting the controls to a hypothesis or scrolling keeps the gaze, and
    the eyes' Pose keys (Pose19..36) stay 0 — the file's meshes have the eyes at rest."""
    path = result_factory(tmp_path / "controls-gaze.npz", fit="ok", flame_controls=True, eye_pose=True)
    result = read_result(path)
    obj = _import(path, flame_controls=True)
    _assert_gaze(obj, result.expression_vertices[0], result, "imported (controls at hypothesis 1)")
    M = result.expression_vertices.shape[0]
    ofer_state(obj).expression = M
    _assert_gaze(obj, result.expression_vertices[M - 1], result, f"scroller at EXP {M}")
    importlib.import_module(addon.__name__ + ".flame_controls").set_from_hypothesis(obj, 4)
    _assert_gaze(obj, result.expression_vertices[3], result, "controls set to EXP 4")
    blocks = obj.data.shape_keys.key_blocks
    assert all(blocks[f"Pose{i}"].value == 0.0 for i in range(19, 37))


def test_a_failure_while_turning_the_eyes_leaves_nothing(addon, gaze_file, scene_counts, monkeypatch) -> None:
    importer = importlib.import_module(addon.__name__ + ".importer")

    def broken(*args, **kwargs):
        raise RuntimeError("simulated failure while posing the eyes")

    monkeypatch.setattr(importer, "pose_eyes", broken)
    before = scene_counts()
    with pytest.raises(RuntimeError, match="simulated"):
        importer.import_result(bpy.context, gaze_file)
    assert scene_counts() == before
