"""The result file: one ``.npz`` per reconstruction (contract version 1).

Standard library and numpy only: the Blender add-on reads results with this same module.
The writer is atomic (temporary name in the target folder, then ``os.replace``) so a reader never
sees half a file; the reader validates everything and raises :class:`ResultFileError`, which names
the offending key, for any problem — never a bare numpy or zipfile exception.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from .atomic_io import atomic_write

FORMAT = "ofer-result/1"

#: Joint names in FLAME order; ``joints``/``parents``/``skin_weights`` follow it.
JOINT_NAMES = ("root", "neck", "jaw", "left_eye", "right_eye")


class ResultFileError(ValueError):
    """A result file that cannot be trusted. ``key`` names the bad entry ("" for the whole file)."""

    def __init__(self, key: str, message: str, path: str | os.PathLike[str] | None = None) -> None:
        self.key = key
        self.message = message
        self.path = None if path is None else str(path)
        where = f"{self.path}: " if self.path else ""
        what = f"key '{key}': " if key else ""
        super().__init__(f"{where}{what}{message}")


@dataclass
class ReconstructionResult:
    """Everything one reconstruction produced. Units are metres.

    Shapes: V vertices, F faces, K identities kept (best first), M expressions kept (display order),
    S shape coefficients, E expression coefficients, J joints, L landmarks.
    """

    meta: dict[str, Any]
    faces: np.ndarray  # int32 (F, 3)
    template: np.ndarray  # float32 (V, 3)
    identity_params: np.ndarray  # float32 (K, S)
    identity_scores: np.ndarray  # float32 (K,) descending softmax probabilities
    identity_vertices: np.ndarray  # float32 (K, V, 3)
    expression_params: np.ndarray  # float32 (M, E)
    jaw_pose: np.ndarray  # float32 (M, 3) after jaw_scale
    expression_vertices: np.ndarray  # float32 (M, V, 3)
    joints: np.ndarray  # float32 (J, 3)
    parents: np.ndarray  # int32 (J,)
    skin_weights: np.ndarray  # float32 (V, J)
    spread_identity: np.ndarray  # float32 (V,)
    spread_expression: np.ndarray  # float32 (V,)
    uv: np.ndarray | None = None  # float32 (T, 2)
    uv_faces: np.ndarray | None = None  # int32 (F, 3)
    landmarks: np.ndarray | None = None  # float32 (L, 3)
    head_pose: np.ndarray | None = None  # float32 (6,) axis-angle + translation
    camera: np.ndarray | None = None  # float32 (3,) focal length, principal point x, y (pixels)
    expression_head_pose: np.ndarray | None = None  # float32 (M, 6) per-expression head_pose, display order
    format: str = field(default=FORMAT)

    @property
    def demo(self) -> bool:
        return bool(self.meta.get("demo", False))


_ARRAY_KEYS = tuple(f.name for f in fields(ReconstructionResult) if f.name not in ("meta", "format"))
_OPTIONAL_KEYS = frozenset({"uv", "uv_faces", "landmarks", "head_pose", "camera", "expression_head_pose"})
_INT_KEYS = frozenset({"faces", "uv_faces", "parents"})
_KNOWN_KEYS = frozenset(_ARRAY_KEYS) | {"format", "meta_json"}


def _expect(cond: bool, key: str, message: str) -> None:
    if not cond:
        raise ResultFileError(key, message)


def _check_array(arrays: dict[str, np.ndarray], key: str, ndim: int, dims: dict[int, int]) -> np.ndarray:
    value = arrays[key]
    want = np.dtype(np.int32) if key in _INT_KEYS else np.dtype(np.float32)
    _expect(isinstance(value, np.ndarray), key, f"expected a numpy array, got {type(value).__name__}")
    _expect(value.dtype == want, key, f"dtype is {value.dtype}, expected {want}")
    _expect(value.ndim == ndim, key, f"shape {value.shape} has {value.ndim} dimensions, expected {ndim}")
    for axis, size in dims.items():
        _expect(
            value.shape[axis] == size,
            key,
            f"shape {value.shape}: axis {axis} is {value.shape[axis]}, expected {size}",
        )
    if want.kind == "f":
        _expect(bool(np.isfinite(value).all()), key, "contains NaN or infinite values")
    return value


def validate(result: ReconstructionResult) -> None:
    """Check dtypes, shapes, cross-key consistency and finiteness; raise ResultFileError on the first fault."""
    _expect(result.format == FORMAT, "format", f"is '{result.format}', expected '{FORMAT}'")
    _expect(isinstance(result.meta, dict), "meta_json", "must be a JSON object")
    arrays = {k: getattr(result, k) for k in _ARRAY_KEYS}
    for key in _ARRAY_KEYS:
        if arrays[key] is None:
            _expect(key in _OPTIONAL_KEYS, key, "is missing")

    template = _check_array(arrays, "template", 2, {1: 3})
    V = template.shape[0]
    _expect(V > 0, "template", "has no vertices")
    faces = _check_array(arrays, "faces", 2, {1: 3})
    _expect(faces.shape[0] > 0, "faces", "has no triangles")
    _expect(int(faces.min()) >= 0 and int(faces.max()) < V, "faces", f"vertex index outside 0..{V - 1}")

    params = _check_array(arrays, "identity_params", 2, {})
    K = params.shape[0]
    _expect(K > 0, "identity_params", "holds no identity")
    scores = _check_array(arrays, "identity_scores", 1, {0: K})
    _expect(bool(((scores >= 0) & (scores <= 1)).all()), "identity_scores", "must be probabilities in [0, 1]")
    _expect(bool((np.diff(scores) <= 0).all()), "identity_scores", "must be sorted best first (descending)")
    _check_array(arrays, "identity_vertices", 3, {0: K, 1: V, 2: 3})

    exp = _check_array(arrays, "expression_params", 2, {})
    M = exp.shape[0]
    _expect(M > 0, "expression_params", "holds no expression")
    _check_array(arrays, "jaw_pose", 2, {0: M, 1: 3})
    _check_array(arrays, "expression_vertices", 3, {0: M, 1: V, 2: 3})

    joints = _check_array(arrays, "joints", 2, {1: 3})
    J = joints.shape[0]
    parents = _check_array(arrays, "parents", 1, {0: J})
    _expect(J > 0 and int(parents[0]) == -1, "parents", "the first joint must be the root (parent -1)")
    for j in range(1, J):
        _expect(
            0 <= int(parents[j]) < j,
            "parents",
            f"joint {j} has parent {int(parents[j])}, not an earlier joint",
        )
    _check_array(arrays, "skin_weights", 2, {0: V, 1: J})
    for key in ("spread_identity", "spread_expression"):
        spread = _check_array(arrays, key, 1, {0: V})
        _expect(bool((spread >= 0).all()), key, "a standard deviation cannot be negative")

    if arrays["uv"] is not None or arrays["uv_faces"] is not None:
        _expect(arrays["uv"] is not None, "uv", "is missing although uv_faces is present")
        _expect(arrays["uv_faces"] is not None, "uv_faces", "is missing although uv is present")
        uv = _check_array(arrays, "uv", 2, {1: 2})
        uv_faces = _check_array(arrays, "uv_faces", 2, {0: faces.shape[0], 1: 3})
        _expect(
            int(uv_faces.min()) >= 0 and int(uv_faces.max()) < uv.shape[0],
            "uv_faces",
            f"uv index outside 0..{uv.shape[0] - 1}",
        )
    if arrays["landmarks"] is not None:
        _check_array(arrays, "landmarks", 2, {1: 3})
    if arrays["head_pose"] is not None:
        _check_array(arrays, "head_pose", 1, {0: 6})
    if arrays["camera"] is not None:
        _check_array(arrays, "camera", 1, {0: 3})
    if arrays["expression_head_pose"] is not None:
        _check_array(arrays, "expression_head_pose", 2, {0: M, 1: 6})


def write_result(path: str | os.PathLike[str], result: ReconstructionResult) -> Path:
    """Validate and write ``result`` atomically to ``path`` (a ``.npz``). Returns the final path."""
    validate(result)
    target = Path(path)
    if target.suffix != ".npz":
        raise ResultFileError("", "a result file name must end in .npz", target)
    payload: dict[str, np.ndarray] = {
        "format": np.array(result.format),
        "meta_json": np.array(json.dumps(result.meta, sort_keys=True, allow_nan=False)),
    }
    for key in _ARRAY_KEYS:
        value = getattr(result, key)
        if value is not None:
            payload[key] = np.ascontiguousarray(value)
    atomic_write(target, lambda handle: np.savez(handle, **payload))
    return target


def _load_members(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise ResultFileError("", "no such result file (or it is a folder)", path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except ValueError as exc:  # object arrays refused by allow_pickle=False, bad headers
        raise ResultFileError("", f"not a valid result file ({exc})", path) from exc
    except (zipfile.BadZipFile, EOFError, OSError, KeyError) as exc:
        raise ResultFileError("", f"file is truncated or corrupt ({exc})", path) from exc


def _string(members: dict[str, np.ndarray], key: str) -> str:
    value = members[key]
    _expect(value.ndim == 0 and value.dtype.kind == "U", key, "must be a string")
    return str(value[()])


def read_result(path: str | os.PathLike[str]) -> ReconstructionResult:
    """Read and fully validate a result file. Raises ResultFileError naming the bad key."""
    source = Path(path)
    members = _load_members(source)
    try:
        _expect("format" in members, "format", "is missing: this is not an OFER result file")
        fmt = _string(members, "format")
        _expect(fmt == FORMAT, "format", f"is '{fmt}'; this reader understands '{FORMAT}'")
        _expect("meta_json" in members, "meta_json", "is missing")
        try:
            meta = json.loads(_string(members, "meta_json"))
        except json.JSONDecodeError as exc:
            raise ResultFileError("meta_json", f"is not valid JSON ({exc})") from exc
        unknown = sorted(set(members) - _KNOWN_KEYS)
        _expect(not unknown, unknown[0] if unknown else "", "is not a key of format " + FORMAT)
        for key in _ARRAY_KEYS:
            _expect(key in members or key in _OPTIONAL_KEYS, key, "is missing")
        result = ReconstructionResult(
            meta=meta,
            format=fmt,
            **{k: members.get(k) for k in _ARRAY_KEYS},  # type: ignore[arg-type]
        )
        validate(result)
    except ResultFileError as exc:
        raise ResultFileError(exc.key, exc.message, source) from None
    return result
