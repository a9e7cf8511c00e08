"""A restricted unpickler for FLAME model files: numpy, chumpy arrays and scipy sparse matrices only.

FLAME ``.pkl`` files (2020, 2023, the static landmark embedding) are Python-2-era pickles that reference
``chumpy.ch.Ch`` arrays and ``scipy.sparse`` matrices. Unpickling runs whatever callable a pickle names, so
a plain ``pickle.load`` of a downloaded file can execute arbitrary code. Here every global a pickle asks for
is looked up in an allow-list; allowed names are mapped to small, argument-checking stand-ins written in
this module (never to chumpy or scipy, which need not be installed), and anything else raises
:class:`UnsafePickleError` *before* it could be called.

After loading, :func:`to_plain` turns the stand-ins into numpy arrays (chumpy ``Ch`` → its ``x`` array,
sparse matrices → dense arrays).
"""

from __future__ import annotations

import io
import pickle
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ..errors import BadModelFileError

__all__ = [
    "ChumpyArrayStandIn",
    "InertObject",
    "SparseMatrixStandIn",
    "UnsafePickleError",
    "allowed_globals",
    "restricted_load",
    "restricted_loads",
    "to_plain",
]


class UnsafePickleError(BadModelFileError):
    """A pickle asked for a global (a class or function) outside the allow-list; nothing was called."""


# --------------------------------------------------------------------------------------------------
# Stand-ins for the classes FLAME pickles instantiate.


class ChumpyArrayStandIn:
    """Takes the place of ``chumpy.ch.Ch``; chumpy pickles an instance's ``__dict__``, the array is ``x``."""

    def __init__(self) -> None:
        self.state: dict[str, Any] = {}

    def __setstate__(self, state: Any) -> None:
        # BUILD may pass (dict, slot_state) for classes with __slots__; chumpy's Ch has none, accept both.
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], dict):
            state = state[0]
        if not isinstance(state, dict):
            raise BadModelFileError(
                f"a chumpy array in the pickle has a {type(state).__name__} state, not a dict"
            )
        self.state = state

    def to_numpy(self) -> np.ndarray:
        if "x" not in self.state:
            keys = ", ".join(sorted(map(str, self.state))) or "none"
            raise BadModelFileError(
                f"a chumpy array in the pickle has no 'x' value (state keys: {keys})",
                "re-save the model with plain numpy arrays (see docs/flame.md)",
            )
        return np.asarray(to_plain(self.state["x"]))


class SparseMatrixStandIn:
    """Takes the place of scipy's CSC/CSR matrix classes: records the pickled state, converts to dense."""

    sparse_format = "csc"

    def __init__(self) -> None:
        self.state: dict[str, Any] = {}

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], dict):
            state = state[0]
        if not isinstance(state, dict):
            raise BadModelFileError(
                f"a sparse matrix in the pickle has a {type(state).__name__} state, not a dict"
            )
        self.state = state

    def _field(self, *names: str) -> Any:
        for name in names:
            if name in self.state:
                return self.state[name]
        raise BadModelFileError(f"a sparse matrix in the pickle has no '{names[0]}' field")

    def to_dense(self) -> np.ndarray:
        shape_value = self._field("_shape", "shape")
        try:
            n_rows, n_cols = (int(v) for v in shape_value)
        except (TypeError, ValueError) as exc:
            raise BadModelFileError(f"a sparse matrix in the pickle has a bad shape {shape_value!r}") from exc
        data = np.asarray(self._field("data"))
        indices = np.asarray(self._field("indices")).astype(np.int64, copy=False)
        indptr = np.asarray(self._field("indptr")).astype(np.int64, copy=False)
        # CSC compresses columns (indptr per column, indices are rows); CSR the other way round.
        n_major, n_minor = (n_cols, n_rows) if self.sparse_format == "csc" else (n_rows, n_cols)
        if (
            data.ndim != 1
            or indices.shape != data.shape
            or indptr.shape != (n_major + 1,)
            or n_rows < 0
            or n_cols < 0
            or indptr[0] != 0
            or indptr[-1] != data.shape[0]
            or np.any(np.diff(indptr) < 0)
            or (indices.size and (indices.min() < 0 or indices.max() >= n_minor))
        ):
            raise BadModelFileError(
                f"a {self.sparse_format.upper()} sparse matrix in the pickle is inconsistent "
                f"(shape {n_rows}x{n_cols}, {data.shape[0]} values, indptr of length {indptr.shape[0]})"
            )
        major = np.repeat(np.arange(n_major), np.diff(indptr))
        dense = np.zeros((n_major, n_minor), dtype=np.result_type(data.dtype, np.float64))
        np.add.at(dense, (major, indices), data)  # duplicate entries add up, as in scipy
        return dense.T.copy() if self.sparse_format == "csc" else dense


