"""Supervised encoder warm-up: the stand-in for pretrained face encoders when there are none.

The paper's three networks start from ArcFace and FaRL pretrained on millions of faces; the DEMO recipe has
no such weights, and a diffusion loss alone teaches random encoders too slowly on a CPU. The warm-up first
regresses the run's target (shape for IdGen / IdRank, expression + jaw for ExpGen) from the encoders'
context through a temporary linear head.

Two choices are there to let it learn from scratch (README, "Demo weights"):

* **Batch statistics.** ArcFace keeps its BatchNorm layers in eval mode (running statistics) as the official
  encoder does; from random weights that means no normalisation at all. During the warm-up they normalise
  with the batch and update their running statistics, which the encoders then keep.
* **A loss that weighs what the image shows.** Shape coefficients are compared through the FLAME basis:
  the loss is the mean squared front-face vertex error of the regressed neutral head, divided by that of
  the data mean (1.0 = no better than the mean head). Standardised coefficients would give the many faint
  components that move no pixel the same weight as the ones that shape the face. Expression + jaw use
  standardised coefficients: all 53 are visible, and the jaw is a rotation, not a basis.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..flame.model_data import FlameModelData


@dataclass
class WarmupTarget:
    """What the warm-up head regresses and how its error is measured."""

    keep: torch.Tensor  # (K,) target coefficients that vary in the data
    centre: torch.Tensor  # (D,) data mean of the full target
    scale: torch.Tensor  # (D,) data std of the full target (>= 1e-6)
    #: (K, K) positive semi-definite: loss = dᵀ M d / normaliser for standardised errors d; None: mean d².
    metric: torch.Tensor | None
    normaliser: float

    def standardise(self, target: torch.Tensor) -> torch.Tensor:
        return ((target - self.centre) / self.scale)[:, self.keep]

    def loss(self, predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``predicted`` (B, K) standardised, ``target`` (B, D) raw → scalar, 1.0 = the data mean's error."""
        error = predicted - self.standardise(target)
        if self.metric is None:
            return error.pow(2).mean()
        return ((error @ self.metric) * error).sum(dim=1).mean() / self.normaliser

    def to(self, device: torch.device) -> WarmupTarget:
        metric = None if self.metric is None else self.metric.to(device)
        keep, centre, scale = self.keep.to(device), self.centre.to(device), self.scale.to(device)
        return WarmupTarget(keep, centre, scale, metric, self.normaliser)


def warmup_target(targets: np.ndarray, flame: FlameModelData | None = None) -> WarmupTarget:
    """The warm-up target of (N, D) training targets; with ``flame``, shape errors are vertex errors.

    ``flame`` needs front-face indices; the metric is Wᵀ W / (3F) where W maps standardised shape
    coefficients to the front-face vertex offsets (mm) of the neutral head.
    """
    targets = np.asarray(targets, dtype=np.float64)
    spread = targets.std(axis=0)
    keep = np.flatnonzero(spread > 1e-6)
    if len(keep) == 0:
        raise ValueError("every training target is the same: there is nothing to regress")
    scale = np.maximum(spread, 1e-6)
    metric = None
    normaliser = 1.0
    if flame is not None:
        if flame.front_face_indices is None:
            raise ValueError("the FLAME model has no front-face vertex list for the shape warm-up loss")
        front = np.asarray(flame.front_face_indices, dtype=np.int64)
        basis = np.asarray(flame.shapedirs)[front][:, :, : targets.shape[1]] * 1000.0  # (F, 3, D) mm per unit
        if basis.shape[2] != targets.shape[1]:
            raise ValueError(f"the FLAME model has {basis.shape[2]} shape components, the data {targets.shape[1]}")
        w = basis.reshape(-1, targets.shape[1])[:, keep] * scale[keep]  # (3F, K) mm per standard deviation
        metric_np = w.T @ w / len(front)
        centred = (targets - targets.mean(axis=0))[:, keep] / scale[keep]
        normaliser = float(np.mean(np.einsum("nk,kl,nl->n", centred, metric_np, centred)))
        metric = torch.as_tensor(metric_np, dtype=torch.float32)
    return WarmupTarget(
        keep=torch.as_tensor(keep),
        centre=torch.as_tensor(targets.mean(axis=0), dtype=torch.float32),
        scale=torch.as_tensor(scale, dtype=torch.float32),
        metric=metric,
        normaliser=max(normaliser, 1e-12),
    )


@contextmanager
def batch_statistics(encoders: Sequence[nn.Module | None]) -> Iterator[None]:
    """BatchNorm layers of ``encoders`` normalise with the batch and update their running statistics."""
    norms = [
        m for e in encoders if e is not None for m in e.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
    ]
    before = [m.training for m in norms]
    for m in norms:
        m.train()
    try:
        yield
    finally:
        for m, mode in zip(norms, before, strict=True):
            m.train(mode)


@contextmanager
def all_parameters_train(
    encoders: Sequence[nn.Module | None], fixed: Sequence[nn.Parameter]
) -> Iterator[list[nn.Parameter]]:
    """Every encoder parameter but ``fixed`` gets gradients (whatever ``freeze`` says for the main phase)."""
    params = [p for e in encoders if e is not None for p in e.parameters()]
    before = [p.requires_grad for p in params]
    fixed_ids = {id(p) for p in fixed}
    trainable = [p for p in params if id(p) not in fixed_ids]
    for p in trainable:
        p.requires_grad_(True)
    try:
        yield trainable
    finally:
        for p, mode in zip(params, before, strict=True):
            p.requires_grad_(mode)
