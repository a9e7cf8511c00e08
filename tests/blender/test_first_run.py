"""A fresh install with untouched preferences: Reconstruct says which preference to set and which button to
press; creating the environment respects online access; a failed install leaves a broken environment that
Remove deletes."""

from __future__ import annotations

import importlib
import os
import sys
import tempfile
from pathlib import Path

import bpy
import pytest
from registered import ofer_ops

SAMPLE = Path(__file__).resolve().parents[2] / "inference_server" / "assets" / "sample_occluded_face.jpg"


@pytest.fixture
def fresh_user_folder(monkeypatch, tmp_path) -> Path:
    """The add-on's user folder (outside Blender's extension system it lives in the temp folder) made empty."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.delenv("OFER_ALLOW_ONLINE", raising=False)
    # This machine's pip configuration adds a local wheel folder to every install; an offline studio's would not.
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    return tmp_path / "ofer_face"


def _module(addon, name: str):
    return importlib.import_module(f"{addon.__name__}.{name}")


def test_reconstruct_without_a_worker_names_the_preference_and_the_button(addon, fresh_user_folder, scene_counts):
    session = _module(addon, "session").SESSION
    prefs = bpy.context.preferences.addons["ofer_face"].preferences
    assert prefs.worker_mode == "MANAGED" and prefs.worker_python == ""
    before = scene_counts()
    with pytest.raises(RuntimeError, match="No worker environment yet"):
        ofer_ops().reconstruct(image_path=str(SAMPLE))
    message = session.last_report
    assert "No worker environment yet" in message
    assert "Edit ▸ Preferences ▸ Add-ons ▸ OFER Face Reconstruction" in message
    assert "'Create Managed Environment'" in message and "'Worker Python'" in message
    assert session.client is None and scene_counts() == before  # nothing started, nothing built

    prefs.worker_mode = "INTERPRETER"
    with pytest.raises(RuntimeError, match="No worker Python is set"):
        ofer_ops().reconstruct(image_path=str(SAMPLE))
    assert "'Create Managed Environment'" in session.last_report
    with pytest.raises(RuntimeError, match="No worker Python is set"):
        ofer_ops().test_worker()


def test_creating_the_environment_needs_online_access_or_a_wheel_folder(addon, fresh_user_folder) -> None:
    session = _module(addon, "session").SESSION
    prefs = bpy.context.preferences.addons["ofer_face"].preferences
    with pytest.raises(RuntimeError, match="online access is off"):
        ofer_ops().create_managed_env()
    assert "Allow Online Access" in session.last_report and "Local wheel folder" in session.last_report
    assert not (fresh_user_folder / "worker_env" / "bin").exists()

    # An empty wheel folder: the environment is created, the torch step fails offline (no index consulted),
    # Reconstruct then asks for Repair, and Remove deletes the half-made environment.
    wheels = fresh_user_folder.parent / "wheels"
    wheels.mkdir()
    prefs.wheel_dir, prefs.torch_choice = str(wheels), "CPU"
    with pytest.raises(RuntimeError, match="Installing torch"):
        ofer_ops().create_managed_env()
    builder = session.env_builder
    assert builder.state == "failed" and builder.step == 1 and builder.error.startswith("'Installing torch (CPU build")
    log = (fresh_user_folder / "logs" / "managed_env.log").read_text()
    assert "--no-index --find-links " + str(wheels) in log and "No matching distribution found for torch" in log
    env = _module(addon, "managed_env")
    env_dir = fresh_user_folder / "worker_env"
    assert env.env_state(env_dir) == "broken"
    with pytest.raises(RuntimeError, match="incomplete"):
        ofer_ops().reconstruct(image_path=str(SAMPLE))
    assert "Repair" in session.last_report
    assert ofer_ops().remove_managed_env() == {"FINISHED"}
    assert env.env_state(env_dir) == "missing"


class RecordingLayout:
    """Stands in for a UILayout: records what draw code shows (labels, operators, progress)."""

    def __init__(self, log: list[tuple[str, str]] | None = None) -> None:
        self.log = [] if log is None else log

    def _child(self, *args, **kwargs) -> RecordingLayout:
        return RecordingLayout(self.log)

    box = row = column = _child

    def label(self, text: str = "", **kwargs) -> None:
        self.log.append(("label", text))

    def operator(self, idname: str, text: str = "", **kwargs):
        self.log.append(("operator", idname))
        return type("Props", (), {})()

    def progress(self, text: str = "", **kwargs) -> None:
        self.log.append(("progress", text))

    def prop(self, data, name: str, **kwargs) -> None:
        self.log.append(("prop", name))

    def texts(self) -> str:
        return "\n".join(text for _kind, text in self.log)


def test_the_panel_guides_the_first_run_and_the_status_shows_the_workers_hello(addon, fresh_user_folder) -> None:
    ui = _module(addon, "worker_status_ui")
    session = _module(addon, "session").SESSION
    prefs = bpy.context.preferences.addons["ofer_face"].preferences
    layout = RecordingLayout()
    assert ui.draw_first_run(layout, prefs) is True
    assert ("operator", "ofer.create_managed_env") in layout.log
    assert ("operator", "preferences.addon_show") in layout.log and "no worker yet" in layout.texts()

    prefs.worker_mode, prefs.worker_python = "INTERPRETER", "/some/python"
    layout = RecordingLayout()
    assert ui.draw_first_run(layout, prefs) is False and layout.log == []  # a worker is configured: no guidance

    session.last_hello = {
        "worker_version": "0.1.0",
        "python": "3.11.7",
        "torch": "2.13.0+cu128",
        "torch_build": "cuda 12.8",
        "backend": "torch",
        "device": "cuda",
        "device_name": "NVIDIA H200",
        "device_memory_gb": 139.8,
        "demo": False,
        "doctor": ["FLAME model: MISSING /x/generic_model.pkl  [from env OFER_FLAME_MODEL] — flame.is.tue.mpg.de"],
    }
    layout = RecordingLayout()
    try:
        ui.draw_worker_status(layout)
    finally:
        session.last_hello = {}
    text = layout.texts()
    assert "torch 2.13.0+cu128 (cuda 12.8)" in text and "NVIDIA H200, 139.8 GB" in text
    assert "MISSING /x/generic_model.pkl" in text and "flame.is.tue.mpg.de" in text

    # Fast encoders asked for, but the worker's environment predates ONNX Runtime in it: say so and how to fix.
    for ort, expected in ((None, "no ONNX Runtime: int8 is off"), ("1.32.0", "Fast (int8 / bf16 where close)")):
        session.last_hello = {"worker_version": "0.1.0", "encoder_precision": "auto", "onnxruntime": ort}
        layout = RecordingLayout()
        try:
            ui.draw_worker_status(layout)
        finally:
            session.last_hello = {}
        assert expected in layout.texts() and ("Managed environment: press Repair" in layout.texts()) == (ort is None)

    # What runs the sampling steps (the worker's denoiser_runtime); an older worker says nothing about it.
    cases: list[tuple[str | None, str | None]] = [
        ("onnxruntime", "steps on the CPU: ONNX Runtime"), ("torch", "steps on the CPU: torch"), (None, None)
    ]  # fmt: skip
    for runtime, wanted in cases:
        session.last_hello = {"worker_version": "0.1.0"} | ({} if runtime is None else {"denoiser_runtime": runtime})
        layout = RecordingLayout()
        try:
            ui.draw_worker_status(layout)
        finally:
            session.last_hello = {}
        assert ("Sampling steps" in layout.texts()) is (wanted is not None)
        assert wanted is None or wanted in layout.texts()


def test_the_preferences_draw_the_environment_and_its_record(addon, fresh_user_folder) -> None:
    prefs = bpy.context.preferences.addons["ofer_face"].preferences
    env = _module(addon, "managed_env")

    class Drawn:
        def __init__(self) -> None:
            self.layout = RecordingLayout()

        def __getattr__(self, name: str):
            return getattr(prefs, name)

    prefs.torch_choice, prefs.torch_custom = "CUSTOM", "torch==2.13.0"
    drawn = Drawn()
    type(prefs).draw(drawn, bpy.context)
    text = drawn.layout.texts()
    assert "torch: custom: torch==2.13.0" in text and "Online access is off" in text
    assert ("operator", "ofer.create_managed_env") in drawn.layout.log
    assert ("operator", "ofer.remove_managed_env") not in drawn.layout.log  # nothing to remove yet

    env_dir = fresh_user_folder / "worker_env"
    request = env.EnvRequest(
        env_dir, sys.executable, fresh_user_folder, env.resolve_torch("CPU", "cu128", "", env.detect_platform()),
        None, True,
    )  # fmt: skip
    env.managed_python(env_dir).parent.mkdir(parents=True)
    env.managed_python(env_dir).write_text("")
    env.write_record(env_dir, env.make_record(request, "0.1.0", 3.0))
    drawn = Drawn()
    type(prefs).draw(drawn, bpy.context)
    text = drawn.layout.texts()
    assert "Environment ready: worker 0.1.0, CPU build" in text and "Installed with: pip install" in text
    assert ("operator", "ofer.remove_managed_env") in drawn.layout.log


def test_a_fresh_install_starts_its_worker_with_the_fast_encoders(addon, fresh_user_folder) -> None:
    """The artist's default is Encoders: Fast (the fast preset under a second on 2 CPU cores, issue 19); the
    worker hears it through its environment, and Exact is one click away."""
    prefs = bpy.context.preferences.addons["ofer_face"].preferences
    preferences = _module(addon, "preferences")
    assert prefs.encoder_precision == "auto" and preferences.PreferenceDefaults().encoder_precision == "auto"
    prefs.worker_mode, prefs.worker_python = "INTERPRETER", sys.executable
    _command, env = preferences.worker_launch(prefs)
    assert env["OFER_ENCODER_PRECISION"] == "auto"
    prefs.encoder_precision = "fp32"
    assert preferences.worker_launch(prefs)[1]["OFER_ENCODER_PRECISION"] == "fp32"
