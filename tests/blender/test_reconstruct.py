"""The Reconstruct operator end to end in background mode (synchronous), with the fake worker."""

from __future__ import annotations

import json

import bpy
import numpy as np
import pytest
from registered import ofer_ops, ofer_state

POINTS = [120.0, 140.0, 200.0, 138.0, 160.0, 190.0, 130.0, 240.0, 190.0, 242.0]


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "photo.png"
    image = bpy.data.images.new("photo-src", 320, 400)
    image.filepath_raw = str(path)
    image.file_format = "PNG"
    image.save()
    bpy.data.images.remove(image)
    return bpy.data.images.load(str(path))


def _use_worker(mode: str, command) -> None:
    prefs = bpy.context.preferences.addons["ofer_face"].preferences
    prefs.worker_mode = "COMMAND"
    prefs.worker_command = command(mode)


def test_reconstruct_builds_the_head_and_sends_the_marks(addon, photo, fake_worker_command) -> None:
    _use_worker("normal", fake_worker_command)
    settings = bpy.context.scene.ofer_settings
    settings.image = photo
    settings.preset = "CUSTOM"
    settings.sampler = "ddim"
    settings.steps = 7
    settings.seed = 3
    settings.top_k = 3
    settings.n_expressions = 4
    assert ofer_ops().set_face_marks(image_name=photo.name, kind="POINTS", points=POINTS) == {"FINISHED"}
    assert ofer_ops().reconstruct() == {"FINISHED"}
    heads = [o for o in bpy.data.objects if o.type == "MESH"]
    assert len(heads) == 1 and ofer_state(heads[0]).is_result
    request = json.loads(heads[0]["ofer_meta_json"])["request"]
    assert request["points"] == [POINTS[i : i + 2] for i in range(0, 10, 2)]
    assert request["box"] is None
    assert (request["sampler"], request["steps"], request["seed"], request["top_k"]) == ("ddim", 7, 3, 3)
    assert request["image"] == bpy.path.abspath(photo.filepath)
    assert ofer_state(heads[0]).n_identities == 3 and ofer_state(heads[0]).n_expressions == 4


@pytest.mark.parametrize("preset", [None, "fast", "fidelity"])
def test_the_preset_reaches_the_worker_as_the_cli_sends_it(addon, photo, fake_worker_command, preset) -> None:
    """Default Fast; the worker turns the preset name into its sampler and steps (inference_server/presets.py)."""
    from inference_server.presets import PRESETS, apply_preset
    from inference_server.protocol import Request, parse_reconstruct_args

    _use_worker("normal", fake_worker_command)
    settings = bpy.context.scene.ofer_settings
    settings.image = photo
    settings.sampler = "ddim"  # ignored under a preset
    settings.steps = 7
    if preset is not None:
        settings.preset = preset
    assert ofer_ops().reconstruct() == {"FINISHED"}
    head = next(o for o in bpy.data.objects if o.type == "MESH")
    request = json.loads(head["ofer_meta_json"])["request"]
    expected = preset or "fast"
    assert request["extra"]["preset"] == expected and request["steps"] is None
    sent = Request(id="1", op="reconstruct", args={"image": "x.png", "output": "r.npz", **request["extra"]})
    worker_args = apply_preset(parse_reconstruct_args(sent))
    assert (worker_args.sampler, worker_args.steps) == (PRESETS[expected].sampler, PRESETS[expected].steps)


def test_flame_controls_are_asked_for_and_built(addon, photo, fake_worker_command) -> None:
    _use_worker("normal", fake_worker_command)
    settings = bpy.context.scene.ofer_settings
    settings.image = photo
    settings.flame_controls = True
    assert ofer_ops().reconstruct() == {"FINISHED"}
    head = next(o for o in bpy.data.objects if o.type == "MESH")
    assert json.loads(head["ofer_meta_json"])["request"]["extra"]["flame_controls"] is True
    names = {b.name for b in head.data.shape_keys.key_blocks}
    assert {"Shape1", "Exp1", "Pose36", "EXP 001"} <= names


def test_refine_to_photo_is_asked_for(addon, photo, fake_worker_command) -> None:
    """Off by default (the request carries no such key); ticked, the worker is asked for it."""
    _use_worker("normal", fake_worker_command)
    settings = bpy.context.scene.ofer_settings
    settings.image = photo
    assert ofer_ops().reconstruct() == {"FINISHED"}
    head = next(o for o in bpy.data.objects if o.type == "MESH")
    assert "refine_expression" not in json.loads(head["ofer_meta_json"])["request"]["extra"]
    settings.refine_expression = True
    assert ofer_ops().reconstruct() == {"FINISHED"}
    heads = [o for o in bpy.data.objects if o.type == "MESH" and o is not head]
    assert json.loads(heads[-1]["ofer_meta_json"])["request"]["extra"]["refine_expression"] is True


def test_a_box_reaches_the_worker(addon, photo, fake_worker_command) -> None:
    _use_worker("normal", fake_worker_command)
    ofer_ops().set_face_marks(image_name=photo.name, kind="BOX", box=(50, 60, 250, 330))
    assert ofer_ops().reconstruct(image_name=photo.name) == {"FINISHED"}
    head = next(o for o in bpy.data.objects if o.type == "MESH")
    request = json.loads(head["ofer_meta_json"])["request"]
    assert request["box"] == [50, 60, 250, 330] and request["points"] is None


def test_marks_outside_the_photo_are_refused(addon, photo) -> None:
    with pytest.raises(RuntimeError, match="outside the 320×400 photo"):
        ofer_ops().set_face_marks(image_name=photo.name, kind="POINTS", points=[500.0] * 10)
    assert "ofer_points" not in photo


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("crash", "stopped unexpectedly"),
        ("hang", "sent nothing for 1 s"),
        ("garbage", "not protocol"),
        ("error", "No face was found"),
    ],
)
def test_failing_worker_reports_and_leaves_the_scene_unchanged(
    addon, photo, fake_worker_command, scene_counts, mode, message
) -> None:
    _use_worker(mode, fake_worker_command)
    before = scene_counts()
    with pytest.raises(RuntimeError, match=message) as info:
        ofer_ops().reconstruct(image_name=photo.name, timeout=1.0)
    if mode == "crash":
        assert "simulated crash" in str(info.value)  # the tail of the worker's log
    assert scene_counts() == before


def test_missing_worker_program_is_a_clear_error(addon, photo, scene_counts) -> None:
    prefs = bpy.context.preferences.addons["ofer_face"].preferences
    prefs.worker_mode = "INTERPRETER"
    prefs.worker_python = "/nonexistent/python3"
    before = scene_counts()
    with pytest.raises(RuntimeError, match="does not exist"):
        ofer_ops().reconstruct(image_name=photo.name)
    assert scene_counts() == before


def test_test_worker_reports_the_handshake(addon, fake_worker_command) -> None:
    _use_worker("normal", fake_worker_command)
    assert ofer_ops().test_worker() == {"FINISHED"}
    session = __import__(addon.__name__ + ".session", fromlist=["SESSION"]).SESSION
    assert session.last_hello["worker_version"] == "fake" and session.last_hello["demo"] is True
    assert ofer_ops().release_gpu() == {"FINISHED"}
    assert session.client is None
    np.testing.assert_equal(session.busy, False)
