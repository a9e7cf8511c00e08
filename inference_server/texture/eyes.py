"""The eyeballs' hidden texels: an eye, not skin (numpy).

The photo shows at most the part of an eyeball between the lids, and nothing of it behind sunglasses or a
hand, or with the eyes closed. The skin fill (pull-push over the whole map) then paints those texels in
the skin's colour: a head whose eyes, opened by an expression or seen from the side, are skin-coloured
balls. Instead every eyeball texel the photo (or its mirror) did not give takes the colour of an eye at
that point: pupil, iris and a darker limbal ring around the eye's forward axis (+z, where the model looks
at rest), sclera elsewhere. The iris and sclera colours are the photo's own where it shows them (median
of the seen texels in those bands), else a brown iris and an off-white sclera dimmed to the face's highlights.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .bake import UVRaster
from .occluder import channel_max, channel_min

#: Human iris and pupil radii (metres): the iris is ~11.7 mm across; a pupil in daylight ~3.5 mm.
IRIS_RADIUS_M = 5.9e-3
PUPIL_RADIUS_M = 1.75e-3
#: Width (radians) of the soft edge between pupil, iris and sclera, and of the darker limbal ring.
EDGE_RAD = 0.04
LIMBUS_RAD = 0.06
#: Colours (sRGB) where the photo shows no eye at all, in a photo whose face's highlights reach white.
DEFAULT_IRIS = (92, 66, 46)
DEFAULT_SCLERA = (226, 218, 210)
PUPIL_RGB = (16, 13, 12)
#: The face's highlights: this percentile of its seen texels' brightness (not the skin's median, which is
#: the skin's tone as much as the light) sets how far the default colours are dimmed, to at most MIN_LIGHT.
HIGHLIGHT_PERCENTILE = 98.0
MIN_LIGHT = 0.35
#: Seen texels needed in a band (iris or sclera) for the photo's own colour to be used.
MIN_BAND_TEXELS = 12
#: Sclera texels seen in the photo are bright and nearly colourless; others in that band are lids or lashes.
SCLERA_MAX_SATURATION = 0.3


@dataclass(frozen=True)
class EyeTexels:
    """One eyeball's texels in a UV raster: (rows, cols) and each one's angle (radians) from the eye's forward
    axis, on the sphere fitted to the eyeball's vertices."""

    rows: np.ndarray
    cols: np.ndarray
    angle: np.ndarray
    radius: float  # metres, of the fitted sphere


def fitted_sphere(points: np.ndarray) -> tuple[np.ndarray, float]:
    """(centre (3,), radius) of the least-squares sphere through ``points`` (N, 3)."""
    p = np.asarray(points, dtype=np.float64)
    a = np.concatenate([2.0 * p, np.ones((len(p), 1))], axis=1)
    solution = np.linalg.lstsq(a, (p * p).sum(axis=1), rcond=None)[0]
    centre = solution[:3]
    return centre, float(np.sqrt(max(solution[3] + centre @ centre, 0.0)))


def eye_texels(
    raster: UVRaster, template: np.ndarray, faces: np.ndarray, uv: np.ndarray, uv_faces: np.ndarray,
    members: np.ndarray,
) -> EyeTexels | None:  # fmt: skip
    """The texels of the triangles whose three corners are eyeball vertices ``members``; None without any."""
    vertices = np.asarray(template, dtype=np.float64)
    is_member = np.zeros(len(vertices), bool)
    is_member[np.asarray(members, dtype=np.int64)] = True
    on_eye = is_member[np.asarray(faces, dtype=np.int64)].all(axis=1)
    if not on_eye.any():
        return None
    # Only the texels in the eye triangles' UV box are looked at (a few % of the map).
    corners_uv = np.asarray(uv)[np.asarray(uv_faces)[on_eye]].reshape(-1, 2)
    size = raster.size
    c0, c1 = (np.clip(np.floor(corners_uv[:, 0].min() * size) - 1, 0, size - 1).astype(int),
              np.clip(np.ceil(corners_uv[:, 0].max() * size) + 1, 0, size - 1).astype(int))  # fmt: skip
    r0, r1 = (np.clip(np.floor((1.0 - corners_uv[:, 1].max()) * size) - 1, 0, size - 1).astype(int),
              np.clip(np.ceil((1.0 - corners_uv[:, 1].min()) * size) + 1, 0, size - 1).astype(int))  # fmt: skip
    box = raster.triangle[r0 : r1 + 1, c0 : c1 + 1]
    rows, cols = np.nonzero((box >= 0) & on_eye[np.maximum(box, 0)])
    if len(rows) == 0:
        return None
    rows, cols = rows + r0, cols + c0
    centre, radius = fitted_sphere(vertices[is_member])
    corners = vertices[np.asarray(faces)[raster.triangle[rows, cols]]]  # (n, 3, 3)
    points = np.einsum("nk,nkc->nc", raster.barycentric[rows, cols], corners)
    direction = points - centre
    cosine = direction[:, 2] / np.maximum(np.linalg.norm(direction, axis=1), 1e-12)
    return EyeTexels(rows, cols, np.arccos(np.clip(cosine, -1.0, 1.0)), radius)


