"""Progress at the command line: a self-rewriting bar on a terminal, a few plain lines into a log."""

from __future__ import annotations

import sys
import time
from typing import Any


class ProgressBar:
    """One self-rewriting line on stderr: stage, a bar, counts. Into a file or a pipe (a log, a batch job's
    output) a rewritten line would pile up as one line of every update, so there each stage gets a plain
    line at its start, at each quarter and at its end."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream or sys.stderr
        self.last = 0.0
        isatty = getattr(self.stream, "isatty", None)
        self.live = bool(isatty()) if callable(isatty) else False
        self.quarters: dict[str, int] = {}  # the last quarter written of each stage (not live)

    def __call__(self, stage: str, done: int, total: int, message: str = "") -> None:
        if not self.live:
            self._line(stage, done, total, message)
            return
        now = time.monotonic()
        if done < total and now - self.last < 0.1:
            return
        self.last = now
        width = 30
        filled = int(width * done / max(total, 1))
        bar = "#" * filled + "-" * (width - filled)
        self.stream.write(f"\r{stage:<19}[{bar}] {done}/{total} {message[:40]:<40}")
        if done >= total:
            self.stream.write("\n")
        self.stream.flush()

    def _line(self, stage: str, done: int, total: int, message: str) -> None:
        quarter = min(4, 4 * done // max(total, 1))
        if self.quarters.get(stage) == quarter:
            return
        self.quarters[stage] = quarter
        self.stream.write(f"{stage:<19}{done}/{total} {message}".rstrip() + "\n")
        self.stream.flush()
