"""Extra photos of the same person in Blender: Add Photos (multi-select), Remove, Clear, and the request."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import bpy
import numpy as np
import pytest
from registered import ofer_ops, ofer_state

SAMPLE = Path(__file__).resolve().parents[2] / "inference_server" / "assets" / "sample_occluded_face.jpg"


def _png(path: Path, width: int = 64, height: int = 64) -> Path:
    image = bpy.data.images.new(path.stem, width, height)
    image.filepath_raw = str(path)
    image.file_format = "PNG"
    image.save()
    bpy.data.images.remove(image)
    return path


@pytest.fixture
def photos(tmp_path: Path) -> list[Path]:
    return [_png(tmp_path / name) for name in ("main.png", "left.png", "right.png")]


def _add(folder: Path, *names: str) -> set[str]:
    return ofer_ops().add_photos(directory=str(folder), files=[{"name": n} for n in names])


def test_add_photos_takes_several_files_and_skips_the_main_one_and_repeats(addon, photos) -> None:
    settings = bpy.context.scene.ofer_settings
    settings.image = bpy.data.images.load(str(photos[0]))
    folder = photos[0].parent
    assert _add(folder, "left.png", "right.png", "main.png") == {"FINISHED"}
    assert [item.name for item in settings.extra_photos] == ["left.png", "right.png"]
    assert [item.filepath for item in settings.extra_photos] == [str(photos[1]), str(photos[2])]
    assert _add(folder, "left.png") == {"CANCELLED"}  # already listed: nothing added
    assert len(settings.extra_photos) == 2
    settings.active_extra_photo = 0
    assert ofer_ops().remove_photo() == {"FINISHED"}
    assert [item.name for item in settings.extra_photos] == ["right.png"]
    assert ofer_ops().clear_photos() == {"FINISHED"}
    assert len(settings.extra_photos) == 0
    assert ofer_ops().remove_photo.poll() is False and ofer_ops().clear_photos.poll() is False


def _use_fake_worker(command) -> None:
    prefs = bpy.context.preferences.addons["ofer_face"].preferences
    prefs.worker_mode = "COMMAND"
    prefs.worker_command = command("normal")


def test_reconstruct_sends_the_extra_photos(addon, photos, fake_worker_command) -> None:
    _use_fake_worker(fake_worker_command)
    settings = bpy.context.scene.ofer_settings
    settings.image = bpy.data.images.load(str(photos[0]))
    _add(photos[0].parent, "left.png", "right.png")
    assert ofer_ops().reconstruct() == {"FINISHED"}
    head = next(o for o in bpy.data.objects if o.type == "MESH")
    request = json.loads(head["ofer_meta_json"])["request"]
    assert request["image"] == str(photos[0]) and request["photos"] == [str(photos[1]), str(photos[2])]
    # Cleared list: the next request is a single-photo one again.
    ofer_ops().clear_photos()
    assert ofer_ops().reconstruct() == {"FINISHED"}
    newest = max((o for o in bpy.data.objects if o.type == "MESH"), key=lambda o: o.name)
    assert json.loads(newest["ofer_meta_json"])["request"]["photos"] == []


def test_a_vanished_extra_photo_is_named_and_nothing_runs(addon, photos, fake_worker_command, scene_counts) -> None:
    _use_fake_worker(fake_worker_command)
    settings = bpy.context.scene.ofer_settings
    settings.image = bpy.data.images.load(str(photos[0]))
    _add(photos[0].parent, "left.png")
    photos[1].unlink()
    before = scene_counts()
    with pytest.raises(RuntimeError, match=r"extra photo '.*left\.png' does not exist: remove it"):
        ofer_ops().reconstruct()
    assert scene_counts() == before


def test_reconstruct_pools_the_identity_with_the_real_worker(addon, tmp_path) -> None:
    from PIL import Image
    from skimage import data

    plain = tmp_path / "plain.png"
    Image.fromarray(data.astronaut()).save(plain)
    prefs = bpy.context.preferences.addons["ofer_face"].preferences
    prefs.worker_mode = "INTERPRETER"
    prefs.worker_python = sys.executable
    prefs.device = "cpu"
    settings = bpy.context.scene.ofer_settings
    settings.image = bpy.data.images.load(str(SAMPLE))
    settings.preset, settings.sampler, settings.steps, settings.seed = "CUSTOM", "ddim", 3, 2
    settings.n_shapes, settings.n_expressions, settings.top_k = 4, 2, 2
    _add(tmp_path, "plain.png")
    assert ofer_ops().reconstruct() == {"FINISHED"}
    head = next(o for o in bpy.data.objects if o.type == "MESH" and ofer_state(o).is_result)
    meta = json.loads(head["ofer_meta_json"])
    assert [Path(p["path"]).name for p in meta["photos"]] == [SAMPLE.name, "plain.png"]
    assert meta["identity_pooling"]["n_samples"] == 8
    scores = np.array([p["identity_scores"] for p in meta["photos"]])
    assert scores.shape == (2, 2) and np.all(scores > 0)
    assert ("Identity pooled over 2 photos", "RENDERLAYERS") in addon.panel.result_warning_lines(head)
