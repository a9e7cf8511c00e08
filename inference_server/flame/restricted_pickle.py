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
import math
import pickle
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

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


#: Limits of what a model pickle may make the loader build. FLAME 2020 is 5,023 vertices, 5 joints,
#: 400 + 36 blend shapes: its largest array has 8.8 million values and the file is about 100 MB.
MAX_PICKLE_BYTES = 1 << 30
MAX_ARRAY_BYTES = 1 << 30
MAX_DENSE_ELEMENTS = 64 * 1024 * 1024  # a sparse (J, V) regressor made dense: far above FLAME's 5 x 5,023
MAX_NDIM = 32
MAX_NESTING = 100
MAX_VALUES = 1_000_000
MAX_REFERENCED_BYTES = 2 << 30


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
            raise BadModelFileError(f"a chumpy array in the pickle has a {type(state).__name__} state, not a dict")
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
            raise BadModelFileError(f"a sparse matrix in the pickle has a {type(state).__name__} state, not a dict")
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
        if n_rows * n_cols > MAX_DENSE_ELEMENTS:
            raise BadModelFileError(
                f"a sparse matrix in the pickle declares shape {n_rows}x{n_cols}, larger than any FLAME matrix "
                f"(limit {MAX_DENSE_ELEMENTS} values when made dense)"
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


class _TypeName:
    """A global the pickle may name but never call (``numpy.ndarray`` as ``_reconstruct``'s subtype)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


_NDARRAY = _TypeName("numpy.ndarray")


def _shape(value: Any, what: str) -> tuple[int, ...]:
    if (
        not isinstance(value, tuple)
        or len(value) > MAX_NDIM
        or not all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= MAX_ARRAY_BYTES for n in value)
    ):
        raise BadModelFileError(f"{what} in the pickle has a bad shape {str(value)[:80]}")
    return value


def _reconstruct_ndarray(subtype: Any, shape: Any, dtype_code: Any) -> np.ndarray:
    if subtype is not _NDARRAY:
        raise UnsafePickleError(f"numpy array reconstruction with subtype {subtype!r} refused (only numpy.ndarray)")
    # numpy writes (0,) here and the real shape in the BUILD state, whose size is checked against its data.
    if _shape(shape, "a numpy array") != (0,) or not isinstance(dtype_code, bytes | str) or len(dtype_code) > 4:
        raise BadModelFileError(f"a numpy array in the pickle starts with shape {shape!r}, not (0,)")
    return np.ndarray.__new__(np.ndarray, (0,), np.dtype(np.uint8))


#: Type strings a pickled numpy dtype may use: numbers, bools, Python objects, bounded strings.
_DTYPE_SPEC = re.compile(r"^(b1|[iu][1248]|f[248]|f16|c(8|16|32)|O[48]|[US]\d{1,7})$")


def _make_dtype(spec: Any, align: Any = False, copy: Any = False) -> np.dtype:
    if not isinstance(spec, str):
        raise UnsafePickleError(f"numpy dtype built from {type(spec).__name__} refused (only a type string)")
    if not _DTYPE_SPEC.match(spec):
        raise BadModelFileError(f"a numpy dtype in the pickle has the type string {spec[:40]!r}, not a number type")
    return np.dtype(spec, align=bool(align), copy=bool(copy))


def _check_dtype_state(dtype: np.dtype, state: Any) -> None:
    """numpy's dtype state (3, byteorder, None, None, None, elsize, alignment, flags[, metadata]):
    anything else could reach numpy's C code with values it does not expect (a SystemError at best)."""
    simple = (
        isinstance(state, tuple)
        and len(state) in (8, 9)
        and state[0] in (3, 4)
        and state[1] in ("<", ">", "|", "=")
        and state[2] is None
        and state[3] is None
        and state[4] is None
        and all(isinstance(v, int) and not isinstance(v, bool) for v in state[5:8])
        and state[5] in (-1, dtype.itemsize)
        and state[6] in (-1, dtype.alignment)
        and state[7] == dtype.flags  # e.g. a float dtype flagged as holding object pointers would crash numpy
        and (len(state) == 8 or state[8] is None)
    )
    if not simple:
        raise BadModelFileError(f"a numpy dtype ({dtype}) in the pickle has a malformed state {str(state)[:80]}")


def _check_array_state(state: Any) -> None:
    """numpy's array state (version, shape, dtype, fortran, data): the data must hold exactly the shape."""
    if not isinstance(state, tuple) or len(state) not in (4, 5):
        raise BadModelFileError(f"a numpy array in the pickle has a malformed state {str(state)[:80]}")
    shape, dtype, raw = _shape(state[-4], "a numpy array"), state[-3], state[-1]
    if not isinstance(dtype, np.dtype):
        raise BadModelFileError("a numpy array in the pickle has no dtype")
    count = math.prod(shape)
    if dtype.hasobject:
        ok = isinstance(raw, list) and len(raw) == count
    else:
        ok = isinstance(raw, bytes | str | bytearray) and len(raw) == count * dtype.itemsize
    if not ok:
        raise BadModelFileError(f"a numpy array of shape {shape} ({dtype}) in the pickle does not hold that much data")


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
    allowed[("numpy", "ndarray")] = _NDARRAY  # only as _reconstruct's subtype: calling it would allocate
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


_BUILD_TARGETS: tuple[type, ...] = (np.ndarray, np.dtype, ChumpyArrayStandIn, SparseMatrixStandIn, InertObject)


class _RestrictedUnpickler(pickle._Unpickler):
    """The pure-Python unpickler, so that BUILD can be checked: it may only set the state of the
    stand-ins and of numpy arrays / dtypes (with states checked first), never attributes of other objects
    (the standard fallback would ``setattr`` on whatever object is on the stack, a class included)."""

    dispatch: ClassVar[dict[int, Callable[[Any], None]]] = dict(pickle._Unpickler.dispatch)

    def load_build(self) -> None:
        stack: list[Any] = self.stack  # type: ignore[attr-defined]
        state, inst = stack[-1], stack[-2]
        if not isinstance(inst, _BUILD_TARGETS):
            raise UnsafePickleError(f"{self._source} sets the state of a {type(inst).__name__}, which is not allowed")
        if isinstance(inst, np.dtype):
            _check_dtype_state(inst, state)
        elif isinstance(inst, np.ndarray):
            _check_array_state(state)
        super().load_build()  # type: ignore[misc]

    dispatch[pickle.BUILD[0]] = load_build

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


_REDOWNLOAD_FIX = "the file may be truncated or not a FLAME file; download it again"


def _check_graph(root: Any, source: str) -> None:
    """Bound what later code walks: nesting depth (a cycle is infinitely deep) and values visited."""
    stack: list[tuple[Any, int]] = [(root, 1)]
    visited = 0
    array_bytes = 0  # counted once per reference: what converting every list to an array could allocate
    while stack:
        value, depth = stack.pop()
        visited += 1
        if isinstance(value, np.ndarray) and not value.dtype.hasobject:
            array_bytes += value.nbytes
            if array_bytes > MAX_REFERENCED_BYTES:
                raise BadModelFileError(
                    f"{source} refers to more than {MAX_REFERENCED_BYTES >> 20} MB of arrays; FLAME holds about 100 MB"
                )
        if visited > MAX_VALUES:
            raise BadModelFileError(f"{source} holds more than {MAX_VALUES} values; a FLAME file holds a few dozen")
        if depth > MAX_NESTING:
            raise BadModelFileError(f"{source} is nested deeper than {MAX_NESTING} levels (or refers to itself)")
        if isinstance(value, dict):
            children: Iterable[Any] = [*value.keys(), *value.values()]
        elif isinstance(value, list | tuple | set | frozenset):
            children = value
        elif isinstance(value, ChumpyArrayStandIn | SparseMatrixStandIn):
            children = [value.state]
        elif isinstance(value, np.ndarray) and value.dtype.hasobject:
            children = value.reshape(-1).tolist()
        else:
            continue
        stack.extend((child, depth + 1) for child in children)


def _load(file: BinaryIO, source: str, inert_globals: Iterable[str]) -> Any:
    unpickler = _RestrictedUnpickler(file, source, frozenset(inert_globals))
    try:
        loaded = unpickler.load()
        _check_graph(loaded, source)
        return loaded
    except BadModelFileError as exc:
        if source in exc.message:
            raise
        raise type(exc)(f"{source}: {exc.message}", exc.fix) from None
    except MemoryError:
        raise BadModelFileError(f"{source} asks for more memory than this computer has", _REDOWNLOAD_FIX) from None
    except Exception as exc:  # the contract: a hostile pickle ends in BadModelFileError, whatever numpy raised
        raise BadModelFileError(
            f"{source} is not a readable pickle ({type(exc).__name__}: {str(exc)[:200]})", _REDOWNLOAD_FIX
        ) from exc


def restricted_loads(data: bytes, *, source: str = "pickle data", inert_globals: Iterable[str] = ()) -> Any:
    """Unpickle ``data`` through the allow-list; the result may hold stand-ins (see :func:`to_plain`)."""
    return _load(io.BytesIO(data), source, inert_globals)


def restricted_load(path: str | Path, *, plain: bool = True, inert_globals: Iterable[str] = (), offset: int = 0) -> Any:
    """Unpickle a file through the allow-list; with ``plain`` the stand-ins become numpy arrays.

    ``offset`` skips a header (the pickle payload of an object ``.npy`` starts after its header).
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        if not path.is_file() or size > MAX_PICKLE_BYTES:
            raise BadModelFileError(
                f"{path} is not a regular file of at most {MAX_PICKLE_BYTES >> 20} MB", "point at the original file"
            )
        with path.open("rb") as file:
            file.seek(offset)
            data = file.read(max(0, size - offset))  # what stat promised, never a cap-sized buffer
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise BadModelFileError(f"{path} cannot be read ({reason})", "check the file and its permissions") from None
    obj = _load(io.BytesIO(data), str(path), inert_globals)
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
