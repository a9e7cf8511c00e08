"""Sequence import: the head plays the clip (evaluated mesh = frame_vertices[k]), moves with the head pose
in front of the clip's camera, and the scene's frame range and rate follow the clip."""

from __future__ import annotations

import importlib
import math
from pathlib import Path

import bpy
import numpy as np
import pytest
from mesh_probe import evaluated_local
from registered import ofer_ops
from sequence_factory import CAMERA, FPS, FRAME_SIZE

from inference_server.sequence_result import read_sequence_result


def _pose_matrix(pose: np.ndarray) -> np.ndarray:
    """Model → camera, written here: Rodrigues' rotation and the translation."""
    aa, t = pose[:3].astype(np.float64), pose[3:].astype(np.float64)
    angle = float(np.linalg.norm(aa))
    k = aa / angle
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    m = np.eye(4)
    m[:3, :3] = np.eye(3) + math.sin(angle) * K + (1 - math.cos(angle)) * K @ K
    m[:3, 3] = t
    return m


def _import(addon, path: Path):
    return importlib.import_module(addon.__name__ + ".sequence_import").import_sequence(bpy.context, path)


def test_the_head_plays_the_clip(addon, sequence_file) -> None:
    seq = read_sequence_result(sequence_file)
    T = seq.frame_vertices.shape[0]
    obj = _import(addon, sequence_file)
    scene = bpy.context.scene
    assert (scene.frame_start, scene.frame_end) == (1, T)
    assert scene.render.fps / scene.render.fps_base == pytest.approx(FPS)
    names = [b.name for b in obj.data.shape_keys.key_blocks]
    assert names[1:] == [f"Exp{i}" for i in range(1, 11)] + [f"Pose{i}" for i in range(1, 37)]
    rig, camera = obj.ofer.rig, obj.ofer.camera
    assert scene.camera == camera and (scene.render.resolution_x, scene.render.resolution_y) == FRAME_SIZE
    assert camera.data.lens == pytest.approx(CAMERA[0] * 36.0 / FRAME_SIZE[0])
    background = camera.data.background_images[0]
    assert background.source == "MOVIE_CLIP" and background.clip.frame_duration == T
    for k in (0, 3, 6, 11):
        scene.frame_set(1 + k)
        error = float(np.abs(evaluated_local(obj) - seq.frame_vertices[k]).max())
        assert error < 1e-5, f"frame {k}: {error} m"
        relative = np.linalg.inv(np.asarray(camera.matrix_world)) @ np.asarray(rig.matrix_world)
        np.testing.assert_allclose(relative, _pose_matrix(seq.frame_head_pose[k]), atol=1e-5)
        assert obj.data.shape_keys.key_blocks["Exp2"].value == pytest.approx(float(seq.frame_expression_params[k, 1]))
    scene.frame_set(1)
    first = np.asarray(rig.matrix_world)
    scene.frame_set(T)
    assert np.abs(np.asarray(rig.matrix_world) - first).max() > 0.05  # the head moves; the camera does not


def test_a_clip_that_cannot_be_found_is_a_warning(addon, sequence_file, tmp_path) -> None:
    import shutil

    shutil.rmtree(sequence_file.parent / "frames", ignore_errors=True)
    seq = read_sequence_result(sequence_file)
    seq.meta["source"]["path"] = str(tmp_path / "gone")
    module = importlib.import_module(addon.__name__ + ".sequence_import")
    obj = module.build_sequence(bpy.context, seq, source_path=str(sequence_file))
    assert any("was not found" in m for m in module.import_warnings(obj))
    assert len(obj.ofer.camera.data.background_images) == 0


def test_import_again_rebuilds_the_sequence_and_import_operator_works(addon, sequence_file) -> None:
    assert ofer_ops().import_sequence(filepath=str(sequence_file), frame_start=10) == {"FINISHED"}
    first = bpy.context.view_layer.objects.active
    scene = bpy.context.scene
    assert (scene.frame_start, scene.frame_end) == (10, 21)
    assert ofer_ops().import_again() == {"FINISHED"}
    again = bpy.context.view_layer.objects.active
    assert again is not None and again != first and again["ofer_format"] == "ofer-sequence/1"
    assert "Exp1" in again.data.shape_keys.key_blocks


def test_a_file_that_is_not_a_sequence_is_a_clear_error(addon, tmp_path, scene_counts) -> None:
    bad = tmp_path / "not-a-sequence.npz"
    np.savez(bad, format=np.array("ofer-result/1"))
    before = scene_counts()
    with pytest.raises(RuntimeError, match=r"Cannot import the OFER sequence.*format"):
        ofer_ops().import_sequence(filepath=str(bad))
    assert scene_counts() == before
