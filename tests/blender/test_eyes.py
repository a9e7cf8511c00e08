"""The gaze on the rig: the photo's (``eye_pose``) whatever hypothesis is shown, and a sequence's
(``frame_eye_pose``) frame by frame. The evaluated eyeballs are where FLAME's linear blend skinning puts them:
ground truth is the file's own meshes turned here with numpy, independently of the add-on; the factories'
gazes turn the two eyes by different amounts, so a swapped or shared eye shows."""

from __future__ import annotations

import importlib
import itertools
from pathlib import Path

import bpy
import numpy as np
import pytest
from eye_skinning import Head, eye_weighted, turned
from mesh_probe import evaluated_local
from registered import ofer_ops, ofer_state

from inference_server.result import ReconstructionResult, read_result, write_result
from inference_server.sequence_result import SequenceResult, read_sequence_result, write_sequence_result

JAW = 2  # FLAME's joint order: root, neck, jaw, left eye, right eye
TURN_TOL = 1e-5  # metres: the rig's float32 rotations against float64 here
SAME_TOL = 1e-6  # metres: what the importer's tests hold an unturned mesh to
FRAME_TOL = 1e-5  # metres: what the sequence tests hold a frame's mesh to (the jaw's solved offsets)
CLIP_START = 5  # a sequence imported from scene frame 5: clip frame k shows at scene frame 5 + k
CLIP_FRAMES = (0, 5, 11)  # first, middle and last of the factory's 12


def _photo_gaze(result: ReconstructionResult) -> np.ndarray:
    assert result.eye_pose is not None
    return result.eye_pose


def _check_eyeballs(head: Head) -> None:
    """What _turned relies on, and what makes the tests mean something: eyeballs, not touched by the jaw."""
    eyes = eye_weighted(head)
    assert eyes.sum() > 100 and not (head.skin_weights[eyes, JAW] > 0).any()


@pytest.fixture
def gaze_file(result_factory, tmp_path) -> Path:
    path = result_factory(tmp_path / "gaze.npz", fit="ok", eye_pose=True)
    _check_eyeballs(read_result(path))
    return path


def _import(path: Path, flame_controls: bool = False):
    assert ofer_ops().import_result(filepath=str(path), flame_controls=flame_controls) == {"FINISHED"}
    return bpy.context.view_layer.objects.active


def _assert_gaze(
    obj, expected_unturned: np.ndarray, head: Head, eye_pose: np.ndarray, what: str, rest_tol: float = SAME_TOL
) -> np.ndarray:
    """The evaluated head is ``expected_unturned`` with the eyes turned by ``eye_pose``: eyeballs as skinning
    turns them, every other vertex where the file has it (to ``rest_tol``), and the eyes visibly turned (the
    check can fail). Returns the evaluated head (object coordinates)."""
    shown = evaluated_local(obj).astype(np.float64)
    eyes = eye_weighted(head)
    expected = turned(expected_unturned, head, eye_pose)
    np.testing.assert_allclose(shown[eyes], expected[eyes], atol=TURN_TOL, err_msg=f"{what}: eyeballs")
    np.testing.assert_allclose(shown[~eyes], expected_unturned[~eyes], atol=rest_tol, err_msg=f"{what}: the rest")
    assert np.linalg.norm(shown[eyes] - expected_unturned[eyes], axis=1).max() > 2e-3, f"{what}: eyes not turned"
    return shown


def test_the_eyes_look_where_the_photo_looked_for_every_hypothesis(addon, gaze_file) -> None:
    result = read_result(gaze_file)
    gaze = _photo_gaze(result)
    obj = _import(gaze_file)
    state = ofer_state(obj)
    _assert_gaze(obj, result.identity_vertices[0], result, gaze, "imported")
    for m in range(1, result.expression_vertices.shape[0] + 1):
        state.expression = m
        _assert_gaze(obj, result.expression_vertices[m - 1], result, gaze, f"EXP {m}")
    state.expression = 0
    for k in range(1, result.identity_vertices.shape[0] + 1):
        state.identity = k  # each eye turns about the rig's joint (identity 1's), as the jaw does
        _assert_gaze(obj, result.identity_vertices[k - 1], result, gaze, f"ID {k}")


def test_the_panel_says_where_the_eyes_look_or_why_they_rest(addon, gaze_file, result_factory, tmp_path) -> None:
    """The panel's gaze line: the direction the worker read, or its reason for leaving the eyes at rest; none
    for a head without a pose."""
    result = read_result(gaze_file)
    result.meta["gaze"] = {"status": "ok", "reason": "", "eyes_read": ["left", "right"], "yaw_deg": -17.3,
                           "pitch_deg": 4.0}  # fmt: skip
    looked = write_result(tmp_path / "looked.npz", result)
    assert ofer_state(_import(looked)).gaze_note == "Eyes turned to the photo's gaze: 17° to the right, +4° up"
    result.eye_pose = None
    closed = "the right eye is closed; the left eye is closed: the eyes are left at rest"
    result.meta["gaze"] = {"status": "skipped", "reason": closed, "eyes_read": []}
    rested = write_result(tmp_path / "rested.npz", result)
    assert ofer_state(_import(rested)).gaze_note == f"Eyes at rest: {closed}"
    unposed = result_factory(tmp_path / "unposed.npz", fit="untrusted")
    assert ofer_state(_import(unposed)).gaze_note == ""


