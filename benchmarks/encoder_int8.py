"""Are int8 encoders (ONNX Runtime dynamic quantisation) close enough, and are they faster?

Run: ``.venv/bin/python benchmarks/encoder_int8.py [--size demo|full] [--photos 6] [--repeats 5]``
(numbers in benchmarks/README.md, "Encoders: int8?").

For each distinct encoder (ArcFace, FaRL): export to ONNX (fp32), quantise the weights of its MatMul / Gemm
(and, with ``--conv``, Conv) nodes to int8 with ``onnxruntime.quantization.quantize_dynamic``, then on the
crops of ``--photos`` re-framings of the bundled sample photo:

- **cosine similarity** of the int8 embedding to the torch fp32 one (min and mean over the photos);
- **time** of one image: torch fp32, ONNX Runtime fp32, ONNX Runtime int8 (median of ``--repeats``);
- with ``--size demo`` (trained DEMO weights): the effect on the **sampled meshes** — the whole
  reconstruction with the int8 encoders against fp32, same seed: the mean distance of every identity sample
  (paired) and of the mean head, front-face vertices, in mm.

``--cosine-sweep 0.9999,0.999,0.99,0.95`` (DEMO weights): how far the sampled meshes move when every
embedding is turned to exactly a given cosine of itself (a fixed random direction orthogonal to it), against
the unperturbed reconstruction and, for scale, against the same reconstruction with another seed — the
evidence for ``encoder_quantise.MIN_INT8_COSINE``.

``--size full`` uses the official-size random networks of ``benchmarks/reconstruction.py`` (timings are the
real model cost; the similarities of random weights say little about trained ones).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from inference_server.assets_config import default_cache_dir, resolve_assets
from inference_server.backends import OnnxNetwork, configure_cpu_threads
from inference_server.model_bundle import ModelBundle, load_model_bundle
from inference_server.onnx_export import export_arcface, export_clip_visual
from inference_server.pipeline import Reconstructor
from inference_server.preprocess.crops import arcface_crop, farl_crop
from inference_server.preprocess.detect import FaceDetector
from inference_server.preprocess.image import load_image
from inference_server.protocol import ReconstructArgs

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "inference_server" / "assets" / "sample_occluded_face.jpg"


def crops(count: int, folder: Path) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(ArcFace blob, FaRL image) of ``count`` re-framings of the sample photo."""
    detector = FaceDetector()
    image = Image.open(SAMPLE).convert("RGB")
    w, h = image.size
    out = []
    for i in range(count):
        path = folder / f"photo_{i}.jpg"
        image.crop(((i * 9) % 40, (i * 13) % 40, w - (i * 7) % 30, h)).save(path, quality=92)
        loaded = load_image(path)
        detection = detector.detect(loaded)
        arc = arcface_crop(loaded.rgb, detection.points5, "BGR")
        far = farl_crop(loaded.rgb, detection.box)
        out.append((torch.from_numpy(np.ascontiguousarray(arc.blob))[None], torch.from_numpy(far.tensor)[None]))
    return out


def median_time(fn: Any, x: torch.Tensor, repeats: int) -> float:
    fn(x)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def quantise(source: Path, target: Path, conv: bool) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    ops = ["MatMul", "Gemm", *(["Conv"] if conv else [])]
    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, op_types_to_quantize=ops)
    return target


def encoder_rows(bundle: ModelBundle, inputs: list[tuple[torch.Tensor, torch.Tensor]], folder: Path,
                 opts: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, OnnxNetwork]]:  # fmt: skip
    rows, int8 = [], {}
    seen: set[str] = set()
    for group in bundle.encoder_sharing.groups:
        slot = group[0]
        kind, name = slot.split(".")
        if opts.size == "full" and name in seen:
            continue  # random copies of one architecture time the same: one of each
        seen.add(name)
        module = getattr(getattr(bundle, kind), name).float().eval()
        export = export_arcface if name == "arcface" else export_clip_visual
        fp32_path = export(module, folder / f"{slot}.onnx")
        int8_path = quantise(fp32_path, folder / f"{slot}.int8.onnx", opts.conv)
        ort32, ort8 = OnnxNetwork.from_path(fp32_path, device="cpu"), OnnxNetwork.from_path(int8_path, device="cpu")
        pick = 0 if name == "arcface" else 1
        with torch.no_grad():
            ref = [module(x[pick]).float() for x in inputs]
        cos = [float(torch.nn.functional.cosine_similarity(r, ort8(x[pick]).float()).item()) for r, x in
               zip(ref, inputs, strict=True)]  # fmt: skip
        x0 = inputs[0][pick]
        with torch.no_grad():
            ms = {name: 1000 * median_time(fn, x0, opts.repeats) for name, fn in
                  (("torch_fp32_ms", module), ("ort_fp32_ms", ort32), ("ort_int8_ms", ort8))}  # fmt: skip
        sizes = {"fp32_mb": fp32_path.stat().st_size / 2**20, "int8_mb": int8_path.stat().st_size / 2**20}
        rows.append({"encoder": slot, "used_by": group, "cos_min": round(min(cos), 5),
                     "cos_mean": round(statistics.mean(cos), 5)}
                    | {k: round(v, 1) for k, v in (ms | sizes).items()})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
        for member in group:
            int8[member] = ort8
    return rows, int8


