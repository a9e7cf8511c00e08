"""The pinhole camera of the result contract: projection, axis-angle, focal length from EXIF (numpy + PIL).

Conventions (docs/result-file.md): a model-frame point p goes to the camera frame as p_cam = R(aa) p + t
(camera at the origin looking down -z, +y up, +x right); it lands on pixel u = cx + f X / (-Z),
v = cy - f Y / (-Z) of the upright photo (origin at the top-left pixel corner, v down).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

#: Diagonal of a 35 mm film frame (36 × 24 mm): EXIF's FocalLengthIn35mmFilm refers to it.
FILM_DIAGONAL_MM = math.hypot(36.0, 24.0)
#: Focal length assumed before fitting when the photo says nothing, as a multiple of the longer image
#: side: a 35 mm-equivalent ~40 mm lens, between a phone's wide camera (26 mm) and a portrait lens.
DEFAULT_FOCAL_PER_SIDE = 1.1
#: EXIF tags: FocalLengthIn35mmFilm, FocalLength, FocalPlaneXResolution, FocalPlaneResolutionUnit.
_TAG_F35, _TAG_FOCAL, _TAG_FPX, _TAG_FPUNIT = 0xA405, 0x920A, 0xA20E, 0xA210
_EXIF_IFD = 0x8769


@dataclass(frozen=True)
class Intrinsics:
    """Focal length and principal point in pixels of the upright photo, and where the focal came from."""

    focal: float
    cx: float
    cy: float
    source: str  # "exif" | "estimated"

    def as_array(self) -> np.ndarray:
        return np.array([self.focal, self.cx, self.cy], dtype=np.float32)


def rotation_matrix(axis_angle: np.ndarray) -> np.ndarray:
    """Rodrigues: (3,) axis-angle → (3, 3) rotation matrix."""
    aa = np.asarray(axis_angle, dtype=np.float64)
    angle = float(np.linalg.norm(aa))
    if angle < 1e-12:
        return np.eye(3)
    k = aa / angle
    skew = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + math.sin(angle) * skew + (1.0 - math.cos(angle)) * (skew @ skew)


def axis_angle(rotation: np.ndarray) -> np.ndarray:
    """(3, 3) rotation matrix → (3,) axis-angle (angle in [0, π])."""
    r = np.asarray(rotation, dtype=np.float64)
    cos = float(np.clip((np.trace(r) - 1.0) / 2.0, -1.0, 1.0))
    angle = math.acos(cos)
    if angle < 1e-9:
        return np.zeros(3)
    if angle > math.pi - 1e-6:  # near π the antisymmetric part vanishes: read the axis off R + I
        m = (r + np.eye(3)) / 2.0
        axis = m[int(np.argmax(np.diag(m)))]
        return axis / np.linalg.norm(axis) * angle
    axis = np.array([r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]]) / (2.0 * math.sin(angle))
    return axis * angle


def rotation_angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    """Angle in degrees of the rotation taking rotation matrix ``b`` to ``a``."""
    return math.degrees(float(np.linalg.norm(axis_angle(np.asarray(a) @ np.asarray(b).T))))


def euler_rotation(angles: np.ndarray) -> np.ndarray:
    """Rotation from (pitch about x, yaw about y, roll about z) in radians: roll, then yaw, then pitch."""
    pitch, yaw, roll = (float(a) for a in angles)
    return (
        rotation_matrix(np.array([pitch, 0.0, 0.0]))
        @ rotation_matrix(np.array([0.0, yaw, 0.0]))
        @ rotation_matrix(np.array([0.0, 0.0, roll]))
    )


def to_camera(points: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """(N, 3) model-frame points → camera frame under ``pose`` = axis-angle (3) + translation (3)."""
    pose = np.asarray(pose, dtype=np.float64)
    return np.asarray(points, dtype=np.float64) @ rotation_matrix(pose[:3]).T + pose[3:6]


def project_camera(points_cam: np.ndarray, focal: float, cx: float, cy: float) -> np.ndarray:
    """(N, 3) camera-frame points (Z < 0 in front) → (N, 2) pixels, contract convention."""
    p = np.asarray(points_cam, dtype=np.float64)
    depth = np.maximum(-p[:, 2], 1e-9)
    return np.stack([cx + focal * p[:, 0] / depth, cy - focal * p[:, 1] / depth], axis=1)


def project(points: np.ndarray, pose: np.ndarray, camera: np.ndarray) -> np.ndarray:
    """(N, 3) model-frame points → (N, 2) pixels with ``camera`` = (f, cx, cy)."""
    f, cx, cy = (float(v) for v in camera)
    return project_camera(to_camera(points, pose), f, cx, cy)


def default_intrinsics(width: int, height: int) -> Intrinsics:
    """The starting guess when the photo carries no focal length: centred principal point."""
    return Intrinsics(DEFAULT_FOCAL_PER_SIDE * max(width, height), width / 2.0, height / 2.0, "estimated")


def exif_focal_pixels(path: str | os.PathLike[str], width: int, height: int) -> float | None:
    """The focal length in pixels of the upright photo from its EXIF, or None when it cannot be known.

    Prefers FocalLengthIn35mmFilm (defined against the 35 mm frame's diagonal, so it holds for any aspect
    ratio); else FocalLength with FocalPlaneXResolution. The EXIF orientation does not change a focal
    length in pixels (the sensor's pixels are square).
    """
    try:
        from PIL import Image

        with Image.open(path) as image:
            exif = image.getexif()
            tags = dict(exif.get_ifd(_EXIF_IFD))
            tags.update({k: v for k, v in exif.items() if k not in tags})
    except Exception:  # no EXIF or an unreadable block: the focal is simply unknown
        return None
    diagonal = math.hypot(width, height)
    f35 = _positive(tags.get(_TAG_F35))
    if f35 is not None:
        return f35 * diagonal / FILM_DIAGONAL_MM
    focal_mm = _positive(tags.get(_TAG_FOCAL))
    per_unit = _positive(tags.get(_TAG_FPX))
    unit_mm = {2: 25.4, 3: 10.0, 4: 1.0}.get(int(tags.get(_TAG_FPUNIT, 2) or 2))
    if focal_mm is None or per_unit is None or unit_mm is None:
        return None
    # FocalPlaneXResolution counts pixels per unit of the *original* image; the photo may have been
    # downscaled since, which EXIF cannot tell us, so this path is only trusted when plausible.
    focal_px = focal_mm * per_unit / unit_mm
    return focal_px if 0.3 * max(width, height) <= focal_px <= 20.0 * max(width, height) else None


def _positive(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return number if math.isfinite(number) and number > 0 else None
