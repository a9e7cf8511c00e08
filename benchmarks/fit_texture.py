"""The fit and texture stages, before and after, A/B in one run: time (cold and warm) and same outputs.

Run: ``.venv/bin/python benchmarks/fit_texture.py --before-ref <git ref> [--rounds 2] [--warm 3]``

The "before" side is ``inference_server/`` as of ``--before-ref``, extracted with ``git archive`` into a
temporary folder; the "after" side is this checkout. Each round starts one fresh process per side,
alternating (before, after, before, after, ...), so both see the same machine load. Each process runs
``pipeline.Reconstructor.run`` on the bundled sample photo (DEMO assets, ``--preset fast``, 100 + 100
samples) once cold and ``--warm`` times warm, and reports the pipeline's own clock for the fit and texture
stages. The "after" side gets an empty cache folder in the first round (the calibration is computed and
stored: cold, cache miss) and the same folder afterwards (cold, cache hit).

Same outputs: the pose arrays and the texture PNG of every run are compared between the sides (maximum
absolute differences, share of texels that differ, PSNR).

``--stage-repeats N``: each process then runs the two stage functions N more times on its last run's own
inputs (captured from the pipeline's calls), timed by wall clock, main-thread CPU (``time.thread_time``) and
process CPU (all threads: BLAS helpers included); the table gets one median per process and clock.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "inference_server" / "assets" / "sample_occluded_face.jpg"
POSE_KEYS = ("head_pose", "camera", "expression_head_pose", "expression_params")


def child(out_dir: Path, warm: int, stage_repeats: int = 0) -> None:
    """One process: a cold run and ``warm`` warm runs; writes timings and outputs to ``out_dir``. With
    ``stage_repeats``, the fit and texture stage functions are then run that many more times on the last
    run's own inputs, each timed by wall clock, main-thread CPU and process CPU (all threads)."""
    from inference_server import pipeline
    from inference_server.assets_config import resolve_assets
    from inference_server.backends import configure_cpu_threads
    from inference_server.pipeline import Reconstructor
    from inference_server.presets import apply_preset
    from inference_server.protocol import ReconstructArgs

    captured: dict[str, tuple[tuple[Any, ...], dict[str, Any]]] = {}
    stages: dict[str, Callable[..., Any]] = {"fit": pipeline.fit_photo, "texture": pipeline.texture_beside_result}

    def capturing(name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            captured[name] = (args, kwargs)
            return stages[name](*args, **kwargs)

        return call

    pipeline.fit_photo, pipeline.texture_beside_result = capturing("fit"), capturing("texture")
    configure_cpu_threads(None)
    reconstructor = Reconstructor(resolve_assets({}), device="cpu")
    seconds = []
    for i in range(warm + 1):
        args = apply_preset(ReconstructArgs(
            image=str(SAMPLE), output=str(out_dir / f"run{i}.npz"), n_shapes=100, n_expressions=100, top_k=10,
            sampler="ddpm", steps=None, seed=0, device="cpu", extra={"preset": "fast"},
        ))  # fmt: skip
        output = reconstructor.run(args, lambda *a: None, lambda: False)
        seconds.append(output.seconds)
    (out_dir / "seconds.json").write_text(json.dumps(seconds))
    repeats: dict[str, list[float]] = {}
    for _ in range(stage_repeats):
        for name, function in stages.items():
            stage_args, stage_kwargs = captured[name]
            start = time.perf_counter(), time.thread_time(), time.process_time()
            function(*stage_args, **stage_kwargs)
            end = time.perf_counter(), time.thread_time(), time.process_time()
            for label, a, b in zip(("wall", "thread CPU", "process CPU"), start, end, strict=True):
                repeats.setdefault(f"{name} {label}", []).append(b - a)
    (out_dir / "repeats.json").write_text(json.dumps(repeats))


def side_process(code_root: Path, out_dir: Path, cache: Path, warm: int, stage_repeats: int) -> list[dict[str, float]]:
    out_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(code_root), OFER_CACHE_DIR=str(cache), OMP_WAIT_POLICY="PASSIVE")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(out_dir), "--warm", str(warm),
           "--stage-repeats", str(stage_repeats)]  # fmt: skip
    subprocess.run(cmd, check=True, env=env, cwd=code_root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return list(json.loads((out_dir / "seconds.json").read_text()))


def compare(before: Path, after: Path) -> dict[str, float]:
    """Largest differences between the two sides' outputs of the same run."""
    import cv2

    out: dict[str, float] = {}
    a, b = np.load(before), np.load(after)
    for key in POSE_KEYS:
        if key in a.files and key in b.files:
            out[f"max |Δ {key}|"] = float(np.abs(a[key].astype(np.float64) - b[key].astype(np.float64)).max())
    ta = cv2.imread(str(before.with_name(before.stem + "_texture.png"))).astype(np.float64)
    tb = cv2.imread(str(after.with_name(after.stem + "_texture.png"))).astype(np.float64)
    diff = np.abs(ta - tb)
    out["texture max |Δ| (0-255)"] = float(diff.max())
    out["texture texels differing"] = float((diff.max(axis=2) > 0).mean())
    mse = float((diff**2).mean())
    out["texture PSNR (dB)"] = float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)
    return out


