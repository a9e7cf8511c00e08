"""Torch eager vs ONNX Runtime fp32 for the image encoders, alternated in one process (A/B, same machine state).

Run: ``.venv/bin/python benchmarks/encoder_runtime.py [--rounds 7] [--size full|tiny]``. Opens the encoder
runtime the way the worker does (export into the user cache on first use, validation against torch), then
times one pass of an ArcFace and a FaRL encoder per round, torch and ONNX Runtime back to back, and prints
medians (wall clock, and CPU-seconds of the process, which a loaded machine disturbs less), the ratio,
the embeddings' agreement, the open cost and the load average (see benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_setup import FULL, TINY, load_bundle, model_files

from inference_server.assets_config import default_cache_dir
from inference_server.backends import configure_cpu_threads
from inference_server.encoder_runtime import agreement, probe_input


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--size", choices=("full", "tiny"), default="full")
    opts = parser.parse_args(argv)
    threads = configure_cpu_threads()
    sizes = FULL if opts.size == "full" else TINY
    folder = default_cache_dir() / ("benchmark_full_size" if opts.size == "full" else "benchmark_tiny")
    bundle = load_bundle(model_files(sizes, folder), "fp32", identical_encoders=True)
    start = time.perf_counter()
    report = bundle.use_encoder_runtime(default_cache_dir())
    print(f"load average {os.getloadavg()}, torch threads {threads}")
    exported = report.exported or "none"
    print(f"open: {time.perf_counter() - start:.2f} s (exported now: {exported}; on torch: {report.on_torch})")
    inputs = {"idgen.arcface": probe_input(sizes.arcface.input_size), "expgen.farl": probe_input(sizes.clip.image_size)}
    for slot, image in inputs.items():
        times: dict[bool, list[float]] = {True: [], False: []}
        cpu: dict[bool, list[float]] = {True: [], False: []}
        outputs = {}
        for round_ in range(opts.rounds + 1):
            for plain in (True, False):
                bundle.plain_encoders(plain)
                t, c = time.perf_counter(), time.process_time()
                with torch.no_grad():
                    outputs[plain] = bundle.runners[slot](image)
                if round_:  # round 0 warms up
                    times[plain].append(time.perf_counter() - t)
                    cpu[plain].append(time.process_time() - c)
        torch_s, ort_s = statistics.median(times[True]), statistics.median(times[False])
        torch_cpu, ort_cpu = statistics.median(cpu[True]), statistics.median(cpu[False])
        cosine, diff = agreement(outputs[True], outputs[False])
        print(f"{slot:<16} torch {torch_s:.3f} s  onnxruntime {ort_s:.3f} s  torch/ort {torch_s / ort_s:.2f}x  "
              f"CPU-seconds torch {torch_cpu:.3f} ort {ort_cpu:.3f} ({torch_cpu / ort_cpu:.2f}x)  "
              f"cosine {cosine:.8f}  max|d| {diff:.1e}")  # fmt: skip
    print(f"load average after {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
