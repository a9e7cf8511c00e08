"""The synthetic occlusion benchmark: model files + a held-out synthetic set with ground truth → the table.

Per image the encoders see the crops made from the known five points (no detector), IdGen draws N shapes,
IdRank scores them, ExpGen draws N expressions; the errors use the FLAME (DEMO) head's front-face
vertices. Occluded vertices are the front-face vertices the occluder hides; visible ones are in view and
not occluded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..checkpoints import LoadedNetworks, load_networks
from ..diffusion import sample
from ..flame.layer import FlameLayer
from ..flame.model_data import FlameModelData
from ..hypotheses import per_vertex_spread
from ..nets.idrank import build_rank_input
from ..train.datasets import CropDataset, read_index
from .metrics import hypothesis_errors, region_spread, similarity_aligned, vertex_errors_mm


@dataclass(frozen=True)
class BenchmarkSettings:
    n_samples: int = 32
    sampler: str = "ddim"
    steps: int = 50
    eta: float = 1.0
    seed: int = 0
    channel_order: str = "BGR"


@dataclass
class BenchmarkResult:
    images: int
    occluded_images: int
    ranked_mm: float
    average_mm: float
    oracle_mm: float
    samples_mean_mm: float  # the mean of the N samples as one mesh
    nearest_mean_mm: float  # the sample nearest that mean: a ranker that ignores the photo
    mean_head_mm: float  # the data's mean head (zero shape): what a method blind to the photo scores
    shape_spread_occluded_mm: float
    shape_spread_visible_mm: float
    #: after a similarity alignment of the samples to their mean (metrics.similarity_aligned)
    aligned_spread_occluded_mm: float
    aligned_spread_visible_mm: float
    #: the same, for N other faces of the set (their true shapes): the spread of a method blind to the photo
    blind_spread_occluded_mm: float
    blind_spread_visible_mm: float
    expression_spread_occluded_mm: float
    expression_spread_visible_mm: float
    settings: dict[str, object] = field(default_factory=dict)
    per_image: list[dict[str, float]] = field(default_factory=list)

    def table(self) -> str:
        rows = [
            ("front-face vertex error, ranked (IdRank choice)", self.ranked_mm),
            ("front-face vertex error, average of samples", self.average_mm),
            ("front-face vertex error, oracle best of N", self.oracle_mm),
            ("front-face vertex error, mean of the N samples (one mesh)", self.samples_mean_mm),
            ("front-face vertex error, sample nearest that mean (a ranker blind to the photo)", self.nearest_mean_mm),
            ("front-face vertex error, mean head (ignores the photo)", self.mean_head_mm),
            ("shape spread, occluded vertices", self.shape_spread_occluded_mm),
            ("shape spread, visible vertices", self.shape_spread_visible_mm),
            ("shape spread aligned (similarity), occluded vertices", self.aligned_spread_occluded_mm),
            ("shape spread aligned (similarity), visible vertices", self.aligned_spread_visible_mm),
            ("other faces' spread aligned (blind to the photo), occluded", self.blind_spread_occluded_mm),
            ("other faces' spread aligned (blind to the photo), visible", self.blind_spread_visible_mm),
            ("expression spread, occluded vertices", self.expression_spread_occluded_mm),
            ("expression spread, visible vertices", self.expression_spread_visible_mm),
        ]
        lines = ["| metric | mm |", "|---|---|"] + [f"| {name} | {value:.3f} |" for name, value in rows]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _flame(head: FlameModelData | None) -> FlameModelData:
    if head is not None:
        return head
    from ..demo.head import generate_demo_head

    return generate_demo_head()


@torch.no_grad()
def run_benchmark(
    weights: dict[str, Path] | dict[str, LoadedNetworks],
    data: Path,
    settings: BenchmarkSettings | None = None,
    *,
    head: FlameModelData | None = None,
    limit: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> BenchmarkResult:
    settings = settings or BenchmarkSettings()
    nets = {k: v if isinstance(v, LoadedNetworks) else load_networks(v) for k, v in weights.items()}
    for networks in nets.values():
        networks.eval()
        for module in networks.modules().values():
            module.float()
    idgen, expgen, idrank = nets["idgen"], nets["expgen"], nets["idrank"]
    assert idgen.denoiser is not None and expgen.denoiser is not None and idrank.rank_net is not None
    assert expgen.farl is not None and idrank.farl is not None
    flame_data = _flame(head)
    flame = FlameLayer(flame_data)
    front = torch.as_tensor(np.asarray(flame_data.front_face_indices))
    records = read_index(Path(data))[:limit]
    mean_head_mm = flame.neutral(torch.zeros(1, 300)).vertices[0, front].double().numpy() * 1000.0
    truths = torch.as_tensor(np.stack([r.shape for r in records]))  # type: ignore[misc]
    truths_mm = flame.neutral(truths).vertices[:, front].double().numpy() * 1000.0
    blind_n = min(settings.n_samples, len(records) - 1)
    crops = CropDataset(records, settings.channel_order)
    rows: list[dict[str, float]] = []
    shape_spreads, expression_spreads = [], []
    for i, record in enumerate(records):
        batch = crops.batch([i])
        assert record.label is not None and record.shape is not None and record.expression is not None
        with np.load(record.label) as label:
            occluded = np.asarray(label["front_occluded"], bool)
            visible = np.asarray(label["front_in_view"], bool) & ~occluded
        seed = settings.seed + 1000 * i
        kw = dict(sampler=settings.sampler, steps=settings.steps, eta=settings.eta)
        shapes = sample(idgen.denoiser, idgen.arcface(batch.blob), settings.n_samples, 300, seed=seed, **kw)  # type: ignore[arg-type]
        samples_mm = (flame.neutral(shapes).vertices[:, front] * 1000.0).double()
        truth_mm = torch.as_tensor(truths_mm[i])
        rank_context = torch.cat([idrank.farl(batch.image), idrank.arcface(batch.blob)], dim=1)
        x = build_rank_input(samples_mm.float())
        logits = idrank.rank_net(x, rank_context.expand(x.shape[0], -1)).double().numpy()
        errors = hypothesis_errors(vertex_errors_mm(samples_mm.numpy(), truth_mm.numpy()), logits)
        samples_np = samples_mm.numpy()
        nearest = int(np.argmin(vertex_errors_mm(samples_np, samples_np.mean(axis=0))))
        references = vertex_errors_mm(
            np.stack([samples_np.mean(axis=0), samples_np[nearest], mean_head_mm]), truth_mm.numpy()
        )
        exp_context = torch.cat([expgen.farl(batch.image), expgen.arcface(batch.blob)], dim=1)
        expressions = sample(expgen.denoiser, exp_context, settings.n_samples, 53, seed=seed + 1, **kw)  # type: ignore[arg-type]
        posed = flame.with_expression(torch.as_tensor(record.shape[None]), expressions[:, :50], expressions[:, 50:])
        exp_mm = posed.vertices[:, front].double().numpy() * 1000.0
        shape_region = region_spread(per_vertex_spread(samples_np), occluded, visible)
        aligned_region = region_spread(per_vertex_spread(similarity_aligned(samples_np)), occluded, visible)
        others = np.random.default_rng(seed).choice(np.delete(np.arange(len(records)), i), size=blind_n, replace=False)
        blind_region = region_spread(per_vertex_spread(similarity_aligned(truths_mm[others])), occluded, visible)
        exp_region = region_spread(per_vertex_spread(exp_mm), occluded, visible)
        if occluded.any() and visible.any():
            shape_spreads.append((shape_region.occluded, shape_region.visible, aligned_region.occluded,
                                  aligned_region.visible, blind_region.occluded, blind_region.visible))  # fmt: skip
            expression_spreads.append((exp_region.occluded, exp_region.visible))
        rows.append({
            "image": i, **asdict(errors), "samples_mean": float(references[0]),
            "nearest_mean": float(references[1]), "mean_head": float(references[2]),
            "occluded_vertices": float(occluded.mean()),
        })  # fmt: skip
        if progress:
            progress(i + 1, len(records))
    shape_pairs = np.array(shape_spreads) if shape_spreads else np.full((1, 6), np.nan)
    exp_pairs = np.array(expression_spreads) if expression_spreads else np.full((1, 2), np.nan)
    return BenchmarkResult(
        images=len(rows),
        occluded_images=len(shape_spreads),
        ranked_mm=float(np.mean([r["ranked"] for r in rows])),
        average_mm=float(np.mean([r["average"] for r in rows])),
        oracle_mm=float(np.mean([r["oracle"] for r in rows])),
        samples_mean_mm=float(np.mean([r["samples_mean"] for r in rows])),
        nearest_mean_mm=float(np.mean([r["nearest_mean"] for r in rows])),
        mean_head_mm=float(np.mean([r["mean_head"] for r in rows])),
        shape_spread_occluded_mm=float(shape_pairs[:, 0].mean()),
        shape_spread_visible_mm=float(shape_pairs[:, 1].mean()),
        aligned_spread_occluded_mm=float(shape_pairs[:, 2].mean()),
        aligned_spread_visible_mm=float(shape_pairs[:, 3].mean()),
        blind_spread_occluded_mm=float(shape_pairs[:, 4].mean()),
        blind_spread_visible_mm=float(shape_pairs[:, 5].mean()),
        expression_spread_occluded_mm=float(exp_pairs[:, 0].mean()),
        expression_spread_visible_mm=float(exp_pairs[:, 1].mean()),
        settings=asdict(settings),
        per_image=rows,
    )
