"""``ofer-worker serve``: the JSON Lines server of the contract, on stdin/stdout.

The main thread reads requests; one job thread runs a reconstruction at a time. Protocol lines are the
only thing written to the real stdout: ``sys.stdout`` is pointed at stderr for the lifetime of the
server so a stray ``print`` in any library cannot corrupt the stream. EOF on stdin (the add-on quit or
was killed) cancels the job and ends the worker, so a dead client never leaves a worker behind.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any, Protocol

from . import protocol
from .errors import CancelledError, WorkerError
from .protocol import ProtocolError, ReconstructArgs, Request, SequenceArgs

REPORT_FIX = "This is a bug: please report it with the worker log."
BAD_ARGUMENT_FIX = "Correct that argument and send the request again."
CLOSE_PROGRAMS_FIX = "Close other programs, or lower the numbers of samples."
BAD_REQUEST_FIX = (
    'Send one JSON object per line: {"id": "...", "op": "hello|reconstruct|sequence|cancel|shutdown", "args": {}}'
)
#: How long ``shutdown`` / EOF waits for a cancelled job before exiting anyway.
SHUTDOWN_GRACE_S = 5.0

ProgressFn = Callable[[str, int, int, str], None]
CancelFn = Callable[[], bool]


class JobRunner(Protocol):
    """What the server needs from the pipeline (the real one, or a test double)."""

    def hello_info(self) -> dict[str, Any]: ...

    def reconstruct(self, args: ReconstructArgs, progress: ProgressFn, should_cancel: CancelFn) -> dict[str, Any]:
        """Run one job; return the ``result`` event's fields (``path``, ``summary``)."""
        ...


class SequenceRunner(Protocol):
    """A runner that also turns clips into animations (``sequence`` requests); optional for test doubles."""

    def sequence(self, args: SequenceArgs, progress: ProgressFn, should_cancel: CancelFn) -> dict[str, Any]: ...


