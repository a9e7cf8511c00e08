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
from dataclasses import dataclass

import cv2
import numpy as np

from ..fit.camera import project_camera, rotation_matrix
from ..preprocess.hands import find_hands
from ..render import rasterize, vertex_normals
from .occluder import FeatureZones, SkinModel, fit_skin_model, occluded, solid_dark
from .skin_cover import skin_coloured_cover

#: Texels facing the camera less than this (cosine of the angle to the line of sight) are left out.
MIN_FACING = math.cos(math.radians(72.0))
#: A texel is visible when it lies at most this far (metres) behind the nearest surface at its pixel.
DEPTH_TOLERANCE = 2.0e-3
#: Longest side of the face's bounding box in the visibility z-buffer (larger photos are scaled down).
ZBUFFER_SIDE = 1024
#: The occluder mask is widened by this fraction of the eye distance in the photo.
OCCLUDER_GROW_IOD = 0.06


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
    # Only the covered texels (about a third of the map) are computed; the rest stay 0 / not visible.
    cov = raster.covered
    tri = faces[raster.triangle[cov]]  # (n, 3)
    bary = raster.barycentric[cov]  # (n, 3)
    points = _blend(bary, cam_vertices, tri)
    normals = _blend(bary, vertex_normals(vertices, faces) @ rotation.T, tri)
    pix = project_camera(points, f, cx, cy)
    sight = -points / np.maximum(_norm(points), 1e-12)[:, None]
    cos = _dot(normals, sight) / np.maximum(_norm(normals), 1e-12)
    in_photo = (pix[:, 0] >= 0) & (pix[:, 0] < width) & (pix[:, 1] >= 0) & (pix[:, 1] < height)
    in_front = in_photo & (points[:, 2] < 0)
    # Z-buffer of the whole head seen by this camera, at a resolution that keeps the face ≤ ZBUFFER_SIDE.
    screen = project_camera(cam_vertices, f, cx, cy)
    lo = np.floor(screen.min(axis=0)) - 2
    extent = float(np.max(screen.max(axis=0) - lo)) + 4
    scale = min(1.0, ZBUFFER_SIDE / max(extent, 1.0))
    side_w = math.ceil((screen[:, 0].max() - lo[0] + 4) * scale)
    side_h = math.ceil((screen[:, 1].max() - lo[1] + 4) * scale)
    zbuf = rasterize((screen - lo) * scale, cam_vertices[:, 2], faces, side_w, side_h).depth
    px = np.clip(((pix[:, 0] - lo[0]) * scale).astype(np.int64), 0, side_w - 1)
    py = np.clip(((pix[:, 1] - lo[1]) * scale).astype(np.int64), 0, side_h - 1)
    unoccluded = points[:, 2] >= zbuf[py, px] - DEPTH_TOLERANCE
    pixel = np.zeros((raster.size, raster.size, 2))
    facing = np.zeros((raster.size, raster.size))
    visible = np.zeros((raster.size, raster.size), bool)
    pixel[cov], facing[cov] = pix, cos
    visible[cov] = in_front & unoccluded & (cos >= MIN_FACING)
    return Projection(pixel=pixel, visible=visible, facing=facing)


def _blend(bary: np.ndarray, values: np.ndarray, tri: np.ndarray) -> np.ndarray:
    """(n, C) barycentric blend of per-vertex ``values`` at the corners ``tri`` (n, 3)."""
    return (
        bary[:, 0, None] * values[tri[:, 0]]
        + bary[:, 1, None] * values[tri[:, 1]]
        + bary[:, 2, None] * values[tri[:, 2]]
    )


