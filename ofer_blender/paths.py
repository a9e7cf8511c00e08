"""Where the add-on writes: the extension's user folder (logs, results, the managed worker)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import bpy

from .ids import ADDON_PACKAGE


def user_folder(sub: str, create: bool = True) -> Path:
    """``extension_path_user(<package>, path=sub)``; a temp folder outside the extension system."""
    try:
        return Path(bpy.utils.extension_path_user(ADDON_PACKAGE, path=sub, create=create))
    except ValueError:  # "does not name an extension": loaded outside Blender's extension system
        folder = Path(tempfile.gettempdir()) / "ofer_face" / sub
        if create:
            folder.mkdir(parents=True, exist_ok=True)
        return folder


def managed_env_dir() -> Path:
    """The managed worker environment (kept short: Windows path limits bite deep site-packages)."""
    return user_folder("worker_env", create=False)  # its existence means "an environment was made"
