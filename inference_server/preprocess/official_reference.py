"""The official preprocessing's outputs as a reference: photos with the ArcFace blob and 224 crop that
the official pipeline made from them (``shared/fixtures/official-preprocessing``), located in the photo,
and how far the project's crops are from them.

Placement is measured geometrically: ArcFace as the mean displacement over the 112 crop between the
official and the project's transform (translation, scale and rotation all count), the 224 crop as the
offset of its centre (of 224) and its scale (the project's square side / the official one).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .crops import arcface_crop, farl_transform
from .image import load_image
from .placement import centre_offset, locate_crop, mean_displacement, square_from_farl_transform

#: Where the fixtures are looked for: $OFER_OFFICIAL_PREPROCESSING, then ``shared/fixtures/...`` beside
#: the repository or any folder above it (a work tree inside the workplace).
FIXTURES_ENV = "OFER_OFFICIAL_PREPROCESSING"
FIXTURES_SUBDIR = Path("shared") / "fixtures" / "official-preprocessing"


@dataclass(frozen=True)
class OfficialCrops:
    """One photo and its official crops located in it: ``arcface_transform`` and ``farl_transform``
    (photo → crop), the official box's ``centre`` and the 224 square's ``side`` in photo pixels."""

    name: str
    rgb: np.ndarray
    arcface_transform: np.ndarray
    farl_transform: np.ndarray
    centre: np.ndarray
    side: float


@dataclass(frozen=True)
class Placement:
    """How far the project's crops are from the official ones (see the module notes)."""

    arcface_px: float
    farl_px: float
    farl_scale: float


def find_fixtures(start: Path | None = None) -> Path | None:
    """The fixtures folder, or None when it is not on this machine."""
    given = os.environ.get(FIXTURES_ENV)
    if given:
        return Path(given) if (Path(given) / "images").is_dir() else None
    here = (start or Path(__file__)).resolve()
    for folder in [here, *here.parents]:
        candidate = folder / FIXTURES_SUBDIR
        if (candidate / "images").is_dir():
            return candidate
    return None


def arcface_blob_image(blob: np.ndarray) -> np.ndarray:
    """An official blob (B, G, R planes, (pixel − 127.5) / 127.5) back to an RGB uint8 image."""
    pixels = np.clip(np.round(np.asarray(blob) * 127.5 + 127.5), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(pixels.transpose(1, 2, 0)[:, :, ::-1])


def load_official_crops(folder: Path) -> list[OfficialCrops]:
    """Every photo of the fixtures folder with its official crops located in it."""
    out = []
    for path in sorted((folder / "images").glob("*.jpg")):
        rgb = load_image(path).rgb
        farl = load_image(folder / "farl" / path.name).rgb
        blob = np.load(folder / "arcface" / (path.stem + ".npy"), allow_pickle=False)
        farl_t = locate_crop(farl, rgb, rotation=False).transform
        centre, side = square_from_farl_transform(farl_t)
        arc_t = locate_crop(arcface_blob_image(blob), rgb, rotation=True).transform
        out.append(OfficialCrops(path.stem, rgb, arc_t, farl_t, centre, side))
    return out


def placement(official: OfficialCrops, points5: np.ndarray, box: np.ndarray) -> Placement:
    """The project's crops from ``points5`` and ``box`` against the official ones."""
    arc = arcface_crop(official.rgb, points5)
    ours, side = farl_transform(box)
    return Placement(
        arcface_px=mean_displacement(official.arcface_transform, arc.transform, 112),
        farl_px=centre_offset(official.farl_transform, ours, 224),
        farl_scale=side / official.side,
    )
