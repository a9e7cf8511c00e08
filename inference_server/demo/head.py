"""The DEMO head: the ICT Face Model Light converted to the FLAME layout (DEMO data, not FLAME).

It lets the whole worker run on a fresh machine and in every test without the licensed FLAME files:
16,434 vertices (face, head and neck, mouth socket, eyeballs), 50 real identity modes of light-stage
scans (zero-padded to 300) and 43 expression modes built from ICT's ARKit shapes (padded to 100), a
FLAME 5-joint rig fitted from the model's own ``jawOpen``, UVs, a 68-point landmark embedding and a
1785-vertex front-face list. It ships as package data (``assets/demo_head/``, converted once by
:mod:`.ict_convert`) and is read through the FLAME loader.
"""

from __future__ import annotations

from ..flame.model_data import FlameModelData
from .ict_convert import CONVERTER_VERSION, DEMO_VERSION
from .packaged_head import load_packaged_head

__all__ = ["DEMO_VERSION", "GENERATOR_VERSION", "generate_demo_head", "load_demo_head"]

#: Version of the DEMO head data; cached FLAME-layout copies with another version are rewritten.
GENERATOR_VERSION = CONVERTER_VERSION


def load_demo_head() -> FlameModelData:
    """The DEMO head (a fresh copy: callers may change it). ``extra`` holds ``vertex_colors`` (V, 3) in
    [0, 1] for previews and synthetic renders, the ARKit → expression-mode matrix and the version."""
    return load_packaged_head()


def generate_demo_head(seed: int = 0) -> FlameModelData:
    """The DEMO head (kept under its old name: every caller that built the procedural head gets this one;
    ``seed`` is ignored, the head is the same data everywhere)."""
    del seed
    return load_demo_head()
