"""IdRank on a cache: the frozen IdGen's samples and the frozen encoders' contexts computed once per image.

Why a separate path from ``trainer.py``: with IdGen and the encoders frozen, everything but the small rank
MLP is a fixed function of the image, so the ranker can be iterated on in seconds per hundred steps. The
samples are drawn as the benchmark and the worker draw them (DDIM 25, η = 1), so training matches inference.

What made the DEMO ranker learn (demo-weights/6; demo-weights/5 stayed at a ListNet loss of ln 32):

* **Renders IdGen never saw** (the caller's choice, ``train/demo.py``): on its own training renders IdGen's
  samples sit near the truth and a ranker learns to trust them; on new faces they do not.
* **The first layer sees each sample itself, relative to the mean head, in units of a few mm.** The rank
  input is [mean ‖ P_i − mean]; equal weights on both halves read P_i, and the mean head is folded into the
  bias. Training runs on (x − [mean head ‖ 0]) / ``input_scale_mm`` with the context divided by its
  per-channel spread, and :func:`fold_normalisation` writes both into the weights afterwards, so the saved
  network takes the raw input of :func:`~inference_server.nets.idrank.build_rank_input` and the raw context:
  same architecture, same file format. The context's FiLM weights start at zero, so the ranker starts blind
  to the photo and learns what the photo adds.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import torch

from ..checkpoints import LoadedNetworks
from ..diffusion import sample
from ..flame.layer import FlameLayer
from ..nets.idrank import IdRank, RankLayer, build_rank_input
from .datasets import CropDataset, read_index
from .initialisation import start_on_deviations

__all__ = ["RankCache", "RankFitSettings", "cache_rank_inputs", "fit_ranker", "fold_normalisation"]


@dataclass(frozen=True)
class RankFitSettings:
    steps: int = 500
    batch_images: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    temperature_mm: float = 1.0
    input_scale_mm: float = 4.0
    seed: int = 0


@dataclass
class RankCache:
    """Per image: N sampled front-face meshes, the true one (mm), and IdRank's [FaRL ‖ ArcFace] context."""

    samples_mm: torch.Tensor  # (I, N, V, 3)
    truth_mm: torch.Tensor  # (I, V, 3)
    context: torch.Tensor  # (I, 1024)

    def save(self, path: Path) -> None:
        np.savez(path, samples=self.samples_mm.numpy(), truth=self.truth_mm.numpy(), ctx=self.context.numpy())

    @classmethod
    def load(cls, *paths: Path) -> RankCache:
        parts = [np.load(p) for p in paths]
        return cls(*(torch.as_tensor(np.concatenate([p[k] for p in parts])) for k in ("samples", "truth", "ctx")))


@torch.no_grad()
def cache_rank_inputs(
    idgen: LoadedNetworks,
    idrank: LoadedNetworks,
    flame: FlameLayer,
    front: torch.Tensor,
    data: Path,
    indices: range,
    *,
    n_samples: int = 32,
    sampler_steps: int = 25,
    seed: int = 7_000_000,
    progress: Callable[[int, int], None] | None = None,
) -> RankCache:
    """IdGen samples (DDIM, η = 1, seed ``seed + 1000 i`` for image i, as the benchmark seeds its images)."""
    assert idgen.denoiser is not None and idrank.farl is not None
    records = read_index(data)
    crops = CropDataset(records)
    samples, truths, contexts = [], [], []
    for done, i in enumerate(indices):
        batch = crops.batch([i])
        shapes = sample(
            idgen.denoiser, idgen.arcface(batch.blob), n_samples, idgen.denoiser.config.feature_dim,
            sampler="ddim", steps=sampler_steps, eta=1.0, seed=seed + 1000 * i,
        )  # fmt: skip
        samples.append((flame.neutral(shapes).vertices[:, front] * 1000.0).float())
        truth = torch.as_tensor(np.asarray(records[i].shape)[None]).float()
        truths.append((flame.neutral(truth).vertices[0, front] * 1000.0).float())
        contexts.append(torch.cat([idrank.farl(batch.image), idrank.arcface(batch.blob)], dim=1)[0].float())
        if progress:
            progress(done + 1, len(indices))
    return RankCache(torch.stack(samples), torch.stack(truths), torch.stack(contexts))


