"""benchmarks/gpu_session.sh, dry-run on the CPU (tiny networks): its steps run, each under its own limit, and
it leaves the log and the JSON report a GPU session brings back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_short_plan_runs_every_step_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = dict(os.environ, PLAN="short", OUT=str(out), DEVICE="cpu", BENCH_EXTRA="--quick", PYTHON=sys.executable,
               OFER_CACHE_DIR=str(tmp_path / "cache"))  # fmt: skip
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_session.sh")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == ["gpu_log.txt", "gpu_report.json", "gpu_summary.txt"]
    report = json.loads((out / "gpu_report.json").read_text())
    runs = {"fast_fp32", "fidelity_fp32", "fidelity_whole", "fast_whole", "fidelity_fp16", "fast_fp16", "fidelity_bf16"}
    assert set(report) == runs
    assert report["fidelity_fp32"]["baseline"]["total"] > 0 and report["fast_fp32"]["ours"]["total"] > 0
    log = (out / "gpu_log.txt").read_text()
    assert "=== cuda_tests: rc=0" in log
    # each faster run is compared with its preset's first (fp32) run, sample by sample
    distances = [json.loads(line) for line in log.splitlines() if line.startswith('{"file"')]
    assert {Path(d["file"]).stem for d in distances} == runs - {"fast_fp32", "fidelity_fp32"}
    assert all(d["expression_vertices"]["max mm"] >= 0 for d in distances)
