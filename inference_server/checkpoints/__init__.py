"""Checkpoints: the official OFER ``.tar`` files and the project's safetensors format.

``load_networks(path)`` accepts either: ``.safetensors`` / ``.json`` → project format, anything else
(``.tar``, ``.pt``, ``.pth``) → official torch file, read with ``weights_only=True``.
"""

from __future__ import annotations

from pathlib import Path

from .attention_compat import ATTENTION_SEED_BASE, SYNTHETIC_WARNING, synthetic_projections
from .networks import FORMAT_VERSION, KINDS, SCHEDULE, LoadedNetworks
from .official import load_official_checkpoint
from .project_format import load_project_checkpoint, project_paths, save_project_checkpoint

__all__ = [
    "ATTENTION_SEED_BASE",
    "FORMAT_VERSION",
    "KINDS",
    "SCHEDULE",
    "SYNTHETIC_WARNING",
    "LoadedNetworks",
    "load_networks",
    "load_official_checkpoint",
    "load_project_checkpoint",
    "project_paths",
    "save_project_checkpoint",
    "synthetic_projections",
]

PROJECT_SUFFIXES = (".safetensors", ".json")


def load_networks(path: str | Path) -> LoadedNetworks:
    """Load one model file in either format; networks on the CPU in eval mode."""
    path = Path(path)
    if path.suffix in PROJECT_SUFFIXES:
        return load_project_checkpoint(path)
    return load_official_checkpoint(path)