def ranking_errors_mm(samples_mm: torch.Tensor, truth_mm: torch.Tensor) -> torch.Tensor:
    """(I, N, V, 3), (I, V, 3) → (I, N): mean |GT − P_i| over vertices and xyz (the training target's e)."""
    return (samples_mm - truth_mm[:, None]).abs().mean(dim=(2, 3))


def fit_ranker(
    rank_net: IdRank,
    cache: RankCache,
    mean_head_mm: torch.Tensor,
    settings: RankFitSettings | None = None,
    log: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Initialise and train ``rank_net`` in place on ``cache`` (ListNet); returns the losses."""
    settings = settings or RankFitSettings()
    inputs = torch.stack([build_rank_input(s) for s in cache.samples_mm])  # (I, N, 6V)
    half = inputs.shape[-1] // 2
    offset = torch.cat([mean_head_mm.reshape(-1).float(), torch.zeros(half)])
    context_scale = cache.context.std(dim=0).clamp_min(1e-3)
    errors = ranking_errors_mm(cache.samples_mm, cache.truth_mm)
    torch.manual_seed(settings.seed)
    _start_on_samples(rank_net, settings.input_scale_mm)
    optimiser = torch.optim.AdamW(rank_net.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)

    def factor(step: int) -> float:
        warm = min(1.0, (step + 1) / settings.warmup_steps)
        return warm * 0.5 * (1.0 + math.cos(math.pi * min(1.0, step / settings.steps)))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, factor)
    generator = torch.Generator().manual_seed(settings.seed)
    losses = []
    for step in range(settings.steps):
        rows = torch.randint(0, len(inputs), (settings.batch_images,), generator=generator)
        x = ((inputs[rows] - offset) / settings.input_scale_mm).reshape(-1, inputs.shape[-1])
        n = inputs.shape[1]
        context = (cache.context[rows] / context_scale).repeat_interleave(n, dim=0)
        logits = rank_net(x, context).view(-1, n)
        target = torch.softmax(-errors[rows] / settings.temperature_mm, dim=1)
        loss = -(target * torch.log_softmax(logits, dim=1)).sum(dim=1).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        losses.append(float(loss.detach()))
        if log:
            log(step, losses[-1])
    fold_normalisation(rank_net, offset, settings.input_scale_mm, context_scale)
    return losses


@torch.no_grad()
def _start_on_samples(rank_net: IdRank, input_scale_mm: float) -> None:
    """``start_on_deviations``, then the mean half gets the deviation half's weights (the layer reads P_i)
    and the context's FiLM weights start at zero (sigmoid(0) = ½ everywhere: blind to the photo)."""
    start_on_deviations(rank_net)
    layers = _rank_layers(rank_net)
    first = layers[0].mlp
    half = first.in_features // 2
    first.weight[:, :half] = first.weight[:, half:]
    first.weight.mul_(input_scale_mm)  # on inputs divided by the scale: the same function as unscaled
    for layer in layers:
        layer.scale.weight.zero_()
        layer.shift.weight.zero_()


@torch.no_grad()
def fold_normalisation(rank_net: IdRank, offset: torch.Tensor, scale: float, context_scale: torch.Tensor) -> None:
    """Rewrite the weights so the network on raw inputs equals the trained one on normalised inputs."""
    layers = _rank_layers(rank_net)
    first = layers[0].mlp
    first.weight.div_(scale)
    first.bias.sub_((first.weight.double() @ offset.double()).float())
    for layer in layers:
        layer.scale.weight.div_(context_scale[None])
        layer.shift.weight.div_(context_scale[None])


def _rank_layers(rank_net: IdRank) -> list[RankLayer]:
    return [cast(RankLayer, layer) for layer in rank_net.ranklayers]
