"""``kill -9`` during real reconstructions never leaves a partial file; the next run removes leftovers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_ten_kills_leave_no_partial_file_and_no_part_file_after_the_next_run(tmp_path: Path) -> None:
    report_path = tmp_path / "report.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_WAIT_POLICY="PASSIVE")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "kill_during_write.py"), "--kills", "10",
         "--json", str(report_path)],
        capture_output=True, text=True, timeout=900, cwd=ROOT, env=env,
    )  # fmt: skip
    assert report_path.exists(), proc.stderr[-3000:]
    report = json.loads(report_path.read_text())
    assert report["kills"] == 10 and report["killed_running"] >= 5, report
    assert report["write_stage_seen"] >= 4, report  # half the kills were aimed inside the write phase
    assert report["partial_files"] == [], report
    assert report["final_run_exit"] == 0 and report["parts_after_next_run"] == 0, report
    assert proc.returncode == 0, proc.stdout[-2000:]
