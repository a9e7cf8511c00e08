"""What the add-on registers with Blender at run time, reached in a way mypy accepts.

fake-bpy-module's stubs describe stock Blender, so they cannot know the add-on's operators (``bpy.ops.ofer``),
its classes (``bpy.types.OFER_*``) or the ``Object.ofer`` property group. Each is looked up at the call, not
at import, because every test registers the add-on afresh. Shared by the Blender tests and by
``zip_scenarios.py`` (run as a script from this folder).
"""

from __future__ import annotations

from typing import Any

import bpy


def ofer_ops() -> Any:
    """``bpy.ops.ofer``: the add-on's operators."""
    return bpy.ops.ofer  # type: ignore[attr-defined]


def ofer_class(name: str) -> Any:
    """``bpy.types.<name>`` for one of the add-on's registered classes (``OFER_PT_reconstruct``...)."""
    return getattr(bpy.types, name)


def ofer_state(obj: bpy.types.Object) -> Any:
    """``obj.ofer``: the per-object hypothesis state the add-on adds to every Object."""
    return obj.ofer  # type: ignore[attr-defined]
