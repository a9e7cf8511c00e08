"""Face choice and input warnings in Blender with the REAL worker (DEMO assets), on photos made from the
shared fixtures: two portraits side by side, and a portrait cut by the frame."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import bpy
import numpy as np
import pytest
from PIL import Image
from registered import ofer_ops, ofer_state

from inference_server.preprocess.official_reference import find_fixtures

FIXTURES = find_fixtures()
pytestmark = pytest.mark.skipif(
    FIXTURES is None, reason="shared/fixtures/official-preprocessing is not on this machine"
)
LEFT, RIGHT = "model-fashion-beauty-black-thumb", "smoke-young-human-model-thumb"


def _fixture(name: str) -> np.ndarray:
    assert FIXTURES is not None
    return np.asarray(Image.open(FIXTURES / "images" / f"{name}.jpg").convert("RGB"))


class _Layout:
    """Records what a panel draws (labels and their icons); every other layout call is accepted."""

    def __init__(self, labels: list[tuple[str, str]]) -> None:
        self.labels = labels

    def label(self, text: str = "", icon: str = "NONE", **_: Any) -> None:
        self.labels.append((text, icon))

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: _Layout(self.labels)


def _reconstruct(addon: Any, photo_path: Path, marks: dict[str, Any] | None = None) -> Any:
    prefs = bpy.context.preferences.addons["ofer_face"].preferences
    prefs.worker_mode = "INTERPRETER"
    prefs.worker_python = sys.executable
    prefs.device = "cpu"
    photo = bpy.data.images.load(str(photo_path))
    settings = bpy.context.scene.ofer_settings
    settings.image = photo
    settings.sampler, settings.steps, settings.seed = "ddim", 4, 1
    settings.n_shapes, settings.n_expressions, settings.top_k = 8, 4, 3
    if marks:
        assert ofer_ops().set_face_marks(image_name=photo.name, **marks) == {"FINISHED"}
    assert ofer_ops().reconstruct() == {"FINISHED"}
    head = next(o for o in bpy.data.objects if o.type == "MESH" and ofer_state(o).is_result)
    bpy.context.view_layer.objects.active = head
    return head


def _panel_labels(addon: Any) -> list[tuple[str, str]]:
    labels: list[tuple[str, str]] = []
    panel = type("PanelStandIn", (), {"layout": _Layout(labels)})()
    addon.panel.OFER_PT_hypotheses.draw(panel, bpy.context)
    return labels


def test_two_faces_are_reported_and_a_box_chooses_the_other(addon: Any, tmp_path: Path) -> None:
    left = _fixture(LEFT)
    path = tmp_path / "two.png"
    Image.fromarray(np.concatenate([left, _fixture(RIGHT)], axis=1)).save(path)
    head = _reconstruct(addon, path)
    meta = json.loads(head["ofer_meta_json"])
    assert meta["detection"]["n_faces"] == 2 and meta["detection"]["face_index"] == 0
    box = meta["detection"]["box"]
    assert (box[0] + box[2]) / 2 > left.shape[1]  # the right face, nearer the centre
    labels = _panel_labels(addon)
    assert any(text.startswith("Face 0 of 2") for text, _ in labels)
    assert any(text.startswith("several_faces:") and icon == "ERROR" for text, icon in labels)

    # A box drawn round the left face in the Image Editor makes the worker use that face.
    for obj in list(bpy.data.objects):
        bpy.data.objects.remove(obj)
    head = _reconstruct(addon, path, {"kind": "BOX", "box": (0, 40, float(left.shape[1]), 290)})
    meta = json.loads(head["ofer_meta_json"])
    box = meta["detection"]["box"]
    assert (box[0] + box[2]) / 2 < left.shape[1]


def test_a_face_cut_by_the_frame_is_reported_in_the_panel(addon: Any, tmp_path: Path) -> None:
    path = tmp_path / "cut.png"
    Image.fromarray(np.ascontiguousarray(_fixture(LEFT)[:, 30:])).save(path)
    head = _reconstruct(addon, path)
    assert "cut_by_frame" in [w["code"] for w in json.loads(head["ofer_meta_json"])["warnings"]]
    assert any(text.startswith("cut_by_frame:") for text, _ in _panel_labels(addon))
