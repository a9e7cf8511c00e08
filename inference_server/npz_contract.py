"""The guarded ``.npz`` reader shared by the contract files (``ofer-result/1``, ``ofer-sequence/1``).

numpy only: the Blender add-on reads result files with it. A :class:`NpzLayout` names one format's
keys and limits; the reader looks before it reads (member names and declared sizes from the zip
directory, then every ``.npy`` header against the bytes stored) and only then inflates data. Every
problem is a :class:`ResultFileError` naming the key, never a bare numpy or zipfile exception.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from .atomic_io import atomic_write
from .npy_guard import write_npz

T = TypeVar("T")

#: ``meta_json`` limits, the same for every format.
MAX_META_JSON_CHARS = 1 << 22
MAX_META_DEPTH = 64


class ResultFileError(ValueError):
    """A result file that cannot be trusted. ``key`` names the bad entry ("" for the whole file)."""

    def __init__(self, key: str, message: str, path: str | os.PathLike[str] | None = None) -> None:
        self.key = key
        self.message = message
        self.path = None if path is None else str(path)
        where = f"{self.path}: " if self.path else ""
        what = f"key '{key}': " if key else ""
        super().__init__(f"{where}{what}{message}")


@dataclass(frozen=True)
class NpzLayout:
    """One format's key table and the reader's limits for it."""

    format: str
    known_keys: frozenset[str]  # array keys plus "format" and "meta_json"
    int_keys: frozenset[str]
    max_member_bytes: int
    max_total_bytes: int
    max_members: int = 64


def expect(cond: bool, key: str, message: str) -> None:
    if not cond:
        raise ResultFileError(key, message)


def check_array(
    arrays: dict[str, np.ndarray], key: str, ndim: int, dims: dict[int, int], int_keys: Collection[str]
) -> np.ndarray:
    """``arrays[key]``: int32 (keys in ``int_keys``) or finite float32, ``ndim`` axes, the sizes in ``dims``."""
    value = arrays[key]
    want = np.dtype(np.int32) if key in int_keys else np.dtype(np.float32)
    expect(isinstance(value, np.ndarray), key, f"expected a numpy array, got {type(value).__name__}")
    expect(value.dtype == want, key, f"dtype is {value.dtype}, expected {want}")
    expect(value.ndim == ndim, key, f"shape {value.shape} has {value.ndim} dimensions, expected {ndim}")
    for axis, size in dims.items():
        expect(
            value.shape[axis] == size, key, f"shape {value.shape}: axis {axis} is {value.shape[axis]}, expected {size}"
        )
    if want.kind == "f":
        expect(bool(np.isfinite(value).all()), key, "contains NaN or infinite values")
    return value


def _expected_dtype(key: str, layout: NpzLayout) -> tuple[str, int]:
    """(dtype kind, largest item size) a member may declare, from the key table."""
    if key in ("format", "meta_json"):
        return "U", 4 * MAX_META_JSON_CHARS
    return ("i", 4) if key in layout.int_keys else ("f", 4)


def _check_header(key: str, info: zipfile.ZipInfo, archive: zipfile.ZipFile, layout: NpzLayout) -> None:
    """Dtype, shape and size of one member from its .npy header, before its data is decompressed."""
    with archive.open(info) as member:
        version = np.lib.format.read_magic(member)
        if version not in ((1, 0), (2, 0), (3, 0)):
            raise ResultFileError(key, f"has an unknown .npy version {version}")
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _fortran, dtype = read_header(member)  # numpy caps headers at 10,000 bytes
        header_bytes = member.tell()
    kind, max_itemsize = _expected_dtype(key, layout)
    expect(
        dtype.kind == kind and not dtype.hasobject and dtype.itemsize <= max_itemsize and dtype.byteorder in "<=|",
        key,
        f"dtype is {dtype}, expected {'a string' if kind == 'U' else 'little-endian ' + kind + '4'}",
    )
    expect(len(shape) <= 3 and all(isinstance(n, int) and n >= 0 for n in shape), key, f"bad shape {shape}")
    n_bytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize if shape else dtype.itemsize
    expect(
        n_bytes == info.file_size - header_bytes,
        key,
        f"declares shape {shape} ({n_bytes} bytes) but holds {info.file_size - header_bytes} bytes",
    )


def _inspect_archive(archive: zipfile.ZipFile, layout: NpzLayout) -> dict[str, zipfile.ZipInfo]:
    """Member names and sizes from the zip directory; nothing is decompressed here."""
    infos = archive.infolist()
    most = layout.max_members
    expect(len(infos) <= most, "", f"has {len(infos)} members; a {layout.format} file has at most {most}")
    members: dict[str, zipfile.ZipInfo] = {}
    total = 0
    for info in infos:
        key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
        expect(key in layout.known_keys, key[:80], "is not a key of format " + layout.format)
        expect(key not in members, key, "appears twice in the archive")
        limit = layout.max_member_bytes
        expect(info.file_size <= limit, key, f"declares {info.file_size} bytes (limit {limit})")
        total += info.file_size
        members[key] = info
    expect(total <= layout.max_total_bytes, "", f"declares {total} bytes in all (limit {layout.max_total_bytes})")
    for key, info in members.items():
        _check_header(key, info, archive, layout)
    return members


def load_members(path: Path, layout: NpzLayout) -> dict[str, np.ndarray]:
    """Every member of the archive at ``path``, each checked against ``layout`` before it is read."""
    if not path.is_file():
        raise ResultFileError("", "no such result file (or it is a folder)", path)
    try:
        with zipfile.ZipFile(path) as archive:
            infos = _inspect_archive(archive, layout)
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


def meta_object(text: str) -> dict[str, Any]:
    """``meta_json``: free-form JSON, bounded in size and depth (the add-on reads what it knows)."""
    expect(len(text) <= MAX_META_JSON_CHARS, "meta_json", f"is longer than {MAX_META_JSON_CHARS} characters")
    try:
        meta = json.loads(text)
    except RecursionError:
        raise ResultFileError("meta_json", f"is nested deeper than {MAX_META_DEPTH} levels") from None
    except ValueError as exc:
        raise ResultFileError("meta_json", f"is not valid JSON ({exc})") from None
    expect(isinstance(meta, dict), "meta_json", "must be a JSON object")
    stack: list[tuple[Any, int]] = [(meta, 1)]
    while stack:
        value, depth = stack.pop()
        expect(depth <= MAX_META_DEPTH, "meta_json", f"is nested deeper than {MAX_META_DEPTH} levels")
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)
    return meta


def string_member(members: dict[str, np.ndarray], key: str) -> str:
    value = members[key]
    expect(value.ndim == 0 and value.dtype.kind == "U", key, "must be a string")
    return str(value[()])


def read_checked(
    path: str | os.PathLike[str], layout: NpzLayout, build: Callable[[dict[str, Any], dict[str, np.ndarray]], T]
) -> T:
    """Read a file of ``layout.format`` and hand its meta and array members to ``build`` (which validates
    them and makes the caller's dataclass). Raises only ResultFileError, with the path, whatever the file holds."""
    source = Path(path)
    try:
        members = load_members(source, layout)
        expect("format" in members, "format", f"is missing: this is not an OFER result file ({layout.format})")
        fmt = string_member(members, "format")
        expect(fmt == layout.format, "format", f"is '{fmt}'; this reader understands '{layout.format}'")
        expect("meta_json" in members, "meta_json", "is missing")
        meta = meta_object(string_member(members, "meta_json"))
        return build(meta, {k: v for k, v in members.items() if k not in ("format", "meta_json")})
    except ResultFileError as exc:
        raise ResultFileError(exc.key, exc.message, source) from None
    except MemoryError:
        raise ResultFileError("", "is too large to read into memory", source) from None
    except Exception as exc:  # the contract: nothing but ResultFileError leaves the reader
        raise ResultFileError("", f"cannot be read ({type(exc).__name__}: {exc})", source) from None


def write_checked(
    path: str | os.PathLike[str],
    format_name: str,
    meta: dict[str, Any],
    arrays: dict[str, np.ndarray | None],
    what: str,
) -> Path:
    """Write an already validated file atomically: ``format``, ``meta_json`` and every array that is not None."""
    target = Path(path)
    if target.suffix != ".npz":
        raise ResultFileError("", f"{what} file name must end in .npz", target)
    payload: dict[str, np.ndarray] = {
        "format": np.array(format_name),
        "meta_json": np.array(json.dumps(meta, sort_keys=True, allow_nan=False)),
    }
    payload |= {key: np.ascontiguousarray(value) for key, value in arrays.items() if value is not None}
    atomic_write(target, lambda handle: write_npz(handle, payload))
    return target