def mesh_effect(int8: dict[str, OnnxNetwork], opts: argparse.Namespace, folder: Path) -> dict[str, float]:
    """The reconstruction with int8 encoders against fp32, same seed: distances in mm (front face)."""
    args = ReconstructArgs(image=str(SAMPLE), output="", n_shapes=100, n_expressions=100, top_k=10, seed=0,
                           device="cpu", extra={"preset": "fast"})  # fmt: skip
    results = {}
    for label in ("fp32", "int8"):
        reconstructor = Reconstructor(resolve_assets({}), device="cpu")
        bundle = reconstructor.bundle(torch.device("cpu"))
        if label == "int8":
            bundle.runners.update(int8)
        out = reconstructor.run(replace(args, output=str(folder / f"{label}.npz")), lambda *a: None, lambda: False)
        results[label] = (out.result, bundle.front_indices)
    (a, front), (b, _) = results["fp32"], results["int8"]
    ida, idb = a.identity_vertices[:, front] * 1000, b.identity_vertices[:, front] * 1000
    exa, exb = a.expression_vertices[:, front] * 1000, b.expression_vertices[:, front] * 1000
    return {
        "top identity, same rank (mm)": float(np.linalg.norm(ida[0] - idb[0], axis=-1).mean()),
        "kept identities, paired (mm)": float(np.linalg.norm(ida - idb, axis=-1).mean()),
        "mean kept identity (mm)": float(np.linalg.norm(ida.mean(0) - idb.mean(0), axis=-1).mean()),
        "expressions, mean head (mm)": float(np.linalg.norm(exa.mean(0) - exb.mean(0), axis=-1).mean()),
        "same top identity": float(np.allclose(a.identity_params[0], b.identity_params[0], atol=1e-3)),
    }


