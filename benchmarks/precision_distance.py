"""What bf16 GEMMs in the fused denoiser step do to whole fidelity runs, against fp32's own seed-to-seed spread.

Three fidelity reconstructions (1000-step DDPM, 100 shape + 100 expression samples) of the bundled photo in
one process: fp32 seed S, ``--cpu-precision`` (bf16) seed S, fp32 seed S+1. Two pairs are compared with the
same measures — bf16 vs fp32 at the same seed (what the switch changes) and fp32 S vs fp32 S+1 (what another
seed changes; a change below this is noise-level for a user who would rerun with another seed):

- ranked identities: how many of the 10 kept identities of one run have their nearest kept identity (shape
  coefficients) of the other at the same rank;
- top identity: mean distance over front-face vertices between the two top-ranked neutral heads (mm);
- 10 kept identities: the same, rank by rank, averaged over the 10 ranks (mm);
- mean expression head: mean distance between the mean of the 100 expression meshes of each (mm; order-free);
- expression spread ratio: per-vertex spread (RMS distance to the mean mesh) of one over the other.

Run: ``OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/precision_distance.py [--size demo|full]``
(``demo``: the trained DEMO weights; ``full``: official-size random networks as in ``reconstruction.py``).
Three fidelity runs: several minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bench_setup import FULL, SAMPLE, load_bundle, model_files

from inference_server.assets_config import default_cache_dir, resolve_assets
from inference_server.backends import configure_cpu_threads
from inference_server.nets.cpu_precision import PRECISION_ENV
from inference_server.pipeline import Reconstructor
from inference_server.presets import apply_preset
from inference_server.protocol import ReconstructArgs
from inference_server.result import ReconstructionResult


def _front_mm(vertices: np.ndarray, front: np.ndarray) -> np.ndarray:
    return vertices[..., front, :].astype(np.float64) * 1000.0


def compare(a: ReconstructionResult, b: ReconstructionResult, front: np.ndarray) -> dict[str, float]:
    """The module docstring's measures for one pair of results."""
    ids_a, ids_b = _front_mm(a.identity_vertices, front), _front_mm(b.identity_vertices, front)
    k = min(len(ids_a), len(ids_b))
    per_rank = np.linalg.norm(ids_a[:k] - ids_b[:k], axis=-1).mean(axis=-1)
    gaps = np.linalg.norm(a.identity_params[:k, None] - b.identity_params[None, :k], axis=-1)
    same_rank = int((gaps.argmin(axis=1) == np.arange(k)).sum())
    exp_a, exp_b = _front_mm(a.expression_vertices, front), _front_mm(b.expression_vertices, front)

    def spread(v: np.ndarray) -> float:
        return float(np.sqrt(((v - v.mean(0)) ** 2).sum(-1).mean(0)).mean())

    return {
        "same_rank": same_rank,
        "kept": k,
        "top_mm": float(per_rank[0]),
        "kept_mm": float(per_rank.mean()),
        "mean_expression_mm": float(np.linalg.norm(exp_a.mean(0) - exp_b.mean(0), axis=-1).mean()),
        "expression_spread_ratio": spread(exp_a) / spread(exp_b),
        "max_param_rel": float(np.abs(a.identity_params - b.identity_params).max() / np.abs(b.identity_params).max()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("demo", "full"), default="demo")
    parser.add_argument("--cpu-precision", default="bf16")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, help="override the fidelity preset's 1000 steps (smoke runs)")
    parser.add_argument("--threads", type=int)
    opts = parser.parse_args()
    threads = configure_cpu_threads(opts.threads)
    reconstructor = Reconstructor(resolve_assets({}), device="cpu")
    if opts.size == "full":  # official-size random networks, as benchmarks/reconstruction.py loads them
        reconstructor._bundle = load_bundle(model_files(FULL, default_cache_dir() / "benchmark_full_size"), "fp32")
    bundle = reconstructor.bundle(torch.device("cpu"))
    front = np.asarray(bundle.front_indices)
    workdir = Path(tempfile.mkdtemp(prefix="ofer-precision-"))
    results: dict[str, ReconstructionResult] = {}
    print(f"{opts.size} weights, {threads} threads, load average {os.getloadavg()[0]:.2f}")
    for label, precision, seed in (
        ("fp32", "fp32", opts.seed),
        (opts.cpu_precision, opts.cpu_precision, opts.seed),
        ("fp32 next seed", "fp32", opts.seed + 1),
    ):
        os.environ[PRECISION_ENV] = precision
        bundle._fused.clear()  # the fused copies read the precision when they are built
        args = apply_preset(ReconstructArgs(
            image=str(SAMPLE), output=str(workdir / f"{label.replace(' ', '_')}.npz"), n_shapes=100,
            n_expressions=100, top_k=10, sampler="ddpm", steps=opts.steps, seed=seed, device="cpu",
            extra={"preset": "fidelity"},
        ))  # fmt: skip
        start = time.perf_counter()
        output = reconstructor.run(args, lambda *a: None, lambda: False)
        results[label] = output.result
        sampling = output.seconds.get("sample_shapes", 0.0) + output.seconds.get("sample_expressions", 0.0)
        print(f"{label:<15} seed {seed}: {time.perf_counter() - start:6.1f} s (sampling {sampling:5.1f} s), "
              f"load average {os.getloadavg()[0]:.2f}")  # fmt: skip
    os.environ.pop(PRECISION_ENV)
    pairs = {
        f"{opts.cpu_precision} vs fp32, seed {opts.seed}": (results[opts.cpu_precision], results["fp32"]),
        f"fp32 seed {opts.seed + 1} vs {opts.seed}": (results["fp32 next seed"], results["fp32"]),
    }
    print(f"{'pair':<24} {'same rank':>9} {'top id mm':>9} {'10 kept mm':>10} {'mean expr mm':>12} "
          f"{'expr spread':>11} {'id param rel':>12}")  # fmt: skip
    for name, (a, b) in pairs.items():
        r = compare(a, b, front)
        print(f"{name:<24} {r['same_rank']:>5}/{r['kept']:<3} {r['top_mm']:>9.3f} {r['kept_mm']:>10.3f} "
              f"{r['mean_expression_mm']:>12.3f} {r['expression_spread_ratio']:>11.3f} "
              f"{r['max_param_rel']:>12.1e}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