def _band_colour(colors: np.ndarray, known: np.ndarray, eyes: list[EyeTexels], band: str,
                 iris_rad: float, pupil_rad: float) -> np.ndarray | None:  # fmt: skip
    """Median colour of the seen texels of ``band`` ("iris" or "sclera") over both eyes; None if too few."""
    picked = []
    for eye in eyes:
        seen = known[eye.rows, eye.cols]
        if band == "iris":
            inside = (eye.angle > pupil_rad + EDGE_RAD) & (eye.angle < iris_rad - LIMBUS_RAD)
        else:
            inside = eye.angle > iris_rad + EDGE_RAD
        c = colors[eye.rows[seen & inside], eye.cols[seen & inside]]
        if band == "sclera" and len(c):
            bright = channel_max(c)
            colourless = (bright - channel_min(c)) <= SCLERA_MAX_SATURATION * np.maximum(bright, 1.0)
            c, bright = c[colourless], bright[colourless]
            if len(c):  # the brighter half: the lids' rims and lashes bleed into the darker texels
                c = c[bright >= np.median(bright)]
        picked.append(c)
    values = np.concatenate(picked) if picked else np.zeros((0, 3))
    return np.median(values, axis=0) if len(values) >= MIN_BAND_TEXELS else None


def _smooth_step(x: np.ndarray) -> np.ndarray:
    t = np.clip(x, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def highlight_level(face_colors: np.ndarray) -> float:
    """The brightness (0..255) of the face's highlights among its seen colours (N, 3)."""
    bright = channel_max(np.asarray(face_colors, dtype=np.float64))
    return float(np.percentile(bright, HIGHLIGHT_PERCENTILE)) if len(bright) else 255.0


def paint_eyes(colors: np.ndarray, known: np.ndarray, eyes: list[EyeTexels], highlight: float) -> np.ndarray:
    """Paint every eyeball texel of the (S, S, 3) float map ``colors`` (in place) that is not ``known`` (S, S)
    as an eye; returns the painted texels (S, S). ``highlight`` (0..255, :func:`highlight_level`) dims the
    default colours to the photo's light."""
    painted = np.zeros(known.shape, bool)
    if not eyes:
        return painted
    radius = float(np.median([eye.radius for eye in eyes]))
    iris_rad = float(np.arcsin(min(1.0, IRIS_RADIUS_M / max(radius, 1e-6))))
    pupil_rad = float(np.arcsin(min(1.0, PUPIL_RADIUS_M / max(radius, 1e-6))))
    light = float(np.clip(highlight / 255.0, MIN_LIGHT, 1.0))
    iris = _band_colour(colors, known, eyes, "iris", iris_rad, pupil_rad)
    sclera = _band_colour(colors, known, eyes, "sclera", iris_rad, pupil_rad)
    iris = np.asarray(DEFAULT_IRIS, np.float64) * light if iris is None else iris
    sclera = np.asarray(DEFAULT_SCLERA, np.float64) * light if sclera is None else sclera
    pupil = np.asarray(PUPIL_RGB, np.float64)
    for eye in eyes:
        todo = ~known[eye.rows, eye.cols]
        angle = eye.angle[todo]
        to_iris = _smooth_step((angle - pupil_rad) / EDGE_RAD + 0.5)[:, None]
        to_sclera = _smooth_step((angle - iris_rad) / EDGE_RAD + 0.5)[:, None]
        ring = 1.0 - 0.45 * _smooth_step((angle - (iris_rad - LIMBUS_RAD)) / LIMBUS_RAD)[:, None]
        eye_colour = pupil + (iris * ring - pupil) * to_iris
        eye_colour = eye_colour + (sclera - eye_colour) * to_sclera
        colors[eye.rows[todo], eye.cols[todo]] = eye_colour
        painted[eye.rows[todo], eye.cols[todo]] = True
    return painted
