"""Register and unregister everything, in one ordered list (unregistered in reverse).

A load guard runs first: when Blender, Python, numpy or the package itself is not as expected, only a
small preferences panel that names the problem is registered, so enabling never fails silently.
"""

from __future__ import annotations

from typing import Any

import bpy

from . import ids, load_guard

try:
    from . import (
        face_marks_draw,
        ops_export,
        ops_faces,
        ops_import,
        ops_marks,
        ops_photos,
        ops_reconstruct,
        ops_sequence,
        ops_worker,
        panel,
        preferences,
        properties,
    )
except ImportError as exc:  # numpy or a package file missing: the load guard reports it
    _IMPORT_ERROR: str | None = str(exc)
    CLASSES: tuple[type, ...] = ()
else:
    _IMPORT_ERROR = None
    #: The one ordered class list: property groups before the classes that point at them.
    CLASSES = (
        *properties.PROPERTY_CLASSES,
        preferences.OFER_AP_preferences,
        *ops_marks.CLASSES,
        *ops_faces.CLASSES,
        *ops_import.CLASSES,
        *ops_photos.CLASSES,
        *ops_reconstruct.CLASSES,
        *ops_sequence.CLASSES,
        *ops_worker.CLASSES,
        *ops_export.CLASSES,
        *panel.CLASSES,
    )

_registered: list[type] = []
_state: dict[str, Any] = {"fallback": False}


class OFER_AP_load_problems(bpy.types.AddonPreferences):
    """Shown instead of the real preferences when the add-on cannot load."""

    bl_idname = ids.ADDON_PACKAGE

    def draw(self, context: Any) -> None:
        layout = self.layout
        layout.label(text="OFER cannot start:", icon="ERROR")
        for problem in _state.get("problems", []):
            layout.label(text=problem)
        info = load_guard.system_info()
        layout.label(text=f"Blender {bpy.app.version_string} · Python {info['python']} · {info['platform']}")


def _problems() -> list[str]:
    blender_prefs: Any = bpy.context.preferences
    enabled = [addon.module for addon in blender_prefs.addons]
    found = load_guard.problems(tuple(bpy.app.version), ids.ADDON_PACKAGE, enabled)
    if _IMPORT_ERROR is not None:
        found.append(f"A module of the add-on failed to import: {_IMPORT_ERROR}")
    return found


def register() -> None:
    found = _problems()
    if found:
        _state.update(fallback=True, problems=found)
        bpy.utils.register_class(OFER_AP_load_problems)
        _registered.append(OFER_AP_load_problems)
        print("OFER add-on not loaded:", "; ".join(found))
        return
    _state.update(fallback=False, problems=[])
    for cls in CLASSES:
        bpy.utils.register_class(cls)
        _registered.append(cls)
    properties.attach()
    ops_sequence.attach()
    bpy.types.TOPBAR_MT_file_import.append(ops_import.menu_import)
    face_marks_draw.enable()


def unregister() -> None:
    if not _state["fallback"] and _IMPORT_ERROR is None:
        face_marks_draw.disable()
        bpy.types.TOPBAR_MT_file_import.remove(ops_import.menu_import)
        for timer in (ops_reconstruct.drain_timer, ops_sequence.drain_sequence_timer):
            if bpy.app.timers.is_registered(timer):
                bpy.app.timers.unregister(timer)
        from .session import SESSION

        SESSION.release()
        ops_sequence.detach()
        properties.detach()
    while _registered:
        bpy.utils.unregister_class(_registered.pop())
