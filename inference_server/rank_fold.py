"""IdRank's first layer folded through FLAME's shape basis: rank identity samples from their coefficients.

IdRank reads, per sample i of one image, the front-face vertices in mm as [mean over N ‖ P_i − mean]
(``build_rank_input``), and the first thing it does with that row is a linear map W x + b; SELU, GroupNorm
and FiLM all come after it (``RankLayer.modulate``). A neutral FLAME head (``FlameLayer.neutral``: zero
expression, zero pose, no translation) is linear in the shape coefficients β: vertex v is
w_v (T_v + S_v β), with w_v the vertex's skin-weight sum (1 for FLAME; the layer scales by it when not). So,
with W = [W_mean ‖ W_offset] split at the row's halves and F the front-face rows scaled to mm,

    W x_i + b = W_mean F T + b + (W_mean F S) β̄ + (W_offset F S) (β_i − β̄)

exactly: two (hidden × n_shape) matrices and one bias, computed once per loaded model in float64 and stored in
the network's dtype. Ranking then needs neither the N meshes nor the (N × 10,710) product of the first layer:
4096 × 300 instead of 4096 × 5,355 multiply-adds per sample at the official size (18×). The float results
differ from the vertex path only by rounding (the vertex path rounds the meshes to float32 first).

The fold is exact only for the plain linear head; ``foldable`` says when it applies (a torch IdRank and a
``FlameLayer``); anything else, and the official-parity tests, keep the vertex path.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .flame.layer import FlameLayer
from .nets.idrank import IdRank

__all__ = ["FoldedFirstLayer", "fold_first_layer"]


@dataclass(frozen=True)
class FoldedFirstLayer:
    """``ranklayers[0].mlp`` of IdRank as a map of shape coefficients (rows: hidden units)."""

    mean_weight: torch.Tensor  # (H, K): acts on the mean coefficients of the image's N samples
    offset_weight: torch.Tensor  # (H, K): acts on each sample's coefficients minus that mean
    bias: torch.Tensor  # (H,): the template's contribution plus the layer's bias

    @property
    def n_shape(self) -> int:
        return int(self.mean_weight.shape[1])

    def __call__(self, shapes: torch.Tensor) -> torch.Tensor:
        """(N, k ≤ K) coefficients of one image's samples (missing ones are zero) → (N, H) first-layer output."""
        if shapes.dim() != 2 or shapes.shape[0] < 1 or shapes.shape[1] > self.n_shape:
            raise ValueError(f"expected shape coefficients (N, ≤{self.n_shape}), got {tuple(shapes.shape)}")
        shapes = shapes.to(device=self.bias.device, dtype=self.bias.dtype)
        k = shapes.shape[1]
        mean = shapes.mean(dim=0, keepdim=True)
        common = torch.addmm(self.bias.unsqueeze(0), mean, self.mean_weight[:, :k].t())  # (1, H), once
        return torch.addmm(common, shapes - mean, self.offset_weight[:, :k].t())


@torch.no_grad()
def fold_first_layer(net: IdRank, flame: FlameLayer, front_indices: np.ndarray) -> FoldedFirstLayer:
    """Fold ``net``'s first linear map through ``flame``'s neutral shape basis at ``front_indices`` (mm)."""
    weight, bias = net.first_linear.weight, net.first_linear.bias
    front = torch.as_tensor(np.asarray(front_indices, dtype=np.int64), device=flame.device)
    n_front = int(front.shape[0])
    if weight.shape[1] != 6 * n_front:
        raise ValueError(
            f"IdRank's first layer takes {weight.shape[1]} values per sample, {n_front} front-face vertices give "
            f"{6 * n_front}"
        )
    scale = 1000.0 * flame.weight_sums[front].double()  # metres → mm, and the neutral head's weight sum
    template = (flame.v_template[front].double() * scale[:, None]).reshape(-1)  # (3F,)
    basis = flame.shapedirs_flat[: flame.n_shape].double().view(flame.n_shape, flame.n_vertices, 3)[:, front]
    basis = (basis * scale[None, :, None]).reshape(flame.n_shape, 3 * n_front).t()  # (3F, K)
    half = 3 * n_front

    def half_in_float64(columns: slice) -> torch.Tensor:  # one half at a time: 175 MB, not 350, at the official size
        return weight.detach()[:, columns].to(device=flame.device, dtype=torch.float64)

    w_mean = half_in_float64(slice(0, half))
    mean_weight = w_mean @ basis
    bias64 = w_mean @ template + bias.detach().to(device=flame.device, dtype=torch.float64)
    del w_mean
    offset_weight = half_in_float64(slice(half, 2 * half)) @ basis

    def stored(t: torch.Tensor) -> torch.Tensor:
        return t.to(device=weight.device, dtype=weight.dtype).contiguous()

    return FoldedFirstLayer(stored(mean_weight), stored(offset_weight), stored(bias64))
