"""numpy's OpenBLAS on one thread while the fit and texture stages run (ctypes; no new dependency).

Those stages call BLAS / LAPACK on tiny matrices hundreds of times: the pose solver's 6×6 / 7×7 normal
equations, 2×2 colour covariances, (N, 3) @ (3, 3) rotations. With OpenBLAS's default of one thread per
core, every such call wakes and joins the other threads; on the shared 2-core machine (load ≈ 5)
``numpy.linalg.solve`` of 100 6×6 systems took 1.33 ms against 0.05 ms on one thread and ``inv`` of a 2×2
13 µs against 2.7 µs, and the fit stage's wall time swung up to 2.3 s where one thread gave 0.6-0.9 s
(benchmarks/README.md, "Fit and texture, stop 27"). Torch runs its own thread pool, so the networks are
not affected; numpy's large products elsewhere are not in these stages.

Only numpy's bundled OpenBLAS is known (the pinned numpy 1.26 wheels ship it on Linux, Windows and macOS);
where it cannot be found (another BLAS, another build) the stages run unchanged. The thread count is
process-wide, so concurrent stages share one setting: the first to enter sets one thread, the last to
leave restores what was there.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: Entry points of numpy's OpenBLAS builds (ILP64 with the ``64_`` suffix in the 1.26 wheels).
_SETTERS = ("openblas_set_num_threads64_", "openblas_set_num_threads", "scipy_openblas_set_num_threads64_")
_GETTERS = ("openblas_get_num_threads64_", "openblas_get_num_threads", "scipy_openblas_get_num_threads64_")

_LOCK = threading.Lock()
_state: dict[str, int] = {"depth": 0, "saved": 0}
_functions: list[tuple[Any, Any] | None] = []  # found once: [] → [None or (set, get)]


def _candidates() -> list[Path]:
    """numpy's bundled OpenBLAS libraries: numpy.libs (Linux wheels), numpy/.libs (Windows), numpy/.dylibs."""
    import numpy

    root = Path(numpy.__file__).resolve().parent
    folders = (root.parent / "numpy.libs", root / ".libs", root / ".dylibs")
    found = [p for folder in folders if folder.is_dir() for p in sorted(folder.iterdir())]
    return [p for p in found if "openblas" in p.name.lower()]


def _find() -> tuple[Any, Any] | None:
    for path in _candidates():
        try:
            library = ctypes.CDLL(str(path))  # already loaded by numpy: the same library, not a second copy
        except OSError:
            continue
        for set_name, get_name in zip(_SETTERS, _GETTERS, strict=True):
            setter, getter = getattr(library, set_name, None), getattr(library, get_name, None)
            if setter is not None and getter is not None:
                setter.argtypes, setter.restype = [ctypes.c_int], None
                getter.argtypes, getter.restype = [], ctypes.c_int
                return setter, getter
    log.debug("numpy's OpenBLAS not found: its threads are left as they are")
    return None


def _openblas() -> tuple[Any, Any] | None:
    if not _functions:
        _functions.append(_find())
    return _functions[0]


def blas_threads() -> int | None:
    """numpy's OpenBLAS thread count now; None where it is not known."""
    found = _openblas()
    return None if found is None else int(found[1]())


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """numpy's OpenBLAS on one thread inside the block (also a decorator: ``@one_blas_thread()``)."""
    with _LOCK:
        found = _openblas()
        if found is not None and _state["depth"] == 0:
            _state["saved"] = int(found[1]())
            found[0](1)
        _state["depth"] += 1
    try:
        yield
    finally:
        with _LOCK:
            _state["depth"] -= 1
            if found is not None and _state["depth"] == 0:
                found[0](max(1, _state["saved"]))
