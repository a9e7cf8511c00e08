"""Benchmark one whole reconstruction, stage by stage, against the official recipe measured in the same run.

Run: ``.venv/bin/python benchmarks/reconstruction.py [--preset fast] [--device cpu] [--backend torch]``
(see benchmarks/README.md for every option and the recorded numbers).

What is timed (median of ``--repeats`` warm runs; the first run warms caches and is not counted):

- **ours**: ``pipeline.Reconstructor.run`` on the bundled sample photo, 100 shape + 100 expression samples,
  with the sampler/steps of ``--preset`` (or ``--sampler``/``--steps``); its own per-stage clock
  (load, detect, encode, sample_shapes, rank, sample_expressions, decode, fit, texture, write). The fit (head pose,
  camera) and the texture are ours only: the official recipe has neither. Random official-size weights decode
  a head the fit does not trust (it stops early, no texture), so then these two stages are timed on the DEMO-weights
  reconstruction of the same photo, as ``ofer-worker reconstruct`` makes it (texture PNG written).
- **baseline**: the official inference recipe (spec section 8) with the same networks: every encoder on 100
  tiled copies of the image (IdRank's on one), IdGen with 251 strided DDIM steps (η = 0) and ExpGen with
  1000 DDPM steps, a plain eager loop that indexes the schedule tables on every step, per-row conditions
  (dense tiled contexts), fp32. Detection, ranking, decoding and writing are the same code as ours.
- **model load (cold)**: reading the three model files and building the networks.
- peak memory of each (CPU: peak RSS from /proc, reset between measurements; CUDA: max allocated).
- **worker**: ``python -m inference_server serve`` until its ``hello`` event, then two reconstructions
  through the protocol (DEMO assets); the second shows the warm cost.
- **Blender**: importing the result (100 expression shape keys) with the add-on's importer and the bpy
  wheel, in a separate process (benchmarks/blender_import.py).

Network sizes: ``--size full`` (default) uses official-size networks with random weights — ArcFace
iresnet100, CLIP ViT-B/16, the full IdRank MLP and the official IdGen / ExpGen denoisers — written once
to ``<cache>/benchmark_full_size`` and loaded from there, so timings reflect the real model cost. The
DEMO head, detector and photo are the real ones. ``--size demo`` uses the DEMO weights as they are.
``--quick`` is a smoke run for the tests (tiny sizes and step counts; numbers mean nothing).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

# The networks, the bundle and the measuring helpers (bench_setup) and the official recipe (official_recipe)
# live in their own modules; FULL, TINY, SAMPLE, load_bundle and model_files are re-exported from here.
from bench_setup import (
    FULL,
    ROOT,
    SAMPLE,
    TINY,
    load_bundle,
    model_files,
    peak_memory_mb,
    reset_peak_memory,
    sync,
)
from official_recipe import BASELINE_EXPGEN_STEPS, BASELINE_IDGEN_STEPS, baseline_run

from inference_server.assets_config import default_cache_dir, resolve_assets
from inference_server.backends import configure_cpu_threads
from inference_server.diffusion.background_draw import concurrent_requested
from inference_server.encoder_lanes import lanes_requested
from inference_server.model_bundle import ModelBundle, load_model_bundle
from inference_server.nets.cpu_precision import PRECISION_ENV
from inference_server.nets.onnx_step import RUNTIME_ENV, requested_step_runtime
from inference_server.nets.row_lanes import row_split_requested
from inference_server.pipeline import Reconstructor, choose_device
from inference_server.presets import PRESETS, apply_preset
from inference_server.protocol import STAGES as PROTOCOL_STAGES
from inference_server.protocol import ReconstructArgs
from inference_server.result import ReconstructionResult

#: The photo job's stages, as the protocol names them (the sequence stages that follow "write" are not timed here).
STAGES = PROTOCOL_STAGES[: PROTOCOL_STAGES.index("write") + 1]
#: Stages the official recipe does not have (no pose, camera or texture): ours only, 0 on the baseline side.
OURS_ONLY = ("fit", "texture")


# -- the worker and Blender --------------------------------------------------------------------------
def worker_startup(
    args: ReconstructArgs, env: dict[str, str], *, reconstructions: bool, timeout: float = 600.0
) -> dict[str, float]:
    """Seconds from spawn to ``hello``, and the round trip of a first and a second reconstruction."""
    request = {
        "image": args.image, "n_shapes": args.n_shapes, "n_expressions": args.n_expressions, "sampler": args.sampler,
        "top_k": args.top_k, "steps": args.steps, "seed": args.seed, "device": args.device,
    }  # fmt: skip
    if args.extra.get("eta") is not None:  # the preset is already applied to sampler / steps; eta goes along
        request["eta"] = args.extra["eta"]  # (it used to travel under an "extra" key the worker ignored)
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "inference_server", "serve"], cwd=ROOT, env=env,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None
    out: dict[str, float] = {}

    def send(message: dict[str, Any]) -> None:
        assert proc.stdin is not None
        proc.stdin.write((json.dumps(message) + "\n").encode())
        proc.stdin.flush()

    def wait_for(rid: str, events: tuple[str, ...]) -> dict[str, Any]:
        assert proc.stdout is not None
        while time.perf_counter() - start < timeout:
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError("the worker exited")
            event = json.loads(line)
            if event.get("id") == rid and event.get("event") in events:
                return event
        raise TimeoutError(f"no {events} for {rid}")

    try:
        send({"id": "h", "op": "hello", "args": {}})
        wait_for("h", ("hello",))
        out["worker_hello"] = time.perf_counter() - start
        with tempfile.TemporaryDirectory() as tmp:
            if not reconstructions:
                names: tuple[str, ...] = ()
            else:
                names = ("worker_first_reconstruction", "worker_second_reconstruction")
            for name in names:
                t = time.perf_counter()
                send({"id": name, "op": "reconstruct", "args": {**request, "output": str(Path(tmp) / f"{name}.npz")}})
                event = wait_for(name, ("result", "error"))
                if event["event"] == "error":
                    raise RuntimeError(f"worker error: {event}")
                out[name] = time.perf_counter() - t
        send({"id": "bye", "op": "shutdown", "args": {}})
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return out


def blender_import(result_path: Path, repeats: int) -> dict[str, Any] | None:
    """The add-on's import of ``result_path`` in a bpy process; None when bpy is not installed."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "blender_import.py"), str(result_path), f"--repeats={repeats}"],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )  # fmt: skip
    if proc.returncode != 0:
        if "No module named 'bpy'" in proc.stderr:
            return None
        raise RuntimeError(f"Blender import benchmark failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- the command ----------------------------------------------------------------------------------------
@dataclass
class Report:
    config: dict[str, Any]
    ours: dict[str, float] = field(default_factory=dict)
    baseline: dict[str, float] = field(default_factory=dict)
    memory_mb: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class DemoRuns:
    seconds: list[dict[str, float]]
    result: ReconstructionResult


def fit_texture_on_demo(args: ReconstructArgs, repeats: int) -> DemoRuns:
    """Per-stage seconds of ``repeats`` warm reconstructions with the DEMO assets and weights (the first run
    warms caches): random official-size weights decode heads the fit does not trust, so their fit stops early
    and no texture is made, while the fit and texture cost depends on the head and photo, not on the networks.
    They sample with the fast preset whatever was asked: only the fit and texture stages are kept, and DEMO
    fidelity sampling in eager CUDA (launch-bound, about 20 s a run on an H200) would cost more than the run."""
    reconstructor = Reconstructor(resolve_assets({}), device=args.device)
    args = apply_preset(dataclasses.replace(args, extra={**args.extra, "preset": "fast"}))
    seconds = []
    for i in range(repeats + 1):
        output = reconstructor.run(args, lambda *a: None, lambda: False)
        if i:
            seconds.append(output.seconds)
    return DemoRuns(seconds, output.result)


def fit_status(result: ReconstructionResult) -> str:
    meta = result.meta
    fit = meta.get("fit") or {}
    reason = f" ({fit['reason']})" if fit.get("reason") else ""
    return f"fit {fit.get('status', 'absent')}{reason}, texture {'written' if meta.get('texture') else 'not made'}"


def median_stages(runs: list[dict[str, float]]) -> dict[str, float]:
    medians = {stage: statistics.median(run.get(stage, 0.0) for run in runs) for stage in STAGES}
    medians["total"] = statistics.median(sum(run.get(s, 0.0) for s in STAGES) for run in runs)
    return medians


def print_report(report: Report) -> None:
    c = report.config
    print(f"\nreconstruction benchmark — {c['device_name']}, torch threads {c['threads']}, {c['size']} networks")
    cpu = str(c["device"]).startswith("cpu")  # fusing, bf16 GEMMs, concurrent draws, row blocks: CPU only
    print(f"ours: {c['sampler']} {c['steps']} steps, {c['backend']} {c['precision']}"
          f"{' cuda-graphs' if c['cuda_graphs'] else ''}{' of whole steps' if c.get('cuda_whole_steps') else ''}"
          f"{' torch.compile' if c['compile'] else ''}"
          f"{'' if c['fuse_denoisers'] or not cpu else ' unfused denoisers'}"
          f"{' bf16 denoiser GEMMs' if cpu and c.get('cpu_precision') == 'bf16' else ''}"
          f"{' denoiser steps by ONNX Runtime' if cpu and c.get('denoiser_runtime') == 'onnxruntime' else ''}"
          f"{' IdGen ∥ ExpGen' if cpu and c.get('concurrent_samplers') else ''}"
          f"{' rows in blocks' if cpu and c.get('row_split') else ''}; "
          f"{c['n_shapes']} shapes + {c['n_expressions']} expressions; "
          f"median of {c['repeats']} warm runs")  # fmt: skip
    if report.baseline:
        print(f"baseline: official recipe — encoders on {c['baseline_copies']} tiled copies, IdGen DDIM "
              f"{c['baseline_steps'][0]} steps, ExpGen DDPM {c['baseline_steps'][1]} steps, eager fp32")  # fmt: skip
    print(f"{'stage':<20}{'ours (s)':>12}{'baseline (s)':>14}{'speed-up':>10}")
    for stage in (*STAGES, "total"):
        ours = report.ours.get(stage, float("nan"))
        base = report.baseline.get(stage, float("nan"))
        ratio = base / ours if report.baseline and ours > 0 else float("nan")
        if stage in OURS_ONLY:  # the official recipe has no pose, camera or texture
            print(f"{stage:<20}{ours:>12.3f}{'—':>14}{'ours only':>10}")
            continue
        print(f"{stage:<20}{ours:>12.3f}{base:>14.3f}{ratio:>9.1f}x")
    if report.baseline:
        print("(total: ours includes fit and texture, which the baseline does not do)")
    for name, value in report.memory_mb.items():
        print(f"peak memory {name:<24}{value:>10.0f} MB")
    for name, value in report.extra.items():
        print(f"{name:<36}{value if isinstance(value, str) else json.dumps(value)}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Time a whole reconstruction against the official recipe.")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="fast")
    parser.add_argument("--sampler", choices=("ddpm", "ddim", "dpmsolver"), help="overrides the preset")
    parser.add_argument("--steps", type=int, help="overrides the preset")
    parser.add_argument("--eta", type=float, help="overrides the preset (ddim)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    parser.add_argument("--backend", default="torch", choices=("torch", "onnxruntime"))
    parser.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16"))
    parser.add_argument("--cuda-graphs", action="store_true", default=None,
                        help="replay each denoiser step as a CUDA graph (the bundle's default on CUDA)")  # fmt: skip
    parser.add_argument("--no-cuda-graphs", dest="cuda_graphs", action="store_false",
                        help="run the denoisers eagerly on CUDA (OFER_CUDA_GRAPHS=0)")  # fmt: skip
    parser.add_argument("--cuda-whole-steps", action="store_true",
                        help="replay whole sampler steps, update and noise too (OFER_CUDA_WHOLE_STEPS=1)")  # fmt: skip
    parser.add_argument("--compile", action="store_true", help="torch.compile the denoisers")
    parser.add_argument("--no-fit", action="store_true",
                        help="no head pose, camera or texture (ofer-worker --no-fit)")  # fmt: skip
    parser.add_argument("--no-fuse-denoisers", action="store_true",
                        help="sample with the plain denoiser modules, not the fused CPU fp32 step")  # fmt: skip
    parser.add_argument("--cpu-precision", choices=("fp32", "bf16"),
                        help="fused CPU denoiser step GEMMs (sets OFER_CPU_PRECISION; bf16 is inexact)")  # fmt: skip
    parser.add_argument("--denoiser-runtime", choices=("onnxruntime", "torch"),
                        help="what runs the fused CPU denoiser step (sets OFER_CPU_DENOISER_RUNTIME; "
                             "default onnxruntime where installed)")  # fmt: skip
    parser.add_argument("--concurrent-samplers", action="store_true", default=None,
                        help="draw ExpGen in a background thread while IdGen draws (CPU; the default)")  # fmt: skip
    parser.add_argument("--sequential-samplers", dest="concurrent_samplers", action="store_false",
                        help="draw IdGen's samples, then ExpGen's (the default before stop 27)")  # fmt: skip
    parser.add_argument("--size", choices=("full", "demo"), default="full",
                        help="official-size random networks (default) or the DEMO weights")  # fmt: skip
    parser.add_argument("--full-size-encoders", dest="size", action="store_const", const="full",
                        help="same as --size full")  # fmt: skip
    parser.add_argument("--encoders", choices=("distinct", "identical"), default="distinct",
                        help="official-size encoder copies: random each (default) or one set of weights")  # fmt: skip
    parser.add_argument("--no-share-encoders", action="store_true",
                        help="run every encoder copy even where weights are identical (unshared path)")  # fmt: skip
    parser.add_argument("--encoder-runtime", choices=("torch", "onnxruntime"), default="torch",
                        help="run the encoders in torch (the worker's default) or ONNX Runtime fp32")  # fmt: skip
    parser.add_argument(
        "--encoder-precision",
        choices=("fp32", "int8", "bf16", "auto"),
        default="fp32",
        help="int8 / bf16 / auto: each encoder's int8 graph (ONNX Runtime) / bf16 copy (torch) where its probe "
        "cosine passes, else ONNX Runtime fp32 (implies --encoder-runtime onnxruntime; encoder_runtime.CHOICES)",
    )
    parser.add_argument("--plain-encoders", action="store_true",
                        help="with --encoder-runtime onnxruntime: also time each run with torch encoders")  # fmt: skip
    parser.add_argument("--no-fold-rank", action="store_true",
                        help="score identity samples through their meshes (no basis fold)")  # fmt: skip
    parser.add_argument("--ab-fold-rank", action="store_true",
                        help="after every run, the same run with the rank fold off (alternated A/B)")  # fmt: skip
    parser.add_argument("--n-shapes", type=int, default=100)
    parser.add_argument("--n-expressions", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: physical cores)")
    parser.add_argument("--baseline-copies", type=int, default=100, help="tiled copies the baseline encodes")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--no-worker", action="store_true")
    parser.add_argument("--no-blender", action="store_true")
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (for tests; numbers mean nothing)")
    parser.add_argument("--json", type=Path, help="also write the report here")
    parser.add_argument("--save-result", type=Path,
                        help="copy the last result here (benchmarks/result_distance.py compares them)")  # fmt: skip
    opts = parser.parse_args(argv)
    if opts.encoder_precision != "fp32":
        opts.encoder_runtime = "onnxruntime"  # opens the encoder runtime (int8 / fp32 sessions, bf16 copies)
    return opts


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    if opts.cpu_precision:  # read where the fused denoiser copies are built (nets/cpu_precision.py)
        os.environ[PRECISION_ENV] = opts.cpu_precision
    if opts.denoiser_runtime:  # read where the fused denoiser copies are built (nets/onnx_step.py)
        os.environ[RUNTIME_ENV] = opts.denoiser_runtime
    threads = configure_cpu_threads(opts.threads)
    device = choose_device(opts.device)
    sizes = TINY if opts.quick else FULL
    baseline_steps = (4, 6) if opts.quick else (BASELINE_IDGEN_STEPS, BASELINE_EXPGEN_STEPS)
    copies = 4 if opts.quick else opts.baseline_copies
    n_shapes, n_exps = (8, 6) if opts.quick else (opts.n_shapes, opts.n_expressions)
    repeats = 1 if opts.quick else opts.repeats

    workdir = Path(tempfile.mkdtemp(prefix="ofer-bench-"))
    extra: dict[str, Any] = {"preset": opts.preset} | ({"fit": False} if opts.no_fit else {})
    args = apply_preset(ReconstructArgs(
        image=str(SAMPLE), output=str(workdir / "ours.npz"), n_shapes=n_shapes, n_expressions=n_exps,
        top_k=min(10, n_shapes), sampler="ddpm", steps=4 if opts.quick else opts.steps, seed=0, device=opts.device,
        extra=extra,
    ))  # fmt: skip
    if opts.sampler:
        args = dataclasses.replace(args, sampler=opts.sampler)
    if opts.eta is not None:
        args.extra["eta"] = opts.eta

    reconstructor = Reconstructor(
        resolve_assets({}), device=opts.device, backend=opts.backend, precision=opts.precision
    )
    report = Report(config={
        "device": str(device), "device_name": device_name(device), "threads": threads, "backend": opts.backend,
        "precision": opts.precision, "compile": opts.compile, "fit": not opts.no_fit,
        "size": "tiny (quick)" if opts.quick else opts.size, "sampler": args.sampler, "steps": args.steps,
        "n_shapes": n_shapes, "n_expressions": n_exps, "repeats": repeats, "baseline_copies": copies,
        "baseline_steps": baseline_steps, "torch": torch.__version__, "encoders": opts.encoders,
        "share_encoders": not opts.no_share_encoders, "encoder_runtime": opts.encoder_runtime,
        "encoder_precision": opts.encoder_precision,
        "cuda_graphs": device.type == "cuda" and opts.cuda_graphs is not False and not opts.compile,
        "cuda_whole_steps": device.type == "cuda" and opts.cuda_whole_steps,
        "fuse_denoisers": not opts.no_fuse_denoisers,
        "cpu_precision": os.environ.get(PRECISION_ENV, "fp32"),
        "denoiser_runtime": requested_step_runtime(),  # the request; the report's runtimes say what ran
        "concurrent_samplers": concurrent_requested() if opts.concurrent_samplers is None else opts.concurrent_samplers,
        "row_split": row_split_requested(),
        "fold_rank": not opts.no_fold_rank,
        "encoder_lanes": lanes_requested(),  # OFER_CPU_ENCODER_LANES
    })  # fmt: skip

    # Cold load of the model files (the DEMO head and detector load with the first run).
    if opts.size == "full" or opts.quick:
        folder = default_cache_dir() / ("benchmark_tiny" if opts.quick else "benchmark_full_size")
        files = model_files(sizes, folder)
        t = time.perf_counter()
        bundle = load_bundle(files, opts.precision, identical_encoders=opts.encoders == "identical",
                             share_encoders=not opts.no_share_encoders)  # fmt: skip
    else:
        t = time.perf_counter()
        bundle = load_model_bundle(resolve_assets({}), precision=opts.precision)
    report.extra["model load, cold (s)"] = round(time.perf_counter() - t, 3)
    bundle.fuse_denoisers = not opts.no_fuse_denoisers
    report.extra["encoder passes per image"] = f"{len(bundle.encoder_sharing.groups)} ({bundle.encoder_sharing.groups})"
    # The Reconstructor loads its bundle lazily; hand it the benchmark's networks instead.
    reconstructor._bundle = bundle
    reconstructor.concurrent_samplers = opts.concurrent_samplers
    if opts.backend == "onnxruntime":
        reconstructor.bundle(device)
    bundle.cuda_graphs = False if opts.compile else opts.cuda_graphs
    bundle.cuda_whole_steps = opts.cuda_whole_steps
    if opts.compile:
        compile_denoisers(bundle, device)

    if opts.encoder_runtime == "onnxruntime":
        open_encoders(bundle, device, report)
    bundle.fold_rank = not opts.no_fold_rank
    t = time.perf_counter()
    if bundle.folded_rank(reconstructor.flame_layer(bundle, device)) is not None:  # once per loaded model
        report.extra["rank fold, once per model (s)"] = round(time.perf_counter() - t, 3)
    quiet: Callable[..., None] = lambda *a: None  # noqa: E731
    runs: dict[bool, list[dict[str, float]]] = {False: [], True: []}
    vertex_runs: list[dict[str, float]] = []
    results: dict[bool, ReconstructionResult] = {}
    for i in range(repeats + 1):
        alternated = opts.plain_encoders and opts.encoder_runtime == "onnxruntime"
        for plain in (False, True) if alternated else (False,):  # alternated: same machine state
            bundle.plain_encoders(plain)
            reset_peak_memory(device)
            output = reconstructor.run(args, quiet, lambda: False)
            sync(device)
            results[plain] = output.result
            if i:  # the first run warms caches (detector graph, allocator, CUDA kernels)
                runs[plain].append(output.seconds)
        if opts.ab_fold_rank:  # the same run with IdRank fed the meshes, right after (same machine state)
            bundle.fold_rank = False
            vertex_rank = reconstructor.run(args, quiet, lambda: False)
            bundle.fold_rank = True
            if i:
                vertex_runs.append(vertex_rank.seconds)
    bundle.plain_encoders(False)
    report.memory_mb["ours"] = peak_memory_mb(device)
    report.ours = median_stages(runs[False])
    report.extra["fit / texture (ours)"] = fit_status(output.result)
    report.extra["denoiser runtimes"] = output.result.meta.get("denoiser_runtimes")
    if runs[True]:
        plain_stages = median_stages(runs[True])
        report.extra["plain (torch) encoders: stages (s)"] = {k: round(v, 3) for k, v in plain_stages.items()}
        report.extra["encode: torch / faster encoders"] = round(plain_stages["encode"] / report.ours["encode"], 2)
        report.extra["meshes, faster vs torch encoders (max mm)"] = {
            name: float(np.abs(getattr(results[False], name) - getattr(results[True], name)).max() * 1000)
            for name in ("identity_vertices", "expression_vertices")
        }
    if not output.result.meta.get("texture") and not opts.no_fit:  # random weights: a head the fit does not trust
        demo = fit_texture_on_demo(args, repeats)
        for stage in OURS_ONLY:
            report.ours[stage] = statistics.median(run[stage] for run in demo.seconds)
        report.ours["total"] = sum(report.ours[s] for s in STAGES)
        report.extra["fit / texture (ours)"] = (
            f"these networks' head: {fit_status(output.result)}; fit and texture timed on the DEMO-weights "
            f"head instead (as the CLI makes it): {fit_status(demo.result)}"
        )
    if vertex_runs:
        vertex_stages = median_stages(vertex_runs)
        report.extra["rank through meshes: stages (s)"] = {k: round(v, 3) for k, v in vertex_stages.items()}
        report.extra["rank: meshes / folded"] = round(vertex_stages["rank"] / report.ours["rank"], 2)
        ours, theirs = results[False], vertex_rank.result
        report.extra["identities, folded vs meshes"] = {
            "same samples in the same order": bool(np.array_equal(ours.identity_params, theirs.identity_params)),
            "same samples": bool(np.array_equal(*(np.unique(r.identity_params, axis=0) for r in (ours, theirs)))),
            "max |d score|": float(np.abs(ours.identity_scores - theirs.identity_scores).max()),
        }
    result_path = Path(output.path)
    if opts.save_result:
        shutil.copyfile(result_path, opts.save_result)

    if not opts.no_baseline:
        bundle.plain_encoders(True)  # the official recipe runs its encoders in torch
        base_runs = []
        reset_peak_memory(device)
        for _ in range(1 if opts.quick else max(1, repeats // 3)):
            base_args = dataclasses.replace(args, output=str(workdir / "baseline.npz"))
            base_runs.append(baseline_run(reconstructor, base_args, device, copies, baseline_steps))
        report.memory_mb["baseline"] = peak_memory_mb(device)
        report.baseline = median_stages(base_runs)

    if not opts.no_worker:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
        from inference_server.demo.weights import packaged_demo_weights

        # The worker loads the DEMO weights; where they are not packaged it would train them (minutes).
        ready = packaged_demo_weights() is not None
        timings = worker_startup(args, env, reconstructions=ready)
        report.extra.update({f"{k} (s)": round(v, 3) for k, v in timings.items()})
        report.extra["worker note"] = (
            "reconstructions with the DEMO weights" if ready else "reconstructions skipped: DEMO weights not packaged"
        )
    if not opts.no_blender:
        timing = blender_import(result_path, 1 if opts.quick else 3)
        if timing is None:
            report.extra["blender import"] = "skipped: bpy is not installed"
        else:
            report.extra[f"blender import of {timing['shape_keys']} shape keys (s)"] = round(min(timing["seconds"]), 3)

    print_report(report)
    if opts.json:
        opts.json.write_text(json.dumps(report.__dict__, indent=2, default=str))
    return 0


def open_encoders(bundle: ModelBundle, device: torch.device, report: Report) -> None:
    """Open the encoders' ONNX Runtime sessions (exported into the cache on first use) and record the cost."""
    t = time.perf_counter()
    bundle.to(device)
    runtime = bundle.use_encoder_runtime(default_cache_dir(), report.config["encoder_precision"])
    report.extra["encoder runtime open (s)"] = round(time.perf_counter() - t, 3)
    report.extra["encoder runtime"] = {
        "onnxruntime": sorted(runtime.reused + runtime.exported), "exported now": runtime.exported,
        "torch": runtime.on_torch, "cosine to torch": {k: round(v[0], 7) for k, v in runtime.agreement.items()},
        "optimised graph reused": runtime.optimised_reused, "runtimes": bundle.encoder_runtimes(),
        "int8": {slot: verdict.get("why") for slot, verdict in runtime.int8.items()},
        "bf16": {slot: verdict.get("why") for slot, verdict in runtime.bf16.items()},
    }  # fmt: skip


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} CPUs)"
    except OSError:
        pass
    return f"CPU ({os.cpu_count()} CPUs)"


def compile_denoisers(bundle: ModelBundle, device: torch.device) -> None:
    """Swap the bundle's denoiser callables for ``torch.compile``d modules (inputs cast like the module's
    weights, output cast back, as the bundle's own runners do)."""
    from inference_server.backends import CompiledEpsModel
    from inference_server.model_bundle import DenoiserModel, TorchRunner

    bundle.to(device)
    for name, net in (("idgen_denoiser", bundle.idgen.denoiser), ("expgen_denoiser", bundle.expgen.denoiser)):
        assert net is not None
        feature_dim = getattr(bundle, name).feature_dim
        setattr(bundle, name, DenoiserModel(TorchRunner(net, CompiledEpsModel(net, feature_dim)), feature_dim))


if __name__ == "__main__":
    raise SystemExit(main())
