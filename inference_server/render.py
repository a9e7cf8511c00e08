"""A small numpy software rasteriser for previews, contact sheets and synthetic training renders.

Orthographic (weak-perspective) camera looking down -z at the mesh, or the result contract's pinhole
camera (:class:`PinholeCamera`), a z-buffer, smooth per-vertex normals,
Lambert + ambient shading and optional per-vertex colours. No OpenGL, no GPU: it runs anywhere numpy does.
Triangles are rasterised in batches grouped by the size of their pixel bounding box, so a 5k-vertex head
at 512×512 is a handful of array operations rather than a Python loop over triangles.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

#: The most candidate pixels one batch may test (bounds memory for big triangles).
_MAX_CANDIDATES_PER_BATCH = 1 << 22


class RenderError(ValueError):
    """Bad input to the renderer (wrong shapes, empty mesh, bad image size)."""


@dataclass(frozen=True)
class Camera:
    """Orthographic camera that looks at the mesh along -z (the FLAME face looks along +z).

    The mesh is first turned by ``yaw_deg`` about the vertical axis (positive turns the face towards the
    viewer's left, showing the head's left cheek) and then by ``pitch_deg`` about the horizontal axis
    (positive tilts the face up). ``center`` is the world point drawn at the image centre and ``extent`` how
    many metres fit across the shorter image side; ``None`` fits the turned mesh's bounding box with
    ``margin`` (a fraction of the extent) on every side.
    """

    yaw_deg: float = 0.0
    pitch_deg: float = 0.0
    center: tuple[float, float, float] | None = None
    extent: float | None = None
    margin: float = 0.06

    def rotation(self) -> np.ndarray:
        yaw = math.radians(self.yaw_deg)
        pitch = math.radians(self.pitch_deg)
        cy, sy = math.cos(yaw), math.sin(yaw)
        cp, sp = math.cos(pitch), math.sin(pitch)
        turn = np.array([[cy, 0.0, -sy], [0.0, 1.0, 0.0], [sy, 0.0, cy]])
        tilt = np.array([[1.0, 0.0, 0.0], [0.0, cp, sp], [0.0, -sp, cp]])
        return tilt @ turn


@dataclass(frozen=True)
class PinholeCamera:
    """The result file's perspective camera: p_cam = R(pose[:3]) p + pose[3:], u = cx + f X / (-Z),
    v = cy - f Y / (-Z), for an image of ``width`` × ``height`` pixels (rendering at another size scales
    the intrinsics)."""

    pose: tuple[float, float, float, float, float, float]
    focal: float
    cx: float
    cy: float
    width: int
    height: int

    def rotation(self) -> np.ndarray:
        from .fit.camera import rotation_matrix

        return rotation_matrix(np.asarray(self.pose[:3], dtype=np.float64))


AnyCamera = Camera | PinholeCamera


@dataclass(frozen=True)
class Rasterized:
    """Which triangle covers each pixel (-1: none) and the barycentric weights of the pixel centre in it."""

    triangle: np.ndarray  # int64 (H, W)
    barycentric: np.ndarray  # float64 (H, W, 3)
    depth: np.ndarray  # float64 (H, W), view-space z (larger is nearer); -inf where empty


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted, unit-length per-vertex normals (zero for vertices that no face uses)."""
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    face_normals = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    normals = np.zeros_like(v)
    for corner in range(3):
        for axis in range(3):
            normals[:, axis] += np.bincount(f[:, corner], weights=face_normals[:, axis], minlength=len(v))
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    return np.divide(normals, length, out=np.zeros_like(normals), where=length > 0)


def rasterize(screen_xy: np.ndarray, depth: np.ndarray, faces: np.ndarray, width: int, height: int) -> Rasterized:
    """Z-buffered coverage of triangles given in pixel coordinates (x right, y down; pixel centres at +0.5).

    A pixel belongs to the nearest (largest ``depth``) triangle that contains its centre.
    """
    pixel_parts: list[np.ndarray] = []
    depth_parts: list[np.ndarray] = []
    tri_parts: list[np.ndarray] = []
    bary_parts: list[np.ndarray] = []
    for pixels, depths, tri, w0, w1, w2 in _fragments(screen_xy, depth, faces, width, height):
        pixel_parts.append(pixels)
        depth_parts.append(depths)
        tri_parts.append(tri)
        bary_parts.append(np.stack([w0, w1, w2], axis=1))

    triangle = np.full(height * width, -1, dtype=np.int64)
    bary = np.zeros((height * width, 3))
    zbuf = np.full(height * width, -np.inf)
    if pixel_parts:
        pixels = np.concatenate(pixel_parts)
        depths = np.concatenate(depth_parts)
        order = np.lexsort((-depths, pixels))  # per pixel, nearest fragment first
        pixels = pixels[order]
        first = np.ones(len(pixels), dtype=bool)
        first[1:] = pixels[1:] != pixels[:-1]
        chosen = order[first]
        winners = pixels[first]
        triangle[winners] = np.concatenate(tri_parts)[chosen]
        bary[winners] = np.concatenate(bary_parts)[chosen]
        zbuf[winners] = depths[chosen]
    return Rasterized(triangle.reshape(height, width), bary.reshape(height, width, 3), zbuf.reshape(height, width))


