"""The two network inputs cut from the photo: the ArcFace 112² aligned crop and the FaRL 224² crop.

Both keep the 2×3 affine photo → crop (pixel coordinates, the ``cv2.warpAffine`` convention) so meshes
and points can be related to the photo; ``invert_affine`` gives crop → photo.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from .alignment import ARCFACE_SIZE, ARCFACE_TEMPLATE_112, apply_affine, fit_similarity

ChannelOrder = Literal["BGR", "RGB"]

#: Default plane order of the ArcFace blob: the official demo blobs are B,G,R (spec §9).
DEFAULT_ARCFACE_CHANNEL_ORDER: ChannelOrder = "BGR"

FARL_SIZE = 224
#: Side of the FaRL square as a multiple of the mean of the box's width and height.
FARL_BOX_FACTOR = 1.6
#: OpenAI CLIP normalisation (RGB), used by FaRL.
CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float64)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float64)


@dataclass(frozen=True)
class ArcFaceCrop:
    """``image`` (112, 112, 3) uint8 RGB; ``blob`` (3, 112, 112) float32 in [−1, 1], planes in
    ``channel_order``; ``transform`` 2×3 photo → crop; ``points`` the five photo points in the crop and
    ``residuals`` their distances to the template (crop pixels; a similarity cannot fit five points
    exactly, so these are never all zero)."""

    image: np.ndarray
    blob: np.ndarray
    transform: np.ndarray
    channel_order: ChannelOrder
    points: np.ndarray
    residuals: np.ndarray


@dataclass(frozen=True)
class FarlCrop:
    """``image`` (224, 224, 3) uint8 RGB (for contact sheets); ``tensor`` (3, 224, 224) float32, CLIP
    normalised RGB; ``transform`` 2×3 photo → crop; ``box`` the face box used and ``side`` the square's
    side in photo pixels."""

    image: np.ndarray
    tensor: np.ndarray
    transform: np.ndarray
    box: np.ndarray
    side: int


def arcface_crop(
    rgb: np.ndarray, points5: np.ndarray, channel_order: ChannelOrder = DEFAULT_ARCFACE_CHANNEL_ORDER
) -> ArcFaceCrop:
    """Align the face to the ArcFace template (least-squares similarity, bilinear, zero border)."""
    import cv2

    if channel_order not in ("BGR", "RGB"):
        raise ValueError(f"channel_order must be 'BGR' or 'RGB', not {channel_order!r}")
    _check_rgb(rgb)
    points5 = np.asarray(points5, dtype=np.float64)
    if points5.shape != (5, 2):
        raise ValueError(f"points5 must be (5, 2), got {points5.shape}")
    transform = fit_similarity(points5, ARCFACE_TEMPLATE_112)
    image = cv2.warpAffine(
        np.ascontiguousarray(rgb),
        transform,
        (ARCFACE_SIZE, ARCFACE_SIZE),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(0, 0, 0),
    )
    planes = image if channel_order == "RGB" else image[:, :, ::-1]
    blob = ((planes.astype(np.float32) - 127.5) / 127.5).transpose(2, 0, 1)
    points = apply_affine(transform, points5)
    return ArcFaceCrop(
        image=image,
        blob=np.ascontiguousarray(blob, dtype=np.float32),
        transform=transform,
        channel_order=channel_order,
        points=points,
        residuals=np.linalg.norm(points - ARCFACE_TEMPLATE_112, axis=1),
    )


def farl_transform(box: np.ndarray) -> tuple[np.ndarray, int]:
    """The 2×3 photo → 224-crop affine of a face box, and the square's side in photo pixels.

    Side s = int(1.6 × mean box size), centred on the box; the square's top-left, bottom-left and
    top-right corners go to (0, 0), (0, 223) and (223, 0): a scale of 223 / s, no rotation.
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    if not (x1 > x0 and y1 > y0):
        raise ValueError(f"the face box must have x1 > x0 and y1 > y0, got {[x0, y0, x1, y1]}")
    side = int(FARL_BOX_FACTOR * ((x1 - x0) + (y1 - y0)) / 2.0)
    if side < 1:
        raise ValueError(f"the face box {[x0, y0, x1, y1]} is too small for a FaRL crop")
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    left, top = cx - side / 2.0, cy - side / 2.0
    scale = (FARL_SIZE - 1) / side
    transform = np.array([[scale, 0.0, -left * scale], [0.0, scale, -top * scale]], dtype=np.float64)
    return transform, side


def farl_crop(rgb: np.ndarray, box: np.ndarray) -> FarlCrop:
    """The FaRL input: the 224² square crop around ``box`` (bilinear, zero padding), CLIP-normalised."""
    import cv2

    _check_rgb(rgb)
    box = np.asarray(box, dtype=np.float64).reshape(4)
    transform, side = farl_transform(box)
    image = cv2.warpAffine(
        np.ascontiguousarray(rgb),
        transform,
        (FARL_SIZE, FARL_SIZE),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(0, 0, 0),
    )
    return FarlCrop(image=image, tensor=clip_normalise(image), transform=transform, box=box, side=side)


def clip_normalise(image: np.ndarray) -> np.ndarray:
    """CLIP's image transform of a 224² RGB uint8 image → (3, 224, 224) float32.

    CLIP first resizes the shorter side to 224 (bicubic) and centre-crops 224; the FaRL crop is already
    224², so both are the identity and only the scaling and normalisation remain.
    """
    if image.shape != (FARL_SIZE, FARL_SIZE, 3):
        raise ValueError(f"expected a {FARL_SIZE}x{FARL_SIZE} RGB image, got {image.shape}")
    scaled = image.astype(np.float64) / 255.0
    normalised = (scaled - CLIP_MEAN) / CLIP_STD
    return np.ascontiguousarray(normalised.transpose(2, 0, 1), dtype=np.float32)


def _check_rgb(rgb: np.ndarray) -> None:
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {rgb.dtype} {rgb.shape}")
