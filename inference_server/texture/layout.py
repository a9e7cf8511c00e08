"""The UV raster and mirror map of a head model: the photo-independent half of the texture stage.

Which triangle and barycentric weights every texel has, and where every texel's mirror point lies, depend
on the model's UVs, faces and template only. Computing them takes ~0.5 s (rasterising 33 k UV triangles,
the mirror partners, the mirror UVs): once per model, then they are kept in the process (a worker) and,
when a cache folder is given, on disk (a CLI run is a fresh process each time), ~11 MB per model at 512².

The disk file is named by a SHA-256 of the model arrays, the size and the source text of the code that
computes the layout, written atomically and checked when read (key, shapes, dtypes, triangle ids in
range, finite weights); a file that fails a check is computed afresh and replaced.
"""

from __future__ import annotations

import hashlib
import io
import logging
import threading
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Protocol

import numpy as np

from ..atomic_io import atomic_write_bytes
from ..errors import IOFailedError
from . import bake, fill
from .bake import UVRaster, rasterize_uv
from .fill import mirror_uv, mirror_vertices

log = logging.getLogger(__name__)

FOLDER = "texture_layout"
#: Layouts kept per process (one per head model and texture size; a worker uses one or two).
MAX_KEPT = 4
_KEPT: OrderedDict[str, tuple[UVRaster, np.ndarray]] = OrderedDict()
_LOCK = threading.Lock()  # the server runs jobs on threads


class HeadModel(Protocol):
    @property
    def uv(self) -> np.ndarray: ...
    @property
    def uv_faces(self) -> np.ndarray: ...
    @property
    def faces(self) -> np.ndarray: ...
    @property
    def template(self) -> np.ndarray: ...


def layout_key(head: HeadModel, size: int) -> str:
    from .. import render

    digest = hashlib.sha256(f"size {size}\n".encode())
    for a in (head.uv, head.uv_faces, head.faces, head.template):
        c = np.ascontiguousarray(a)
        digest.update(f"{c.dtype.str}{c.shape}".encode())
        digest.update(c.tobytes())
    for module in (bake, fill, render):
        digest.update(Path(str(module.__file__)).read_bytes())
    return digest.hexdigest()


def uv_layout(head: HeadModel, size: int, cache_dir: Path | None = None) -> tuple[UVRaster, np.ndarray]:
    """(raster, mirror UV map) of ``head``'s model at ``size``²; read-only arrays shared between calls."""
    key = layout_key(head, size)
    with _LOCK:
        if key in _KEPT:
            _KEPT.move_to_end(key)
            return _KEPT[key]
    path = None if cache_dir is None else Path(cache_dir) / FOLDER / f"{key}.npz"
    layout = None if path is None else read_layout(path, key, size, len(head.uv_faces))
    if layout is None:
        layout = compute_layout(head, size)
        if path is not None:
            try:
                write_layout(path, key, *layout)
            except (OSError, IOFailedError) as exc:  # a read-only or full cache folder must not fail the texture
                log.warning("could not cache the UV layout in %s: %s", path, exc)
    raster, mirror = layout
    raster.triangle.setflags(write=False)  # shared between calls: nobody may change them in place
    raster.barycentric.setflags(write=False)
    mirror.setflags(write=False)
    with _LOCK:
        _KEPT[key] = (raster, mirror)
        while len(_KEPT) > MAX_KEPT:
            _KEPT.popitem(last=False)
    return raster, mirror


def compute_layout(head: HeadModel, size: int) -> tuple[UVRaster, np.ndarray]:
    uv = np.asarray(head.uv, dtype=np.float64)
    uv_faces = np.asarray(head.uv_faces, dtype=np.int64)
    raster = rasterize_uv(uv, uv_faces, size)
    mirror = mirror_uv(raster, np.asarray(head.faces, dtype=np.int64), uv, uv_faces, mirror_vertices(head.template))
    return raster, mirror


def write_layout(path: Path, key: str, raster: UVRaster, mirror: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, key=np.array(key), triangle=raster.triangle.astype(np.int32),
             barycentric=raster.barycentric, mirror=mirror)  # fmt: skip
    atomic_write_bytes(path, buffer.getvalue())


def read_layout(path: Path, key: str, size: int, n_faces: int) -> tuple[UVRaster, np.ndarray] | None:
    """The layout stored at ``path`` when it is a valid one of ``key``; None otherwise (then recomputed)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["key"]) != key:
                raise ValueError("the file belongs to another key")
            triangle, bary, mirror = data["triangle"], data["barycentric"], data["mirror"]
        shapes = (triangle.shape, bary.shape, mirror.shape)
        if shapes != ((size, size), (size, size, 3), (size, size, 2)):
            raise ValueError(f"shapes {shapes}")
        if triangle.dtype != np.int32 or bary.dtype != np.float64 or mirror.dtype != np.float64:
            raise ValueError("dtypes")
        if triangle.min() < -1 or triangle.max() >= n_faces or not np.isfinite(bary[triangle >= 0]).all():
            raise ValueError("triangle ids or weights out of range")
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        log.warning("ignoring the cached UV layout %s (%s); computing it again", path, exc)
        return None
    return UVRaster(size, triangle.astype(np.int64), bary), mirror
