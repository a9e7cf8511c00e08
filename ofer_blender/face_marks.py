"""Face marks on a photo: a box or five points, stored as custom properties of the Image datablock.

Coordinates are photo pixels with the origin at the top-left corner and y pointing down, as the
worker's ``box``/``points`` request arguments expect. Blender's image space has y up (UV v = 0 at the
bottom); :func:`uv_to_pixels` converts. Points are in the contract's order: left eye centre, right eye
centre, nose tip, left mouth corner, right mouth corner, as seen in the photo.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .ids import IMAGE_BOX_KEY, IMAGE_FACE_KEY, IMAGE_POINTS_KEY

POINT_NAMES = ("left eye", "right eye", "nose tip", "left mouth corner", "right mouth corner")


class FaceMarkError(ValueError):
    pass


def _check_inside(values: Sequence[float], width: int, height: int, what: str) -> None:
    if not all(math.isfinite(v) for v in values):
        raise FaceMarkError(f"The {what} has a coordinate that is not a finite number")
    if width > 0 and height > 0:
        xs, ys = values[0::2], values[1::2]
        if min(xs) < 0 or max(xs) > width or min(ys) < 0 or max(ys) > height:
            raise FaceMarkError(f"The {what} lies outside the {width}×{height} photo (pixels, origin top-left)")


def set_points(image: Any, points: Sequence[float]) -> None:
    """Store five points (10 numbers: x0, y0, … x4, y4 in pixels); replaces a box."""
    values = [float(v) for v in points]
    if len(values) != 10:
        raise FaceMarkError("Five points need ten numbers: x, y of " + ", ".join(POINT_NAMES))
    _check_inside(values, int(image.size[0]), int(image.size[1]), "face points")
    image[IMAGE_POINTS_KEY] = values
    for key in (IMAGE_BOX_KEY, IMAGE_FACE_KEY):  # the points say which face: no other choice applies
        if key in image:
            del image[key]


def set_box(image: Any, box: Sequence[float]) -> None:
    """Store a face box [x0, y0, x1, y1] in pixels; replaces points."""
    values = [float(v) for v in box]
    if len(values) != 4 or not (values[2] > values[0] and values[3] > values[1]):
        raise FaceMarkError("A face box is [x0, y0, x1, y1] in pixels with x1 > x0 and y1 > y0")
    _check_inside(values, int(image.size[0]), int(image.size[1]), "face box")
    image[IMAGE_BOX_KEY] = values
    for key in (IMAGE_POINTS_KEY, IMAGE_FACE_KEY):  # the box says which face: no other choice applies
        if key in image:
            del image[key]


def clear(image: Any) -> None:
    for key in (IMAGE_BOX_KEY, IMAGE_POINTS_KEY, IMAGE_FACE_KEY):
        if key in image:
            del image[key]


def request_marks(image: Any) -> dict[str, Any]:
    """The ``box``/``points``/``face`` arguments of a reconstruct request for this image (empty when
    unmarked and no face was chosen from the list)."""
    if image is None:
        return {}
    if IMAGE_POINTS_KEY in image:
        flat = [float(v) for v in image[IMAGE_POINTS_KEY]]
        return {"points": [[flat[2 * i], flat[2 * i + 1]] for i in range(5)]}
    if IMAGE_BOX_KEY in image:
        return {"box": [float(v) for v in image[IMAGE_BOX_KEY]]}
    if IMAGE_FACE_KEY in image:
        return {"face": int(image[IMAGE_FACE_KEY])}
    return {}


def uv_to_pixels(u: float, v: float, width: int, height: int) -> tuple[float, float]:
    return u * width, (1.0 - v) * height


def pixels_to_uv(x: float, y: float, width: int, height: int) -> tuple[float, float]:
    return x / width, 1.0 - y / height
