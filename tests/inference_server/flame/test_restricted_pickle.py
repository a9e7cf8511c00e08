"""The restricted unpickler: chumpy / scipy FLAME pickles load without chumpy; anything else is refused
before it runs."""

from __future__ import annotations

import builtins
import importlib.util
import os
import pickle
import pickletools
import struct
import subprocess
import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse

from inference_server.errors import BadModelFileError
from inference_server.flame.loading import load_flame_model
from inference_server.flame.model_data import FlameModelData
from inference_server.flame.restricted_pickle import (
    UnsafePickleError,
    allowed_globals,
    restricted_load,
    restricted_loads,
)


class _ChLike:
    """Pickles the way chumpy's Ch does: its __dict__ minus the two weak-reference caches."""

    def __init__(self, x: np.ndarray) -> None:
        self.x = x
        self._parents: dict[str, Any] = {}
        self._cache: dict[str, Any] = {"r": None}
        self._dirty_vars: set[str] = {"x"}
        self._itr = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        del state["_parents"], state["_cache"]
        return state


def _pickle_with_fake_chumpy(obj_factory: Callable[[type], Any], protocol: int = 2) -> bytes:
    """Pickle objects of a class named ``chumpy.ch.Ch``; the fake module exists only while writing."""
    chumpy = types.ModuleType("chumpy")
    ch_module = types.ModuleType("chumpy.ch")
    ch_class = type("Ch", (_ChLike,), {"__module__": "chumpy.ch", "__qualname__": "Ch"})
    ch_module.Ch = ch_class  # type: ignore[attr-defined]
    chumpy.ch = ch_module  # type: ignore[attr-defined]
    sys.modules["chumpy"], sys.modules["chumpy.ch"] = chumpy, ch_module
    try:
        return pickle.dumps(obj_factory(ch_class), protocol=protocol)
    finally:
        del sys.modules["chumpy"], sys.modules["chumpy.ch"]


def _globals_in(data: bytes) -> list[str]:
    """Every global a pickle names, in order, as ``module.name``."""
    names: list[str] = []
    strings: list[str] = []
    for opcode, arg, _pos in pickletools.genops(data):
        if isinstance(arg, str):
            strings.append(arg)
        if opcode.name == "GLOBAL":
            names.append(str(arg).replace(" ", "."))
        elif opcode.name == "STACK_GLOBAL":
            names.append(f"{strings[-2]}.{strings[-1]}")
    return names


