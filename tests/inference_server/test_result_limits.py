"""The result reader looks before it reads: hostile archives end in ResultFileError, small and fast."""

from __future__ import annotations

import contextlib
import io
import json
import struct
import time
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inference_server.result import ResultFileError, read_result, write_result
from tests.inference_server.test_result import make_result


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


def _zip(path: Path, members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


@pytest.fixture
def good(tmp_path: Path) -> Path:
    return write_result(tmp_path / "good.npz", make_result(np.random.default_rng(0)))


def _peak_bytes(action) -> int:
    tracemalloc.start()
    try:
        action()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_deeply_nested_meta_json_is_a_result_file_error(tmp_path: Path, good: Path) -> None:
    members = _members(good)
    for text in ("[" * 100_000, "[" * 100 + "]" * 100, '{"a":' * 70 + "1" + "}" * 70):
        members["meta_json.npy"] = _npy_bytes(np.array(text))
        bad = _zip(tmp_path / "deep.npz", members)
        with pytest.raises(ResultFileError) as info:
            read_result(bad)
        assert info.value.key == "meta_json"


def test_meta_json_keeps_unknown_fields_of_moderate_depth(tmp_path: Path, good: Path) -> None:
    members = _members(good)
    meta = {"demo": True, "warnings": ["a"], "fit": {"nested": [[[1.0]]]}, "texture": {"path": "t.png"}}
    members["meta_json.npy"] = _npy_bytes(np.array(json.dumps(meta)))
    assert read_result(_zip(tmp_path / "ok.npz", members)).meta == meta


def test_a_header_declaring_a_huge_shape_is_refused_without_allocating(tmp_path: Path, good: Path) -> None:
    members = _members(good)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (10**9, 3)})
    members["expression_vertices.npy"] = b"\x93NUMPY" + header.getvalue()[6:] + b"\x00" * 12
    bad = _zip(tmp_path / "huge.npz", members)
    errors: list[ResultFileError] = []

    def read() -> None:
        with pytest.raises(ResultFileError) as info:
            read_result(bad)
        errors.append(info.value)

    assert _peak_bytes(read) < 50e6
    assert errors[0].key == "expression_vertices" and "1000000000" in str(errors[0])


def test_unknown_members_are_refused_before_anything_is_decompressed(tmp_path: Path, good: Path) -> None:
    members = _members(good)
    # 200 MB of zeros deflate to about 200 KB; the reader must refuse it from the zip directory alone.
    bomb = tmp_path / "bomb.npz"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        with archive.open("payload.npy", "w") as member:
            chunk = b"\x00" * (1 << 20)
            for _ in range(200):
                member.write(chunk)
    assert bomb.stat().st_size < 2e6
    t0 = time.process_time()
    errors: list[ResultFileError] = []

    def read() -> None:
        with pytest.raises(ResultFileError) as info:
            read_result(bomb)
        errors.append(info.value)

    assert _peak_bytes(read) < 20e6
    assert errors[0].key == "payload" and "not a key" in str(errors[0])
    assert time.process_time() - t0 < 30  # generous: inflating 200 MB is what would take time


def test_a_directory_declaring_gigabytes_is_refused(tmp_path: Path, good: Path) -> None:
    data = bytearray(good.read_bytes())
    start = data.find(b"PK\x01\x02")  # the first central-directory entry
    while start != -1:
        name_len = struct.unpack_from("<H", data, start + 28)[0]
        name = bytes(data[start + 46 : start + 46 + name_len])
        if name == b"template.npy":
            struct.pack_into("<I", data, start + 24, 0xFFFF0000)  # uncompressed size: ~4 GB
            break
        start = data.find(b"PK\x01\x02", start + 4)
    bad = tmp_path / "declared.npz"
    bad.write_bytes(bytes(data))
    with pytest.raises(ResultFileError) as info:
        read_result(bad)
    assert info.value.key == "template" and "limit" in str(info.value)


def test_duplicate_and_big_endian_members_are_named(tmp_path: Path, good: Path) -> None:
    members = _members(good)
    members["template.npy"] = _npy_bytes(np.load(io.BytesIO(members["template.npy"])).astype(">f4"))
    with pytest.raises(ResultFileError) as info:
        read_result(_zip(tmp_path / "be.npz", members))
    assert info.value.key == "template" and "dtype" in str(info.value)


def test_special_files_are_a_result_file_error(tmp_path: Path) -> None:
    link = tmp_path / "mem.npz"
    link.symlink_to("/proc/self/mem")
    with pytest.raises(ResultFileError):
        read_result(link)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=4096))
def test_generated_bytes_only_ever_raise_result_file_error(tmp_path: Path, data: bytes) -> None:
    target = tmp_path / "generated.npz"
    target.write_bytes(data)
    with pytest.raises(ResultFileError):
        read_result(target)


_GOOD_BYTES: list[bytes] = []


def _good_bytes() -> bytes:
    if not _GOOD_BYTES:
        buffer = io.BytesIO()
        result = make_result(np.random.default_rng(1), V=12, F=10, K=2, M=2)
        path = Path(__import__("tempfile").mkdtemp()) / "small.npz"
        write_result(path, result)
        buffer.write(path.read_bytes())
        _GOOD_BYTES.append(buffer.getvalue())
    return _GOOD_BYTES[0]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), min_size=1, max_size=8))
def test_damaged_result_files_only_ever_raise_result_file_error(tmp_path: Path, edits: list[tuple[int, int]]) -> None:
    data = bytearray(_good_bytes())
    for position, value in edits:
        data[position % len(data)] = value
    target = tmp_path / "damaged.npz"
    target.write_bytes(bytes(data))
    with contextlib.suppress(ResultFileError):
        read_result(target)
