"""The Reconstruct operator with the REAL worker (``python -m inference_server serve``) on DEMO assets."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import bpy
import numpy as np
from registered import ofer_ops, ofer_state

SAMPLE = Path(__file__).resolve().parents[2] / "inference_server" / "assets" / "sample_occluded_face.jpg"
# The standard ArcFace template, written out here so the check does not use the worker's own constant.
TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]]
)


def _least_squares_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    rows, rhs = [], []
    for (x, y), (u, v) in zip(src, dst, strict=True):
        rows += [[x, -y, 1, 0], [y, x, 0, 1]]
        rhs += [u, v]
    a, b, tx, ty = np.linalg.lstsq(np.asarray(rows), np.asarray(rhs), rcond=None)[0]
    return np.array([[a, -b, tx], [b, a, ty]])


def test_reconstruct_with_the_real_worker_and_clicked_points(addon, result_factory, tmp_path, scene_counts) -> None:
    # Five points an artist would click: the eyes, nose tip and mouth corners the worker itself found.
    detected = json.loads(str(np.load(result_factory(tmp_path / "ref.npz"))["meta_json"]))["detection"]["points5"]
    clicks = [float(round(c, 1)) for point in detected for c in point]

    prefs = bpy.context.preferences.addons["ofer_face"].preferences
    prefs.worker_mode = "INTERPRETER"
    prefs.worker_python = sys.executable
    prefs.device = "cpu"
    photo = bpy.data.images.load(str(SAMPLE))
    settings = bpy.context.scene.ofer_settings
    settings.image = photo
    settings.sampler, settings.steps, settings.seed = "ddim", 4, 5
    settings.n_shapes, settings.n_expressions, settings.top_k = 8, 4, 3
    assert ofer_ops().set_face_marks(image_name=photo.name, kind="POINTS", points=clicks) == {"FINISHED"}
    before = scene_counts()
    assert ofer_ops().reconstruct() == {"FINISHED"}
    assert scene_counts() != before

    head = next(o for o in bpy.data.objects if o.type == "MESH" and ofer_state(o).is_result)
    meta = json.loads(head["ofer_meta_json"])
    assert meta["demo"] is True and meta["detection"]["method"] == "points"
    points = np.asarray(meta["request_points"])
    np.testing.assert_allclose(points, np.reshape(clicks, (5, 2)))
    transform = np.asarray(meta["arcface_transform"])
    np.testing.assert_allclose(transform, _least_squares_similarity(points, TEMPLATE), atol=1e-6)
    mapped = points @ transform[:, :2].T + transform[:, 2]
    interocular = np.linalg.norm(TEMPLATE[1] - TEMPLATE[0])
    assert np.abs(mapped[:2] - TEMPLATE[:2]).max() < 0.08 * interocular  # the eyes land on the template's eyes
    assert ofer_state(head).n_identities == 3 and ofer_state(head).n_expressions == 4


def _reconstruct_small(photo) -> dict:
    """Reconstruct ``photo`` with few samples and return the new head's result meta."""
    settings = bpy.context.scene.ofer_settings
    settings.image = photo
    settings.sampler, settings.steps, settings.seed = "ddim", 4, 5
    settings.n_shapes, settings.n_expressions, settings.top_k = 8, 4, 3
    before = {o.name for o in bpy.data.objects}
    assert ofer_ops().reconstruct() == {"FINISHED"}
    head = next(o for o in bpy.data.objects if o.name not in before and o.type == "MESH" and ofer_state(o).is_result)
    return json.loads(head["ofer_meta_json"])


def test_the_encoders_preference_reaches_the_worker(addon) -> None:
    """Fast: the worker runs its encoders through ONNX Runtime (int8 where the probe allows) or, on a CPU with
    native bf16 (encoder_runtime.CHOICES "auto": ArcFace), torch bf16; switching back to Exact restarts the
    worker with the torch fp32 encoders."""
    prefs = bpy.context.preferences.addons["ofer_face"].preferences
    prefs.worker_mode, prefs.worker_python, prefs.device = "INTERPRETER", sys.executable, "cpu"
    photo = bpy.data.images.load(str(SAMPLE))
    prefs.encoder_precision = "auto"
    fast = _reconstruct_small(photo)["encoder_runtimes"]
    assert fast and all(value.startswith(("onnxruntime", "torch bf16")) for value in fast.values()), fast
    # FaRL's int8 graph: the DEMO weights pass its probe on every CPU seen.
    assert any(value.startswith("onnxruntime") for value in fast.values()), fast
    prefs.encoder_precision = "fp32"
    exact = _reconstruct_small(photo)["encoder_runtimes"]
    assert set(exact) == set(fast) and all(value.startswith("torch fp32") for value in exact.values()), exact
