"""OFER for Blender: extension entry point (the repository root is the extension root)."""

from __future__ import annotations


def register() -> None:
    from .ofer_blender import registration

    registration.register()


def unregister() -> None:
    from .ofer_blender import registration

    registration.unregister()
