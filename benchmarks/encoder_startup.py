"""What opening the ONNX Runtime encoders costs: cold (empty cache) vs warm, and memory, each in a fresh process.

Run: ``.venv/bin/python benchmarks/encoder_startup.py [--size full|tiny] [--precision fp32|int8|bf16|auto]
[--encoders distinct|identical] [--cache DIR]`` (numbers in benchmarks/README.md, "Encoders through ONNX
Runtime: start-up, int8").

Every step runs in its own Python process (so memory and caches start the same), in this order, against a
cache folder of its own (``--cache``, emptied first; never the user cache):

1. ``torch``: the bundle loaded, encoders in torch — the reference RSS and one encode pass;
2. ``cold``: the runtime opened on the empty cache (export, torch probe, optimisation, int8 / bf16 verdicts);
3. ``warm``: opened again (stored optimised graphs and probes: no export, no torch pass, no optimisation);
4. ``warm-release``: as 3, then the torch copies of the encoders freed (what the worker does).

Each prints one JSON line: open seconds with the per-encoder steps, RSS after opening (current and peak, MB),
one ``contexts`` pass (seconds, median of 3) and the runtimes each encoder ended on.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_setup import FULL, TINY, load_bundle, model_files

from inference_server.assets_config import default_cache_dir
from inference_server.backends import configure_cpu_threads
from inference_server.encoder_runtime import probe_input

STEPS = ("torch", "cold", "warm", "warm-release")
#: ``--step reoptimise`` (run by hand, alternated with ``warm``): the stored optimised graphs and probes removed
#: first — what every open cost before they were kept (torch probe pass + ONNX Runtime graph optimisation).
EXTRA_STEPS = ("reoptimise",)


def rss_mb() -> tuple[float, float]:
    """(current, peak) resident memory of this process in MB."""
    current = 0.0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            current = int(line.split()[1]) / 1024
    return current, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def one_step(opts: argparse.Namespace) -> dict[str, object]:
    configure_cpu_threads()
    sizes = FULL if opts.size == "full" else TINY
    folder = default_cache_dir() / ("benchmark_full_size" if opts.size == "full" else "benchmark_tiny")
    bundle = load_bundle(model_files(sizes, folder), "fp32", identical_encoders=opts.encoders == "identical")
    row: dict[str, object] = {"step": opts.step, "load_average": os.getloadavg()[0]}
    row["rss_loaded_mb"] = round(rss_mb()[0])
    if opts.step == "reoptimise":
        for path in [*opts.cache.glob("encoders_onnx/*.opt-*.onnx"), *opts.cache.glob("encoders_onnx/*.probe.npy")]:
            path.unlink()
    if opts.step != "torch":
        start = time.perf_counter()
        report = bundle.use_encoder_runtime(opts.cache, opts.precision, release_torch=opts.step == "warm-release")
        row["open_s"] = round(time.perf_counter() - start, 2)
        row["steps_s"] = {slot: {k: round(v, 2) for k, v in t.items()} for slot, t in report.timings.items()}
        row["optimised_reused"] = report.optimised_reused
        row["int8"] = {slot: v.get("why") for slot, v in report.int8.items()}
        row["bf16"] = {slot: v.get("why") for slot, v in report.bf16.items()}
    row["rss_after_open_mb"], row["peak_rss_mb"] = (round(v) for v in rss_mb())
    blob, image = probe_input(sizes.arcface.input_size), probe_input(sizes.clip.image_size)
    times = []
    with torch.no_grad():
        for _ in range(4):
            start = time.perf_counter()
            bundle.contexts(blob, image)
            times.append(time.perf_counter() - start)
    row["encode_s"] = round(statistics.median(times[1:]), 3)
    row["runtimes"] = bundle.encoder_runtimes()
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("full", "tiny"), default="full")
    parser.add_argument("--precision", choices=("fp32", "int8", "bf16", "auto"), default="fp32")
    parser.add_argument("--encoders", choices=("distinct", "identical"), default="distinct")
    parser.add_argument("--cache", type=Path, default=default_cache_dir() / "benchmark_encoder_startup")
    parser.add_argument("--step", choices=STEPS + EXTRA_STEPS)  # one step, in this process
    opts = parser.parse_args(argv)
    if opts.step:
        print(json.dumps(one_step(opts)), flush=True)
        return 0
    shutil.rmtree(opts.cache, ignore_errors=True)
    opts.cache.mkdir(parents=True)
    forwarded = ["--size", opts.size, "--precision", opts.precision, "--encoders", opts.encoders]
    for step in STEPS:
        command = [sys.executable, __file__, *forwarded, "--cache", str(opts.cache), "--step", step]
        subprocess.run(command, check=True, stderr=subprocess.DEVNULL)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
