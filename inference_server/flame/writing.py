"""Write FLAME-layout model files (``.pkl`` / ``.npz``) that :mod:`.loading` reads back, atomically."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .. import npy_guard
from ..atomic_io import atomic_write
from .model_data import FlameModelData

__all__ = ["flame_file_fields", "save_flame_npz", "save_flame_pkl"]


def flame_file_fields(data: FlameModelData) -> dict[str, Any]:
    """The FLAME file layout of ``data`` as plain numpy arrays / Python values (what both writers store).

    Differences from FLAME's own pickle: ``J_regressor`` is a dense float64 (J, V) array instead of a
    scipy CSC matrix, arrays are plain numpy instead of chumpy, and extra fields (``n_shape``,
    ``n_expression``, ``version``, ``is_demo``, UVs, landmark embedding, front-face ids) are included.
    """
    kintree = np.stack([data.parents, np.arange(data.n_joints)]).astype(np.int64)
    kintree[0, kintree[0] < 0] = 2**32 - 1  # FLAME's unsigned "no parent" marker
    fields: dict[str, Any] = {
        "v_template": np.asarray(data.v_template, dtype=np.float64),
        "shapedirs": np.asarray(data.shapedirs, dtype=np.float64),
        "posedirs": np.asarray(data.posedirs, dtype=np.float64),
        "J_regressor": np.asarray(data.J_regressor, dtype=np.float64),
        "J": np.asarray(data.J_regressor, dtype=np.float64) @ np.asarray(data.v_template, dtype=np.float64),
        "kintree_table": kintree,
        "weights": np.asarray(data.weights, dtype=np.float64),
        "f": np.asarray(data.faces).astype(np.uint32),
        "bs_style": "lbs",
        "bs_type": "lrotmin",
        "n_shape": int(data.n_shape),
        "n_expression": int(data.n_expression),
        "version": str(data.version),
        "is_demo": bool(data.is_demo),
    }
    optional = {
        "uv": (data.uv, np.float64),
        "uv_faces": (data.uv_faces, np.int64),
        "lmk_faces_idx": (data.lmk_faces_idx, np.int64),
        "lmk_bary_coords": (data.lmk_bary_coords, np.float64),
        "front_face_indices": (data.front_face_indices, np.int64),
    }
    for name, (value, dtype) in optional.items():
        if value is not None:
            fields[name] = np.asarray(value, dtype=dtype)
    return fields


def _write_atomically(path: Path, write: Callable[[Any], None]) -> None:
    atomic_write(path, write)


def save_flame_pkl(data: FlameModelData, path: str | Path) -> Path:
    """Write ``data`` as a FLAME-layout pickle (protocol 2, like FLAME) that :func:`load_flame_model` reads.

    The pickle holds only numpy arrays, str, int and bool, so it passes the restricted unpickler; see
    :func:`flame_file_fields` for how it differs from FLAME's own file (dense ``J_regressor``).
    """
    path = Path(path)
    fields = flame_file_fields(data)
    _write_atomically(path, lambda file: pickle.dump(fields, file, protocol=2))
    return path


def save_flame_npz(data: FlameModelData, path: str | Path) -> Path:
    """Write ``data`` as an ``.npz`` of the FLAME fields (uncompressed, no object arrays)."""
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"{path}: the file name must end in .npz")
    arrays = {name: np.asarray(value) for name, value in flame_file_fields(data).items()}
    _write_atomically(path, lambda file: npy_guard.write_npz(file, arrays))
    return path