def arcface_conv_rows(bundle: ModelBundle, folder: Path, repeats: int) -> list[dict[str, Any]]:
    """ArcFace's convolutions in int8: dynamic (ConvInteger) and static QDQ calibrated on the probe crops,
    against ONNX Runtime fp32 — time of one crop and cosine over the probe crops."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from inference_server.encoder_quantise import probe_crops

    module = bundle.idgen.arcface.float().eval()
    crops = probe_crops("arcface", module.config.input_size)
    fp32_path = export_arcface(module, folder / "arcface.onnx")

    name = OnnxNetwork.from_path(fp32_path, device="cpu").input_names[0]

    class Reader(CalibrationDataReader):  # the probe crops, one at a time
        def __init__(self) -> None:
            self.items = iter([{name: c.numpy()} for c in crops])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    variants = {"ort fp32": fp32_path}
    variants["dynamic Conv+MatMul+Gemm"] = quantise(fp32_path, folder / "arcface.dyn.onnx", conv=True)
    static = folder / "arcface.qdq.onnx"
    quantize_static(str(fp32_path), str(static), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8)  # fmt: skip
    variants["static QDQ (probe-calibrated)"] = static
    reference = OnnxNetwork.from_path(fp32_path, device="cpu")
    rows = []
    for label, path in variants.items():
        network = OnnxNetwork.from_path(path, device="cpu")
        cosines = [agreement_cos(reference(c), network(c)) for c in crops]
        rows.append({"arcface": label, "ms": round(1000 * median_time(network, crops[0], repeats), 1),
                     "cos_min": round(min(cosines), 5), "mb": round(path.stat().st_size / 2**20, 1)})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    return rows


def agreement_cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.double(), b.double()).item())


def turned(embedding: torch.Tensor, cosine: float, generator: torch.Generator) -> torch.Tensor:
    """Each row of ``embedding`` rotated to exactly ``cosine`` of itself (same norm), towards a random
    direction orthogonal to it."""
    direction = torch.randn(embedding.shape, generator=generator, dtype=torch.float64)
    e = embedding.double()
    unit = e / e.norm(dim=1, keepdim=True)
    direction -= (direction * unit).sum(dim=1, keepdim=True) * unit
    direction *= e.norm(dim=1, keepdim=True) / direction.norm(dim=1, keepdim=True)
    return (cosine * e + (1 - cosine**2) ** 0.5 * direction).to(embedding.dtype)


def mesh_distances(a: Any, b: Any, front: np.ndarray) -> dict[str, float]:
    ida, idb = a.identity_vertices[:, front] * 1000, b.identity_vertices[:, front] * 1000
    exa, exb = a.expression_vertices[:, front] * 1000, b.expression_vertices[:, front] * 1000
    return {
        "top identity (mm)": round(float(np.linalg.norm(ida[0] - idb[0], axis=-1).mean()), 4),
        "mean kept identity (mm)": round(float(np.linalg.norm(ida.mean(0) - idb.mean(0), axis=-1).mean()), 4),
        "expressions, mean head (mm)": round(float(np.linalg.norm(exa.mean(0) - exb.mean(0), axis=-1).mean()), 4),
    }


def cosine_sweep(levels: list[float], folder: Path, directions: int) -> list[dict[str, Any]]:
    """Meshes of the DEMO fast reconstruction with every embedding turned to each cosine level."""
    args = ReconstructArgs(image=str(SAMPLE), output="", n_shapes=100, n_expressions=100, top_k=10, seed=0,
                           device="cpu", extra={"preset": "fast"})  # fmt: skip
    reconstructor = Reconstructor(resolve_assets({}), device="cpu")
    bundle = reconstructor.bundle(torch.device("cpu"))
    plain = dict(bundle.runners)

    def run(label: str, seed: int = 0) -> Any:
        out = replace(args, output=str(folder / f"{label}.npz"), seed=seed)
        return reconstructor.run(out, lambda *a: None, lambda: False).result

    reference = run("reference")
    rows: list[dict[str, Any]] = [
        {"cosine": "other seed (scale)"} | mesh_distances(reference, run("seed1", seed=1), bundle.front_indices)
    ]
    print(json.dumps(rows[-1]), flush=True)
    for level in levels:
        for direction in range(directions):
            generator = torch.Generator().manual_seed(1000 + direction)
            for slot in (s for s in plain if s.endswith(("arcface", "farl"))):
                bundle.runners[slot] = lambda x, f=plain[slot], c=level, g=generator: turned(f(x), c, g)
            rows.append({"cosine": level, "direction": direction} | mesh_distances(reference, run(f"c{level}"),
                                                                                   bundle.front_indices))  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
        bundle.runners.update(plain)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=("demo", "full"), default="demo")
    parser.add_argument("--photos", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--conv", action="store_true", help="also quantise Conv nodes (ArcFace)")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--arcface-conv", action="store_true", help="only ArcFace's convolutions in int8")
    parser.add_argument("--cosine-sweep", help="comma-separated cosine levels (DEMO weights): meshes only")
    parser.add_argument("--directions", type=int, default=2, help="random directions per cosine level")
    parser.add_argument("--json", type=Path)
    opts = parser.parse_args(argv)
    configure_cpu_threads(opts.threads)
    if opts.size == "full":
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from bench_setup import FULL, load_bundle, model_files

        bundle = load_bundle(model_files(FULL, default_cache_dir() / "benchmark_full_size"), "fp32")
    else:
        bundle = load_model_bundle(resolve_assets({}))
    report: dict[str, Any] = {"size": opts.size, "threads": torch.get_num_threads()}
    if opts.cosine_sweep:
        with tempfile.TemporaryDirectory(prefix="ofer-sweep-") as tmp:
            levels = [float(v) for v in opts.cosine_sweep.split(",")]
            report["sweep"] = cosine_sweep(levels, Path(tmp), opts.directions)
        if opts.json:
            opts.json.write_text(json.dumps(report, indent=1))
        return 0
    with tempfile.TemporaryDirectory(prefix="ofer-int8-") as tmp:
        folder = Path(tmp)
        if opts.arcface_conv:
            report["arcface_conv"] = arcface_conv_rows(bundle, folder, opts.repeats)
            if opts.json:
                opts.json.write_text(json.dumps(report, indent=1))
            return 0
        inputs = crops(opts.photos, folder)
        report["encoders"], int8 = encoder_rows(bundle, inputs, folder, opts)
        if opts.size == "demo":
            report["meshes"] = mesh_effect(int8, opts, folder)
            print(json.dumps(report["meshes"]), flush=True)
    if opts.json:
        opts.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
