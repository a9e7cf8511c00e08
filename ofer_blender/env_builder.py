"""Runs the managed environment's steps in a background thread (no bpy).

The UI reads :class:`EnvBuilder` fields from a timer: the step, the package pip is working on and the
bytes it has started downloading, parsed from pip's own output (which also goes to the log). Cancel
terminates the running command; a cancelled or failed environment has no record and shows as "broken"
(Repair makes it again).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from .managed_env import Step

_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9}
_SIZE = re.compile(r"\((\d+(?:\.\d+)?)\s*([kKMG]?B)\)")
_DROPPED_ENV = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONNOUSERSITE", "PIP_REQUIRE_VIRTUALENV")


@dataclass
class PipProgress:
    package: str = ""
    downloaded_bytes: int = 0

    def feed(self, line: str) -> None:
        """Follow pip's "Collecting X", "Downloading X (12.3 MB)", "Processing X", "Installing ..." lines."""
        text = line.strip()
        for prefix in ("Collecting ", "Processing ", "Downloading "):
            if text.startswith(prefix):
                what = text[len(prefix) :].split(" (", 1)[0].strip()
                self.package = what.rsplit("/", 1)[-1]
                break
        else:
            if text.startswith("Installing collected packages:"):
                self.package = "installing " + text.split(":", 1)[1].strip()
        if text.startswith("Downloading ") and (match := _SIZE.search(text)):
            self.downloaded_bytes += int(float(match.group(1)) * _UNITS[match.group(2).upper()])


@dataclass
class EnvBuilder:
    """Runs ``steps`` one after another; ``on_success`` runs in the thread after the last one."""

    steps: Sequence[Step]
    log_path: Path
    on_success: Callable[[float], None] | None = None
    step: int = 0
    state: str = "idle"  # idle, running, done, failed, cancelled
    error: str = ""
    progress: PipProgress = field(default_factory=PipProgress)
    started: float = 0.0
    _thread: threading.Thread | None = field(default=None, repr=False)
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _cancelled: bool = field(default=False, repr=False)

    @property
    def total(self) -> int:
        return len(self.steps)

    @property
    def title(self) -> str:
        return self.steps[min(self.step, self.total - 1)].title if self.steps else ""

    def status_line(self) -> str:
        """One line for the panel: step, package and bytes downloaded so far."""
        text = f"Step {min(self.step + 1, self.total)}/{self.total}: {self.title}"
        if self.progress.package:
            text += f" · {self.progress.package[:60]}"
        if self.progress.downloaded_bytes:
            text += f" · {self.progress.downloaded_bytes / 1e6:.0f} MB downloaded"
        return text

    def start(self) -> None:
        if self.state == "running":
            return
        self.state, self.step, self.error, self._cancelled = "running", 0, "", False
        self.progress = PipProgress()
        self.started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="ofer-managed-env", daemon=True)
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def cancel(self) -> None:
        self._cancelled = True
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()

    def _run(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k not in _DROPPED_ENV}
        env["PYTHONUNBUFFERED"] = "1"
        with self.log_path.open("ab") as log:
            log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} managed environment\n".encode())
            for index, step in enumerate(self.steps):
                self.step = index
                note = f"# ({step.note})\n" if step.note else ""
                log.write(f"\n# {step.title}\n{note}$ {' '.join(step.argv)}\n".encode())
                log.flush()
                code = self._run_step(step, env, log)
                if self._cancelled:
                    self.state, self.error = "cancelled", "cancelled; the environment is incomplete (Repair or Remove)"
                    return
                if code != 0:
                    self.state = "failed"
                    self.error = f"'{step.title}' failed (exit code {code}); see {self.log_path}"
                    return
            self.step = self.total
            try:
                if self.on_success is not None:
                    self.on_success(time.monotonic() - self.started)
            except OSError as exc:
                self.state, self.error = "failed", f"could not record the environment ({exc})"
                return
            self.state = "done"

    def _run_step(self, step: Step, env: dict[str, str], log: BinaryIO) -> int:
        flags = getattr(subprocess, "CREATE_NO_WINDOW", 0) if sys.platform == "win32" else 0
        try:
            proc = subprocess.Popen(
                step.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, creationflags=flags
            )
        except OSError as exc:
            log.write(f"could not run {step.argv[0]}: {exc}\n".encode())
            return -1
        self._proc = proc
        assert proc.stdout is not None
        for raw in iter(proc.stdout.readline, b""):
            log.write(raw)
            self.progress.feed(raw.decode("utf-8", "replace"))
        log.flush()
        return proc.wait()
