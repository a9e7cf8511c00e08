"""The distinct encoders of one photo on two lanes vs one after the other (``ModelBundle.contexts``, encode stage).

Run: ``OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/encoder_lanes.py [--rounds 7] [--copies distinct]
[--precision fp32 auto]`` (numbers in benchmarks/README.md, "Encoders on two lanes").

Official-size random encoders (``bench_setup.FULL``): ``distinct`` — five different copies (three ArcFace
iresnet100 at 112 px, two FaRL ViT-B/16 at 224 px), ``identical`` — one ArcFace and one FaRL shared by all
slots (two passes). Per precision (``fp32``: torch fp32 modules; ``auto`` / ``bf16``: what
``OFER_ENCODER_PRECISION`` opens, ``encoder_runtime.CHOICES``), rounds alternate sequential / lanes (ABAB…)
so load changes hit both, and report the medians, the median per-round ratio, the load average, the lanes'
split and seconds, and whether every embedding was bit-identical. Where ONNX Runtime sessions run (int8
FaRL under ``auto``), a third arm runs lanes with the sessions opened on one intra-op thread each
(a session's thread count is fixed when it opens), and a fourth splits the lanes by multiply-accumulates alone
(``encoder_lanes.RUNTIME_SPEED`` emptied: every form costed as torch fp32). ``--pipeline``: then the whole fast
preset on the sample photo with the same bundle, lanes off / on alternated (the pipeline's stage clock);
``--sampling-after``: 20 IdGen sampling steps right after each ``contexts`` call, timed apart (does the stage
after the lanes pay for the thread hand-over?).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from inference_server import encoder_lanes
from inference_server.assets_config import default_cache_dir
from inference_server.backends import configure_cpu_threads
from inference_server.encoder_runtime import encoder_networks, probe_input
from inference_server.model_bundle import ModelBundle

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

Contexts = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
SPEEDS = dict(encoder_lanes.RUNTIME_SPEED)


def open_precision(bundle: ModelBundle, precision: str, cache: Path) -> dict[str, Any]:
    """Open the faster encoders (kept switchable); with ONNX Runtime among them, also one-thread sessions."""
    if precision == "fp32":
        return {}
    report = bundle.use_encoder_runtime(cache, precision)
    out: dict[str, Any] = {"runtimes": bundle.encoder_runtimes()}
    ort = [slot for slot, p in report.precision.items() if p in ("fp32", "int8")]
    if ort:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # session_options takes torch's count when the session opens
        try:
            modules = {slot: getattr(getattr(bundle, slot.split(".")[0]), slot.split(".")[1]) for slot in ort}
            one, _ = encoder_networks(modules, cache, precision)
        finally:
            torch.set_num_threads(threads)
        out["one_thread"] = one
    return out


def timed(bundle: ModelBundle, blob: torch.Tensor, image: torch.Tensor) -> tuple[float, Contexts]:
    start = time.perf_counter()
    with torch.no_grad():
        contexts = bundle.contexts(blob, image)
    return time.perf_counter() - start, contexts


def arms(bundle: ModelBundle, opened: dict[str, Any]) -> dict[str, Callable[[], None]]:
    """Name → set-up of the bundle for that arm (sequential, lanes, lanes with one-thread sessions)."""
    default = {slot: bundle.runners[slot] for slot in opened.get("one_thread", {})}

    def setter(lanes: bool, runners: dict[str, Any]) -> Callable[[], None]:
        def apply() -> None:
            encoder_lanes.RUNTIME_SPEED = SPEEDS
            bundle.encoder_lanes = lanes
            bundle.runners.update(runners)

        return apply

    out = {"sequential": setter(False, default), "lanes": setter(True, default)}
    if opened.get("runtimes"):  # the split by multiply-accumulates alone, as if every encoder ran torch fp32
        by_macs = setter(True, default)

        def macs_only() -> None:
            by_macs()
            encoder_lanes.RUNTIME_SPEED = {}

        out["lanes, split by MACs only"] = macs_only
    if opened.get("one_thread"):
        out["lanes, ORT 1 thread"] = setter(True, opened["one_thread"])
    return out


def measure(bundle: ModelBundle, opened: dict[str, Any], rounds: int) -> dict[str, Any]:
    blob, image = probe_input(112), probe_input(224)
    setups = arms(bundle, opened)
    times: dict[str, list[float]] = {name: [] for name in setups}
    splits: dict[str, list[list[float]]] = {name: [] for name in setups}
    lanes_of: dict[str, list[list[str]]] = {}
    identical = True
    reference: Contexts | None = None
    loads = [os.getloadavg()[0]]
    for apply in setups.values():  # warm-up (first calls allocate, the bf16 copies pack their weights)
        apply()
        timed(bundle, blob, image)
    for _ in range(rounds):
        for name, apply in setups.items():
            apply()
            seconds, contexts = timed(bundle, blob, image)
            times[name].append(seconds)
            splits[name].append([round(s, 3) for s in bundle.last_lanes.seconds])
            lanes_of[name] = bundle.last_lanes.lanes
            reference = reference or contexts
            identical &= all(torch.equal(a, b) for a, b in zip(reference, contexts, strict=True))
        loads.append(os.getloadavg()[0])
    setups["sequential"]()
    base = times["sequential"]
    row: dict[str, Any] = {"bit_identical": identical, "load": [round(min(loads), 2), round(max(loads), 2)]}
    for name in setups:
        row[f"{name}: s"] = round(statistics.median(times[name]), 3)
        if name != "sequential":
            row[f"{name}: speed-up"] = round(
                statistics.median(b / t for b, t in zip(base, times[name], strict=True)), 3
            )
            row[f"{name}: lane seconds (median round)"] = sorted(splits[name], key=max)[len(splits[name]) // 2]
            row[f"{name}: split"] = lanes_of[name]
    return row


def pipeline_pairs(bundle: ModelBundle, rounds: int) -> dict[str, Any]:
    """The fast preset on the sample photo (``Reconstructor.run``, as ``reconstruction.py`` runs it), lanes off /
    on alternated in one process: the pipeline's own stage clock, medians of ``rounds`` pairs after one warm-up."""
    import tempfile

    from bench_setup import SAMPLE

    from inference_server.assets_config import resolve_assets
    from inference_server.pipeline import Reconstructor
    from inference_server.presets import apply_preset
    from inference_server.protocol import ReconstructArgs

    workdir = Path(tempfile.mkdtemp(prefix="ofer-lanes-"))
    args = apply_preset(ReconstructArgs(image=str(SAMPLE), output=str(workdir / "out.npz"), n_shapes=100,
                                        n_expressions=100, top_k=10, sampler="ddpm", steps=20, seed=0, device="cpu",
                                        extra={"preset": "fast"}))  # fmt: skip
    reconstructor = Reconstructor(resolve_assets({}), device="cpu")
    reconstructor._bundle = bundle  # the benchmark's networks, as reconstruction.py hands them over
    runs: dict[bool, list[dict[str, float]]] = {False: [], True: []}
    loads = [os.getloadavg()[0]]
    for index in range(rounds + 1):
        for lanes in (False, True):
            bundle.encoder_lanes = lanes
            seconds = reconstructor.run(args, lambda *a: None, lambda: False).seconds
            if index:
                runs[lanes].append(seconds)
        loads.append(os.getloadavg()[0])
    before_fit = ("detect", "encode", "sample_shapes", "rank", "sample_expressions", "decode")
    row: dict[str, Any] = {"load": [round(min(loads), 2), round(max(loads), 2)], "pairs": rounds}
    for lanes, name in ((False, "sequential"), (True, "lanes")):
        row[f"{name}: stages s"] = {k: round(statistics.median(r[k] for r in runs[lanes]), 3) for k in before_fit}
        row[f"{name}: detect..decode s"] = round(
            statistics.median(sum(r[k] for k in before_fit) for r in runs[lanes]), 3
        )
    row["encode speed-up (median of pairs)"] = round(
        statistics.median(a["encode"] / b["encode"] for a, b in zip(runs[False], runs[True], strict=True)), 3
    )
    return row


