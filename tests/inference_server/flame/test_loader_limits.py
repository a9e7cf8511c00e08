"""Hostile model files: every loader ends in its own documented error, without a big allocation."""

from __future__ import annotations

import contextlib
import io
import pickle
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inference_server.errors import BadModelFileError, MissingAssetError
from inference_server.flame.loading import (
    load_flame_model,
    load_front_face_indices,
    load_landmark_embedding,
    load_uv_file,
)
from inference_server.flame.restricted_pickle import restricted_load, restricted_loads, to_plain

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _peak_bytes(action: Callable[[], Any]) -> int:
    tracemalloc.start()
    try:
        action()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def _raises_bad_model(action: Callable[[], Any]) -> BadModelFileError:
    with pytest.raises(BadModelFileError) as info:
        action()
    return info.value


def _nested_lists(depth: int) -> bytes:
    """EMPTY_LIST × depth, then APPEND × (depth - 1): lists nested ``depth`` deep, without recursion to write."""
    return b"\x80\x02" + b"]" * depth + b"a" * (depth - 1) + b"."


def test_a_pickle_nested_200000_deep_is_a_bad_model_file(tmp_path: Path) -> None:
    path = tmp_path / "generic_model.pkl"
    path.write_bytes(_nested_lists(200_000))
    error = _raises_bad_model(lambda: load_flame_model(path))
    assert "nested deeper" in str(error) and str(path) in str(error)
    _raises_bad_model(lambda: restricted_load(path))


def test_a_pickle_that_refers_to_itself_is_refused() -> None:
    # a list appended to itself (memo GET): walking it would never end
    data = b"\x80\x02]q\x00h\x00a."
    _raises_bad_model(lambda: to_plain(restricted_loads(data)))


def _sparse_pickle(shape: tuple[int, int]) -> bytes:
    state = {
        "_shape": shape,
        "data": np.ones(1),
        "indices": np.zeros(1, np.int32),
        "indptr": np.array([0, 1], np.int32) if shape[1] == 1 else np.r_[0, np.ones(shape[1], np.int32)],
    }
    body = pickle.dumps(state, protocol=2)[2:-1]
    return b"\x80\x02cscipy.sparse._csr\ncsr_matrix\n)\x81" + body + b"b."


def test_a_sparse_matrix_declaring_ten_billion_values_is_refused_without_allocating() -> None:
    # CSR: indptr per row, so shape (1, 10**10) has a 2-entry indptr and tiny arrays.
    state = {"_shape": (1, 10**10), "data": np.ones(1), "indices": np.zeros(1, np.int64), "indptr": np.array([0, 1])}
    data = b"\x80\x02cscipy.sparse._csr\ncsr_matrix\n)\x81" + pickle.dumps(state, protocol=2)[2:-1] + b"b."
    errors: list[BadModelFileError] = []
    peak = _peak_bytes(lambda: errors.append(_raises_bad_model(lambda: to_plain(restricted_loads(data)))))
    assert peak < 50e6
    assert "10000000000" in str(errors[0])


_F8 = np.dtype("f8")


@pytest.mark.parametrize(
    "state",
    [
        (3, "<", None, None, None, -1, -1, 63),  # a float dtype flagged as holding object pointers
        (3, "|", None, ("a",), {"a": (_F8,)}, 8, 1, 0),  # fields without offsets: the dtype cannot even print
        (3, "<", None, ("a",), {"a": (_F8, 0)}, 8, 1, 0),  # a structured dtype grafted on float64
        (3, "<", (_F8, (2,)), None, None, -1, -1, 0),
        (3, "<", None, None, None, -1, -1, 2**40),
        (1, "<"),
        ("x",),
    ],
)
def test_a_dtype_with_a_malformed_state_is_a_bad_model_file(state: tuple[Any, ...]) -> None:
    data = b"\x80\x02cnumpy\ndtype\nX\x02\x00\x00\x00f8\x89\x88\x87R" + pickle.dumps(state, protocol=2)[2:-1] + b"b."
    _raises_bad_model(lambda: restricted_loads(data))


def test_an_array_whose_shape_exceeds_its_data_is_refused() -> None:
    real = pickle.dumps(np.zeros(2), protocol=2)
    forged = real.replace(b"K\x02\x85", b"J\x00\xca\x9a\x3b\x85", 1)  # shape (2,) -> (10**9,)
    assert forged != real
    _raises_bad_model(lambda: restricted_loads(forged))


def test_ndarray_cannot_be_called_to_allocate() -> None:
    data = b"\x80\x02cnumpy\nndarray\nJ\x00\xca\x9a\x3b\x85R."  # numpy.ndarray((10**9,))
    _raises_bad_model(lambda: restricted_loads(data))


def test_build_cannot_set_attributes_of_other_objects() -> None:
    # BUILD with a slot state on the allowed function object would setattr on it
    data = b"\x80\x02c_codecs\nencode\nN}X\x08\x00\x00\x00__name__X\x01\x00\x00\x00x\x86b."
    _raises_bad_model(lambda: restricted_loads(data))
    import _codecs

    assert _codecs.encode.__name__ == "encode"


