"""Several photos of one person: is the pooled identity better than one photo's? (synthetic, with ground truth)

Each **triple** (``views`` renders, 3 by default) shares one identity (shape coefficients) and differs in
everything else: head pose, expression and jaw, light, skin tone, background, and occluder (each view a
different one). The renders come from the project's renderer (``train.synthetic``), the crops from the known
five points (no detector, as in ``benchmark.py``), the encodings, samples and ranking from the worker's own
stages (``photo_inputs.encode``, ``identity_stage``).

Per triple, from one pooled draw (N samples from each view, view p with seed ``photo_seed(seed_t, p)``):

- **single** (per view): the sample that view's IdRank ranks first among that view's own N samples — exactly
  what a single-photo reconstruction of that view with that seed returns;
- **pooled**: the sample the pooled ranking ranks first among all P·N (every view's IdRank scores every
  sample, plus each sample's density under every view's own IdGen cloud: ``identity_consensus``); also the
  pooled choice of the **IdRank terms alone** (the rule before the density term), from the same draw;
- references: the **mean of the single choices** as one mesh (a naive fusion), view 0 alone ranking P·N
  samples of its own (**more samples**: separates "more views" from "more samples"), and the **oracle** (the
  pool's best sample).

Error of a mesh: mean distance over the front-face vertices to the true neutral head, mm, no alignment
(``metrics.vertex_errors_mm``, as the occlusion benchmark).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from ..flame.layer import FlameLayer
from ..identity_stage import IdentityConditions, photo_seed, sample_and_rank_identities
from ..model_bundle import ModelBundle
from ..photo_inputs import encode
from ..preprocess.crops import arcface_crop, farl_crop
from ..preprocess.face_box import crop_box
from ..train.synthetic import OCCLUDERS, SyntheticConfig, SyntheticRenderer, SyntheticSample
from .metrics import vertex_errors_mm


@dataclass(frozen=True)
class MultiviewSettings:
    triples: int = 30
    views: int = 3
    n_per_photo: int = 32
    sampler: str = "ddim"
    steps: int = 50
    eta: float = 1.0
    seed: int = 0
    size: int = 192
    channel_order: str = "BGR"


@dataclass
class MultiviewResult:
    triples: int
    views: int
    pooled_mm: float
    pooled_idrank_only_mm: float  # the pooled choice without the density term (summed IdRank log-probabilities)
    single_mean_mm: float  # the mean over views of each single photo's choice: the acceptance comparison
    single_best_view_mm: float  # the best single view per triple (needs the ground truth to pick)
    fused_singles_mm: float  # the mean mesh of the single choices
    more_samples_mm: float  # view 0 alone ranking P·N samples of its own
    oracle_mm: float  # the best sample of the pool
    pooled_better: int  # triples whose pooled error is below the mean of their single errors
    settings: dict[str, object] = field(default_factory=dict)
    per_triple: list[dict[str, Any]] = field(default_factory=list)

    def table(self) -> str:
        rows = [
            ("pooled identity (every view's IdRank + where the views' IdGen samples agree)", self.pooled_mm),
            ("pooled identity, IdRank terms alone (every view scores every sample)", self.pooled_idrank_only_mm),
            ("single photo, mean over the views", self.single_mean_mm),
            ("single photo, best view (chosen with the ground truth)", self.single_best_view_mm),
            ("mean mesh of the single-photo choices", self.fused_singles_mm),
            (f"view 0 alone with {self.views}×N samples", self.more_samples_mm),
            ("oracle: best sample of the pool", self.oracle_mm),
        ]
        lines = ["| front-face vertex error | mm |", "|---|---|"]
        lines += [f"| {name} | {value:.3f} |" for name, value in rows]
        lines.append(f"| triples where pooled < mean of singles | {self.pooled_better} of {self.triples} |")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def render_views(
    renderer: SyntheticRenderer, rng: np.random.Generator, views: int
) -> tuple[np.ndarray, list[SyntheticSample]]:
    """One identity drawn as the data set draws it, rendered ``views`` times, each with its own occluder."""
    shape = renderer.draw_parameters(rng)["shape"]
    occluders = rng.choice(sorted(OCCLUDERS), size=views, replace=views > len(OCCLUDERS))
    return shape, [renderer.render(rng, shape=shape, occluder=str(name)) for name in occluders]


def view_conditions(
    bundle: ModelBundle, samples: list[SyntheticSample], channel_order: str, device: torch.device
) -> IdentityConditions:
    """The views' identity conditions from crops cut at the known five points."""
    convention = "five_point" if bundle.demo else "scrfd"  # synthetic boxes are five-point boxes either way
    rows = []
    for sample in samples:
        arc = arcface_crop(sample.image, sample.points5, channel_order)  # type: ignore[arg-type]
        far = farl_crop(sample.image, crop_box(sample.box, sample.points5, convention))
        rows.append(encode(bundle, arc, far, device))
    return IdentityConditions(torch.cat([r.idgen for r in rows]), torch.cat([r.idrank for r in rows]))


