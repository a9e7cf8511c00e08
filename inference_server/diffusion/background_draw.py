"""One sampling chain in a background thread while the caller runs another: IdGen ∥ ExpGen on CPU.

ExpGen's draw does not need IdGen's result, and a batch-100 denoiser step does not keep two cores busy in
lockstep (many small kernels, each ending at an OpenMP barrier): on the quiet 2-core EPYC the fused IdGen step
took 24.7 ms on one thread and 24.1 ms on two, ExpGen's 7.4 ms on one and 12.2 ms on two, so the two chains on
one thread each finish well before the two one after the other (benchmarks/concurrent_samplers.py,
benchmarks/README.md). torch ops release the GIL, and with OpenMP ``torch.set_num_threads`` is a setting of
the calling thread, so the threads are split between the two chains in proportion to their work
(``split_threads`` of ``work_share``: one each on 2 cores; on 16, 3 for ExpGen and 13 for IdGen).

The split is fixed for the whole draw: the caller keeps its share until it collects the result, and neither
side is handed the other's threads when it ends first. A hand-back at a moment set by timing would make the
results depend on timing: at some batch sizes (6 and 10 rows, not 1, 3 or 100, measured) a denoiser step's
last bits depend on the thread count it runs with, so a run whose widening came one step later would differ
from the one before by ~1e-6. With a fixed split a request gives the same samples every time; at those batch
sizes they may differ in the last bits from a sequential draw on all the threads, as any change of thread
count does. Each chain seeds its own generator.

Progress: the background chain's progress is kept and reported from the caller's thread when the caller
collects the result (the worker's progress events stay in stage order). Cancellation: the background
chain sees the caller's ``should_cancel`` and also stops when the caller leaves the ``with`` block early.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Generic, TypeVar

import torch

from ..env_switch import read_switch

__all__ = ["CONCURRENT_ENV", "BackgroundDraw", "DrawFn", "concurrent_requested", "split_threads", "work_share"]

#: ExpGen draws in the background while IdGen draws (CPU) unless ``OFER_CPU_CONCURRENT_SAMPLERS=0``.
CONCURRENT_ENV = "OFER_CPU_CONCURRENT_SAMPLERS"

T = TypeVar("T")
#: draw(progress(done, total), should_cancel) -> result
DrawFn = Callable[[Callable[[int, int], None], Callable[[], bool]], T]


def concurrent_requested(environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``OFER_CPU_CONCURRENT_SAMPLERS`` leaves IdGen ∥ ExpGen on (on when unset); other values are errors."""
    return read_switch(CONCURRENT_ENV, environ) is not False


def split_threads(threads: int, background_share: float) -> int:
    """The background chain's intra-op threads out of ``threads``: its share of the two chains' work, rounded,
    at least one and leaving the caller at least one (``threads`` ≥ 2)."""
    if not 0.0 <= background_share <= 1.0:
        raise ValueError(f"background_share must lie in [0, 1], got {background_share}")
    return min(threads - 1, max(1, round(threads * background_share)))


def work_share(background: object, background_rows: int, caller: object, caller_rows: int) -> float:
    """The background chain's fraction of the two chains' work per step: parameters × rows of each denoiser
    (a step's GEMMs cost about 2 × parameters × rows; the official sizes give 0.20 at batch 100 each, against
    0.16 from a FLOP count of the fused steps: benchmarks/README.md). Even (0.5) where a runner shows no torch
    parameters (an ONNX Runtime session)."""
    sizes = [_parameters(background) * background_rows, _parameters(caller) * caller_rows]
    return 0.5 if min(sizes) <= 0 else sizes[0] / (sizes[0] + sizes[1])


def _parameters(denoiser: object) -> int:
    """Parameters of a torch module, or of the module behind a ``DenoiserModel``'s runner; 0 if none shows."""
    module = getattr(getattr(denoiser, "runner", None), "module", None)
    module = denoiser if isinstance(denoiser, torch.nn.Module) else module
    return sum(p.numel() for p in module.parameters()) if isinstance(module, torch.nn.Module) else 0


class BackgroundDraw(Generic[T]):
    """Runs ``draw`` in a thread with its share of the intra-op threads when ``concurrent``, else inline in
    ``result``. ``background_share``: the background chain's fraction of the two chains' work;
    ``caller_keeps_threads``: the caller's chain splits its steps' rows over its threads (``caller_threads``)."""

    def __init__(
        self,
        draw: DrawFn[T],
        *,
        concurrent: bool,
        progress: Callable[[int, int], None],
        should_cancel: Callable[[], bool],
        background_share: float = 0.5,
        caller_keeps_threads: bool = False,
    ) -> None:
        self._draw, self._progress, self._should_cancel = draw, progress, should_cancel
        self.threads = torch.get_num_threads()  # the caller's count, restored on exit
        self.concurrent = concurrent and self.threads >= 2
        self.background_threads = split_threads(self.threads, background_share) if self.concurrent else 0
        #: The caller's threads while both draw: all of them when its steps run their rows in single-thread
        #: blocks (nets/row_lanes.py), which share the cores with the background chain without OpenMP
        #: barriers between them; else what the background leaves.
        self.caller_threads = self.threads if caller_keeps_threads else self.threads - self.background_threads
        self._stop = threading.Event()
        self._last: tuple[int, int] | None = None
        self._result: T | None = None
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> BackgroundDraw[T]:
        if self.concurrent:
            torch.set_num_threads(self.caller_threads)
            self._thread = threading.Thread(target=self._run, name="background-draw", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        try:
            torch.set_num_threads(self.background_threads)

            def record(done: int, total: int) -> None:
                self._last = (done, total)

            self._result = self._draw(record, lambda: self._stop.is_set() or self._should_cancel())
        except BaseException as exc:  # handed to the caller's thread in result()
            self._error = exc

    def result(self) -> T:
        """The draw's result (waits for the background thread; runs the draw here when not concurrent)."""
        if not self.concurrent:
            return self._draw(self._progress, self._should_cancel)
        assert self._thread is not None
        self._thread.join()
        torch.set_num_threads(self.threads)  # the caller's own count again, from here on
        if self._error is not None:
            raise self._error
        if self._last is not None:
            self._progress(*self._last)
        assert self._result is not None
        return self._result

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._thread is not None:
            self._stop.set()  # the caller failed or was cancelled: the background chain stops at its next step
            self._thread.join()
        # Back to the caller's count; this also resets torch's process-wide default that threads started
        # later (e.g. the server's next job thread) begin with, which the background thread had set to 1.
        torch.set_num_threads(self.threads)
