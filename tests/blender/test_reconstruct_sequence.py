"""Reconstruct Sequence with the REAL worker (DEMO assets), headless: an image sequence whose last frame
shows no face becomes one animated head; the frame without a face is bridged and reported."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import bpy
import numpy as np
import pytest
from registered import ofer_ops

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "inference_server" / "assets" / "sample_occluded_face.jpg"
HAS_IMPORTER = (ROOT / "ofer_blender" / "sequence_import.py").is_file()


def _frames(folder: Path) -> Path:
    folder.mkdir()
    for name in ("shot_1.jpg", "shot_2.jpg"):
        shutil.copy(SAMPLE, folder / name)
    photo = bpy.data.images.load(str(SAMPLE))
    width, height = photo.size
    blank = bpy.data.images.new("blank", width, height)
    blank.pixels.foreach_set(np.full(width * height * 4, 0.5, np.float32))  # type: ignore[attr-defined]  # stubs: float
    blank.filepath_raw = str(folder / "shot_10.png")  # natural order: after shot_2
    blank.file_format = "PNG"
    blank.save()
    return folder


def _request_settings(addon: Any) -> None:
    prefs = bpy.context.preferences.addons["ofer_face"].preferences
    prefs.worker_mode, prefs.worker_python, prefs.device = "INTERPRETER", sys.executable, "cpu"
    settings = bpy.context.scene.ofer_settings
    settings.preset, settings.sampler, settings.steps, settings.seed, settings.n_shapes = "CUSTOM", "ddim", 4, 1, 4


def test_a_frame_of_an_image_sequence_stands_for_its_folder(addon: Any, tmp_path: Path) -> None:
    ops_sequence = sys.modules["ofer_face.ofer_blender.ops_sequence"]
    folder = _frames(tmp_path / "clip")
    assert ops_sequence.clip_source(str(folder / "shot_2.jpg")) == str(folder)
    movie = tmp_path / "take.mp4"
    movie.write_bytes(b"")
    assert ops_sequence.clip_source(str(movie)) == str(movie)
    _request_settings(addon)
    clip = bpy.context.scene.ofer_sequence
    clip.fps, clip.n_expressions = 12.0, 5
    prefs = bpy.context.preferences.addons["ofer_face"].preferences
    args = ops_sequence.sequence_request(bpy.context.scene.ofer_settings, clip, prefs, str(folder))
    assert args["source"] == str(folder) and args["output"].endswith(".npz")
    assert (args["fps"], args["n_expressions"], args["sampler"], args["steps"]) == (12.0, 5, "ddim", 4)


def test_reconstruct_sequence_without_a_clip_is_refused(addon: Any) -> None:
    with pytest.raises(RuntimeError, match="Choose a movie file"):
        ofer_ops().reconstruct_sequence()


@pytest.mark.timeout(600)
def test_reconstruct_sequence_with_the_real_worker(addon: Any, tmp_path: Path, scene_counts: Any) -> None:
    from inference_server.sequence_result import read_sequence_result

    folder = _frames(tmp_path / "clip")
    _request_settings(addon)
    clip = bpy.context.scene.ofer_sequence
    clip.source, clip.n_expressions, clip.frame_start = str(folder / "shot_1.jpg"), 4, 5
    before = scene_counts()
    if HAS_IMPORTER:
        assert ofer_ops().reconstruct_sequence() == {"FINISHED"}
    else:  # the worker side runs; the import says clearly why it cannot happen yet
        with pytest.raises(RuntimeError, match="cannot import sequences"):
            ofer_ops().reconstruct_sequence()
    job = sys.modules["ofer_face.ofer_blender.session"].SESSION.job
    result = read_sequence_result(job.result_path)
    names = [f["name"] for f in result.meta["frames"]]
    assert result.n_frames == 3 and names == ["shot_1.jpg", "shot_2.jpg", "shot_10.png"]
    assert result.meta["frames"][2]["status"] == "no_face" and result.frame_observed.tolist()[2] == 0
    assert job.summary["frames"]["no_face"] == 1
    if not HAS_IMPORTER:
        assert scene_counts() == before
        return
    head = bpy.context.view_layer.objects.active
    assert head is not None and head.type == "MESH" and scene_counts() != before
    keys = head.data.shape_keys
    assert keys is not None and keys.animation_data is not None and keys.animation_data.action is not None
    from eye_skinning import turned
    from mesh_probe import evaluated_local

    gaze = result.frame_eye_pose  # the meshes keep the eyes at rest; the keyed eye bones turn them by the gaze
    for k in range(result.n_frames):  # the worker's meshes play back from the chosen start frame
        bpy.context.scene.frame_set(clip.frame_start + k)
        expected = result.frame_vertices[k] if gaze is None else turned(result.frame_vertices[k], result, gaze[k])
        assert float(np.abs(evaluated_local(head) - expected).max()) < 1e-5
