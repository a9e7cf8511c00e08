"""Starting points for short runs: denoisers at ε̂(x_t, t) ≈ x_t, the ranker blind to the shared mean.

Why: the schedule keeps sqrt(ᾱ_T) = 0.079 of the signal, so a sampler's first x0 estimate
(x_T − sqrt(1 − ᾱ_T) ε̂) / sqrt(ᾱ_T) multiplies every ε error by about 12.6. Near t = T the exact
ε-optimum is ε̂ ≈ x_t in every coordinate (slope sqrt(1 − ᾱ_t) / (ᾱ_t σ² + 1 − ᾱ_t), which is ≈ 1 there).
From PyTorch's default initialisation the U-Net learns per-coordinate slopes slowly: measured on a known
Gaussian prior (32 coordinates with σ = 1, 268 with σ = 0.3), 500 AdamW steps left the σ = 1 coordinates at
a slope of 0.3–0.5 for every t and the samplers drew them with std ≈ 12 instead of 1. Starting from the
identity, the same 400 steps give slopes 0.96–0.97 at high t and sample stds 0.8 / 0.33 (benchmarks/README).

How: the input 1x1 conv, the final block's skip for the ``initial`` half and the output conv are the
identity; the final block's own branch and attention output start small (``residual_scale``), so the other
layers start as a small correction the training grows. Same architecture and parameter names; only the
starting point differs, so the paper's recipe is untouched unless a run asks for this (the DEMO recipe does).
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import nn

from ..nets.denoiser import Denoiser, PointwiseConv
from ..nets.idrank import IdRank


@torch.no_grad()
def start_at_identity(denoiser: Denoiser, residual_scale: float = 0.1) -> None:
    """Re-initialise ``denoiser`` in place so that its output starts close to its input x_t."""
    if not 0.0 <= residual_scale <= 1.0:
        raise ValueError("residual_scale must lie in [0, 1]")
    features = denoiser.config.feature_dim
    eye = torch.eye(features, dtype=denoiser.init_conv.weight.dtype)
    _set_identity(denoiser.init_conv, eye)
    parts: list[Any] = list(cast(nn.ModuleList, denoiser.finals[0]))  # ResnetBlock, Residual(attention), conv
    block, attention, out_conv = parts
    skip = block.res_conv
    assert isinstance(skip, PointwiseConv)  # 2F → F, so never the Identity
    skip.weight.zero_()
    skip.weight[:, features:, 0].copy_(eye)  # the second half of the concatenation is ``initial``
    if skip.bias is not None:
        skip.bias.zero_()
    block.block2.norm.weight.mul_(residual_scale)
    block.block2.norm.bias.zero_()
    projection = attention.fn.fn  # Residual(PreNorm(Attention))
    projection.to_out.weight.mul_(residual_scale)
    projection.to_out.bias.zero_()
    projection.to_out_linear.bias.zero_()
    _set_identity(out_conv, eye)


def _set_identity(conv: PointwiseConv, eye: torch.Tensor) -> None:
    conv.weight[:, :, 0].copy_(eye)
    if conv.bias is not None:
        conv.bias.zero_()


@torch.no_grad()
def start_on_deviations(rank_net: IdRank) -> None:
    """Start the first rank layer on the deviations, with a constant reference in every GroupNorm group.

    Why: the rank input is [mean mesh ‖ P_i − mean] in mm (``build_rank_input``).

    * The mean half is the same for all N samples of an image and holds coordinates of tens of mm, the
      deviations a few mm, so after the first layer's GroupNorm a fresh ranker gives all N samples the same
      score (logit spread ~1e-6 on the DEMO samples) and the ListNet loss stays at ln N. Its weights start
      at zero; training can still grow them.
    * GroupNorm divides each group of channels by its spread over the group, so a layer that only sees the
      deviations cannot tell a sample near the mean from one far away (W·d and 3·W·d normalise alike), and
      closeness to the mean is what an occluded region's best guess rests on. The second half of every
      group therefore starts as a constant (zero weights, bias ±1): the normalised constants shrink as the
      deviation grows, which the next layers can read.
    """
    first = rank_net.ranklayers[0].mlp
    assert isinstance(first, nn.Linear)
    half = first.in_features // 2
    first.weight[:, :half].zero_()
    per_group = first.out_features // rank_net.config.groups
    reference = torch.tensor([j % per_group >= per_group // 2 for j in range(first.out_features)])
    first.weight[reference] = 0.0
    first.bias.zero_()
    signs = torch.ones(int(reference.sum()))
    signs[::2] = -1.0
    first.bias[reference] = signs
