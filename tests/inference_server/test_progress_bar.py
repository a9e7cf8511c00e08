"""The command line's progress: a bar on a terminal, plain lines into a log (worker, sequence, evaluate, train)."""

from __future__ import annotations

import io

from inference_server.progress_bar import ProgressBar


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_into_a_log_is_a_few_plain_lines_per_stage() -> None:
    """Redirected to a file, the bar's carriage returns piled 1000 DDPM steps into one line of updates."""
    log = io.StringIO()
    bar = ProgressBar(log)
    for _photo in range(2):  # a batch: the same stages again for the next photo
        for step in range(1001):
            bar("sample_shapes", step, 1000, "ddpm")
        bar("fit", 0, 1, "head pose and camera")
        bar("fit", 1, 1, "ok")
    text = log.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert lines[:5] == ["sample_shapes      0/1000 ddpm", "sample_shapes      250/1000 ddpm",
                         "sample_shapes      500/1000 ddpm", "sample_shapes      750/1000 ddpm",
                         "sample_shapes      1000/1000 ddpm"]  # fmt: skip
    assert lines[5:7] == ["fit                0/1 head pose and camera", "fit                1/1 ok"]
    assert len(lines) == 14


def test_progress_on_a_terminal_rewrites_one_line() -> None:
    screen = _Terminal()
    bar = ProgressBar(screen)
    for step in range(1001):
        bar("sample_shapes", step, 1000, "ddpm")
    text = screen.getvalue()
    assert text.startswith("\rsample_shapes") and text.endswith("\n") and text.count("\n") == 1
