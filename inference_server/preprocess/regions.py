"""Photo regions for detection: boxes given by the user, crops around boxes, tiles, overlaps."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .alignment import invert_affine
from .mediapipe_faces import DetectorFace

#: Smallest tile for the tiled detector pass, in pixels.
MIN_TILE = 256


def square_crop(rgb: np.ndarray, box: np.ndarray, context: float, side: int) -> tuple[np.ndarray, np.ndarray]:
    """A ``side``² crop of the square of ``context`` × the box's longer side around the box centre,
    zero-padded outside the photo; returns the crop and the 2×3 affine crop → photo."""
    import cv2

    x0, y0, x1, y1 = (float(v) for v in box)
    half = context * max(x1 - x0, y1 - y0) / 2.0
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    scale = side / (2.0 * half)
    # Pixel centres: photo (cx - half, cy - half) edge maps to crop edge 0; see crops.py for the same rule.
    to_crop = np.array([[scale, 0.0, -(cx - half) * scale], [0.0, scale, -(cy - half) * scale]])
    interpolation = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
    crop = cv2.warpAffine(
        np.ascontiguousarray(rgb),
        to_crop,
        (side, side),
        flags=interpolation,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(0, 0, 0),
    )
    return crop, invert_affine(to_crop)


def extent(points: np.ndarray) -> np.ndarray:
    return np.concatenate([points.min(axis=0), points.max(axis=0)])


def distance(box: np.ndarray, target: np.ndarray) -> float:
    return math.hypot((box[0] + box[2]) / 2.0 - target[0], (box[1] + box[3]) / 2.0 - target[1])


def tile_sides(width: int, height: int) -> list[int]:
    """Tile sides for the tiled pass: half, then a quarter of the shorter side, never below MIN_TILE."""
    shorter = min(width, height)
    return [side for side in (shorter // 2, shorter // 4) if side >= MIN_TILE]


def tile_origins(width: int, height: int, side: int) -> list[tuple[int, int]]:
    """Top-left corners of tiles of ``side`` overlapping by half, covering the image to its edges."""

    def starts(length: int) -> list[int]:
        if length <= side:
            return [0]
        step = side // 2
        values = list(range(0, length - side, step))
        values.append(length - side)
        return values

    return [(x, y) for y in starts(height) for x in starts(width)]


def merge_duplicates(faces: list[DetectorFace]) -> list[DetectorFace]:
    """One hit per face: overlapping tiles and the two models find the same face more than once."""
    kept: list[DetectorFace] = []
    for face in sorted(faces, key=lambda f: -f.score):
        if all(iou(face.box, other.box) < 0.3 for other in kept):
            kept.append(face)
    return kept


def iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = overlap(a, b)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def nearest(boxes: Sequence[np.ndarray], target: np.ndarray) -> int:
    """Index of the box whose centre is nearest ``target``."""
    distances = [math.hypot((b[0] + b[2]) / 2.0 - target[0], (b[1] + b[3]) / 2.0 - target[1]) for b in boxes]
    return int(np.argmin(distances))


def overlap(a: np.ndarray, b: np.ndarray) -> float:
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    return float(max(width, 0.0) * max(height, 0.0))
