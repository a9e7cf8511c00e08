"""How far the fast samplers land from fidelity mode (1000-step DDPM), measured on FLAME meshes.

For one photo (the bundled sample) and the DEMO weights, every sampler draws 100 shape and 100 expression
samples per seed. Each set is turned into front-face meshes in mm: shapes as neutral heads, expressions on
the mean head. Two numbers per pair of sets:

- mean distance: the mean over front-face vertices of |mean mesh A - mean mesh B| (mm);
- spread ratio: mean per-vertex spread of A / that of B (spread = RMS distance to the mean mesh).

Every candidate is compared with every fidelity seed; the "noise floor" row compares fidelity seeds
with each other (what 100 samples can resolve at all). A candidate is as good as fidelity when its mean
distance is at the noise floor and its spread ratio is near 1.

Run: ``.venv/bin/python benchmarks/sampler_distance.py`` (several minutes on 2 cores: most of it is the
1000-step fidelity runs).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from inference_server.assets_config import resolve_assets
from inference_server.draw_stage import sample_coefficients
from inference_server.model_bundle import DenoiserModel
from inference_server.pipeline import SAMPLER_VARIANTS, Reconstructor, encode
from inference_server.preprocess.crops import arcface_crop, farl_crop
from inference_server.preprocess.image import load_image

SAMPLE = Path(__file__).resolve().parents[1] / "inference_server" / "assets" / "sample_occluded_face.jpg"
#: (label, contract sampler, steps, eta); the first is the reference.
CANDIDATES = (
    ("fidelity ddpm 1000", "ddpm", 1000, 0.0),
    ("dpmsolver (SDE 2M) 10", "dpmsolver", 10, 0.0),
    ("dpmsolver (SDE 2M) 20", "dpmsolver", 20, 0.0),
    ("dpmsolver (SDE 2M) 30", "dpmsolver", 30, 0.0),
    ("ddim eta=1 50", "ddim", 50, 1.0),
)


@dataclass
class MeshSets:
    shapes: np.ndarray  # (N, V, 3) mm
    expressions: np.ndarray  # (N, V, 3) mm


def mean_distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a.mean(0) - b.mean(0), axis=-1).mean())


def spread(a: np.ndarray) -> float:
    return float(np.sqrt(((a - a.mean(0)) ** 2).sum(-1).mean(0)).mean())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2, help="seeds per sampler (default 2)")
    parser.add_argument("--samples", type=int, default=100)
    args = parser.parse_args()

    device = torch.device("cpu")
    reconstructor = Reconstructor(resolve_assets({}), device="cpu")
    bundle = reconstructor.bundle(device)
    flame = reconstructor.flame_layer(bundle, device)
    image = load_image(str(SAMPLE))
    detection = reconstructor.detector().detect(image)
    enc = encode(bundle, arcface_crop(image.rgb, detection.points5), farl_crop(image.rgb, detection.box), device)
    front = torch.as_tensor(bundle.front_indices)

    def meshes(sampler: str, steps: int, eta: float, seed: int) -> MeshSets:
        def draw(model: DenoiserModel, context: torch.Tensor, draw_seed: int) -> torch.Tensor:
            return sample_coefficients(
                model, context, args.samples, sampler=SAMPLER_VARIANTS[sampler], steps=steps, eta=eta,
                seed=draw_seed, device=device, progress=lambda d, t: None, should_cancel=lambda: False,
            )  # fmt: skip

        shapes = draw(bundle.idgen_denoiser, enc.idgen, seed)
        exps = draw(bundle.expgen_denoiser, enc.expgen, seed + 1000)
        with torch.no_grad():
            neutral = flame.neutral(shapes).vertices[:, front] * 1000.0
            zero = torch.zeros(1, shapes.shape[1])
            posed = flame.with_expression(zero, exps[:, :50], exps[:, 50:]).vertices[:, front] * 1000.0
        return MeshSets(neutral.numpy(), posed.numpy())

    runs = {
        label: [meshes(sampler, steps, eta, seed) for seed in range(args.seeds)]
        for label, sampler, steps, eta in CANDIDATES
    }
    reference = runs[CANDIDATES[0][0]]
    print(f"{args.samples} samples x {args.seeds} seeds; distances in mm on {len(front)} front-face vertices")
    header = ("sampler", "shape mean dist", "shape spread ratio", "expr mean dist", "expr spread ratio")
    print(f"{header[0]:<30} {header[1]:>10} {header[2]:>19} {header[3]:>15} {header[4]:>18}")
    floor = list(itertools.combinations(reference, 2))
    rows = [("noise floor (fidelity seeds)", floor)]
    rows += [(label, list(itertools.product(runs[label], reference))) for label, *_ in CANDIDATES[1:]]
    for label, pairs in rows:
        values = [
            (
                mean_distance(a.shapes, b.shapes),
                spread(a.shapes) / spread(b.shapes),
                mean_distance(a.expressions, b.expressions),
                spread(a.expressions) / spread(b.expressions),
            )
            for a, b in pairs
        ]
        means = [statistics.fmean(column) for column in zip(*values, strict=True)]
        print(f"{label:<30} {means[0]:>10.3f} {means[1]:>19.3f} {means[2]:>15.3f} {means[3]:>18.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
