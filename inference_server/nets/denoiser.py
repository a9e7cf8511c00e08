"""The OFER denoiser: a 1-D U-Net over a coefficient vector, shared by IdGen and ExpGen (spec section 4).

The coefficient vector is F channels of spatial length 1, so every official "1x1 convolution" is a
per-row linear map. We keep the official parameter names and shapes (appendix B: conv weights are
(out, in, 1)) so the official ``net`` dict loads key for key, but compute on (B, d) matrices with
``F.linear``: identical arithmetic, no conv overhead, and no ``squeeze()`` that breaks batch size 1.

Every operation acts on each row alone (GroupNorm(1) and RMSNorm normalise over channels), so a row's
output does not depend on the rest of the batch.

Shared condition (the sampling fast path): during sampling every row has the same timestep and the same
image context, so the FiLM input [time_emb(t) ‖ context] is one row repeated. ``forward`` accepts t of
shape (1,) and context of shape (1, C) for any batch of x, and treats broadcast views (``expand``, stride 0
on the batch axis, which is how the samplers pass them) the same way: the time MLP and every FiLM
projection then run on ONE row and broadcast, instead of on B identical rows (about a third of the
IdGen arithmetic per step). Dense t/context (training) take the per-row path. Both give the same numbers.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ATTENTION_PATHS",
    "EXPGEN_CONFIG",
    "IDGEN_CONFIG",
    "Attention",
    "Denoiser",
    "DenoiserConfig",
    "StackedProjections",
    "official_parameter_count",
    "shared_condition",
]


@dataclass(frozen=True)
class DenoiserConfig:
    """Sizes of one denoiser. ``dims[0]`` is ``feature_dim``; each further entry adds a U-Net level."""

    feature_dim: int
    dims: tuple[int, ...]
    context_dim: int
    time_dim: int = 512
    n_tokens: int = 16
    heads: int = 4
    head_dim: int = 32

    def __post_init__(self) -> None:
        object.__setattr__(self, "dims", tuple(int(d) for d in self.dims))
        if len(self.dims) < 2 or self.dims[0] != self.feature_dim:
            raise ValueError(f"dims must start with feature_dim {self.feature_dim} and have >= 2 levels")
        if self.time_dim % 2 or self.time_dim < 4:
            raise ValueError("time_dim must be even and >= 4 (half sines, half cosines)")

    @property
    def film_input_dim(self) -> int:
        return self.time_dim + self.context_dim

    @property
    def inner_dim(self) -> int:
        return self.heads * self.head_dim

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["dims"] = list(self.dims)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DenoiserConfig:
        return cls(**{**data, "dims": tuple(data["dims"])})


IDGEN_CONFIG = DenoiserConfig(feature_dim=300, dims=(300, 50, 10), context_dim=512)
EXPGEN_CONFIG = DenoiserConfig(feature_dim=53, dims=(53, 25, 10), context_dim=1024)

#: Module paths of the attention blocks of the official two-level network (appendix H).
ATTENTION_PATHS = ("downs.0.2", "downs.1.2", "mid_attn", "ups.0.3", "ups.1.3", "finals.0.1")


class PointwiseConv(nn.Module):
    """A 1x1 Conv1d stored in the official (out, in, 1) layout, applied to (B, in) rows."""

    def __init__(self, d_in: int, d_out: int, bias: bool = True) -> None:
        super().__init__()
        conv = nn.Conv1d(d_in, d_out, 1, bias=bias)  # borrow PyTorch's default initialisation
        self.weight = conv.weight
        self.bias = conv.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight[:, :, 0], self.bias)


class SinusoidalTimeEmbedding(nn.Module):
    """[sin(t f_k), cos(t f_k)], f_k = exp(-k ln(10000) / (half - 1)); t is the raw timestep (not scaled)."""

    frequencies: torch.Tensor

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("frequencies", _frequencies(dim // 2, torch.device("cpu")), persistent=False)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """In float32 whatever the module's dtype, returned in that dtype (the time MLP's)."""
        frequencies = self.frequencies
        if frequencies.dtype != torch.float32:  # a half-precision module: its cast buffer lost digits that a
            frequencies = _frequencies(frequencies.shape[0], frequencies.device)  # timestep up to 999 magnifies
        angles = t.to(torch.float32)[:, None] * frequencies[None, :]
        return torch.cat([angles.sin(), angles.cos()], dim=1).to(self.frequencies.dtype)


def _frequencies(half: int, device: torch.device) -> torch.Tensor:
    k = torch.arange(half, dtype=torch.float32, device=device)
    return torch.exp(-k * (math.log(10000.0) / (half - 1)))


class Block(nn.Module):
    """Conv, GroupNorm(1), optional FiLM ``h * (1 + scale) + shift``, SiLU."""

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.proj = PointwiseConv(d_in, d_out)
        self.norm = nn.GroupNorm(1, d_out, eps=1e-5)

    def forward(self, x: torch.Tensor, film: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        h = self.norm(self.proj(x))
        if film is not None:
            scale, shift = film
            h = h * (1 + scale) + shift
        return F.silu(h)


class ResnetBlock(nn.Module):
    """Two Blocks, FiLM from SiLU(condition) into the first, plus a (projected) skip."""

    def __init__(self, d_in: int, d_out: int, film_input_dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.SiLU(), nn.Linear(film_input_dim, 2 * d_out))
        self.block1 = Block(d_in, d_out)
        self.block2 = Block(d_out, d_out)
        self.res_conv: nn.Module = PointwiseConv(d_in, d_out) if d_in != d_out else nn.Identity()

    def forward(self, x: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        scale, shift = self.mlp(condition).chunk(2, dim=1)
        h = self.block2(self.block1(x, (scale, shift)))
        return h + self.res_conv(x)


class RMSNorm(nn.Module):
    """x / ||x|| * g * sqrt(d) over channels; ``g`` keeps the official (1, d, 1) shape."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.g = nn.Parameter(torch.ones(1, dim, 1))
        self.scale = math.sqrt(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1) * self.g[:, :, 0] * self.scale


