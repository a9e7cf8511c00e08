from __future__ import annotations

import bpy
from registered import ofer_class, ofer_ops


def _operators_present() -> bool:
    ops = ofer_ops()
    return all(hasattr(ops, name) and getattr(ops, name).idname() for name in ("reconstruct", "import_result"))


def test_register_unregister_register(addon) -> None:
    import importlib

    registration = importlib.import_module(addon.__name__ + ".registration")
    root = importlib.import_module(addon.__name__.rpartition(".")[0])
    assert registration.CLASSES and not registration._state["fallback"]
    assert hasattr(bpy.types.Object, "ofer") and hasattr(bpy.types.Scene, "ofer_settings")
    assert ofer_class("OFER_PT_reconstruct").bl_category == "OFER"
    root.unregister()
    assert not hasattr(bpy.types, "OFER_PT_reconstruct") and not hasattr(bpy.types.Object, "ofer")
    root.register()
    assert hasattr(bpy.types, "OFER_PT_reconstruct") and hasattr(bpy.types.Object, "ofer")
    assert bpy.context.preferences.addons["ofer_face"].preferences.device == "auto"
    assert "ofer.import_result" in [
        op.bl_idname for op in bpy.types.Operator.__subclasses__() if hasattr(op, "bl_idname")
    ]


def test_duplicate_install_registers_only_the_problem_panel(addon) -> None:
    import importlib

    registration = importlib.import_module(addon.__name__ + ".registration")
    root = importlib.import_module(addon.__name__.rpartition(".")[0])
    root.unregister()
    other = bpy.context.preferences.addons.new()
    other.module = "bl_ext.user_default.ofer_face"
    try:
        root.register()
        assert registration._state["fallback"]
        assert any("Another copy" in p for p in registration._state["problems"])
        assert not hasattr(bpy.types, "OFER_PT_reconstruct")
        root.unregister()
    finally:
        bpy.context.preferences.addons.remove(other)
    root.register()  # the fixture unregisters at the end
    assert not registration._state["fallback"]