def test_a_pickle_symlinked_to_proc_self_mem_is_a_bad_model_file(tmp_path: Path) -> None:
    link = tmp_path / "generic_model.pkl"
    link.symlink_to("/proc/self/mem")
    _raises_bad_model(lambda: load_flame_model(link))
    _raises_bad_model(lambda: restricted_load(link))
    npy = tmp_path / "frontindices.npy"
    npy.symlink_to("/proc/self/mem")
    _raises_bad_model(lambda: load_front_face_indices(npy))


def _npy_with_header(shape: tuple[int, ...], payload: bytes, dtype: str = "<i8") -> bytes:
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": dtype, "fortran_order": False, "shape": shape})
    return header.getvalue() + payload


def test_npy_and_npz_headers_declaring_huge_shapes_are_refused_without_allocating(tmp_path: Path) -> None:
    npy = tmp_path / "frontindices.npy"
    npy.write_bytes(_npy_with_header((10**9, 3), b"\x00" * 24))
    npz = tmp_path / "embedding.npz"
    import zipfile

    with zipfile.ZipFile(npz, "w") as archive:
        archive.writestr("lmk_faces_idx.npy", _npy_with_header((10**9,), b"\x00" * 8))
        archive.writestr("lmk_bary_coords.npy", _npy_with_header((10**9, 3), b"\x00" * 8, "<f8"))
    errors: list[BadModelFileError] = []
    assert _peak_bytes(lambda: errors.append(_raises_bad_model(lambda: load_front_face_indices(npy)))) < 50e6
    assert _peak_bytes(lambda: errors.append(_raises_bad_model(lambda: load_landmark_embedding(npz)))) < 50e6
    assert all("1000000000" in str(error) for error in errors) and len(errors) == 2


def test_a_good_front_index_file_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "frontindices.npy"
    np.save(path, np.arange(5, 50, 3))
    assert np.array_equal(load_front_face_indices(path, n_vertices=100), np.arange(5, 50, 3))


# ---------------------------------------------------------------------------------------------------
# Generated bytes: only the loader's own error, whatever the file holds


def _check_loader(load: Callable[[], Any]) -> None:
    with contextlib.suppress(BadModelFileError, MissingAssetError):
        load()


@FUZZ
@given(data=st.binary(max_size=2048))
def test_generated_pickles_raise_only_bad_model_file_error(data: bytes) -> None:
    with contextlib.suppress(BadModelFileError):
        to_plain(restricted_loads(b"\x80\x02" + data))


_GOOD_PICKLE = pickle.dumps(
    {
        "lmk_faces_idx": np.arange(5),
        "lmk_bary_coords": np.full((5, 3), 1 / 3),
        "nested": [np.arange(3, dtype=np.int32), (1.5, "x", None), {"k": np.ones((2, 2), np.float32)}],
    },
    protocol=2,
)


@FUZZ
@given(edits=st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), min_size=1, max_size=6))
def test_damaged_pickles_raise_only_bad_model_file_error(tmp_path: Path, edits: list[tuple[int, int]]) -> None:
    data = bytearray(_GOOD_PICKLE)
    for position, value in edits:
        data[position % len(data)] = value
    path = tmp_path / "landmarks.pkl"
    path.write_bytes(bytes(data))
    _check_loader(lambda: load_landmark_embedding(path))


@FUZZ
@given(data=st.binary(max_size=2048), suffix=st.sampled_from([".npy", ".npz", ".pkl"]))
def test_generated_landmark_and_front_index_files_raise_only_their_errors(
    tmp_path: Path, data: bytes, suffix: str
) -> None:
    path = tmp_path / f"generated{suffix}"
    path.write_bytes(data)
    _check_loader(lambda: load_landmark_embedding(path))
    if suffix != ".pkl":
        _check_loader(lambda: load_front_face_indices(path))
    else:
        _check_loader(lambda: load_flame_model(path))


@FUZZ
@given(header=st.tuples(st.lists(st.integers(0, 2**40), max_size=4), st.sampled_from(["<i8", "<f8", "|O", "<U3"])))
def test_generated_npy_headers_raise_only_bad_model_file_error(tmp_path: Path, header: tuple[list[int], str]) -> None:
    shape, dtype = header
    path = tmp_path / "frontindices.npy"
    path.write_bytes(_npy_with_header(tuple(shape), b"\x01" * 16, dtype))
    _check_loader(lambda: load_front_face_indices(path))
    uv = tmp_path / "uv.npz"
    import zipfile

    with zipfile.ZipFile(uv, "w") as archive:
        archive.writestr("vt.npy", _npy_with_header(tuple(shape), b"\x01" * 16, dtype))
        archive.writestr("ft.npy", _npy_with_header((1, 3), b"\x00" * 24))
    _check_loader(lambda: load_uv_file(uv))


def test_a_list_naming_one_array_thousands_of_times_is_refused_before_it_becomes_an_array(tmp_path: Path) -> None:
    one_mb = np.zeros(1 << 17)
    data = pickle.dumps({"v_template": [one_mb] * 3000}, protocol=2)  # 1 MB on disk, 3 GB as one array
    assert len(data) < 2e6
    path = tmp_path / "generic_model.pkl"
    path.write_bytes(data)
    errors: list[BadModelFileError] = []
    assert _peak_bytes(lambda: errors.append(_raises_bad_model(lambda: load_flame_model(path)))) < 50e6
    assert "refers to more than" in str(errors[0])