class StackedProjections(nn.Module):
    """``count`` bias-free 1x1 convs d→width held as ONE (count, width, d, 1) parameter.

    One stacked parameter lets the attention evaluate all projections with a single matmul. The state
    dict still shows them one by one as ``{i}.weight`` (each (width, d, 1)), which is the project's key
    layout for the attention projections (spec appendix H).
    """

    def __init__(self, count: int, dim: int, width: int) -> None:
        super().__init__()
        self.count = count
        bound = 1.0 / math.sqrt(dim)  # PyTorch's default Conv1d initialisation for fan_in = dim
        self.weight = nn.Parameter(torch.empty(count, width, dim, 1).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, d) → (B, count, width)."""
        count, width, dim, _ = self.weight.shape
        out = F.linear(x, self.weight.reshape(count * width, dim))
        return out.reshape(x.shape[0], count, width)

    def _save_to_state_dict(self, destination: Any, prefix: str, keep_vars: bool) -> None:
        if keep_vars:
            # Callers asking for live variables (tracers, the ONNX exporter) need the real parameter;
            # slices of it would be non-leaf tensors they cannot bind.
            destination[f"{prefix}weight"] = self.weight
            return
        for i in range(self.count):
            # Clone: per-index views would share storage, which safetensors refuses to save.
            destination[f"{prefix}{i}.weight"] = self.weight[i].detach().clone()

    def _load_from_state_dict(
        self,
        state_dict: Any,
        prefix: str,
        local_metadata: Any,
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        expected = {f"{prefix}{i}.weight": i for i in range(self.count)}
        for key, index in expected.items():
            if key not in state_dict:
                missing_keys.append(key)
                continue
            value = state_dict[key]
            if tuple(value.shape) != tuple(self.weight.shape[1:]):
                error_msgs.append(
                    f"size mismatch for {key}: checkpoint {tuple(value.shape)}, model {tuple(self.weight.shape[1:])}"
                )
                continue
            with torch.no_grad():
                self.weight[index].copy_(value)
        if strict:
            unexpected_keys.extend(k for k in state_dict if k.startswith(prefix) and k not in expected)


class Attention(nn.Module):
    """Token attention: n_tokens projections make n_tokens tokens of (q, k, v); pooled back to (B, d)."""

    def __init__(self, dim: int, config: DenoiserConfig) -> None:
        super().__init__()
        self.heads = config.heads
        self.head_dim = config.head_dim
        inner = config.inner_dim
        self.to_qkv = StackedProjections(config.n_tokens, dim, 3 * inner)
        self.to_out = PointwiseConv(inner, dim)
        self.to_out_linear = nn.Linear(config.n_tokens, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        tokens = self.to_qkv(x)  # (B, n, 3 * inner): rows q | k | v, head h at 32h..32h+31 inside each
        n = tokens.shape[1]
        qkv = tokens.reshape(batch, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * self.head_dim**-0.5, qkv[1], qkv[2]  # each (B, heads, n, head_dim)
        weights = torch.softmax(q @ k.transpose(-1, -2), dim=-1)  # (B, heads, n, n)
        # The official block maps every token with to_out (inner → d) and then pools the n tokens with
        # to_out_linear (weights l, bias c). Both are linear, so pool first and project once:
        #   Σ_i l_i (W a_i + b) + c = W (Σ_i l_i a_i) + b Σ_i l_i + c,   a_i = Σ_j weights_ij v_j,
        # and Σ_i l_i a_i = (l · weights) v. Same result, n times fewer to_out products.
        pool = self.to_out_linear.weight[0]  # (n,)
        mixed = (pool @ weights).unsqueeze(-2) @ v  # (B, heads, 1, head_dim)
        pooled = mixed.reshape(batch, self.heads * self.head_dim)
        assert self.to_out.bias is not None  # PointwiseConv(inner, dim) has a bias
        bias = self.to_out.bias * pool.sum() + self.to_out_linear.bias
        return F.linear(pooled, self.to_out.weight[:, :, 0], bias)


class PreNorm(nn.Module):
    def __init__(self, dim: int, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn
        self.norm = RMSNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self.norm(x))


class Residual(nn.Module):
    def __init__(self, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x) + x


def _attention_block(dim: int, config: DenoiserConfig) -> Residual:
    return Residual(PreNorm(dim, Attention(dim, config)))


def _resample(d_in: int, d_out: int) -> nn.Sequential:
    """Down/Upsample: Linear d→d, SiLU, Linear d→d' on the (B, d) vector."""
    return nn.Sequential(nn.Linear(d_in, d_in), nn.SiLU(), nn.Linear(d_in, d_out))