class _CscStandIn(SparseMatrixStandIn):
    sparse_format = "csc"


class _CsrStandIn(SparseMatrixStandIn):
    sparse_format = "csr"


class InertObject:
    """What an explicitly *inert* global turns into: records the name, never calls anything.

    Used for entries a caller does not need and must not execute (e.g. torch tensors inside DECA's
    ``landmark_embedding.npy``). Calling, BUILD-ing or NEWOBJ-ing it only records the arguments' types.
    """

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, *args: Any, **kwargs: Any) -> InertObject:
        return InertObject(self.name)

    def __setstate__(self, state: Any) -> None:
        pass

    def __repr__(self) -> str:
        return f"<not loaded: {self.name}>"


# --------------------------------------------------------------------------------------------------
# Argument-checking versions of the few functions numpy / Python pickles call.


def _reconstruct_ndarray(subtype: Any, shape: Any, dtype_code: Any) -> np.ndarray:
    if subtype is not np.ndarray:
        raise UnsafePickleError(
            f"numpy array reconstruction with subtype {subtype!r} refused (only numpy.ndarray)"
        )
    return np.ndarray.__new__(np.ndarray, shape, dtype_code)


def _make_dtype(spec: Any, align: Any = False, copy: Any = False) -> np.dtype:
    if not isinstance(spec, str):
        raise UnsafePickleError(f"numpy dtype built from {type(spec).__name__} refused (only a type string)")
    return np.dtype(spec, align=bool(align), copy=bool(copy))


def _make_scalar(dtype: Any, raw: Any = None) -> Any:
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise UnsafePickleError(f"numpy scalar of dtype {dtype!r} refused (only plain numeric dtypes)")
    if isinstance(raw, str):  # Python 2 bytes arrive as latin1-decoded str
        raw = raw.encode("latin1")
    if not isinstance(raw, bytes) or len(raw) != dtype.itemsize:
        raise BadModelFileError(f"a numpy scalar of dtype {dtype} in the pickle has bad data")
    return np.frombuffer(raw, dtype=dtype)[0]


def _frombuffer(buffer: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    # numpy's protocol-5 array layout; copying makes the array writeable and independent of the file.
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise UnsafePickleError(f"numpy buffer of dtype {dtype!r} refused")
    array = np.frombuffer(bytes(memoryview(buffer)), dtype=dtype)
    return array.reshape(shape, order="F" if order == "F" else "C").copy()


def _codecs_encode(text: Any, encoding: Any = "utf-8") -> bytes:
    # Python 3 writes bytes into protocol <= 2 pickles as _codecs.encode(str, "latin1").
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError(f"_codecs.encode with encoding {encoding!r} refused (only latin1 text)")
    return text.encode("latin1")


_STAND_IN_CLASSES: tuple[type, ...] = (ChumpyArrayStandIn, _CscStandIn, _CsrStandIn)


def _copyreg_reconstructor(cls: Any, base: Any, state: Any) -> Any:
    # Protocol 0/1 pickles of new-style objects; only the stand-ins may be built this way.
    if cls not in _STAND_IN_CLASSES or base is not object or state is not None:
        raise UnsafePickleError(f"copyreg._reconstructor for {cls!r} refused (only chumpy/sparse stand-ins)")
    return object.__new__(cls)


def _sparse_names(format_name: str) -> list[tuple[str, str]]:
    # Old scipy: scipy.sparse.csc; scipy >= 1.8: scipy.sparse._csc (and _arrays for the *_array classes).
    matrix_modules = ("scipy.sparse", f"scipy.sparse.{format_name}", f"scipy.sparse._{format_name}")
    array_modules = ("scipy.sparse", f"scipy.sparse._{format_name}", "scipy.sparse._arrays")
    return [(module, f"{format_name}_matrix") for module in matrix_modules] + [
        (module, f"{format_name}_array") for module in array_modules
    ]


def _build_allow_list() -> dict[tuple[str, str], Any]:
    allowed: dict[tuple[str, str], Any] = {("chumpy.ch", "Ch"): ChumpyArrayStandIn}
    allowed.update(dict.fromkeys(_sparse_names("csc"), _CscStandIn))
    allowed.update(dict.fromkeys(_sparse_names("csr"), _CsrStandIn))
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = _reconstruct_ndarray
        allowed[(f"{core}.multiarray", "scalar")] = _make_scalar
        allowed[(f"{core}.numeric", "_frombuffer")] = _frombuffer
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = _make_dtype
    for module in ("copy_reg", "copyreg"):
        allowed[(module, "_reconstructor")] = _copyreg_reconstructor
    for module in ("__builtin__", "builtins"):
        allowed[(module, "object")] = object  # only as copyreg._reconstructor's base (checked there)
        allowed[(module, "set")] = set
        allowed[(module, "frozenset")] = frozenset
    allowed[("_codecs", "encode")] = _codecs_encode
    return allowed


_ALLOWED = _build_allow_list()


def allowed_globals() -> list[str]:
    """The allow-list as ``module.name`` strings (for documentation and error messages)."""
    return sorted(f"{module}.{name}" for module, name in _ALLOWED)


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: BinaryIO, source: str, inert_globals: frozenset[str]) -> None:
        # latin1: Python 2 'str' objects (numpy array buffers among them) must come back byte for byte.
        super().__init__(file, encoding="latin1")
        self._source = source
        self._inert_globals = inert_globals

    def find_class(self, module: str, name: str) -> Any:
        target = _ALLOWED.get((module, name))
        if target is not None:
            return target
        qualified = f"{module}.{name}"
        if qualified in self._inert_globals:
            return InertObject(qualified)
        raise UnsafePickleError(
            f"{self._source} asks the unpickler for '{qualified}', which is not allowed in a FLAME model "
            "file; nothing was executed",
            "use an original FLAME file or an .npz (see docs/flame.md for the allowed names)",
        )

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self._source} uses persistent ids (a torch or other framework file?)")