class EventWriter:
    """Serialises events from several threads onto one binary stream, one line each."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def send(self, event: dict[str, Any]) -> None:
        try:
            line = protocol.encode_line(event)
        except (ValueError, TypeError) as exc:  # NaN or a non-JSON value in an event: a bug, still answered
            traceback.print_exc(file=sys.stderr)
            line = protocol.encode_line(
                protocol.error_event(
                    str(event.get("id", "")), "internal", f"the worker built an invalid event ({exc})", REPORT_FIX
                )
            )
        with self._lock:
            try:
                self._stream.write(line)
                self._stream.flush()
            except (BrokenPipeError, ValueError, OSError):
                pass  # the client is gone; EOF on stdin will end the server


@dataclass
class _Job:
    request_id: str
    cancel: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None


class Server:
    def __init__(self, runner: JobRunner, events: EventWriter) -> None:
        self._runner = runner
        self._events = events
        self._lock = threading.Lock()
        self._job: _Job | None = None
        self._stopping = False

    # -- request handling (main thread) -------------------------------------------------------------
    def handle_line(self, line: bytes) -> bool:
        """Handle one request line. Returns False when the server should stop.

        The error boundary of the server: nothing one line holds can end the process, and a line that
        reaches a bug still gets its answer (``internal``, with the traceback on stderr).
        """
        request_id = ""
        try:
            request = protocol.parse_request(line)
            request_id = request.id
            return self._dispatch(request)
        except ProtocolError as exc:
            self._events.send(protocol.error_event(exc.request_id or "", "bad_request", str(exc), BAD_REQUEST_FIX))
        except MemoryError:
            self._events.send(
                protocol.error_event(request_id, "out_of_memory", "the worker ran out of memory", CLOSE_PROGRAMS_FIX)
            )
        except Exception as exc:
            traceback.print_exc(file=sys.stderr)
            self._events.send(
                protocol.error_event(request_id, "internal", f"unexpected {type(exc).__name__}", REPORT_FIX)
            )
        return True

    def _dispatch(self, request: Request) -> bool:
        if request.op == "hello":
            self._send_hello(request)
        elif request.op in ("reconstruct", "sequence"):
            self._start_job(request)
        elif request.op == "cancel":
            self._cancel(request)
        elif request.op == "shutdown":
            self.stop()
            return False
        return True

    def _send_hello(self, request: Request) -> None:
        try:
            info = self._runner.hello_info()
        except Exception as exc:  # a broken asset setup must not kill the handshake
            info = {"error": f"{type(exc).__name__}: {exc}"}
        self._events.send({"id": request.id, "event": "hello", "protocol": protocol.PROTOCOL_VERSION, **info})

    def _job_work(self, request: Request) -> Callable[[ProgressFn, CancelFn], dict[str, Any]]:
        """The job a ``reconstruct`` / ``sequence`` request asks for, its arguments checked (ProtocolError)."""
        if request.op == "reconstruct":
            rec_args = protocol.parse_reconstruct_args(request)
            return lambda progress, cancel: self._runner.reconstruct(rec_args, progress, cancel)
        seq_args = protocol.parse_sequence_args(request)
        runner = getattr(self._runner, "sequence", None)
        if runner is None:
            raise ProtocolError("this worker does not run sequence jobs", request.id)
        return lambda progress, cancel: runner(seq_args, progress, cancel)

    def _start_job(self, request: Request) -> None:
        try:
            work = self._job_work(request)
        except ProtocolError as exc:
            self._events.send(protocol.error_event(request.id, "bad_request", str(exc), BAD_ARGUMENT_FIX))
            return
        with self._lock:
            if self._job is not None:
                self._events.send(
                    protocol.error_event(
                        request.id,
                        "busy",
                        f"a reconstruction ({self._job.request_id}) is already running",
                        "Wait for it to finish or cancel it, then send the request again.",
                    )
                )
                return
            job = _Job(request.id)
            job.thread = threading.Thread(target=self._run_job, args=(job, work), name=f"job-{request.id}", daemon=True)
            self._job = job
        try:
            job.thread.start()
        except RuntimeError:  # no thread could be started: release the job so the worker is not busy forever
            with self._lock:
                self._job = None
            raise

    def _cancel(self, request: Request) -> None:
        target = request.args.get("job")
        with self._lock:
            job = self._job
        if job is None or (target is not None and target != job.request_id):
            self._events.send(
                protocol.error_event(
                    request.id, "bad_request", f"no running job with id {repr(target)[:80]}", "Nothing to cancel."
                )
            )
            return
        job.cancel.set()

    # -- the job thread ----------------------------------------------------------------------------
    def _run_job(self, job: _Job, work: Callable[[ProgressFn, CancelFn], dict[str, Any]]) -> None:
        def progress(stage: str, done: int, total: int, message: str = "") -> None:
            if job.cancel.is_set():
                raise CancelledError()
            self._events.send(protocol.progress_event(job.request_id, stage, done, total, message))

        # The job is released BEFORE its last event goes out: a client may send the next request the moment it
        # reads "result", and must not be told that the finished job is still running.
        final: dict[str, Any]
        try:
            fields = work(progress, job.cancel.is_set)
            if job.cancel.is_set():
                raise CancelledError()
            final = {"id": job.request_id, "event": "result", **fields}
        except CancelledError:
            final = {"id": job.request_id, "event": "cancelled"}
        except WorkerError as exc:
            final = protocol.error_event(job.request_id, exc.code, exc.message, exc.fix)
        except MemoryError:
            final = protocol.error_event(
                job.request_id,
                "out_of_memory",
                "the computer ran out of memory during the reconstruction",
                "Lower the numbers of shape and expression samples, or close other programs.",
            )
        except Exception as exc:
            traceback.print_exc(file=sys.stderr)
            message = f"unexpected {type(exc).__name__}: {exc}"
            final = protocol.error_event(job.request_id, "internal", message, REPORT_FIX)
        finally:
            with self._lock:
                if self._job is job:
                    self._job = None
        self._events.send(final)

    # -- shutdown ----------------------------------------------------------------------------------
    def stop(self) -> None:
        with self._lock:
            job = self._job
            self._stopping = True
        if job is not None and job.thread is not None:
            job.cancel.set()
            job.thread.join(SHUTDOWN_GRACE_S)

    def serve(self, stdin: IO[bytes]) -> int:
        while True:
            line = stdin.readline(protocol.MAX_LINE_BYTES + 2)
            if not line:
                break  # EOF: the client is gone
            if len(line) > protocol.MAX_LINE_BYTES and not line.endswith(b"\n"):
                while line and not line.endswith(b"\n"):  # drain the rest of an over-long line
                    line = stdin.readline(protocol.MAX_LINE_BYTES)
                self.handle_line(b"x" * (protocol.MAX_LINE_BYTES + 1))
                continue
            if not self.handle_line(line):
                return 0
        self.stop()
        return 0


def _watch_parent(parent_pid: int, stop: Callable[[], None]) -> None:
    """Exit when the process that started us disappears (belt and braces next to stdin EOF)."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent_pid:
            stop()
            os._exit(0)


def _stop_and_exit(server: Server) -> None:
    server.stop()
    os._exit(0)


def serve_stdio(runner: JobRunner) -> int:
    protocol_out = sys.stdout.buffer
    protocol_in = sys.stdin.buffer
    sys.stdout = io.TextIOWrapper(os.fdopen(os.dup(sys.stderr.fileno()), "wb"), line_buffering=True)
    server = Server(runner, EventWriter(protocol_out))
    with contextlib.suppress(ValueError):  # not in the main thread (tests)
        signal.signal(signal.SIGTERM, lambda *_: _stop_and_exit(server))
    threading.Thread(target=_watch_parent, args=(os.getppid(), server.stop), daemon=True).start()
    return server.serve(protocol_in)
