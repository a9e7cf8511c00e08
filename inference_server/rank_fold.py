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

The fold costs two 4096 × 5,355 × 300 float64 products (0.5–3 s on 2 cores, depending on the load), so
``cached_fold`` keeps the result in the user cache (``<cache>/rank_fold/<key>.pt``, 9.8 MB at the official
size): ``key`` is a SHA-256 over every value the fold reads (IdRank's first layer, FLAME's template, shape
basis and skin-weight sums, the front-face indices) with their dtypes and shapes, and the file carries its key
and is checked against it and against the expected sizes when loaded (``weights_only``), so a stale or foreign
file is never used — it is computed again and replaced.

The fold is exact only for the plain linear head; ``foldable`` says when it applies (a torch IdRank and a
``FlameLayer``); anything else, and the official-parity tests, keep the vertex path.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .atomic_io import atomic_write
from .flame.layer import FlameLayer
from .nets.idrank import IdRank

__all__ = ["FoldedFirstLayer", "cached_fold", "fold_first_layer", "fold_key"]

log = logging.getLogger(__name__)
#: Folder under the user cache; bump ``FORMAT`` when the stored layout or the fold's arithmetic changes.
CACHE_FOLDER = "rank_fold"
FORMAT = "rank-fold/1"


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


def fold_key(net: IdRank, flame: FlameLayer, front_indices: np.ndarray) -> str:
    """SHA-256 over every value the fold reads, with dtypes and shapes (any change gives another key)."""
    digest = hashlib.sha256(FORMAT.encode())
    n_shape = flame.n_shape
    tensors = (net.first_linear.weight, net.first_linear.bias, flame.v_template, flame.shapedirs_flat[:n_shape],
               flame.weight_sums, torch.as_tensor(np.asarray(front_indices, dtype=np.int64)))  # fmt: skip
    for tensor in tensors:
        flat = tensor.detach().cpu().contiguous()
        digest.update(f"{flat.dtype}|{tuple(flat.shape)}|".encode())
        digest.update(flat.reshape(-1).view(torch.uint8).numpy().data)
    return digest.hexdigest()[:40]


def _load(path: Path, key: str, hidden: int, n_shape: int, like: torch.Tensor) -> FoldedFirstLayer | None:
    """The stored fold when it is this key's and has the expected sizes, else None."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        return None
    except Exception as exc:  # damaged, truncated, not a torch file
        log.warning("rank fold cache %s unreadable (%s): folding again", path, exc)
        return None
    tensors = ("mean_weight", "offset_weight", "bias")
    if (
        not isinstance(data, dict)
        or data.get("key") != key
        or not all(isinstance(data.get(t), torch.Tensor) for t in tensors)
    ):
        return None
    shapes = {"mean_weight": (hidden, n_shape), "offset_weight": (hidden, n_shape), "bias": (hidden,)}
    if any(tuple(data[t].shape) != shapes[t] or data[t].dtype != like.dtype for t in tensors):
        return None
    return FoldedFirstLayer(*(data[t].to(like.device).contiguous() for t in tensors))


def cached_fold(net: IdRank, flame: FlameLayer, front_indices: np.ndarray, cache_dir: Path | None) -> FoldedFirstLayer:
    """``fold_first_layer``, read from / written to ``cache_dir/rank_fold`` (None: no cache)."""
    if cache_dir is None:
        return fold_first_layer(net, flame, front_indices)
    key = fold_key(net, flame, front_indices)
    weight = net.first_linear.weight
    path = cache_dir / CACHE_FOLDER / f"{key}-{str(weight.dtype).removeprefix('torch.')}.pt"
    found = _load(path, key, int(weight.shape[0]), flame.n_shape, weight)
    if found is not None:
        return found
    folded = fold_first_layer(net, flame, front_indices)
    payload = {"key": key, "format": FORMAT} | {
        name: getattr(folded, name).detach().cpu() for name in ("mean_weight", "offset_weight", "bias")
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda handle: torch.save(payload, handle))
    except Exception as exc:  # a read-only or full cache costs the fold next time, nothing else
        log.warning("rank fold not stored in %s (%s)", path, exc)
    return folded