_PICKLE_FAILURES: tuple[type[BaseException], ...] = (
    pickle.UnpicklingError,
    EOFError,
    ValueError,
    TypeError,
    AttributeError,
    IndexError,
    KeyError,
    struct.error,
    UnicodeDecodeError,
    OverflowError,
    RecursionError,
    MemoryError,
    ImportError,
)


def _load(file: BinaryIO, source: str, inert_globals: Iterable[str]) -> Any:
    unpickler = _RestrictedUnpickler(file, source, frozenset(inert_globals))
    try:
        return unpickler.load()
    except BadModelFileError:
        raise
    except _PICKLE_FAILURES as exc:
        raise BadModelFileError(
            f"{source} is not a readable pickle ({type(exc).__name__}: {exc})",
            "the file may be truncated or not a FLAME file; download it again",
        ) from exc


def restricted_loads(data: bytes, *, source: str = "pickle data", inert_globals: Iterable[str] = ()) -> Any:
    """Unpickle ``data`` through the allow-list; the result may hold stand-ins (see :func:`to_plain`)."""
    return _load(io.BytesIO(data), source, inert_globals)


def restricted_load(
    path: str | Path, *, plain: bool = True, inert_globals: Iterable[str] = (), offset: int = 0
) -> Any:
    """Unpickle a file through the allow-list; with ``plain`` the stand-ins become numpy arrays.

    ``offset`` skips a header (the pickle payload of an object ``.npy`` starts after its header).
    """
    path = Path(path)
    with path.open("rb") as file:
        file.seek(offset)
        obj = _load(file, str(path), inert_globals)
    return to_plain(obj) if plain else obj


def to_plain(obj: Any) -> Any:
    """Replace stand-ins by numpy arrays, recursively through dicts, lists, tuples and object arrays."""
    if isinstance(obj, ChumpyArrayStandIn):
        return obj.to_numpy()
    if isinstance(obj, SparseMatrixStandIn):
        return obj.to_dense()
    if isinstance(obj, dict):
        return {key: to_plain(value) for key, value in obj.items()}
    if isinstance(obj, list):
        return [to_plain(value) for value in obj]
    if isinstance(obj, tuple):
        return tuple(to_plain(value) for value in obj)
    if isinstance(obj, np.ndarray) and obj.dtype.hasobject:
        converted = np.empty(obj.shape, dtype=object)
        for index in np.ndindex(obj.shape):
            converted[index] = to_plain(obj[index])
        return converted
    return obj
