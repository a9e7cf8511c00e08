"""Patterned occluders in the texture (texture/occluder.py's ``patterned``): docs/texture.md, "Patterned objects".

A plaid hat, lace, knitwear or strands of hair are partly of the skin's colour: the colour tests leave those
checks in the texture (the fixture ``smoke-young…``'s hat on the forehead). Skin is smooth at the scale of a few
pixels at ~60 px between the eyes; such objects are not. Before (colour only) → after (colour and pattern):

1. the shared fixture photos and the sample photo, reconstructed as the CLI does (DEMO assets, fast preset):
   texels from the photo, texels left out, and of the texels under the hand-annotated hat of ``smoke-young…``,
   those taken;
2. DEMO renders (true pose, yaw ±20°) with a plaid band over the forehead, a quarter of it the face's own colour
   and the rest its shades;
3. benchmarks/hands.py's table: the project's occluders, clean renders and the pasted real hand.

Run: ``nice -n 10 .venv/bin/python benchmarks/texture_pattern.py [--cases 4]`` (~5 minutes on 2 free cores).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from inference_server.fit.synthetic import with_plaid_band
from inference_server.texture import bake

ROOT = Path(__file__).resolve().parents[1]
HAT = ROOT / "tests" / "inference_server" / "texture" / "smoke_hat_annotation.json"
SAMPLE = ROOT / "inference_server" / "assets" / "sample_occluded_face.jpg"
sys.path.insert(0, str(ROOT / "tests" / "inference_server" / "texture"))
sys.path.insert(0, str(ROOT / "benchmarks"))
from texture_hue import run_tables  # noqa: E402


@contextmanager
def colour_only() -> Iterator[None]:
    """The texture as it was: no pattern test."""
    saved = bake._patterned
    bake._patterned = lambda rgb, skin, iod_px: np.zeros(rgb.shape[:2], bool)
    try:
        yield
    finally:
        bake._patterned = saved


def main() -> None:
    run_tables(__doc__.splitlines()[0], colour_only, "plaid band, forehead", 900, with_plaid_band, HAT, (SAMPLE,))


if __name__ == "__main__":
    main()