def depth_buffer(screen_xy: np.ndarray, depth: np.ndarray, faces: np.ndarray, width: int, height: int) -> np.ndarray:
    """``rasterize(...).depth`` alone: the nearest depth at each pixel (-inf where empty), the same values
    without sorting the fragments or keeping their triangles and weights (a visibility test needs no more)."""
    zbuf = np.full(height * width, -np.inf)
    for pixels, depths, *_ in _fragments(screen_xy, depth, faces, width, height):
        np.maximum.at(zbuf, pixels, depths)
    return zbuf.reshape(height, width)


def _fragments(
    screen_xy: np.ndarray, depth: np.ndarray, faces: np.ndarray, width: int, height: int
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Every (pixel, triangle) pair whose pixel centre lies in the triangle, a batch at a time: flat pixel
    index, interpolated depth, triangle, barycentric weights."""
    xy = np.asarray(screen_xy, dtype=np.float64)
    z = np.asarray(depth, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    a, b, c = xy[f[:, 0]], xy[f[:, 1]], xy[f[:, 2]]
    area2 = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    # Pixel p is a candidate when its centre p + 0.5 lies inside the triangle's bounding box (corner min / max
    # elementwise: numpy's reductions over a length-3 axis are ~50x slower, same values).
    lo, hi = np.minimum(np.minimum(a, b), c), np.maximum(np.maximum(a, b), c)
    x_first = np.ceil(lo[:, 0] - 0.5).clip(0, width)
    x_last = np.floor(hi[:, 0] - 0.5).clip(-1, width - 1)
    y_first = np.ceil(lo[:, 1] - 0.5).clip(0, height)
    y_last = np.floor(hi[:, 1] - 0.5).clip(-1, height - 1)
    span = np.maximum(x_last - x_first, y_last - y_first) + 1
    usable = (np.abs(area2) > 1e-12) & (x_last >= x_first) & (y_last >= y_first) & np.isfinite(area2)

    bucket = np.zeros(len(f), dtype=np.int64)
    bucket[usable] = np.ceil(np.log2(np.maximum(span[usable], 1))).astype(np.int64)
    for level in np.unique(bucket[usable]):
        size = 1 << int(level)
        ids = np.nonzero(usable & (bucket == level))[0]
        per_batch = max(1, _MAX_CANDIDATES_PER_BATCH // (size * size))
        offsets = np.arange(size, dtype=np.float64)
        for start in range(0, len(ids), per_batch):
            t = ids[start : start + per_batch]
            px = x_first[t, None, None] + offsets[None, None, :]
            py = y_first[t, None, None] + offsets[None, :, None]
            cx, cy = px + 0.5, py + 0.5
            ta, tb, tc = a[t], b[t], c[t]
            inv = 1.0 / area2[t][:, None, None]
            l0 = (
                (tb[:, 0, None, None] - cx) * (tc[:, 1, None, None] - cy)
                - (tb[:, 1, None, None] - cy) * (tc[:, 0, None, None] - cx)
            ) * inv
            l1 = (
                (tc[:, 0, None, None] - cx) * (ta[:, 1, None, None] - cy)
                - (tc[:, 1, None, None] - cy) * (ta[:, 0, None, None] - cx)
            ) * inv
            l2 = 1.0 - l0 - l1
            inside = (l0 >= 0) & (l1 >= 0) & (l2 >= 0)
            inside &= (px <= x_last[t, None, None]) & (py <= y_last[t, None, None])
            k, row, col = np.nonzero(inside)
            if len(k) == 0:
                continue
            tri = t[k]
            w0, w1, w2 = l0[k, row, col], l1[k, row, col], l2[k, row, col]
            pix_x = (x_first[tri] + col).astype(np.int64)
            pix_y = (y_first[tri] + row).astype(np.int64)
            yield pix_y * width + pix_x, w0 * z[f[tri, 0]] + w1 * z[f[tri, 1]] + w2 * z[f[tri, 2]], tri, w0, w1, w2


def _check_inputs(vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray | None, width: int, height: int) -> None:
    if vertices.ndim != 2 or vertices.shape[1] != 3 or len(vertices) == 0:
        raise RenderError(f"vertices must have shape (V, 3) with V > 0, got {vertices.shape}")
    if faces.ndim != 2 or faces.shape[1] != 3 or len(faces) == 0:
        raise RenderError(f"faces must have shape (F, 3) with F > 0, got {faces.shape}")
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise RenderError(f"faces index vertices 0..{len(vertices) - 1}, found {faces.min()}..{faces.max()}")
    if not np.isfinite(vertices).all():
        raise RenderError("vertices contain NaN or infinite values")
    if colors is not None and colors.shape != vertices.shape:
        raise RenderError(f"colors must be per-vertex RGB of shape {vertices.shape}, got {colors.shape}")
    if width < 1 or height < 1:
        raise RenderError(f"image size must be positive, got {width}×{height}")


def project(vertices: np.ndarray, camera: AnyCamera, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (V, 2) and view-space depth (V,; larger is nearer) of ``vertices`` under ``camera``."""
    if isinstance(camera, PinholeCamera):
        view = np.asarray(vertices, dtype=np.float64) @ camera.rotation().T + np.asarray(camera.pose[3:])
        scale = width / camera.width
        distance = np.maximum(-view[:, 2], 1e-9)
        screen = np.stack(
            [
                scale * (camera.cx + camera.focal * view[:, 0] / distance),
                scale * (camera.cy - camera.focal * view[:, 1] / distance),
            ],
            axis=1,
        )
        return screen, view[:, 2]
    view = np.asarray(vertices, dtype=np.float64) @ camera.rotation().T
    if camera.center is None:
        centre = (view.min(axis=0) + view.max(axis=0)) / 2
    else:
        centre = camera.rotation() @ np.asarray(camera.center, dtype=np.float64)
    if camera.extent is None:
        size = view.max(axis=0) - view.min(axis=0)
        fit = max(size[0] * min(width, height) / width, size[1] * min(width, height) / height, 1e-9)
        extent = fit / (1.0 - 2.0 * camera.margin)
    else:
        extent = camera.extent
    scale = min(width, height) / extent
    screen = np.empty((len(view), 2))
    screen[:, 0] = width / 2 + (view[:, 0] - centre[0]) * scale
    screen[:, 1] = height / 2 - (view[:, 1] - centre[1]) * scale
    return screen, view[:, 2] - centre[2]


def render_mesh(
    vertices: np.ndarray,
    faces: np.ndarray,
    *,
    width: int = 512,
    height: int = 512,
    camera: AnyCamera | None = None,
    light_dir: Sequence[float] = (0.35, 0.45, 1.0),
    colors: np.ndarray | None = None,
    background: Sequence[int] = (255, 255, 255),
    ambient: float = 0.3,
    supersample: int = 1,
    texture: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Render a triangle mesh to an RGB ``uint8`` image of shape (height, width, 3).

    ``texture`` = (image (S, S, 3) uint8, uv (T, 2), uv_faces (F, 3)) colours the mesh from a UV map
    (texel row 0 is v = 1) instead of ``colors``.

    ``light_dir`` points from the mesh towards the light in view space (x right, y up, z to the viewer).
    ``colors`` are per-vertex RGB, floats in [0, 1] or ``uint8``; without them the mesh is light grey.
    Both sides of a triangle are lit, so open meshes render sensibly. ``supersample`` > 1 renders larger
    and shrinks, which smooths the edges.
    """
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    col = None if colors is None else np.asarray(colors)
    _check_inputs(v, f, col, width, height)
    if col is not None:
        col = col.astype(np.float64) / 255.0 if col.dtype == np.uint8 else col.astype(np.float64)
    camera = camera or Camera()
    ss = max(1, int(supersample))
    w, h = width * ss, height * ss

    screen, depth = project(v, camera, w, h)
    raster = rasterize(screen, depth, f, w, h)
    covered = raster.triangle >= 0
    tri = raster.triangle[covered]
    bary = raster.barycentric[covered]
    corners = f[tri]

    normals = vertex_normals(v, f) @ camera.rotation().T
    n = np.einsum("pk,pkc->pc", bary, normals[corners])
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    n[n[:, 2] < 0] *= -1.0  # two-sided: a triangle seen from behind is lit like its front
    light = np.asarray(light_dir, dtype=np.float64)
    light = light / max(float(np.linalg.norm(light)), 1e-12)
    shade = ambient + (1.0 - ambient) * np.clip(n @ light, 0.0, 1.0)
    base = np.full((len(tri), 3), 0.82) if col is None else np.einsum("pk,pkc->pc", bary, col[corners])
    if texture is not None:
        base = _sample_texture(texture, tri, bary)

    image = np.empty((h, w, 3), dtype=np.uint8)
    image[:] = np.asarray(background, dtype=np.uint8)
    image[covered] = np.clip(base * shade[:, None] * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if ss > 1:
        return np.asarray(cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA), dtype=np.uint8)
    return image


def _sample_texture(
    texture: tuple[np.ndarray, np.ndarray, np.ndarray], tri: np.ndarray, bary: np.ndarray
) -> np.ndarray:
    """Bilinear texture colours in [0, 1] (P, 3) at the pixels' interpolated UVs."""
    image, uv, uv_faces = texture
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise RenderError(f"the texture must be an RGB uint8 image, got {image.dtype} {image.shape}")
    coords = np.einsum("pk,pkc->pc", bary, np.asarray(uv, dtype=np.float64)[np.asarray(uv_faces)[tri]])
    size_y, size_x = image.shape[:2]
    n = len(coords)
    rows = -(-n // 1024)  # OpenCV maps must stay under 32767 per side: lay the points out as rows
    map_x = np.zeros(rows * 1024, np.float32)
    map_y = np.zeros(rows * 1024, np.float32)
    map_x[:n] = coords[:, 0] * size_x - 0.5
    map_y[:n] = (1.0 - coords[:, 1]) * size_y - 0.5
    sampled = cv2.remap(image, map_x.reshape(rows, 1024), map_y.reshape(rows, 1024), cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_REPLICATE)  # fmt: skip
    return np.asarray(sampled.reshape(-1, 3)[:n], dtype=np.float64) / 255.0


#: A caption is drawn no smaller than this share of its normal size; below, it is shortened instead.
MIN_CAPTION_SCALE = 0.75


def fitted_caption(text: str, scale: float, width: int) -> tuple[str, float]:
    """``text`` and a font scale at which it fits ``width`` pixels: smaller first (down to MIN_CAPTION_SCALE of
    ``scale``), then cut with "..." (a long detector name ran over the next tile's caption)."""

    def wide(candidate: str, at: float) -> int:
        return int(cv2.getTextSize(candidate, cv2.FONT_HERSHEY_SIMPLEX, at, 1)[0][0])

    if wide(text, scale) <= width:
        return text, scale
    smallest = scale * MIN_CAPTION_SCALE
    if wide(text, smallest) <= width:
        return text, scale * width / wide(text, scale)
    while len(text) > 1 and wide(text + "...", smallest) > width:
        text = text[:-1]
    return text.rstrip(" .,(") + "...", smallest


def grid(
    images: Sequence[np.ndarray],
    labels: Sequence[str] | None = None,
    *,
    columns: int | None = None,
    label_height: int = 30,
    background: Sequence[int] = (255, 255, 255),
    text_color: Sequence[int] = (20, 20, 20),
) -> np.ndarray:
    """Tile RGB images into one sheet, each with its caption above it (images may differ in size)."""
    if not images:
        raise RenderError("grid needs at least one image")
    if labels is not None and len(labels) != len(images):
        raise RenderError(f"{len(images)} images but {len(labels)} labels")
    cols = columns or len(images)
    rows = math.ceil(len(images) / cols)
    cell_h = max(im.shape[0] for im in images) + label_height
    cell_w = max(im.shape[1] for im in images)
    sheet = np.empty((rows * cell_h, cols * cell_w, 3), dtype=np.uint8)
    sheet[:] = np.asarray(background, dtype=np.uint8)
    for i, im in enumerate(images):
        if im.ndim != 3 or im.shape[2] != 3:
            raise RenderError(f"image {i} must be RGB (H, W, 3), got {im.shape}")
        top, left = (i // cols) * cell_h, (i % cols) * cell_w
        sheet[top + label_height : top + label_height + im.shape[0], left : left + im.shape[1]] = im
        if labels is not None and labels[i]:
            text, scale = fitted_caption(labels[i], 0.5 * label_height / 30, cell_w - 12)
            cv2.putText(sheet, text, (left + 6, top + int(label_height * 0.72)), cv2.FONT_HERSHEY_SIMPLEX, scale,
                        tuple(int(c) for c in text_color), 1, cv2.LINE_AA)  # fmt: skip
    return sheet


def write_png(path: Path, image: np.ndarray) -> None:
    """Write an RGB ``uint8`` image as PNG (OpenCV wants BGR)."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise RenderError(f"write_png expects an RGB uint8 image, got {image.dtype} {image.shape}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write PNG {path}")
