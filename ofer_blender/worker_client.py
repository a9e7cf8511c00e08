"""The worker process seen from the add-on: start, send requests, read events (no bpy).

A daemon reader thread only parses stdout lines into a queue; whoever owns the client (a
``bpy.app.timers`` callback, or :meth:`JobRunner.run_sync <.job.JobRunner.run_sync>` in background mode)
drains the queue on the main thread. The worker's stderr goes to a log file whose tail is attached to
every failure, because that is where a crashing worker explains itself.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..inference_server import protocol

LOG_FILE_NAME = "worker.log"
#: Variables Blender sets for its own Python that would break another interpreter.
_DROPPED_ENV = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONNOUSERSITE")


class WorkerUnavailableError(RuntimeError):
    """The worker cannot be started or has stopped talking. Carries a fix and the tail of its log."""

    def __init__(self, message: str, fix: str = "", log_tail: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix
        self.log_tail = log_tail

    def __str__(self) -> str:
        text = self.message + (f" — {self.fix}" if self.fix else "")
        return text + (f"\nWorker log (last lines):\n{self.log_tail}" if self.log_tail else "")


@dataclass(frozen=True)
class WorkerMessage:
    """What the reader thread saw: a protocol event, a line that is not one, or the end of the process."""

    kind: Literal["event", "garbage", "exit"]
    event: dict[str, Any] = field(default_factory=dict)
    line: str = ""
    problem: str = ""
    returncode: int | None = None


def default_worker_command(python: str) -> list[str]:
    """The module form works with any interpreter that has the worker installed (no PATH lookup)."""
    return [python, "-u", "-m", "inference_server", "serve"]


def clean_environment(base: Mapping[str, str] | None = None, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in (os.environ if base is None else base).items() if k not in _DROPPED_ENV}
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"
    env.update(extra or {})
    return env


def read_log_tail(path: Path, max_lines: int = 25, max_bytes: int = 16384) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - max_bytes))
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-max_lines:])


class WorkerClient:
    """One worker process, kept warm between jobs; restarted by :meth:`start` when it has stopped."""

    def __init__(
        self,
        command: Sequence[str],
        log_dir: str | os.PathLike[str],
        *,
        env_extra: Mapping[str, str] | None = None,
    ) -> None:
        if not command:
            raise ValueError("the worker command is empty")
        self.command = list(command)
        self.log_path = Path(log_dir) / LOG_FILE_NAME
        self.env_extra = dict(env_extra or {})
        self._proc: subprocess.Popen[bytes] | None = None
        self._queue: queue.Queue[WorkerMessage] = queue.Queue()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    # -- process lifetime -------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def start(self) -> None:
        """Start the worker unless it is already running. Raises WorkerUnavailableError otherwise."""
        if self.running:
            return
        program = self.command[0]
        if shutil.which(program) is None and not Path(program).is_file():
            raise WorkerUnavailableError(
                f"The worker program '{program}' does not exist",
                "Set the worker Python (or create the managed environment) in the add-on preferences",
            )
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} start: {self.command}\n".encode())
        log.flush()
        flags = getattr(subprocess, "CREATE_NO_WINDOW", 0) if sys.platform == "win32" else 0
        try:
            proc = subprocess.Popen(
                self.command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                env=clean_environment(extra=self.env_extra),
                creationflags=flags,
            )
        except OSError as exc:
            raise WorkerUnavailableError(
                f"Could not start the worker ({exc})",
                "Check the worker interpreter in the add-on preferences",
            ) from exc
        finally:
            log.close()  # the child holds its own handle
        self._queue = queue.Queue()  # nothing from an earlier process leaks into this one
        self._proc = proc
        threading.Thread(target=_read_stdout, args=(proc, self._queue), name="ofer-worker-reader", daemon=True).start()

    def stop(self, grace: float = 2.0) -> None:
        """Ask the worker to shut down; terminate, then kill, when it does not within ``grace`` seconds."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(WorkerUnavailableError):
                self.send("shutdown")
        self._finish(proc, grace)

    def kill(self) -> None:
        """Stop the worker now (a hung or misbehaving worker)."""
        if self._proc is not None:
            self._finish(self._proc, 0.0)

    def _finish(self, proc: subprocess.Popen[bytes], grace: float) -> None:
        if grace > 0:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=grace)
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5.0)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()

    # -- messages ---------------------------------------------------------------------------------
    def new_id(self, prefix: str = "req") -> str:
        return f"{prefix}-{os.getpid()}-{next(self._ids)}"

    def send(self, op: str, args: dict[str, Any] | None = None, request_id: str | None = None) -> str:
        """Write one request line; returns its id. A dead process is an error, not a crash."""
        rid = request_id or self.new_id(op)
        line = protocol.Request(rid, op, dict(args or {})).to_line() + "\n"
        proc = self._proc
        if proc is None or proc.poll() is not None or proc.stdin is None:
            raise self.unavailable("The worker is not running")
        with self._lock:
            try:
                proc.stdin.write(line.encode("utf-8"))
                proc.stdin.flush()
            except (BrokenPipeError, OSError, ValueError) as exc:
                raise self.unavailable(f"The worker stopped accepting requests ({exc})") from exc
        return rid

    def get(self, timeout: float | None = None) -> WorkerMessage | None:
        """The next message; waits up to ``timeout`` seconds (None: do not wait)."""
        try:
            if timeout is None or timeout <= 0:
                return self._queue.get_nowait()
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def drain(self) -> list[WorkerMessage]:
        """Everything queued so far, without waiting (what a timer callback calls)."""
        messages = []
        while (message := self.get()) is not None:
            messages.append(message)
        return messages

    def hello(self, timeout: float = 60.0) -> dict[str, Any]:
        """Start if needed and run the handshake; returns the ``hello`` event."""
        self.start()
        rid = self.send("hello")
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            message = self.get(timeout=min(left, 0.5))
            if message is None:
                continue
            if message.kind == "exit":
                raise self.unavailable(f"The worker exited with code {message.returncode} during the handshake")
            if message.kind == "garbage":
                self.kill()
                raise self.unavailable(f"The worker printed something that is not a protocol line: {message.line!r}")
            if message.event.get("id") == rid and message.event.get("event") == "hello":
                return message.event
            if message.event.get("id") == rid and message.event.get("event") == "error":
                raise WorkerUnavailableError(str(message.event.get("message")), str(message.event.get("fix", "")))
        self.kill()
        raise self.unavailable(f"The worker did not answer the handshake within {timeout:g} s")

    # -- diagnostics ------------------------------------------------------------------------------
    def log_tail(self, max_lines: int = 25) -> str:
        return read_log_tail(self.log_path, max_lines)

    def unavailable(self, message: str, fix: str = "") -> WorkerUnavailableError:
        return WorkerUnavailableError(
            message,
            fix or f"See the worker log ({self.log_path}); use Test worker in the add-on preferences",
            self.log_tail(),
        )


def _read_stdout(proc: subprocess.Popen[bytes], sink: queue.Queue[WorkerMessage]) -> None:
    """Reader thread: parse lines into messages, then report the exit. Touches nothing else."""
    assert proc.stdout is not None
    try:
        for raw in iter(proc.stdout.readline, b""):
            if not raw.strip():
                continue
            try:
                event = protocol.parse_event(raw)
            except protocol.ProtocolError as exc:
                text = raw.decode("utf-8", "replace").rstrip()
                sink.put(WorkerMessage("garbage", line=text[:300], problem=str(exc)))
            else:
                sink.put(WorkerMessage("event", event=event))
    except (OSError, ValueError):
        pass  # the pipe was closed under us: the exit below says the rest
    sink.put(WorkerMessage("exit", returncode=proc.wait()))
