"""The reconstruction benchmark runs end to end in its tiny --quick mode and reports every stage."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

from inference_server.result import read_result, write_result

ROOT = Path(__file__).resolve().parents[2]
STAGES = (
    "load",
    "detect",
    "encode",
    "sample_shapes",
    "rank",
    "sample_expressions",
    "decode",
    "fit",
    "texture",
    "write",
)


def test_quick_benchmark_reports_every_stage_against_the_baseline(tmp_path: Path) -> None:
    report_path = tmp_path / "report.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    # Own process: the benchmark sets torch's thread count, and the Blender part needs its own anyway.
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "reconstruction.py"), "--quick", "--ab-fold-rank",
         "--json", str(report_path), "--save-result", str(tmp_path / "saved.npz")],
        capture_output=True, text=True, timeout=300, cwd=ROOT, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(report_path.read_text())
    for side in ("ours", "baseline"):
        assert set(report[side]) == {*STAGES, "total"}
        assert all(math.isfinite(v) and v >= 0 for v in report[side].values())
        assert math.isclose(report[side]["total"], sum(report[side][s] for s in STAGES), rel_tol=1e-6)
        assert report["memory_mb"][side] > 0
    assert report["config"]["baseline_steps"] == [4, 6]
    # The fused CPU steps by ONNX Runtime (the default where installed), named as what ran.
    engine = "onnxruntime" if importlib.util.find_spec("onnxruntime") else "torch"
    assert report["config"]["denoiser_runtime"] == "onnxruntime"
    assert report["extra"]["denoiser runtimes"] == {"idgen": f"{engine} fp32 fused", "expgen": f"{engine} fp32 fused"}
    assert report["extra"]["worker_hello (s)"] > 0
    assert "speed-up" in proc.stdout and "total" in proc.stdout
    # --ab-fold-rank: every run repeated with IdRank fed the meshes; the same identities come out
    assert report["config"]["fold_rank"] is True and report["extra"]["rank: meshes / folded"] > 0
    # (the tiny random ranker scores 8 samples within float rounding of each other: their order may differ)
    same = report["extra"]["identities, folded vs meshes"]
    assert same["same samples"] is True and 0 <= same["max |d score|"] < 1e-5
    check_result_distance(tmp_path / "saved.npz", tmp_path)


def check_result_distance(saved: Path, tmp_path: Path) -> None:
    """result_distance.py matches each sample to its nearest reference sample, whatever the order."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from result_distance import distances
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    reference = read_result(saved)
    same = distances(saved, saved)
    assert same["identity_vertices"] == {"median mm": 0.0, "max mm": 0.0, "same order": True}
    # the expressions reversed and one moved 2 mm along x: found in the new order, 2 mm at most
    moved = reference.expression_vertices[::-1].copy()
    moved[0, :, 0] += 0.002
    other = write_result(tmp_path / "moved.npz", dataclasses.replace(reference, expression_vertices=moved))
    report = distances(saved, other)["expression_vertices"]
    assert report["same order"] is False
    assert math.isclose(report["max mm"], 2.0, rel_tol=1e-3) and report["median mm"] < 1e-6