def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise dot product of (n, 3) arrays (numpy's sum over a length-3 axis is slow)."""
    return a[:, 0] * b[:, 0] + a[:, 1] * b[:, 1] + a[:, 2] * b[:, 2]


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
    cov = raster.covered  # only covered texels: a third of S²
    position = _blend(raster.barycentric[cov], np.asarray(template, dtype=np.float64), faces[raster.triangle[cov]])
    iod = float(np.linalg.norm(landmarks[36:42].mean(axis=0) - landmarks[42:48].mean(axis=0)))

    def within(points: np.ndarray, radius: float) -> np.ndarray:
        """Texels at most ``radius`` from one of ``points`` (k, 3); only those inside the points'
        bounding box widened by ``radius`` are measured (a zone is a small part of the map)."""
        low, high = points.min(axis=0) - radius, points.max(axis=0) + radius
        box = np.ones(len(position), bool)
        for k in range(3):
            box &= (position[:, k] >= low[k]) & (position[:, k] <= high[k])
        idx = np.nonzero(box)[0]
        d2 = np.full(len(idx), np.inf)
        for p in points:
            diff = position[idx] - p
            d2 = np.minimum(d2, _dot(diff, diff))
        out = np.zeros(len(position), bool)
        out[idx] = np.sqrt(d2) <= radius
        return out

    def near(indices: range, radius: float) -> np.ndarray:
        return within(landmarks[list(indices)], radius * iod)

    opening = np.zeros(len(position), bool)
    for eye in (range(36, 42), range(42, 48)):
        pts = landmarks[list(eye)]
        width = float(np.linalg.norm(pts[0] - pts[3]))
        opening |= within(pts.mean(axis=0, keepdims=True), 0.5 * width)
    mouth = near(range(48, 68), 0.16)
    brows = near(range(17, 27), 0.12) | near(range(36, 48), 0.12) | near(range(31, 36), 0.06)

    def full(values: np.ndarray) -> np.ndarray:
        out = np.zeros(cov.shape, bool)
        out[cov] = values
        return out

    return FeatureZones(mouth=full(mouth), brows=full(brows), eye_opening=full(opening))


def occluder_texels(
    rgb: np.ndarray, colors: np.ndarray, projection: Projection, zones: FeatureZones, iod_px: float,
    points5: np.ndarray | None = None,
) -> tuple[np.ndarray, SkinModel]:  # fmt: skip
    """(S, S) bool: texels whose photo pixel is (near) occluder evidence, and the skin model used.
    ``points5`` (5, 2): the head's eyes, nose tip and mouth corners in the photo, for the hand search."""
    seen = projection.visible
    skin = fit_skin_model(colors[seen])
    height, width = rgb.shape[:2]
    px = np.clip((projection.pixel[..., 0] - 0.5).round().astype(np.int64), 0, width - 1)
    py = np.clip((projection.pixel[..., 1] - 0.5).round().astype(np.int64), 0, height - 1)
    # Dark objects are judged in the photo (their extent, not their colour, tells them from brows), on
    # the face's bounding box only: a large photo is mostly not face.
    x0, y0 = px[seen].min(), py[seen].min()
    x1, y1 = px[seen].max() + 1, py[seen].max() + 1
    dark = np.zeros(px.shape, bool)
    dark[seen] = solid_dark(rgb[y0:y1, x0:x1], skin, iod_px)[py[seen] - y0, px[seen] - x0]
    flagged = dark.copy()  # the colour test on the seen texels only (a fraction of the map)
    seen_zones = FeatureZones(mouth=zones.mouth[seen], brows=zones.brows[seen], eye_opening=zones.eye_opening[seen])
    flagged[seen] |= occluded(colors[seen], skin, seen_zones)
    flagged &= seen
    # Paint the flagged texels' pixels into a photo-sized mask and widen it, so the occluder's soft
    # edge (colours halfway to skin) stays out; then read the mask back at every texel.
    mask = np.zeros((height, width), np.uint8)
    xy = np.round(projection.pixel[flagged] - 0.5).astype(np.int64)
    xy[:, 0] = xy[:, 0].clip(0, width - 1)
    xy[:, 1] = xy[:, 1].clip(0, height - 1)
    mask[xy[:, 1], xy[:, 0]] = 255
    # Skin-coloured occluders (hands) are found by the features they hide (skin_cover.py).
    mask[skin_coloured_cover(rgb, colors, seen, projection.pixel, zones, skin, iod_px)] = 255
    # Hands by their shape (palm detector + hand landmarks), whatever their colour.
    mask[find_hands(rgb, points5).mask(height, width)] = 255
    radius = max(1, round(OCCLUDER_GROW_IOD * iod_px))
    # The dilation also closes the gaps between sparse texel hits (texels are coarser than a big photo).
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    mask = np.asarray(cv2.dilate(mask, kernel), dtype=np.uint8)
    return (mask[py, px] > 0) & seen, skin
