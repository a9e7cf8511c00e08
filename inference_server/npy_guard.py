"""Reading ``.npy`` / ``.npz`` files that may be hostile: sizes checked before anything is allocated.

``numpy.load`` trusts a file's array header: a 100-byte ``.npy`` declaring shape (10**9, 3) makes it
allocate 12 GB before it finds the data missing, and an ``.npz`` member is inflated whatever its size.
Here the zip directory and every array header are read first; the declared size must match the bytes
actually stored and stay under a cap, object arrays are refused, and only then is the data read.
Failures raise :class:`NpyGuardError` (a ``ValueError``) naming the member; callers map it to their own
error type. numpy only (the add-on may use it).
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import IO, BinaryIO

import numpy as np

#: Largest array a model file may hold (FLAME 2020's largest, shapedirs, is 48 MB as float64); loaders
#: convert to float64, so what a file can make them allocate stays well under 2 GB.
MAX_ARRAY_BYTES = 256 << 20
#: Largest sum of the arrays of one ``.npz``.
MAX_TOTAL_BYTES = 512 << 20
MAX_MEMBERS = 256


class NpyGuardError(ValueError):
    """An array file whose directory or headers do not add up."""


def read_header(stream: IO[bytes], available: int, name: str) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, header length) of the ``.npy`` at the stream's position; checks the declared size."""
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, _fortran, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version in ((2, 0), (3, 0)):
            shape, _fortran, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise NpyGuardError(f"{name}: unknown .npy version {version}")
    except ValueError as exc:
        raise NpyGuardError(f"{name}: not a readable .npy header ({exc})") from None
    header = stream.tell()
    if dtype.hasobject:
        raise NpyGuardError(f"{name}: an object array needs pickle, which is not allowed")
    count = 1
    for n in shape:
        count *= int(n)
    declared = count * dtype.itemsize
    if declared > MAX_ARRAY_BYTES:
        raise NpyGuardError(f"{name}: declares shape {shape} ({declared} bytes), over the {MAX_ARRAY_BYTES}-byte limit")
    if declared != available - header:
        raise NpyGuardError(f"{name}: declares shape {shape} ({declared} bytes) but holds {available - header} bytes")
    return tuple(int(n) for n in shape), dtype, header


def load_npy(path: str | os.PathLike[str]) -> np.ndarray:
    """A plain (non-object) ``.npy``, its header checked against the file's size first."""
    source = Path(path)
    size = source.stat().st_size
    with source.open("rb") as stream:
        read_header(stream, size, source.name)
        stream.seek(0)
        return np.lib.format.read_array(stream, allow_pickle=False)


def load_npz(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` (names without ``.npy``), each member checked before it is inflated."""
    source = Path(path)
    try:
        with zipfile.ZipFile(source) as archive:
            infos = archive.infolist()
            if len(infos) > MAX_MEMBERS:
                raise NpyGuardError(f"{len(infos)} members, more than {MAX_MEMBERS}")
            total = sum(info.file_size for info in infos)
            if total > MAX_TOTAL_BYTES:
                raise NpyGuardError(f"declares {total} bytes in all, over the {MAX_TOTAL_BYTES}-byte limit")
            for info in infos:
                with archive.open(info) as member:
                    read_header(member, info.file_size, info.filename)
            arrays: dict[str, np.ndarray] = {}
            for info in infos:
                name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                if name in arrays:
                    raise NpyGuardError(f"{name} appears twice")
                with archive.open(info) as member:
                    arrays[name] = np.lib.format.read_array(member, allow_pickle=False)
            return arrays
    except NpyGuardError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, KeyError, NotImplementedError, ValueError) as exc:
        raise NpyGuardError(f"not a readable .npz ({exc})") from None


def write_npz(handle: BinaryIO, arrays: dict[str, np.ndarray]) -> None:
    """What ``numpy.savez`` writes (uncompressed, no pickles), closing the archive even when a write fails.

    ``numpy.savez`` leaves its zip archive open when the disk fills up; the archive's destructor then
    runs later on a closed file and prints "seek of closed file" over the real error.
    """
    with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, value in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)
