"""One reconstruction job: the state machine fed by worker messages, and its runner (no bpy).

The same :meth:`JobRunner.pump` serves the UI (a ``bpy.app.timers`` callback calls it every 0.1 s) and
background mode (:meth:`JobRunner.run_sync` blocks on the queue and calls it). A job ends exactly once:
succeeded (a result path), failed (a message, a fix and the worker's log tail) or cancelled (silent).
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .worker_client import WorkerClient, WorkerMessage, WorkerUnavailableError


class JobState(enum.Enum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class JobFailure:
    code: str
    message: str
    fix: str = ""
    log_tail: str = ""

    def text(self, with_log: bool = True) -> str:
        out = self.message + (f" — {self.fix}" if self.fix else "")
        if with_log and self.log_tail:
            out += f"\nWorker log (last lines):\n{self.log_tail}"
        return out


@dataclass
class ReconstructJob:
    request_id: str
    args: dict[str, Any]
    state: JobState = JobState.RUNNING
    stage: str = "start"
    done: int = 0
    total: int = 0
    message: str = ""
    result_path: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    failure: JobFailure | None = None

    @property
    def finished(self) -> bool:
        return self.state is not JobState.RUNNING

    @property
    def fraction(self) -> float:
        return min(max(self.done / self.total, 0.0), 1.0) if self.total > 0 else 0.0

    @property
    def status_text(self) -> str:
        if self.state is JobState.RUNNING:
            return f"{self.stage} {self.done}/{self.total}" if self.total else self.stage
        if self.state is JobState.FAILED and self.failure is not None:
            return self.failure.message
        return self.state.value

    def apply_event(self, event: dict[str, Any]) -> None:
        """Move the state machine with one event of this job (events of other requests are ignored)."""
        if self.finished or event.get("id") != self.request_id:
            return
        kind = event.get("event")
        if kind == "progress":
            self.stage = str(event.get("stage", self.stage))
            self.done = int(event.get("done", 0))
            self.total = int(event.get("total", 0))
            self.message = str(event.get("message", ""))
        elif kind == "result":
            self.state = JobState.SUCCEEDED
            self.result_path = str(event.get("path", ""))
            self.summary = dict(event.get("summary") or {})
        elif kind == "cancelled":
            self.state = JobState.CANCELLED
        elif kind == "error":
            code = str(event.get("code", "internal"))
            message = str(event.get("message", "The worker reported an error"))
            fix = str(event.get("fix", ""))
            if code == "busy":
                message = f"The worker is busy with another reconstruction ({message})"
                fix = fix or "Wait for it to finish or press Cancel, then try again"
            self.fail(JobFailure(code, message, fix))

    def fail(self, failure: JobFailure) -> None:
        if not self.finished:
            self.state = JobState.FAILED
            self.failure = failure


class JobRunner:
    """Drives one job on a client: timeouts, cancel with a grace period, a dead or babbling worker."""

    def __init__(
        self,
        client: WorkerClient,
        *,
        inactivity_timeout: float = 600.0,
        cancel_grace: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.inactivity_timeout = inactivity_timeout
        self.cancel_grace = cancel_grace
        self.clock = clock
        self.job: ReconstructJob | None = None
        self._last_activity = 0.0
        self._cancel_deadline: float | None = None

    @property
    def busy(self) -> bool:
        return self.job is not None and not self.job.finished

    def start(self, args: dict[str, Any], op: str = "reconstruct") -> ReconstructJob:
        """Send a ``reconstruct`` (or ``sequence``) request, starting the worker if needed. Raises
        WorkerUnavailableError."""
        if self.busy:
            raise WorkerUnavailableError("A reconstruction is already running", "Wait for it or press Cancel")
        self.client.start()
        rid = self.client.new_id(op)
        self._cancel_deadline = None
        self._last_activity = self.clock()
        self.job = ReconstructJob(rid, dict(args))
        self.client.send(op, args, request_id=rid)
        return self.job

    def cancel(self) -> None:
        """Ask the worker to stop; :meth:`pump` kills it if it has not within the grace period."""
        if not self.busy or self._cancel_deadline is not None:
            return
        self._cancel_deadline = self.clock() + self.cancel_grace
        assert self.job is not None
        try:
            self.client.send("cancel", {"job": self.job.request_id})
        except WorkerUnavailableError:
            self._cancel_deadline = self.clock()  # nothing to ask: end it on the next pump

    def pump(self, messages: list[WorkerMessage] | None = None) -> bool:
        """Apply queued messages and check the clocks; True once the job has finished."""
        job = self.job
        if job is None:
            return True
        for message in self.client.drain() if messages is None else messages:
            self._apply(job, message)
            if job.finished:
                break
        now = self.clock()
        if not job.finished and self._cancel_deadline is not None and now >= self._cancel_deadline:
            self.client.kill()
            job.state = JobState.CANCELLED
        if not job.finished and now - self._last_activity > self.inactivity_timeout:
            self.client.kill()
            job.fail(
                JobFailure(
                    "timeout",
                    f"The worker sent nothing for {self.inactivity_timeout:g} s and was stopped",
                    "Check the worker log; raise the timeout in the preferences for very slow machines",
                    self.client.log_tail(),
                )
            )
        return job.finished

    def run_sync(self, poll: float = 0.1) -> ReconstructJob:
        """Block until the job ends (background mode, where timers never fire)."""
        assert self.job is not None, "start() first"
        while not self.pump([]):
            message = self.client.get(timeout=poll)
            if message is not None:
                self.pump([message, *self.client.drain()])
        return self.job

    def _apply(self, job: ReconstructJob, message: WorkerMessage) -> None:
        self._last_activity = self.clock()
        if message.kind == "event":
            job.apply_event(message.event)
            return
        if message.kind == "garbage":
            # stdout carries protocol lines only; anything else means the stream can no longer be trusted
            self.client.kill()
            job.fail(
                JobFailure(
                    "garbage",
                    f"The worker printed a line that is not protocol: {message.line!r} ({message.problem})",
                    "The worker must log to stderr only; check the worker installation and its log",
                    self.client.log_tail(),
                )
            )
            return
        if self._cancel_deadline is not None:
            job.state = JobState.CANCELLED  # we stopped it ourselves
            return
        job.fail(
            JobFailure(
                "worker_exited",
                f"The worker stopped unexpectedly (exit code {message.returncode})",
                "See the worker log below; use Test worker in the add-on preferences",
                self.client.log_tail(),
            )
        )
