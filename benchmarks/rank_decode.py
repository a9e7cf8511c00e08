"""Rank and decode stages: the current IdRank and FLAME layer against an earlier commit's, in one process.

Run: ``.venv/bin/python benchmarks/rank_decode.py [--before f0b4812] [--rounds 5]``. The earlier modules are
read with ``git show <commit>:<path>`` into a temporary folder and imported side by side with the current
ones, so both are timed alternately under the same machine load (medians, wall clock). Inputs: the DEMO head,
100 random shapes (the rank stage decodes their neutral meshes, then scores their front-face vertices with an
official-size IdRank, random weights), 100 random expressions + jaw on one identity (the decode stage).
Prints the ratio and the largest difference of every output (mm for meshes, raw logits). The first two lines
compare, in the current code, IdRank fed the front-face vertices (the vertex path) against IdRank folded
through the shape basis (``rank_fold``; "before" = vertex path, "after" = folded), alone and with the
neutral-mesh decode that the identity stage does in both; ``--fold-only`` runs just those.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from inference_server.backends import configure_cpu_threads
from inference_server.demo.assets import ensure_demo_assets
from inference_server.flame.layer import FlameLayer
from inference_server.flame.loading import load_flame_model
from inference_server.nets.idrank import IdRank, build_rank_input
from inference_server.rank_fold import fold_first_layer

ROOT = Path(__file__).resolve().parents[1]


def module_at(commit: str, path: str, folder: Path) -> ModuleType:
    """``path`` as it was at ``commit``, imported under a private name (relative imports made absolute)."""
    source = subprocess.run(["git", "show", f"{commit}:{path}"], cwd=ROOT, check=True, capture_output=True, text=True)
    package = path.rsplit("/", 1)[0].replace("/", ".")
    text = source.stdout.replace("from .", f"from {package}.")
    target = folder / f"before_{Path(path).stem}.py"
    target.write_text(text)
    spec = importlib.util.spec_from_file_location(target.stem, target)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[target.stem] = module
    spec.loader.exec_module(module)
    return module


def alternate(cases: dict[str, Callable[[], Any]], rounds: int) -> dict[str, float]:
    """Median seconds of each case, the cases run back to back in every round (round 0 warms up)."""
    times: dict[str, list[float]] = {name: [] for name in cases}
    for round_ in range(rounds + 1):
        for name, run in cases.items():
            start = time.perf_counter()
            run()
            if round_:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="f0b4812", help="commit whose IdRank / FLAME layer is the baseline")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--fold-only", action="store_true", help="only the rank stage: vertex path vs folded")
    opts = parser.parse_args(argv)
    configure_cpu_threads()
    head = ensure_demo_assets()
    data = load_flame_model(head.model_pkl, landmark_embedding=head.landmark_embedding)
    with tempfile.TemporaryDirectory() as tmp:
        old_flame = module_at(opts.before, "inference_server/flame/layer.py", Path(tmp)).FlameLayer(data)
        old_rank_cls = module_at(opts.before, "inference_server/nets/idrank.py", Path(tmp)).IdRank
    new_flame = FlameLayer(data)
    torch.manual_seed(0)
    new_rank = IdRank().eval()
    old_rank = old_rank_cls().eval()
    old_rank.load_state_dict(new_rank.state_dict())
    front = torch.randperm(data.n_vertices)[:1785]
    shapes = torch.randn(100, new_flame.n_shape) * 0.5
    expressions, jaw = torch.randn(100, new_flame.n_expression) * 0.5, torch.randn(100, 3) * 0.1
    context = torch.randn(1, 1024)
    print(f"load average {os.getloadavg()}, DEMO head {data.n_vertices} vertices, before = {opts.before}")
    with torch.no_grad():
        x = build_rank_input(new_flame.neutral(shapes).vertices[:, front] * 1000.0)
        ctx = context.expand(100, -1)
        t = time.perf_counter()
        folded = fold_first_layer(new_rank, new_flame, front.numpy())
        print(f"fold IdRank's first layer through the basis (once per model): {time.perf_counter() - t:.3f} s")

        def vertex_scores(decode: bool) -> torch.Tensor:
            meshes = new_flame.neutral(shapes).vertices if decode else neutral
            return new_rank(build_rank_input(meshes[:, front] * 1000.0), ctx)

        def folded_scores(decode: bool) -> torch.Tensor:
            if decode:  # the identity stage still decodes every mesh (the result's per-vertex spread)
                new_flame.neutral(shapes)
            return new_rank.forward_from_first_linear(folded(shapes), context)

        neutral = new_flame.neutral(shapes).vertices
        fold_stages: dict[str, dict[str, Callable[[], Any]]] = {
            "IdRank x100: vertices vs coefficients": {
                "before": lambda: vertex_scores(False), "after": lambda: folded_scores(False)
            },
            "rank stage x100 (meshes decoded in both)": {
                "before": lambda: vertex_scores(True), "after": lambda: folded_scores(True)
            },
        }  # fmt: skip
        stages: dict[str, dict[str, Callable[[], Any]]] = fold_stages if opts.fold_only else fold_stages | {
            "neutral meshes x100": {
                "before": lambda: old_flame.neutral(shapes), "after": lambda: new_flame.neutral(shapes)
            },
            "IdRank x100": {"before": lambda: old_rank(x, ctx), "after": lambda: new_rank(x, ctx)},
            "expressions x100": {
                "before": lambda: old_flame.with_expression(shapes[:1], expressions, jaw),
                "after": lambda: new_flame.with_expression(shapes[:1], expressions, jaw),
            },
        }  # fmt: skip
        for name, cases in stages.items():
            seconds = alternate(cases, opts.rounds)
            a, b = cases["before"](), cases["after"]()
            if isinstance(a, torch.Tensor):
                difference = f"max |d logit| {float((a - b).abs().max()):.1e}"
            else:
                difference = f"max |d vertex| {float((a.vertices - b.vertices).abs().max()) * 1000:.1e} mm"
            print(f"{name:<22} before {seconds['before']:.3f} s  after {seconds['after']:.3f} s  "
                  f"{seconds['before'] / seconds['after']:.1f}x  {difference}")  # fmt: skip
    print(f"load average after {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
