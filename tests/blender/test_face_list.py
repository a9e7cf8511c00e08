"""The face list in Blender with the REAL worker (DEMO assets): Find Faces on a photo with two portraits,
the list in the Face Marks panel, Choose Face, and Reconstruct using the chosen face."""

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


class _Layout:
    """Records the operator buttons a panel draws (text, depressed); every other call is accepted."""

    def __init__(self, buttons: list[tuple[str, bool]]) -> None:
        self.buttons = buttons

    def operator(self, idname: str, text: str = "", depress: bool = False, **_: Any) -> Any:
        self.buttons.append((text or idname, depress))
        return type("Props", (), {})()

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: _Layout(self.buttons)


def _face_marks_panel(addon: Any, image: Any) -> list[tuple[str, bool]]:
    buttons: list[tuple[str, bool]] = []
    panel = type("PanelStandIn", (), {"layout": _Layout(buttons)})()
    context = type("ContextStandIn", (), {"space_data": type("Space", (), {"image": image})()})()
    addon.panel.OFER_PT_face_marks.draw(panel, context)
    return buttons


def test_find_faces_list_them_and_reconstruct_the_chosen_one(addon: Any, tmp_path: Path) -> None:
    assert FIXTURES is not None
    left = np.asarray(Image.open(FIXTURES / "images" / f"{LEFT}.jpg").convert("RGB"))
    right = np.asarray(Image.open(FIXTURES / "images" / f"{RIGHT}.jpg").convert("RGB"))
    path = tmp_path / "two.png"
    Image.fromarray(np.concatenate([left, right], axis=1)).save(path)
    prefs = bpy.context.preferences.addons["ofer_face"].preferences
    prefs.worker_mode, prefs.worker_python, prefs.device = "INTERPRETER", sys.executable, "cpu"
    photo = bpy.data.images.load(str(path))

    assert ofer_ops().find_faces(image_name=photo.name) == {"FINISHED"}
    listed = json.loads(photo["ofer_faces"])
    assert [face["index"] for face in listed] == [0, 1]
    assert (listed[1]["box"][0] + listed[1]["box"][2]) / 2 < left.shape[1]  # face 1: the left portrait
    buttons = [text for text, _ in _face_marks_panel(addon, photo)]
    assert any(text.startswith("Face 0 (") for text in buttons) and any(text.startswith("Face 1 (") for text in buttons)

    assert ofer_ops().choose_face(image_name=photo.name, index=1) == {"FINISHED"}
    assert ("Face 1 (", True) in [(text[:8], depressed) for text, depressed in _face_marks_panel(addon, photo)]
    with pytest.raises(RuntimeError, match="no face 5"):
        ofer_ops().choose_face(image_name=photo.name, index=5)

    settings = bpy.context.scene.ofer_settings
    settings.image = photo
    settings.sampler, settings.steps, settings.seed = "ddim", 4, 1
    settings.n_shapes, settings.n_expressions, settings.top_k = 8, 4, 3
    assert ofer_ops().reconstruct() == {"FINISHED"}
    head = next(o for o in bpy.data.objects if o.type == "MESH" and ofer_state(o).is_result)
    detection = json.loads(head["ofer_meta_json"])["detection"]
    assert detection["face_index"] == 1 and detection["n_faces"] == 2
    assert (detection["box"][0] + detection["box"][2]) / 2 < left.shape[1]


def test_find_faces_on_a_photo_without_a_face_reports_why(addon: Any, tmp_path: Path) -> None:
    path = tmp_path / "grey.png"
    Image.fromarray(np.full((240, 240, 3), 128, np.uint8)).save(path)
    prefs = bpy.context.preferences.addons["ofer_face"].preferences
    prefs.worker_mode, prefs.worker_python = "INTERPRETER", sys.executable
    photo = bpy.data.images.load(str(path))
    with pytest.raises(RuntimeError, match="no_face"):
        ofer_ops().find_faces(image_name=photo.name)
    assert "ofer_faces" not in photo  # type: ignore[operator]  # ID custom properties; the stubs lack __contains__
