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
from .npy_guard import write_npz

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
    # FLAME controls (request ``flame_controls``), all three or none: model directions per unit coefficient
    shape_basis: np.ndarray | None = None  # float32 (Sc, V, 3), Sc <= S: the first Sc shape directions
    expression_basis: np.ndarray | None = None  # float32 (E, V, 3): the directions of expression_params
    pose_basis: np.ndarray | None = None  # float32 (9 (J - 1), V, 3): pose correctives, (R - I) of joints 1..
    format: str = field(default=FORMAT)

    @property
    def demo(self) -> bool:
        return bool(self.meta.get("demo", False))


_ARRAY_KEYS = tuple(f.name for f in fields(ReconstructionResult) if f.name not in ("meta", "format"))
FLAME_CONTROL_KEYS = ("shape_basis", "expression_basis", "pose_basis")
_OPTIONAL_KEYS = frozenset({"uv", "uv_faces", "landmarks", "head_pose", "camera", "expression_head_pose"}) | frozenset(
    FLAME_CONTROL_KEYS
)
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
    _validate_flame_controls(arrays, V, S=params.shape[1], E=exp.shape[1], J=J)


def _validate_flame_controls(arrays: dict[str, np.ndarray], V: int, *, S: int, E: int, J: int) -> None:
    """The three bases come together; their sizes follow the coefficients they multiply."""
    present = [key for key in FLAME_CONTROL_KEYS if arrays[key] is not None]
    if not present:
        return
    for key in FLAME_CONTROL_KEYS:
        _expect(arrays[key] is not None, key, f"is missing although {present[0]} is present (FLAME controls)")
    shapes = _check_array(arrays, "shape_basis", 3, {1: V, 2: 3})
    _expect(0 < shapes.shape[0] <= S, "shape_basis", f"holds {shapes.shape[0]} directions; expected 1 to {S}")
    _check_array(arrays, "expression_basis", 3, {0: E, 1: V, 2: 3})
    _check_array(arrays, "pose_basis", 3, {0: 9 * (J - 1), 1: V, 2: 3})


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
    atomic_write(target, lambda handle: write_npz(handle, payload))
    return target


#: The reader's limits: 10,000 expressions (or identities) on a 5,023-vertex head are 603 MB; with both at
#: their maximum a result is 1.2 GB. Checking one array allocates a quarter of it more (finiteness).
MAX_MEMBER_BYTES = 640 << 20
MAX_TOTAL_BYTES = 1280 << 20
MAX_META_JSON_CHARS = 1 << 22
MAX_META_DEPTH = 64
_MAX_MEMBERS = 64


def _expected_dtype(key: str) -> tuple[str, int]:
    """(dtype kind, largest item size) a member may declare, from the key table above."""
    if key in ("format", "meta_json"):
        return "U", 4 * MAX_META_JSON_CHARS
    return ("i", 4) if key in _INT_KEYS else ("f", 4)


def _check_header(key: str, info: zipfile.ZipInfo, archive: zipfile.ZipFile) -> None:
    """Dtype, shape and size of one member from its .npy header, before its data is decompressed."""
    with archive.open(info) as member:
        version = np.lib.format.read_magic(member)
        if version not in ((1, 0), (2, 0), (3, 0)):
            raise ResultFileError(key, f"has an unknown .npy version {version}")
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _fortran, dtype = read_header(member)  # numpy caps headers at 10,000 bytes
        header_bytes = member.tell()
    kind, max_itemsize = _expected_dtype(key)
    _expect(
        dtype.kind == kind and not dtype.hasobject and dtype.itemsize <= max_itemsize and dtype.byteorder in "<=|",
        key,
        f"dtype is {dtype}, expected {'a string' if kind == 'U' else 'little-endian ' + kind + '4'}",
    )
    _expect(len(shape) <= 3 and all(isinstance(n, int) and n >= 0 for n in shape), key, f"bad shape {shape}")
    n_bytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize if shape else dtype.itemsize
    _expect(
        n_bytes == info.file_size - header_bytes,
        key,
        f"declares shape {shape} ({n_bytes} bytes) but holds {info.file_size - header_bytes} bytes",
    )