def _flame_layout(model: FlameModelData, ch: type) -> dict[str, Any]:
    """The FLAME 2020 pickle layout: chumpy arrays, a scipy CSC regressor, uint32 kintree with 2**32-1."""
    kintree = np.array([[2**32 - 1, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.int64)
    return {
        "f": model.faces.astype(np.uint32),
        "J_regressor": scipy.sparse.csc_matrix(model.J_regressor),
        "kintree_table": kintree,
        "J": ch(model.J_regressor @ model.v_template),
        "weights": ch(model.weights),
        "posedirs": model.posedirs,
        "v_template": ch(model.v_template),
        "shapedirs": ch(model.shapedirs),
        "bs_style": "lbs",
        "bs_type": "lrotmin",
    }


def test_chumpy_flame_pickle_loads_without_chumpy(
    tmp_path: Path, make_flame_model: Callable[..., FlameModelData]
) -> None:
    model = make_flame_model(seed=1, extras=False)
    data = _pickle_with_fake_chumpy(lambda ch: _flame_layout(model, ch))
    names = _globals_in(data)
    assert "chumpy.ch.Ch" in names and any(n.startswith("scipy.sparse") and "csc_matrix" in n for n in names)
    assert importlib.util.find_spec("chumpy") is None and "chumpy" not in sys.modules
    path = tmp_path / "generic_model.pkl"
    path.write_bytes(data)

    loaded = load_flame_model(path)
    assert "chumpy" not in sys.modules
    for name in ("v_template", "shapedirs", "posedirs", "J_regressor", "weights"):
        assert np.array_equal(getattr(loaded, name), getattr(model, name)), name
    assert np.array_equal(loaded.faces, model.faces) and loaded.faces.dtype == np.int64
    assert np.array_equal(loaded.parents, [-1, 0, 1, 1, 1])
    assert (loaded.n_shape, loaded.n_expression) == (300, 100)
    assert loaded.version == "FLAME2020" and not loaded.is_demo


def test_protocol_1_pickle_uses_copyreg_reconstructor_and_loads() -> None:
    array = np.arange(12.0).reshape(3, 4)
    data = _pickle_with_fake_chumpy(lambda ch: {"x": ch(array)}, protocol=1)
    assert "copy_reg._reconstructor" in _globals_in(data)  # Python 2 spelling, as protocol 1 writes it
    loaded = restricted_loads(data)
    assert loaded.keys() == {"x"}
    from inference_server.flame.restricted_pickle import to_plain

    assert np.array_equal(to_plain(loaded)["x"], array)


def _python2_style_array_pickle(array: np.ndarray) -> bytes:
    """A protocol-2 pickle as Python 2 wrote it: byte strings as BINSTRING (py2 ``str``), old module names."""
    assert array.dtype == np.float64 and array.flags.c_contiguous

    def binstring(value: bytes) -> bytes:
        return b"T" + struct.pack("<i", len(value)) + value

    shape = b"(" + b"".join(b"J" + struct.pack("<i", n) for n in array.shape) + b"t"
    dtype_state = b"(K\x03" + binstring(b"<") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00t"
    return (
        b"\x80\x02}(" + binstring(b"x")
        + b"ccopy_reg\n_reconstructor\n(cchumpy.ch\nCh\nc__builtin__\nobject\nNtR}" + binstring(b"x")
        + b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + binstring(b"b") + b"\x87R"
        + b"(K\x01" + shape + b"cnumpy\ndtype\n" + binstring(b"f8") + b"K\x00K\x01\x87R" + dtype_state + b"b"
        + b"\x89" + binstring(array.tobytes()) + b"tb"
        + b"sbu."
    )  # fmt: skip


def test_python2_era_pickle_with_latin1_byte_strings() -> None:
    array = np.random.default_rng(0).normal(size=(4, 3))  # raw bytes include values >= 0x80
    data = _python2_style_array_pickle(array)
    loaded = restricted_loads(data)
    from inference_server.flame.restricted_pickle import to_plain

    assert np.array_equal(to_plain(loaded)["x"], array)


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
def test_plain_numpy_values_round_trip_at_every_protocol(protocol: int) -> None:
    rng = np.random.default_rng(1)
    values = {
        "float32": rng.normal(size=(3, 4)).astype(np.float32),
        "fortran": np.asfortranarray(rng.normal(size=(5, 2))),
        "uint32": np.array([[2**32 - 1, 0, 1]], dtype=np.uint32),
        "bool": rng.random(7) > 0.5,
        "zero_d": np.array(2.5),
        "scalar": np.float64(3.25),
        "int_scalar": np.int64(-7),
        "text": "lbs",
        "tags": {"a", "b"},
        "nested": [1, (2.0, None), {"k": np.arange(3)}],
    }
    loaded = restricted_loads(pickle.dumps(values, protocol=protocol))
    assert loaded.keys() == values.keys()
    for name, value in values.items():
        if isinstance(value, np.ndarray | np.generic):
            assert np.array_equal(loaded[name], value) and loaded[name].dtype == value.dtype, name
        elif name != "nested":
            assert loaded[name] == value, name
    assert np.array_equal(loaded["nested"][2]["k"], np.arange(3))


def test_sparse_stand_in_matches_scipy_for_csc_and_csr_with_duplicates() -> None:
    from inference_server.flame.restricted_pickle import to_plain

    rng = np.random.default_rng(2)
    dense = rng.normal(size=(5, 30)) * (rng.random((5, 30)) < 0.2)
    coo = scipy.sparse.coo_matrix(([1.0, 2.0], ([0, 0], [3, 3])), shape=(5, 30))  # a duplicate entry
    for matrix in (scipy.sparse.csc_matrix(dense), scipy.sparse.csr_matrix(dense), coo.tocsc(), coo.tocsr()):
        loaded = to_plain(restricted_loads(pickle.dumps(matrix, protocol=2)))
        np.testing.assert_array_equal(loaded, matrix.toarray())


class _Evil:
    def __init__(self, function: Any, *args: Any) -> None:
        self.function, self.args = function, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.function, self.args


def _attacks(marker: Path) -> Iterator[tuple[str, Any]]:
    yield "system", _Evil(os.system, f"touch {marker}")
    yield "eval", _Evil(builtins.eval, f"open({str(marker)!r}, 'w').close()")
    yield "subprocess", _Evil(subprocess.call, ["touch", str(marker)])
    yield "getattr", _Evil(getattr, _Evil(__import__, "os"), "system")


@pytest.mark.parametrize("attack", ["system", "eval", "subprocess", "getattr"])
@pytest.mark.parametrize("where", ["top", "inside_flame_dict", "inside_chumpy_state"])
def test_calls_to_other_globals_are_refused_and_never_run(
    tmp_path: Path, make_flame_model: Callable[..., FlameModelData], attack: str, where: str
) -> None:
    marker = tmp_path / "marker"
    payload = dict(_attacks(marker))[attack]
    model = make_flame_model(seed=3, extras=False)

    def build(ch: type) -> Any:
        if where == "top":
            return payload
        fields = _flame_layout(model, ch)
        if where == "inside_flame_dict":
            fields["shapedirs"] = payload
        else:
            fields["v_template"].evil = payload
        return fields

    path = tmp_path / "generic_model.pkl"
    data = _pickle_with_fake_chumpy(build)
    path.write_bytes(data)
    # The first name outside the allow-list (protocol 2 writes Python 2 names: __builtin__.eval, ...).
    offending = next(name for name in _globals_in(data) if name not in allowed_globals())
    assert offending.endswith({"system": ".system", "eval": ".eval", "subprocess": ".call"}.get(attack, ".getattr"))
    with pytest.raises(UnsafePickleError) as caught:
        load_flame_model(path)
    message = str(caught.value)
    assert f"'{offending}'" in message and str(path) in message
    assert isinstance(caught.value, BadModelFileError) and caught.value.fix
    assert not marker.exists()


def test_allowed_names_cannot_be_abused() -> None:
    from inference_server.flame import restricted_pickle

    # _reconstruct with a non-ndarray subtype, _codecs.encode with another codec.
    bad_subtype = b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncchumpy.ch\nCh\nK\x00\x85C\x01b\x87R."
    with pytest.raises(UnsafePickleError, match="subtype"):
        restricted_loads(bad_subtype)
    bad_codec = b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x06\x00\x00\x00rot_13\x86R."
    with pytest.raises(UnsafePickleError, match="latin1"):
        restricted_loads(bad_codec)
    assert "posix.system" not in allowed_globals() and "builtins.eval" not in allowed_globals()
    assert all(not n.startswith(("os.", "subprocess.", "posix.")) for n in allowed_globals())
    assert restricted_pickle.allowed_globals()  # the list is what docs/flame.md documents


def test_torch_style_persistent_ids_are_refused() -> None:
    data = b"\x80\x02X\x01\x00\x00\x001Q."  # BINPERSID
    with pytest.raises(UnsafePickleError, match="persistent"):
        restricted_loads(data)


@pytest.mark.parametrize(
    "content",
    [b"", b"not a pickle at all", b"\x80\x02}q\x00(X\x01\x00\x00\x00", os.urandom(256), b"PK\x03\x04junk"],
    ids=["empty", "text", "truncated_header", "random", "zip_like"],
)
def test_broken_files_give_a_clear_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "generic_model.pkl"
    path.write_bytes(content)
    with pytest.raises(BadModelFileError) as caught:
        restricted_load(path)
    assert str(path) in str(caught.value)


def test_truncated_flame_pickle_gives_a_clear_error(
    tmp_path: Path, make_flame_model: Callable[..., FlameModelData]
) -> None:
    data = _pickle_with_fake_chumpy(lambda ch: _flame_layout(make_flame_model(seed=4, extras=False), ch))
    for cut in (len(data) // 3, len(data) // 2, len(data) - 1):
        path = tmp_path / f"cut_{cut}.pkl"
        path.write_bytes(data[:cut])
        with pytest.raises(BadModelFileError, match="not a readable pickle"):
            load_flame_model(path)
