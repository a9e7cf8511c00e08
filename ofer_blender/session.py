"""The add-on's process-wide runtime state: the warm worker and the running job (no bpy).

Transient by design (never saved in a .blend): a worker process and a job belong to this Blender
session only. Everything the user keeps lives on objects and images.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .env_builder import EnvBuilder
from .job import JobRunner, ReconstructJob
from .worker_client import WorkerClient


@dataclass
class Session:
    client: WorkerClient | None = None
    runner: JobRunner | None = None
    last_hello: dict[str, Any] = field(default_factory=dict)
    last_report: str = ""
    #: What the timer imports once the running job succeeds (collection name, object name, source).
    pending_import: dict[str, Any] = field(default_factory=dict)
    #: The managed environment being created (or the last attempt), read by the panels' draw.
    env_builder: EnvBuilder | None = None

    @property
    def env_building(self) -> bool:
        return self.env_builder is not None and self.env_builder.state == "running"

    @property
    def job(self) -> ReconstructJob | None:
        return None if self.runner is None else self.runner.job

    @property
    def busy(self) -> bool:
        return self.runner is not None and self.runner.busy

    def client_for(self, command: Sequence[str], log_dir: Path, env_extra: Mapping[str, str]) -> WorkerClient:
        """The warm client when its command is unchanged; otherwise stop it and make a new one."""
        current = self.client
        if current is not None and current.command == list(command) and current.env_extra == dict(env_extra):
            return current
        if current is not None:
            current.stop()
        self.client = WorkerClient(command, log_dir, env_extra=env_extra)
        self.runner = None
        return self.client

    def runner_for(self, client: WorkerClient, inactivity_timeout: float, cancel_grace: float) -> JobRunner:
        if self.runner is None or self.runner.client is not client:
            self.runner = JobRunner(client, inactivity_timeout=inactivity_timeout, cancel_grace=cancel_grace)
        self.runner.inactivity_timeout = inactivity_timeout
        self.runner.cancel_grace = cancel_grace
        return self.runner

    def release(self) -> None:
        """Stop the worker (frees its GPU memory); the next run starts a fresh one."""
        if self.runner is not None and self.runner.busy:
            self.runner.cancel()
            self.runner.pump()
        if self.client is not None:
            self.client.stop()
        self.client = None
        self.runner = None


SESSION = Session()