def extract(ref: str, folder: Path) -> Path:
    """``inference_server/`` at git ``ref`` in ``folder`` (with the assets the pipeline reads)."""
    folder.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "archive", ref, "inference_server"], cwd=ROOT, check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before-ref", default="main", help="git ref of the 'before' code")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--warm", type=int, default=3)
    parser.add_argument("--stage-repeats", type=int, default=0, help="then the two stage functions alone, N times")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    opts = parser.parse_args(argv)
    if opts.child:
        child(opts.child, opts.warm, opts.stage_repeats)
        return 0
    work = Path(tempfile.mkdtemp(prefix="ofer-fit-texture-"))
    before_root = extract(opts.before_ref, work / "before_code")
    sides = {"before": (before_root, work / "cache_before"), "after": (ROOT, work / "cache_after")}
    times: dict[str, dict[str, list[float]]] = {s: {} for s in sides}
    diffs: list[dict[str, float]] = []
    for r in range(opts.rounds):
        for side, (code, cache) in sides.items():
            runs = side_process(code, work / f"{side}{r}", cache, opts.warm, opts.stage_repeats)
            if opts.stage_repeats:
                for key, values in json.loads((work / f"{side}{r}" / "repeats.json").read_text()).items():
                    times[side].setdefault(f"{key} (repeats)", []).append(statistics.median(values))
            cold = "cold (cache miss)" if r == 0 else "cold (cache hit)"
            for i, run in enumerate(runs):
                for stage in ("fit", "texture"):
                    times[side].setdefault(f"{stage} {cold if i == 0 else 'warm'}", []).append(run[stage])
        for i in range(opts.warm + 1):
            diffs.append(compare(work / f"before{r}" / f"run{i}.npz", work / f"after{r}" / f"run{i}.npz"))
    report(times, diffs)
    return 0


def report(times: dict[str, dict[str, list[float]]], diffs: list[dict[str, float]]) -> None:
    print(f"load average: {os.getloadavg()}")
    print(f"{'stage':<34}{'before (s)':>12}{'after (s)':>12}{'speed-up':>10}   (median; n before/after)")
    for key in times["after"]:
        before = times["before"].get(key) or times["before"].get(key.replace("hit", "miss"), [])
        after = times["after"][key]
        b, a = statistics.median(before), statistics.median(after)
        print(f"{key:<34}{b:>12.3f}{a:>12.3f}{b / a:>9.1f}x   ({len(before)}/{len(after)})")
    worst: dict[str, Any] = {}
    for d in diffs:
        for k, v in d.items():
            worst[k] = min(worst.get(k, v), v) if "PSNR" in k else max(worst.get(k, v), v)
    print("outputs, before vs after (worst over all runs):")
    for k, v in worst.items():
        print(f"  {k:<36}{v:.3g}")


if __name__ == "__main__":
    raise SystemExit(main())