def sampling_after(bundle: ModelBundle, rounds: int) -> dict[str, Any]:
    """Whether the stage after the lanes pays for them: ``contexts`` (lanes off / on, alternated) then 20
    DPM-Solver++ IdGen steps at batch 100 on the caller's threads, timed separately."""
    from inference_server.diffusion import sample

    blob, image = probe_input(112), probe_input(224)
    encode: dict[bool, list[float]] = {False: [], True: []}
    after: dict[bool, list[float]] = {False: [], True: []}
    model = bundle.idgen_denoiser
    with torch.no_grad():
        for index in range(rounds + 1):
            for lanes in (False, True):
                bundle.encoder_lanes = lanes
                seconds, contexts = timed(bundle, blob, image)
                start = time.perf_counter()
                sample(model, contexts[0], 100, model.feature_dim, sampler="dpmsolver", steps=20, seed=0)
                if index:  # the first pair warms the fused denoiser
                    encode[lanes].append(seconds)
                    after[lanes].append(time.perf_counter() - start)
    return {
        "load": round(os.getloadavg()[0], 2),
        "encode off / on s": [round(statistics.median(encode[k]), 3) for k in (False, True)],
        "sampling after, off / on s": [round(statistics.median(after[k]), 3) for k in (False, True)],
        "sampling speed-up after lanes (median of pairs)": round(
            statistics.median(a / b for a, b in zip(after[False], after[True], strict=True)), 3
        ),
    }


def main(argv: list[str] | None = None) -> int:
    from bench_setup import FULL, load_bundle, model_files

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--copies", nargs="+", choices=("distinct", "identical"), default=["distinct", "identical"])
    parser.add_argument("--precision", nargs="+", choices=("fp32", "bf16", "auto"), default=["fp32", "auto"])
    parser.add_argument("--pipeline", action="store_true", help="also the fast preset, lanes off / on alternated")
    parser.add_argument("--sampling-after", action="store_true", help="also: IdGen sampling right after the lanes")
    parser.add_argument("--json", type=Path)
    opts = parser.parse_args(argv)
    threads = configure_cpu_threads(opts.threads)
    cache = default_cache_dir()
    files = model_files(FULL, cache / "benchmark_full_size")
    print(f"torch {torch.__version__}, {threads} threads, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, "
          f"load average {os.getloadavg()}", flush=True)  # fmt: skip
    rows = []
    for copies in opts.copies:
        for precision in opts.precision:
            bundle = load_bundle(files, "fp32", identical_encoders=copies == "identical")
            opened = open_precision(bundle, precision, cache)
            row = {"copies": copies, "precision": precision, "runtimes": opened.get("runtimes")}
            row |= measure(bundle, opened, opts.rounds)
            print(json.dumps(row), flush=True)
            if opts.sampling_after:
                row["sampling_after"] = sampling_after(bundle, opts.rounds)
                print(
                    json.dumps({"copies": copies, "precision": precision, "after": row["sampling_after"]}), flush=True
                )
            if opts.pipeline:
                row["pipeline"] = pipeline_pairs(bundle, opts.rounds)
                print(json.dumps({"copies": copies, "precision": precision, "pipeline": row["pipeline"]}), flush=True)
            rows.append(row)
            del bundle, opened
    if opts.json:
        opts.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