def test_the_gaze_stays_through_playback_and_a_saved_file(addon, gaze_file, tmp_path) -> None:
    result = read_result(gaze_file)
    gaze = _photo_gaze(result)
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
    np.testing.assert_allclose(np.asarray(obj["ofer_eye_pose"]).reshape(2, 3), gaze)
    scene = bpy.context.scene
    for frame, unturned in ((10, result.expression_vertices[m - 1]), (1, result.identity_vertices[0])):
        scene.frame_set(frame)
        _assert_gaze(obj, unturned, result, gaze, f"frame {frame}")


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
    gaze = _photo_gaze(result)
    obj = _import(path, flame_controls=True)
    _assert_gaze(obj, result.expression_vertices[0], result, gaze, "imported (controls at hypothesis 1)")
    M = result.expression_vertices.shape[0]
    ofer_state(obj).expression = M
    _assert_gaze(obj, result.expression_vertices[M - 1], result, gaze, f"scroller at EXP {M}")
    importlib.import_module(addon.__name__ + ".flame_controls").set_from_hypothesis(obj, 4)
    _assert_gaze(obj, result.expression_vertices[3], result, gaze, "controls set to EXP 4")
    blocks = obj.data.shape_keys.key_blocks
    assert all(blocks[f"Pose{i}"].value == 0.0 for i in range(19, 37))


@pytest.fixture
def gaze_sequence(sequence_factory, tmp_path) -> Path:
    path = sequence_factory(tmp_path / "gaze-sequence.npz", eye_pose=True)
    _check_eyeballs(read_sequence_result(path))
    return path


def _clip_gaze(seq: SequenceResult) -> np.ndarray:
    assert seq.frame_eye_pose is not None
    return seq.frame_eye_pose


def _import_sequence(path: Path):
    assert ofer_ops().import_sequence(filepath=str(path), frame_start=CLIP_START) == {"FINISHED"}
    return bpy.context.view_layer.objects.active


def _eye_curves(addon, rig) -> list:
    curves = importlib.import_module(addon.__name__ + ".keyframes").fcurves(rig)
    return [c for c in curves if c.data_path.startswith(('pose.bones["left_eye"]', 'pose.bones["right_eye"]'))]


def test_the_eyes_follow_the_clips_gaze_frame_by_frame(addon, gaze_sequence) -> None:
    """At each sampled frame the eyeballs are that frame's mesh turned by that frame's gaze, the rest is the
    frame's mesh, and the gaze moves: the eyes' turn differs from frame to frame."""
    seq = read_sequence_result(gaze_sequence)
    gaze = _clip_gaze(seq)
    obj = _import_sequence(gaze_sequence)
    eyes = eye_weighted(seq)
    turns = []
    for k in CLIP_FRAMES:
        bpy.context.scene.frame_set(CLIP_START + k)
        shown = _assert_gaze(obj, seq.frame_vertices[k], seq, gaze[k], f"clip frame {k}", rest_tol=FRAME_TOL)
        turns.append(shown[eyes] - seq.frame_vertices[k][eyes])
    for (a, turn_a), (b, turn_b) in itertools.pairwise(zip(CLIP_FRAMES, turns, strict=True)):
        assert np.linalg.norm(turn_a - turn_b, axis=1).max() > 2e-3, f"the eyes did not move from {a} to {b}"
    T = seq.n_frames
    curves = _eye_curves(addon, ofer_state(obj).rig)
    assert len(curves) == 8  # w x y z of each eye, one key per clip frame
    for curve in curves:
        frames = [point.co[0] for point in curve.keyframe_points]
        assert frames == list(range(CLIP_START, CLIP_START + T)), curve.data_path


def test_a_sequence_without_a_gaze_keeps_the_eyes_at_rest(addon, gaze_sequence, tmp_path) -> None:
    seq = read_sequence_result(gaze_sequence)
    seq.frame_eye_pose = None  # what the worker writes when no frame's irises could be read
    plain = write_sequence_result(tmp_path / "no-gaze-sequence.npz", seq)
    obj = _import_sequence(plain)
    rig = ofer_state(obj).rig
    assert _eye_curves(addon, rig) == []
    for k in CLIP_FRAMES:
        bpy.context.scene.frame_set(CLIP_START + k)
        for name in ("left_eye", "right_eye"):
            assert tuple(rig.pose.bones[name].rotation_quaternion) == (1.0, 0.0, 0.0, 0.0)
        error = float(np.abs(evaluated_local(obj) - seq.frame_vertices[k]).max())
        assert error < FRAME_TOL, f"clip frame {k}: {error} m"


def test_a_failure_while_keying_the_eyes_leaves_nothing(addon, gaze_sequence, scene_counts, monkeypatch) -> None:
    module = importlib.import_module(addon.__name__ + ".sequence_import")

    def broken(*args, **kwargs):
        raise RuntimeError("simulated failure while keying the eyes")

    monkeypatch.setattr(module, "_key_eyes", broken)
    before = scene_counts(), len(bpy.data.actions)
    with pytest.raises(RuntimeError, match="simulated"):
        module.import_sequence(bpy.context, gaze_sequence)
    assert (scene_counts(), len(bpy.data.actions)) == before  # the keys' actions too: the jaw's were made already
