"""What must hold before the add-on registers; when something is missing, the preferences say what."""

from __future__ import annotations

import sys
from typing import Any

MIN_BLENDER = (4, 2, 0)
MIN_PYTHON = (3, 11)


def problems(blender_version: tuple[int, ...], package: str, enabled_modules: list[str]) -> list[str]:
    found: list[str] = []
    if tuple(blender_version[:3]) < MIN_BLENDER:
        found.append(f"Blender {'.'.join(map(str, MIN_BLENDER))} or newer is needed (this is {blender_version})")
    if sys.version_info[:2] < MIN_PYTHON:
        found.append(f"Python {MIN_PYTHON[0]}.{MIN_PYTHON[1]}+ is needed (this is {sys.version.split()[0]})")
    try:
        import numpy  # noqa: F401
    except ImportError:
        found.append("numpy is missing from Blender's Python (reinstall Blender)")
    try:
        from ..inference_server import protocol, result  # noqa: F401
    except ImportError as exc:
        found.append(f"The package is incomplete: inference_server/protocol.py or result.py is missing ({exc})")
    short = package.rpartition(".")[2]
    others = [m for m in enabled_modules if m != package and m.rpartition(".")[2] == short]
    if others:
        found.append(f"Another copy of this add-on is enabled ({', '.join(others)}): disable one of them")
    return found


def system_info() -> dict[str, Any]:
    return {"python": sys.version.split()[0], "platform": sys.platform}
