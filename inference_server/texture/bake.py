"""The photo projected into the head's UV map (numpy + OpenCV).

Every texel is sent through its triangle to a point on the posed head, through the fitted camera to a
pixel of the photo, and kept only when (a) the head's own z-buffer says that point is what the camera
sees, (b) the surface faces the camera more than a grazing angle, and (c) the photo's colour there is
face, not occluder (:mod:`.occluder`, :mod:`.skin_cover`, and the hands a hand detector finds in the
photo, :mod:`..preprocess.hands`); the occluder mask is widened in the photo so an occluder's soft
edge stays out too.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import cv2
import numpy as np

from ..fit.camera import project_camera, rotation_matrix
from ..preprocess.hands import find_hands
from ..render import depth_buffer, rasterize, vertex_normals
from .occluder import (
    FeatureZones,
    SkinModel,
    SkinModelError,
    ZoneParts,
    cie_lab,
    fit_hue_model,
    fit_skin_model,
    occluded,
    off_skin_hue,
    patterned,
    solid_dark,
    zone_parts,
)
from .skin_cover import skin_coloured_cover

#: Texels facing the camera less than this (cosine of the angle to the line of sight) are left out.
MIN_FACING = math.cos(math.radians(72.0))
#: A texel is visible when it lies at most this far (metres) behind the nearest surface at its pixel.
DEPTH_TOLERANCE = 2.0e-3
#: Longest side of the face's bounding box in the visibility z-buffer (larger photos are scaled down).
ZBUFFER_SIDE = 1024
#: The occluder mask is widened by this fraction of the eye distance in the photo.
OCCLUDER_GROW_IOD = 0.06
#: Covered-texel layouts kept per process (one per model and texture size; a worker uses one or two).
MAX_COVERED_KEPT = 4
#: Margin (metres) of the zones' box against rounding when triangles are picked by their corners' box.
ZONE_BOX_MARGIN = 1e-9


@dataclass(frozen=True)
class UVRaster:
    """Which triangle and barycentric weights every texel of a size² map has (-1: no triangle)."""

    size: int
    triangle: np.ndarray  # (S, S) int64
    barycentric: np.ndarray  # (S, S, 3)

    @property
    def covered(self) -> np.ndarray:
        return self.triangle >= 0

    def interpolate(self, per_vertex: np.ndarray, faces: np.ndarray) -> np.ndarray:
        """(S, S, C) values of a per-vertex attribute (V, C) at the covered texels (zeros elsewhere)."""
        out = np.zeros((self.size, self.size, per_vertex.shape[1]))
        cov = self.covered
        corners = per_vertex[faces[self.triangle[cov]]]  # (n, 3, C)
        out[cov] = np.einsum("nk,nkc->nc", self.barycentric[cov], corners)
        return out


def rasterize_uv(uv: np.ndarray, uv_faces: np.ndarray, size: int) -> UVRaster:
    """Texel row 0 is v = 1 (the PNG's top row), column 0 is u = 0: the OpenGL / Blender convention."""
    xy = np.stack([uv[:, 0] * size, (1.0 - uv[:, 1]) * size], axis=1)
    raster = rasterize(xy, np.zeros(len(uv)), uv_faces, size, size)
    return UVRaster(size, raster.triangle, raster.barycentric)


@dataclass(frozen=True)
class CoveredTexels:
    """The covered texels of a UV raster with the model's faces, laid out for blending per-vertex values.
    They depend on the model only, so they are made once per raster (:func:`covered_texels`)."""

    index: np.ndarray  # (n,) flat (row-major) indices of the covered texels
    triangle: np.ndarray  # (n,) their triangles
    corners: np.ndarray  # (3, n) the triangles' vertex ids, one contiguous row per corner
    weights: np.ndarray  # (3, n) the barycentric weights, one contiguous row per corner

    def blend(self, values: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """(C, n) barycentric blend of per-vertex ``values`` (V, C) at the covered texels (``rows`` of them
        when given): w0 v0 + w1 v1 + w2 v2, the same products and sums in the same order at every texel as
        the (n, 3) form, but gathered along contiguous rows (~2x faster on 185 k texels)."""
        table = np.ascontiguousarray(np.asarray(values, dtype=np.float64).T)
        corners, weights = self.corners, self.weights
        if rows is not None:
            corners, weights = corners[:, rows], weights[:, rows]
        out = np.take(table, corners[0], axis=1)
        out *= weights[0]
        term = np.take(table, corners[1], axis=1)
        term *= weights[1]
        out += term
        np.take(table, corners[2], axis=1, out=term)
        term *= weights[2]
        out += term
        return out


#: Covered-texel layouts kept per process: (raster, faces, layout), newest last.
_COVERED: list[tuple[UVRaster, np.ndarray, CoveredTexels]] = []
_COVERED_LOCK = threading.Lock()  # the server runs jobs on threads


def covered_texels(raster: UVRaster, faces: np.ndarray) -> CoveredTexels:
    """The covered texels of ``raster`` (triangle ids into ``faces``), made once per raster and faces."""
    with _COVERED_LOCK:
        for kept_raster, kept_faces, texels in _COVERED:
            if kept_raster is raster and np.array_equal(kept_faces, faces):
                return texels
    index = np.flatnonzero(raster.triangle.reshape(-1) >= 0)
    triangle = raster.triangle.reshape(-1)[index]
    texels = CoveredTexels(
        index=index, triangle=triangle, corners=np.ascontiguousarray(np.asarray(faces, dtype=np.int64)[triangle].T),
        weights=np.ascontiguousarray(raster.barycentric.reshape(-1, 3)[index].T),
    )  # fmt: skip
    with _COVERED_LOCK:
        _COVERED.append((raster, np.array(faces, copy=True), texels))
        del _COVERED[:-MAX_COVERED_KEPT]
    return texels


@dataclass(frozen=True)
class Projection:
    """Where each covered texel lands in the photo and whether the photo shows it there."""

    pixel: np.ndarray  # (S, S, 2) photo pixel coordinates (x, y), continuous
    visible: np.ndarray  # (S, S) bool: in the photo, in front, facing the camera
    facing: np.ndarray  # (S, S) cosine between the surface normal and the line of sight


def project_texels(
    raster: UVRaster, vertices: np.ndarray, faces: np.ndarray, pose: np.ndarray, camera: np.ndarray,
    width: int, height: int,
) -> Projection:  # fmt: skip
    """Project every covered texel of the head ``vertices`` (model frame) into the photo."""
    rotation = rotation_matrix(pose[:3])
    cam_vertices = vertices @ rotation.T + pose[3:6]
    f, cx, cy = (float(c) for c in camera)
    # Only the covered texels (about two thirds of the map) are computed; the rest stay 0 / not visible.
    texels = covered_texels(raster, faces)
    points = texels.blend(cam_vertices)  # (3, n)
    normals = texels.blend(vertex_normals(vertices, faces) @ rotation.T)
    pix = project_camera(points.T, f, cx, cy)
    sight = -points / np.maximum(_norm(points), 1e-12)
    cos = _dot(normals, sight) / np.maximum(_norm(normals), 1e-12)
    in_photo = (pix[:, 0] >= 0) & (pix[:, 0] < width) & (pix[:, 1] >= 0) & (pix[:, 1] < height)
    in_front = in_photo & (points[2] < 0)
    # Z-buffer of the whole head seen by this camera, at a resolution that keeps the face ≤ ZBUFFER_SIDE.
    screen = project_camera(cam_vertices, f, cx, cy)
    lo = np.floor(screen.min(axis=0)) - 2
    extent = float(np.max(screen.max(axis=0) - lo)) + 4
    scale = min(1.0, ZBUFFER_SIDE / max(extent, 1.0))
    side_w = math.ceil((screen[:, 0].max() - lo[0] + 4) * scale)
    side_h = math.ceil((screen[:, 1].max() - lo[1] + 4) * scale)
    zbuf = depth_buffer((screen - lo) * scale, cam_vertices[:, 2], faces, side_w, side_h)
    px = np.clip(((pix[:, 0] - lo[0]) * scale).astype(np.int64), 0, side_w - 1)
    py = np.clip(((pix[:, 1] - lo[1]) * scale).astype(np.int64), 0, side_h - 1)
    unoccluded = points[2] >= zbuf[py, px] - DEPTH_TOLERANCE
    pixel = np.zeros((raster.size, raster.size, 2))
    facing = np.zeros((raster.size, raster.size))
    visible = np.zeros((raster.size, raster.size), bool)
    pixel.reshape(-1, 2)[texels.index] = pix
    facing.reshape(-1)[texels.index] = cos
    visible.reshape(-1)[texels.index] = in_front & unoccluded & (cos >= MIN_FACING)
    return Projection(pixel=pixel, visible=visible, facing=facing)


def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dot products of (3, n) arrays' columns (numpy's sum over a length-3 axis is slow)."""
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def _norm(a: np.ndarray) -> np.ndarray:
    return np.sqrt(_dot(a, a))


def sample_photo(rgb: np.ndarray, pixel: np.ndarray) -> np.ndarray:
    """Bilinear colours (S, S, 3) float of the photo at continuous pixel positions (centres at +0.5)."""
    map_x = (pixel[..., 0] - 0.5).astype(np.float32)
    map_y = (pixel[..., 1] - 0.5).astype(np.float32)
    out = cv2.remap(rgb, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return np.asarray(out, dtype=np.float64)


def texel_zones(raster: UVRaster, template: np.ndarray, faces: np.ndarray, landmarks: np.ndarray) -> FeatureZones:
    """Feature zones of the UV map from where the model's 68 landmarks sit on the head: texels near the
    lips, near the eyes and brows, and inside each eye's corner-to-corner circle."""
    zones = zone_parts(landmarks)
    eye_parts, mouth_parts, brow_parts = zones["eye_opening"], zones["mouth"], zones["brows"]
    texels = covered_texels(raster, faces)
    # The zones are a small part of the head: only the texels of triangles that reach the zones' bounding box
    # are blended and measured (a texel lies in its triangle's corner box, to rounding: the margin).
    boxes = [(p.min(axis=0) - r, p.max(axis=0) + r) for p, r in eye_parts + mouth_parts + brow_parts]
    low = np.min([b[0] for b in boxes], axis=0) - ZONE_BOX_MARGIN
    high = np.max([b[1] for b in boxes], axis=0) + ZONE_BOX_MARGIN
    vertices = np.asarray(template, dtype=np.float64)
    a, b, c = vertices[faces[:, 0]], vertices[faces[:, 1]], vertices[faces[:, 2]]
    reaches = (np.maximum(np.maximum(a, b), c) >= low) & (np.minimum(np.minimum(a, b), c) <= high)
    reaches = reaches[:, 0] & reaches[:, 1] & reaches[:, 2]
    rows = np.flatnonzero(reaches[texels.triangle])
    position = texels.blend(template, rows)  # (3, m)

    def within(points: np.ndarray, radius: float) -> np.ndarray:
        """Texels at most ``radius`` from one of ``points`` (k, 3); only those inside the points'
        bounding box widened by ``radius`` are measured."""
        low, high = points.min(axis=0) - radius, points.max(axis=0) + radius
        box = np.ones(position.shape[1], bool)
        for k in range(3):
            box &= (position[k] >= low[k]) & (position[k] <= high[k])
        idx = np.nonzero(box)[0]
        d2 = np.full(len(idx), np.inf)
        for p in points:
            diff = position[:, idx] - p[:, None]
            d2 = np.minimum(d2, _dot(diff, diff))
        out = np.zeros(position.shape[1], bool)
        out[idx] = np.sqrt(d2) <= radius
        return out

    def full(parts: ZoneParts) -> np.ndarray:
        values = np.zeros(position.shape[1], bool)
        for points, radius in parts:
            values |= within(points, radius)
        out = np.zeros(raster.size * raster.size, bool)
        out[texels.index[rows]] = values
        return out.reshape(raster.size, raster.size)

    return FeatureZones(mouth=full(mouth_parts), brows=full(brow_parts), eye_opening=full(eye_parts))


def _off_skin_hue(colors: np.ndarray, skin: SkinModel, zones: FeatureZones) -> np.ndarray:
    """``occluder.off_skin_hue`` of the seen texels' colours; nothing where too few of them are bright."""
    ab = cie_lab(colors)[:, 1:]  # once for both
    try:
        hue = fit_hue_model(colors, skin, ab)
    except SkinModelError:
        return np.zeros(len(colors), bool)
    return off_skin_hue(colors, skin, hue, zones, ab)


def _patterned(rgb: np.ndarray, skin: SkinModel, iod_px: float) -> np.ndarray:
    """``occluder.patterned`` of the face's box (a module hook: benchmarks compare the texture without it)."""
    return patterned(rgb, skin, iod_px)


def occluder_texels(
    rgb: np.ndarray, colors: np.ndarray, projection: Projection, zones: FeatureZones, iod_px: float,
    points5: np.ndarray | None = None, closed_eyes_x: tuple[float, ...] = (),
) -> tuple[np.ndarray, SkinModel]:  # fmt: skip
    """(S, S) bool: texels whose photo pixel is (near) occluder evidence, and the skin model used.
    ``points5`` (5, 2): the head's eyes, nose tip and mouth corners in the photo, for the hand search;
    ``closed_eyes_x``: the photo x of eyes the photo shows closed (:func:`.skin_cover.covered_features`)."""
    seen = projection.visible
    # Everything per texel is computed on the seen texels only (a fraction of the map).
    seen_colors, seen_pixel = colors[seen], projection.pixel[seen]
    skin = fit_skin_model(seen_colors)
    height, width = rgb.shape[:2]
    px = np.clip((seen_pixel[:, 0] - 0.5).round().astype(np.int64), 0, width - 1)
    py = np.clip((seen_pixel[:, 1] - 0.5).round().astype(np.int64), 0, height - 1)
    # Dark objects are judged in the photo (their extent, not their colour, tells them from brows), on
    # the face's bounding box only: a large photo is mostly not face.
    x0, y0 = px.min(), py.min()
    x1, y1 = px.max() + 1, py.max() + 1
    flagged = solid_dark(rgb[y0:y1, x0:x1], skin, iod_px)[py - y0, px - x0]
    seen_zones = FeatureZones(mouth=zones.mouth[seen], brows=zones.brows[seen], eye_opening=zones.eye_opening[seen])
    flagged |= occluded(seen_colors, skin, seen_zones)
    flagged |= _off_skin_hue(seen_colors, skin, seen_zones)
    # Fine texture where the face has none (features may be detailed: their zones are not judged).
    features = seen_zones.mouth | seen_zones.brows | seen_zones.eye_opening
    flagged |= _patterned(rgb[y0:y1, x0:x1], skin, iod_px)[py - y0, px - x0] & ~features
    # Paint the flagged texels' pixels into a photo-sized mask and widen it, so the occluder's soft
    # edge (colours halfway to skin) stays out; then read the mask back at every texel.
    mask = np.zeros((height, width), np.uint8)
    mask[py[flagged], px[flagged]] = 255
    # Skin-coloured occluders (hands) are found by the features they hide (skin_cover.py).
    hand_like = skin_coloured_cover(
        rgb, colors, seen, projection.pixel, zones, skin, iod_px, closed_eyes_x=closed_eyes_x
    )
    mask[hand_like] = 255
    # Hands by their shape (palm detector + hand landmarks), whatever their colour.
    mask[find_hands(rgb, points5).mask(height, width)] = 255
    radius = max(1, round(OCCLUDER_GROW_IOD * iod_px))
    # The dilation also closes the gaps between sparse texel hits (texels are coarser than a big photo).
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    mask = np.asarray(cv2.dilate(mask, kernel), dtype=np.uint8)
    out = np.zeros(seen.shape, bool)
    out[seen] = mask[py, px] > 0
    return out, skin
