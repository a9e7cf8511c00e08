"""One sampling chain in a background thread while the caller runs another: IdGen ∥ ExpGen on CPU.

ExpGen's draw does not need IdGen's result, and a batch-100 denoiser step does not keep two cores busy in
lockstep (many small kernels, each ending at an OpenMP barrier): two chains on one intra-op thread each
finished sooner than the two one after the other on two threads (benchmarks/concurrent_samplers.py,
benchmarks/README.md). torch ops release the GIL, and with OpenMP ``torch.set_num_threads`` is a setting of
the calling thread, so the background thread takes one thread and the caller keeps the rest; once the
background chain is done, ``balance`` (called by the caller between its own steps) gives the caller all its
threads back. Each chain seeds its own generator, so the samples are the ones a sequential run draws.

Progress: the background chain's progress is kept and reported from the caller's thread when the caller
collects the result (the worker's progress events stay in stage order). Cancellation: the background
chain sees the caller's ``should_cancel`` and also stops when the caller leaves the ``with`` block early.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Generic, TypeVar

import torch

from ..errors import BadRequestError

__all__ = ["CONCURRENT_ENV", "BackgroundDraw", "DrawFn", "concurrent_requested"]

#: ``OFER_CPU_CONCURRENT_SAMPLERS=1`` makes the worker draw ExpGen in the background while IdGen draws (CPU).
CONCURRENT_ENV = "OFER_CPU_CONCURRENT_SAMPLERS"

T = TypeVar("T")
#: draw(progress(done, total), should_cancel) -> result
DrawFn = Callable[[Callable[[int, int], None], Callable[[], bool]], T]


def concurrent_requested(environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``OFER_CPU_CONCURRENT_SAMPLERS`` asks for IdGen ∥ ExpGen (off when unset); other values are errors."""
    value = (os.environ if environ is None else environ).get(CONCURRENT_ENV, "").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise BadRequestError(
        f"{CONCURRENT_ENV}={value!r} is not understood.", "Set it to 1 or 0, or unset it, and restart the worker."
    )


class BackgroundDraw(Generic[T]):
    """Runs ``draw`` in a thread with one intra-op thread when ``concurrent``, else inline in ``result``."""

    def __init__(
        self,
        draw: DrawFn[T],
        *,
        concurrent: bool,
        progress: Callable[[int, int], None],
        should_cancel: Callable[[], bool],
    ) -> None:
        self._draw, self._progress, self._should_cancel = draw, progress, should_cancel
        self.threads = torch.get_num_threads()  # the caller's count, restored on exit
        self.concurrent = concurrent and self.threads >= 2
        self._stop = threading.Event()
        self._done = threading.Event()
        self._last: tuple[int, int] | None = None
        self._result: T | None = None
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> BackgroundDraw[T]:
        if self.concurrent:
            torch.set_num_threads(self.threads - 1)
            self._thread = threading.Thread(target=self._run, name="background-draw", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        try:
            torch.set_num_threads(1)

            def record(done: int, total: int) -> None:
                self._last = (done, total)

            self._result = self._draw(record, lambda: self._stop.is_set() or self._should_cancel())
        except BaseException as exc:  # handed to the caller's thread in result()
            self._error = exc
        finally:
            self._done.set()

    def balance(self) -> None:
        """Call between the caller's own steps: all threads back to the caller once the background is done."""
        if self.concurrent and self._done.is_set() and torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)

    def result(self) -> T:
        """The draw's result (waits for the background thread; runs the draw here when not concurrent)."""
        if not self.concurrent:
            return self._draw(self._progress, self._should_cancel)
        assert self._thread is not None
        self._thread.join()
        self.balance()
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
