"""A real ``ofer-worker serve`` survives the fixed corpus and 5,000 generated lines (benchmarks/fuzz_worker.py)."""

from __future__ import annotations

from pathlib import Path

from benchmarks.fuzz_worker import CORPUS, ServeProcess, run_fuzz

#: CI size; the benchmark script runs 10,000 and more.
N_LINES = 5000


def test_no_line_ends_the_worker_and_every_line_gets_one_answer(tmp_path: Path) -> None:
    worker = ServeProcess(tmp_path)
    try:
        tally = run_fuzz(worker, N_LINES, batch=50, derandomize=True)
        assert worker.proc.poll() is None, b"".join(worker.stderr_tail).decode(errors="replace")[-3000:]
    finally:
        code = worker.close()
    assert tally.lines >= N_LINES + len(CORPUS)
    assert tally.deaths == 0 and tally.unanswered == 0 and tally.extra_answers == 0
    assert tally.answers == tally.lines
    assert tally.not_protocol == 0  # stdout carried protocol events only
    assert tally.codes["internal"] == 0, tally.internal_examples
    assert tally.codes["bad_request"] > tally.lines // 2  # the generator mostly sends broken lines...
    assert tally.codes["bad_image"] > 0  # ...and some valid ones, refused only when the photo is loaded
    assert code == 0
    assert b"Traceback" not in b"".join(worker.stderr_tail)
    assert tally.rss_end_mb - tally.rss_start_mb < 100
