"""Encoders in bfloat16 against fp32 and int8: time of one crop (alternated, one process) and closeness.

Run: ``.venv/bin/python benchmarks/encoder_bf16.py [--size full|demo] [--rounds 7] [--meshes]``
(numbers in benchmarks/README.md, "Encoders in bfloat16").

For each distinct encoder (``--size full``: one official-size random ArcFace iresnet100 and FaRL ViT-B/16;
``demo``: the DEMO's trained encoders), the variants embed one face crop in turn, round after round (so each
round sees the same machine state), and the median per variant is reported:

- torch fp32 (the reference), torch bf16 (``encoder_bf16.Bf16Encoder``: a converted copy), torch autocast bf16
  (converts the weights at every call), ONNX Runtime fp32, ONNX Runtime int8 (FaRL: ``encoder_quantise``'s
  recipe);
- each variant's cosine to torch fp32 over the probe set (``encoder_probe.probe_crops``: min and mean).

``--meshes`` (DEMO weights): the fast-preset reconstruction with the bf16 encoders (where adopted) against
torch fp32, same seed, and against another seed for scale (``encoder_int8.mesh_distances``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from inference_server.assets_config import default_cache_dir, resolve_assets
from inference_server.backends import configure_cpu_threads
from inference_server.encoder_bf16 import Bf16Encoder, native_bf16
from inference_server.encoder_probe import probe_crops
from inference_server.encoder_quantise import QUANTISED_OPS, quantise
from inference_server.encoder_runtime import agreement, kind_and_size, open_session
from inference_server.model_bundle import ModelBundle, load_model_bundle
from inference_server.nets.arcface import ArcFaceEncoder
from inference_server.nets.clip_visual import ClipImageEncoder
from inference_server.onnx_export import export_arcface, export_clip_visual

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

Embed = Callable[[torch.Tensor], torch.Tensor]


def variants(module: torch.nn.Module, folder: Path, slot: str) -> dict[str, Embed]:
    kind = kind_and_size(module)[0]

    def path(suffix: str) -> Path:  # one set of files per encoder (else a stored optimised graph is another's)
        return folder / f"{slot}{suffix}"

    def fp32(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return module(x).float()

    def autocast(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            return module(x).float()

    out: dict[str, Embed] = {"torch fp32": fp32, "torch bf16 (copy)": Bf16Encoder(module),
                             "torch bf16 (autocast)": autocast}  # fmt: skip
    graph = path(".onnx")
    if isinstance(module, ArcFaceEncoder):
        export_arcface(module, graph)
    else:
        assert isinstance(module, ClipImageEncoder)
        export_clip_visual(module, graph)
    out["ORT fp32"] = open_session(graph, path(".opt.onnx"))[0]
    if QUANTISED_OPS[kind]:
        quantise(graph, path(".int8.onnx"), QUANTISED_OPS[kind])
        out["ORT int8"] = open_session(path(".int8.onnx"), path(".int8.opt.onnx"))[0]
    return out


def encoder_row(slot: str, module: torch.nn.Module, folder: Path, rounds: int) -> dict[str, Any]:
    kind, size = kind_and_size(module)
    fns = variants(module.float().eval(), folder, slot)
    crops = probe_crops(kind, size)
    reference = [fns["torch fp32"](c) for c in crops]
    row: dict[str, Any] = {"encoder": slot}
    for name, fn in fns.items():
        cosines = [agreement(r, fn(c))[0] for r, c in zip(reference, crops, strict=True)]
        row[f"{name}: cos min / mean"] = (round(min(cosines), 6), round(statistics.mean(cosines), 6))
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):  # alternated: every variant once per round
        for name, fn in fns.items():
            t = time.perf_counter()
            fn(crops[0])
            times[name].append(time.perf_counter() - t)
    for name in fns:
        row[f"{name}: ms"] = round(1000 * statistics.median(times[name]), 1)
    base = row["torch fp32: ms"]
    row["speed-up vs torch fp32"] = {name: round(base / row[f"{name}: ms"], 2) for name in fns}
    print(json.dumps(row), flush=True)
    return row


def mesh_effect(folder: Path) -> dict[str, Any]:
    """DEMO fast preset, 100 + 100 samples: bf16 encoders (where the verdict adopts them) vs torch fp32."""
    from encoder_int8 import SAMPLE, mesh_distances

    from inference_server.pipeline import Reconstructor
    from inference_server.protocol import ReconstructArgs

    args = ReconstructArgs(image=str(SAMPLE), output="", n_shapes=100, n_expressions=100, top_k=10, seed=0,
                           device="cpu", extra={"preset": "fast"})  # fmt: skip
    reconstructor = Reconstructor(resolve_assets({}), device="cpu")
    bundle = reconstructor.bundle(torch.device("cpu"))

    def run(label: str, seed: int = 0) -> Any:
        out = replace(args, output=str(folder / f"{label}.npz"), seed=seed)
        return reconstructor.run(out, lambda *a: None, lambda: False).result

    reference, other_seed = run("fp32"), run("seed1", seed=1)
    report = bundle.use_encoder_runtime(folder / "cache", "bf16")
    bf16 = run("bf16")
    front = bundle.front_indices
    return {
        "runtimes": bf16.meta.get("encoder_runtimes"),
        "verdicts": {slot: v["why"] for slot, v in report.bf16.items()},
        "bf16 vs fp32": mesh_distances(reference, bf16, front),
        "other seed (scale)": mesh_distances(reference, other_seed, front),
    }


def load(size: str) -> ModelBundle:
    if size == "full":
        from bench_setup import FULL, load_bundle, model_files

        return load_bundle(model_files(FULL, default_cache_dir() / "benchmark_full_size"), "fp32")
    return load_model_bundle(resolve_assets({}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=("demo", "full"), default="full")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--meshes", action="store_true", help="DEMO weights: the meshes' distance (fast preset)")
    parser.add_argument("--json", type=Path)
    opts = parser.parse_args(argv)
    configure_cpu_threads(opts.threads)
    report: dict[str, Any] = {"size": opts.size, "threads": torch.get_num_threads(), "native_bf16": native_bf16()}
    bundle = load(opts.size)
    seen: set[str] = set()
    with tempfile.TemporaryDirectory(prefix="ofer-bf16-") as tmp:
        rows = []
        for group in bundle.encoder_sharing.groups:
            slot = group[0]
            kind, name = slot.split(".")
            if opts.size == "full" and name in seen:
                continue  # random copies of one architecture time the same: one of each
            seen.add(name)
            rows.append(encoder_row(slot, getattr(getattr(bundle, kind), name), Path(tmp), opts.rounds))
        report["encoders"] = rows
        if opts.meshes:
            report["meshes"] = mesh_effect(Path(tmp))
            print(json.dumps(report["meshes"]), flush=True)
    if opts.json:
        opts.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