def _inspect_archive(archive: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    """Member names and sizes from the zip directory; nothing is decompressed here."""
    infos = archive.infolist()
    _expect(len(infos) <= _MAX_MEMBERS, "", f"has {len(infos)} members; a result file has at most {_MAX_MEMBERS}")
    members: dict[str, zipfile.ZipInfo] = {}
    total = 0
    for info in infos:
        key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
        _expect(key in _KNOWN_KEYS, key[:80], "is not a key of format " + FORMAT)
        _expect(key not in members, key, "appears twice in the archive")
        _expect(info.file_size <= MAX_MEMBER_BYTES, key, f"declares {info.file_size} bytes (limit {MAX_MEMBER_BYTES})")
        total += info.file_size
        members[key] = info
    _expect(total <= MAX_TOTAL_BYTES, "", f"declares {total} bytes in all (limit {MAX_TOTAL_BYTES})")
    for key, info in members.items():
        _check_header(key, info, archive)
    return members


def _load_members(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise ResultFileError("", "no such result file (or it is a folder)", path)
    try:
        with zipfile.ZipFile(path) as archive:
            infos = _inspect_archive(archive)
            arrays: dict[str, np.ndarray] = {}
            for key, info in infos.items():
                with archive.open(info) as member:
                    arrays[key] = np.lib.format.read_array(member, allow_pickle=False)
            return arrays
    except ResultFileError:
        raise
    except ValueError as exc:  # object arrays refused by allow_pickle=False, bad headers, short data
        raise ResultFileError("", f"not a valid result file ({exc})", path) from exc
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, KeyError, NotImplementedError) as exc:
        raise ResultFileError("", f"file is truncated or corrupt ({exc})", path) from exc


def _meta(text: str) -> dict[str, Any]:
    """``meta_json``: free-form JSON, bounded in size and depth (the add-on reads what it knows)."""
    _expect(len(text) <= MAX_META_JSON_CHARS, "meta_json", f"is longer than {MAX_META_JSON_CHARS} characters")
    try:
        meta = json.loads(text)
    except RecursionError:
        raise ResultFileError("meta_json", f"is nested deeper than {MAX_META_DEPTH} levels") from None
    except ValueError as exc:
        raise ResultFileError("meta_json", f"is not valid JSON ({exc})") from None
    _expect(isinstance(meta, dict), "meta_json", "must be a JSON object")
    stack: list[tuple[Any, int]] = [(meta, 1)]
    while stack:
        value, depth = stack.pop()
        _expect(depth <= MAX_META_DEPTH, "meta_json", f"is nested deeper than {MAX_META_DEPTH} levels")
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)
    return meta


def _string(members: dict[str, np.ndarray], key: str) -> str:
    value = members[key]
    _expect(value.ndim == 0 and value.dtype.kind == "U", key, "must be a string")
    return str(value[()])


def read_result(path: str | os.PathLike[str]) -> ReconstructionResult:
    """Read and fully validate a result file. Raises ResultFileError naming the bad key."""
    source = Path(path)
    try:
        members = _load_members(source)
        _expect("format" in members, "format", "is missing: this is not an OFER result file")
        fmt = _string(members, "format")
        _expect(fmt == FORMAT, "format", f"is '{fmt}'; this reader understands '{FORMAT}'")
        _expect("meta_json" in members, "meta_json", "is missing")
        meta = _meta(_string(members, "meta_json"))
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
    except MemoryError:
        raise ResultFileError("", "is too large to read into memory", source) from None
    except Exception as exc:  # the contract: nothing but ResultFileError leaves the reader
        raise ResultFileError("", f"cannot be read ({type(exc).__name__}: {exc})", source) from None
    return result