def _triple_errors(
    bundle: ModelBundle, flame: FlameLayer, conditions: IdentityConditions, truth_mm: np.ndarray,
    settings: MultiviewSettings, seed: int, device: torch.device,
) -> dict[str, Any]:  # fmt: skip
    common = dict(sampler=settings.sampler, steps=settings.steps, eta=settings.eta, device=device,
                  progress=lambda *a: None, should_cancel=lambda: False)  # fmt: skip
    n, views = settings.n_per_photo, conditions.n_photos
    pooled = sample_and_rank_identities(bundle, flame, conditions, n_per_photo=n, top_k=1, seed=seed, **common)  # type: ignore[arg-type]
    front = torch.as_tensor(bundle.front_indices, device=pooled.neutral.device)
    errors = vertex_errors_mm(pooled.neutral[:, front].double().cpu().numpy() * 1000.0, truth_mm)
    # View p alone: its IdRank over its own N samples (argmax of a log-softmax over more samples is the same).
    single = [p * n + int(np.argmax(pooled.per_photo_log_probabilities[p, p * n : (p + 1) * n])) for p in range(views)]
    fused = pooled.neutral[single][:, front].mean(dim=0, keepdim=True).double().cpu().numpy() * 1000.0
    alone = sample_and_rank_identities(
        bundle, flame, IdentityConditions(conditions.idgen[:1], conditions.idrank[:1]), n_per_photo=n * views,
        top_k=1, seed=seed, **common,  # type: ignore[arg-type]
    )  # fmt: skip
    alone_mm = alone.neutral[alone.keep[:1]][:, front].double().cpu().numpy() * 1000.0
    return {
        "pooled": float(errors[pooled.keep[0]]),
        "pooled_idrank_only": float(errors[int(np.argmax(pooled.per_photo_log_probabilities.sum(axis=0)))]),
        "single": [float(errors[i]) for i in single],
        "fused_singles": float(vertex_errors_mm(fused, truth_mm)[0]),
        "more_samples": float(vertex_errors_mm(alone_mm, truth_mm)[0]),
        "oracle": float(errors.min()),
        "pooled_from_view": int(pooled.source_photo[pooled.keep[0]]),
        "seeds": [photo_seed(seed, p) for p in range(views)],
    }


@torch.no_grad()
def run_multiview(
    bundle: ModelBundle,
    flame: FlameLayer,
    settings: MultiviewSettings | None = None,
    *,
    device: torch.device | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> MultiviewResult:
    """Render ``settings.triples`` synthetic triples and measure pooled against single-photo identity errors."""
    settings = settings or MultiviewSettings()
    device = device or torch.device("cpu")
    renderer = SyntheticRenderer(bundle.flame, SyntheticConfig(size=settings.size))
    rows: list[dict[str, Any]] = []
    for t in range(settings.triples):
        shape, samples = render_views(renderer, np.random.default_rng([settings.seed, t]), settings.views)
        truth = flame.neutral(torch.as_tensor(shape[None], dtype=flame.dtype, device=device)).vertices[0].cpu()
        truth_mm = truth[torch.as_tensor(bundle.front_indices)].double().numpy() * 1000.0
        conditions = view_conditions(bundle, samples, settings.channel_order, device)
        row = _triple_errors(bundle, flame, conditions, truth_mm, settings, settings.seed + 1000 * t, device)
        row |= {"triple": t, "occluders": [s.occluder for s in samples],
                "yaw_deg": [round(s.yaw_deg, 1) for s in samples]}  # fmt: skip
        rows.append(row)
        if progress:
            progress(t + 1, settings.triples)
    singles = np.array([r["single"] for r in rows], dtype=np.float64)  # (T, P)
    pooled = np.array([r["pooled"] for r in rows], dtype=np.float64)
    return MultiviewResult(
        triples=len(rows),
        views=settings.views,
        pooled_mm=float(pooled.mean()),
        pooled_idrank_only_mm=float(np.mean([r["pooled_idrank_only"] for r in rows])),
        single_mean_mm=float(singles.mean()),
        single_best_view_mm=float(singles.min(axis=1).mean()),
        fused_singles_mm=float(np.mean([r["fused_singles"] for r in rows])),
        more_samples_mm=float(np.mean([r["more_samples"] for r in rows])),
        oracle_mm=float(np.mean([r["oracle"] for r in rows])),
        pooled_better=int(np.sum(pooled < singles.mean(axis=1))),
        settings=asdict(settings),
        per_triple=rows,
    )