def _parts(level: nn.Module) -> list[nn.Module]:
    return list(cast(nn.ModuleList, level))


class Denoiser(nn.Module):
    """ε-prediction network: ``forward(x (B, F), t (B,), context (B, C)) -> (B, F)``."""

    def __init__(self, config: DenoiserConfig) -> None:
        super().__init__()
        self.config = config
        dims, film = config.dims, config.film_input_dim
        feature = config.feature_dim

        # Registration order matches the official state dict: init_conv, time_mlp, downs, ups, finals, mid.
        self.init_conv = PointwiseConv(feature, feature)
        self.time_mlp = nn.Sequential(
            SinusoidalTimeEmbedding(config.time_dim),
            nn.Linear(config.time_dim, config.time_dim),
            nn.GELU(),
            nn.Linear(config.time_dim, config.time_dim),
        )
        self.downs = nn.ModuleList(
            nn.ModuleList(
                [
                    ResnetBlock(d, d, film),
                    ResnetBlock(d, d, film),
                    _attention_block(d, config),
                    _resample(d, d_next),
                ]
            )
            for d, d_next in itertools.pairwise(dims)
        )
        self.ups = nn.ModuleList(
            nn.ModuleList(
                [
                    _resample(d_low, d),
                    ResnetBlock(2 * d, d, film),
                    ResnetBlock(2 * d, d, film),
                    _attention_block(d, config),
                ]
            )
            for d_low, d in zip(reversed(dims[1:]), reversed(dims[:-1]), strict=True)
        )
        self.finals = nn.ModuleList(
            [
                nn.ModuleList(
                    [
                        ResnetBlock(2 * feature, feature, film),
                        _attention_block(feature, config),
                        PointwiseConv(feature, feature),
                    ]
                )
            ]
        )
        mid = dims[-1]
        self.mid_block1 = ResnetBlock(mid, mid, film)
        self.mid_attn = _attention_block(mid, config)
        self.mid_block2 = ResnetBlock(mid, mid, film)

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """ε̂ (B, F) for x (B, F), t (B,) or (1,), context (B, C) or (1, C) (module docstring)."""
        x = x.reshape(x.shape[0], self.config.feature_dim)
        t, context = shared_condition(t, context)
        x = self.init_conv(x)
        initial = x
        # (B, film) per row, or (1, film) shared: the FiLM scale/shift then broadcast over the rows.
        condition = torch.cat([self.time_mlp(t), context.to(x.dtype)], dim=1)

        skips: list[torch.Tensor] = []
        for level in self.downs:
            block1, block2, attention, downsample = _parts(level)
            x = block1(x, condition)
            skips.append(x)
            x = attention(block2(x, condition))
            skips.append(x)
            x = downsample(x)

        x = self.mid_block2(self.mid_attn(self.mid_block1(x, condition)), condition)

        for level in self.ups:
            upsample, block1, block2, attention = _parts(level)
            x = upsample(x)
            x = block1(torch.cat([x, skips.pop()], dim=1), condition)
            x = block2(torch.cat([x, skips.pop()], dim=1), condition)
            x = attention(x)

        for level in self.finals:
            block, attention, out_conv = _parts(level)
            x = block(torch.cat([x, initial], dim=1), condition)
            x = out_conv(attention(x))
        return x

    def attention_paths(self) -> list[str]:
        """Module paths (state-dict prefixes) of every attention block, e.g. ``downs.0.2``."""
        return [name for name, module in self.named_modules() if isinstance(module, Residual)]


def _is_one_row(tensor: torch.Tensor) -> bool:
    """True when every row along axis 0 is the same memory: one row, or a broadcast (stride-0) view."""
    return tensor.shape[0] == 1 or tensor.stride(0) == 0


def shared_condition(t: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(t, context) reduced to one row when both are one row or broadcast views, else unchanged.

    Reading strides costs nothing (no comparison of values, no device sync, CUDA-graph safe). Only
    identical rows by construction are reduced; dense tensors with equal values stay per row.
    """
    if t.dim() == 1 and context.dim() == 2 and _is_one_row(t) and _is_one_row(context):
        return t[:1], context[:1]
    # Only one of them is shared: give it the other's rows so the per-row path lines them up.
    if context.dim() == 2 and context.shape[0] == 1 and t.shape[0] > 1:
        context = context.expand(t.shape[0], -1)
    elif t.dim() == 1 and t.shape[0] == 1 and context.shape[0] > 1:
        t = t.expand(context.shape[0])
    return t, context


def official_parameter_count(model: Denoiser) -> int:
    """Parameters under the official names, i.e. without the attention projections (appendix B count)."""
    return sum(value.numel() for key, value in model.state_dict().items() if ".fn.fn.to_qkv." not in key)
