"""Filling the texels the photo does not show: the other side of the face first, then smooth skin.

The mirror map comes from the head itself: each vertex's partner is the vertex nearest its reflection
x → -x on the template (FLAME-layout heads are left-right symmetric), and a texel's mirror texel is its
triangle's partner corners' UVs, blended with the texel's own barycentric weights. Triangles whose
partner UVs straddle a seam (far apart in the map) have no mirror. What is left after mirroring is
filled by pull-push: the visible colours averaged over ever coarser levels and pushed back down, so a
hole takes the smooth colour of the skin around it.
"""

from __future__ import annotations

import cv2
import numpy as np

from .bake import UVRaster

#: A vertex has a mirror partner when its reflection is within this distance (metres) of a vertex.
MIRROR_TOLERANCE = 2.0e-3
#: A triangle's partner UVs more than this far apart (UV units) straddle a seam: no mirror there.
MAX_MIRROR_UV_SPAN = 0.08


def mirror_vertices(template: np.ndarray) -> np.ndarray:
    """(V,) index of each vertex's mirror partner: the vertex nearest its reflection x → -x, when within
    MIRROR_TOLERANCE (-1 otherwise; the lowest index on a tie).

    Only vertices within the tolerance can be partners, so the vertices are bucketed in a grid of cells
    one tolerance wide and each reflection is compared with the vertices of its 27 neighbouring cells:
    O(V) instead of the V² distances of a full search (16 k vertices: 2.5 s → tens of ms)."""
    v = np.asarray(template, dtype=np.float64)
    reflected = v * np.array([-1.0, 1.0, 1.0])
    cells = np.floor(v / MIRROR_TOLERANCE).astype(np.int64)
    lo = np.minimum(cells.min(axis=0), np.floor(reflected / MIRROR_TOLERANCE).min(axis=0).astype(np.int64)) - 1
    dims = np.maximum(cells.max(axis=0), np.floor(reflected / MIRROR_TOLERANCE).max(axis=0).astype(np.int64)) - lo + 2

    def key(c: np.ndarray) -> np.ndarray:
        c = c - lo
        return (c[:, 0] * dims[1] + c[:, 1]) * dims[2] + c[:, 2]

    order = np.argsort(key(cells), kind="stable")  # stable: within a cell, lower indices first
    sorted_keys = key(cells)[order]
    query_cells = np.floor(reflected / MIRROR_TOLERANCE).astype(np.int64)
    best = np.full(len(v), np.inf)
    partner = np.full(len(v), -1, dtype=np.int64)
    for offset in np.stack(np.meshgrid(*[[-1, 0, 1]] * 3, indexing="ij"), axis=-1).reshape(-1, 3):
        k = key(query_cells + offset)
        first = np.searchsorted(sorted_keys, k, side="left")
        count = np.searchsorted(sorted_keys, k, side="right") - first
        for j in range(int(count.max(initial=0))):
            has = np.nonzero(count > j)[0]
            candidate = order[first[has] + j]
            d2 = ((reflected[has] - v[candidate]) ** 2).sum(axis=1)
            better = (d2 < best[has]) | ((d2 == best[has]) & (candidate < partner[has]))
            best[has[better]] = d2[better]
            partner[has[better]] = candidate[better]
    partner[best > MIRROR_TOLERANCE**2] = -1
    return partner


def mirror_uv(
    raster: UVRaster, faces: np.ndarray, uv: np.ndarray, uv_faces: np.ndarray, partner: np.ndarray
) -> np.ndarray:
    """(S, S, 2) UV of every covered texel's mirror point; NaN where there is none."""
    # One UV per vertex (the first corner that uses it): a partner vertex's UV away from seams.
    vertex_uv = np.full((len(partner), 2), np.nan)
    vertex_uv[faces.ravel()[::-1]] = uv[uv_faces.ravel()[::-1]]
    out = np.full((raster.size, raster.size, 2), np.nan)
    cov = raster.covered
    tri = raster.triangle[cov]
    corners = partner[faces[tri]]  # (n, 3)
    ok = (corners >= 0).all(axis=1)
    corner_uv = vertex_uv[np.where(corners >= 0, corners, 0)]  # (n, 3, 2)
    span = corner_uv.max(axis=1) - corner_uv.min(axis=1)
    ok &= np.isfinite(span).all(axis=1) & (span.max(axis=1) <= MAX_MIRROR_UV_SPAN)
    values = np.einsum("nk,nkc->nc", raster.barycentric[cov], corner_uv)
    values[~ok] = np.nan
    out[cov] = values
    return out


def mirror_fill(colors: np.ndarray, valid: np.ndarray, mirror: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Copy the mirror texel's colour into invalid texels whose mirror texel is valid."""
    size = colors.shape[0]
    need = ~valid & np.isfinite(mirror[..., 0]) & np.isfinite(mirror[..., 1])  # all(axis=2) is slow on 2 values
    col = np.clip((mirror[need, 0] * size).astype(np.int64), 0, size - 1)
    row = np.clip(((1.0 - mirror[need, 1]) * size).astype(np.int64), 0, size - 1)
    source_ok = valid[row, col]
    out, filled = colors.copy(), valid.copy()
    rows, cols = np.nonzero(need)
    out[rows[source_ok], cols[source_ok]] = colors[row[source_ok], col[source_ok]]
    filled[rows[source_ok], cols[source_ok]] = True
    return out, filled


def pull_push(colors: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Fill every invalid texel from a smooth average of the valid ones (valid texels are kept)."""
    weight = valid.astype(np.float32)
    if weight.sum() == 0:
        raise ValueError("no valid texel to fill from")
    levels: list[tuple[np.ndarray, np.ndarray]] = [(colors.astype(np.float32) * weight[..., None], weight)]
    while min(levels[-1][1].shape) > 1:
        c, w = levels[-1]
        levels.append((cv2.pyrDown(c), cv2.pyrDown(w)))
    c, w = levels[-1]
    filled = c / np.maximum(w, 1e-8)[..., None]
    for c, w in reversed(levels[:-1]):
        up = cv2.resize(filled, (c.shape[1], c.shape[0]), interpolation=cv2.INTER_LINEAR)
        up = cv2.GaussianBlur(up, (5, 5), 0)
        mean = c / np.maximum(w, 1e-8)[..., None]
        alpha = np.clip(w * 4.0, 0.0, 1.0)[..., None]  # trust a level where it has enough samples
        filled = alpha * mean + (1.0 - alpha) * up
    return np.where(valid[..., None], colors, filled)
