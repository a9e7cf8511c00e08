"""The "managed environment": a virtual environment under the extension's user folder with the worker
installed into it (no bpy). Blender's own Python is never touched.

Creation runs in a thread and reports progress through :class:`EnvBuilder` fields that a timer reads.
Installing from a package index needs the network, which the add-on only uses when Blender's
``online_access`` allows it; a local source (a wheel or a source folder) needs no network.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_SOURCE = "ofer-blender-worker"


def managed_python(env_dir: Path) -> Path:
    return env_dir / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


def is_local_source(source: str) -> bool:
    return Path(source).exists()


def default_base_python() -> str:
    """A Python to create the environment with: python3 on PATH, else the running interpreter."""
    return shutil.which("python3") or shutil.which("python") or sys.executable


def plan_commands(base_python: str, env_dir: Path, source: str) -> list[list[str]]:
    python = str(managed_python(env_dir))
    return [
        [base_python, "-m", "venv", str(env_dir)],
        [python, "-m", "pip", "install", "--upgrade", "pip"],
        [python, "-m", "pip", "install", "--upgrade", source],
    ]


class OnlineAccessRequiredError(RuntimeError):
    pass


def check_online_access(source: str, online_access: bool) -> None:
    if not is_local_source(source) and not online_access:
        raise OnlineAccessRequiredError(
            f"Installing '{source}' needs the network, but Blender's online access is off — enable "
            "'Allow Online Access' in Preferences > System, or choose a local wheel or source folder"
        )


@dataclass
class EnvBuilder:
    """Runs the plan in a background thread; ``step``/``total``/``state`` are read by the UI timer."""

    commands: list[list[str]]
    log_path: Path
    step: int = 0
    state: str = "idle"  # idle, running, done, failed
    error: str = ""
    _thread: threading.Thread | None = field(default=None, repr=False)

    @property
    def total(self) -> int:
        return len(self.commands)

    def start(self) -> None:
        if self.state == "running":
            return
        self.state, self.step, self.error = "running", 0, ""
        self._thread = threading.Thread(target=self._run, name="ofer-managed-env", daemon=True)
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        with self.log_path.open("ab") as log:
            for index, command in enumerate(self.commands):
                self.step = index
                log.write(f"\n$ {' '.join(command)}\n".encode())
                log.flush()
                try:
                    code = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT, env=env)
                except OSError as exc:
                    self.state, self.error = "failed", f"could not run {command[0]} ({exc})"
                    return
                if code != 0:
                    self.state = "failed"
                    self.error = f"step {index + 1} of {self.total} failed (exit code {code}); see {self.log_path}"
                    return
            self.step = self.total
            self.state = "done"
