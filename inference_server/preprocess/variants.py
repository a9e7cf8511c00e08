"""Test-time variants of an image for faces the detectors miss as they are: mirrored, rotated, contrast
normalised, padded. Each variant keeps the 2×3 affine back to the original image.

Why each one (measured in docs/preprocessing.md): the face mesh's own detector misses steeply bowed or
tilted heads (rotations), some hand-over-face poses are found in the mirror image only (the detector is
not exactly symmetric), dark and black-and-white photos gain from CLAHE on the lightness channel, and a
face cut by the frame is found more reliably, and its outline extrapolated past the edge, with a border
around the image.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

#: The variants tried, in order, when the plain image gives nothing (cheapest and most useful first).
DEFAULT_VARIANTS = ("pad", "flip", "clahe", "rotate-30", "rotate+30", "rotate-45", "rotate+45", "clahe-flip")
#: Border added by the "pad" variant, as a fraction of the longer side.
PAD_FRACTION = 0.25


@dataclass(frozen=True)
class ImageVariant:
    """``rgb`` the transformed image; ``to_original`` 2×3 affine variant → original pixels; ``mirrored``
    when the variant is a mirror image (left and right landmarks swap roles)."""

    name: str
    rgb: np.ndarray
    to_original: np.ndarray
    mirrored: bool


def make_variant(rgb: np.ndarray, name: str) -> ImageVariant:
    """One named variant: "pad", "flip", "clahe", "clahe-flip", "rotate±DEG"."""
    identity = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    if name == "plain":
        return ImageVariant(name, rgb, identity, False)
    if name == "pad":
        return _padded(rgb)
    if name == "flip":
        return _flipped(rgb, name)
    if name == "clahe":
        return ImageVariant(name, clahe(rgb), identity, False)
    if name == "clahe-flip":
        return _flipped(clahe(rgb), name)
    if name.startswith("rotate"):
        try:
            degrees = float(name[len("rotate") :])
        except ValueError:
            raise ValueError(f"unknown image variant {name!r}") from None
        return _rotated(rgb, degrees, name)
    raise ValueError(f"unknown image variant {name!r}")


def iter_variants(rgb: np.ndarray, names: tuple[str, ...] = DEFAULT_VARIANTS) -> Iterator[ImageVariant]:
    """The variants, built lazily (a caller that stops at the first success builds no more)."""
    for name in names:
        yield make_variant(rgb, name)


def clahe(rgb: np.ndarray) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation of the lightness (L of Lab); colours kept."""
    import cv2

    lab = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2LAB)
    lab[:, :, 0] = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(lab[:, :, 0])
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)


def _padded(rgb: np.ndarray) -> ImageVariant:
    import cv2

    height, width = rgb.shape[:2]
    pad = round(PAD_FRACTION * max(height, width))
    out = cv2.copyMakeBorder(np.ascontiguousarray(rgb), pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(0, 0, 0))
    return ImageVariant("pad", out, np.array([[1.0, 0.0, -pad], [0.0, 1.0, -pad]]), False)


def _flipped(rgb: np.ndarray, name: str) -> ImageVariant:
    width = rgb.shape[1]
    # Pixel centre x maps to width - 1 - x.
    return ImageVariant(
        name, np.ascontiguousarray(rgb[:, ::-1]), np.array([[-1.0, 0.0, width - 1.0], [0.0, 1.0, 0.0]]), True
    )


def _rotated(rgb: np.ndarray, degrees: float, name: str) -> ImageVariant:
    """Rotated about the centre on a canvas large enough to keep every pixel."""
    import cv2

    from .alignment import invert_affine

    height, width = rgb.shape[:2]
    forward = cv2.getRotationMatrix2D((width / 2.0, height / 2.0), degrees, 1.0)
    cos, sin = abs(forward[0, 0]), abs(forward[0, 1])
    new_width = int(np.ceil(height * sin + width * cos))
    new_height = int(np.ceil(height * cos + width * sin))
    forward[0, 2] += new_width / 2.0 - width / 2.0
    forward[1, 2] += new_height / 2.0 - height / 2.0
    out = cv2.warpAffine(
        np.ascontiguousarray(rgb), forward, (new_width, new_height), flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0),
    )  # fmt: skip
    return ImageVariant(name, out, invert_affine(forward), False)
