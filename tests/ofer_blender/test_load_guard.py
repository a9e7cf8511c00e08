from __future__ import annotations

import importlib


def test_problems_name_what_is_wrong(addon) -> None:
    guard = importlib.import_module(addon.__name__ + ".load_guard")
    assert guard.problems((4, 5, 0), "bl_ext.user_default.ofer_face", ["bl_ext.user_default.ofer_face"]) == []
    found = guard.problems((4, 1, 0), "bl_ext.user_default.ofer_face", ["bl_ext.other_repo.ofer_face"])
    assert any("Blender 4.2.0 or newer" in p for p in found)
    assert any("Another copy" in p and "bl_ext.other_repo.ofer_face" in p for p in found)
