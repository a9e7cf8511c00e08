"""A fused, inference-only copy of a loaded ``Denoiser`` for sampling on CPU in float32 (issue 19).

Same function as ``Denoiser.forward`` with a shared condition (one timestep and one image context for the
whole batch, which is how the samplers call it), computed with fewer and faster kernels:

- **FiLM out of the step.** The FiLM input is SiLU([time_mlp(t) ‖ context]) and SiLU acts per element,
  so all FiLM projections (stacked into one matrix) split into a time part (depends on t only: memoised
  per integer t < T for the life of the model, so a second image pays nothing) and a context part (one
  matrix-vector product per image). Each FiLM then folds into the GroupNorm it follows: GroupNorm(1) on
  a (B, d) row is LayerNorm over d, and ``(γ n + β)(1 + scale) + shift = n·γ(1 + scale) + (β(1 + scale)
  + shift)``, so block 1 of every ResNet block is ``layer_norm(h, weight=a, bias=b)``: per step three
  vector ops on the stacked FiLM row replace the time MLP, the FiLM products and the FiLM arithmetic.
- **Packed oneDNN GEMMs.** Every linear map runs through ``torch.ops.mkldnn._linear_pointwise`` with a
  weight reordered once into oneDNN's blocked layout (SiLU fused where it follows). On the AMD EPYC this
  was measured on, MKL's sgemm (what ``F.linear`` uses) reached about half the rate of oneDNN's for the
  (100 × 300) · (300 × 6144) attention projection. Without oneDNN it falls back to ``F.linear``.
- **Attention as three batched matmuls.** The 16 token projections' rows are permuted at build time to
  [head][q|k|v][token][channel], so (batch, head) becomes one strided batch axis with no copy; RMSNorm's
  gain·sqrt(d) and the 1/sqrt(head_dim) query scale are folded into the projection weights.

Rounding differs from the plain module (folded scales, other GEMM kernels); tests bound the difference
at 1e-5 relative per step. Dense per-row conditions (training-style calls) and other dtypes or devices
are passed to the plain module unchanged. The plain ``Denoiser`` stays the reference and the training
module; this copy holds its own weights (about the model's size again) and does not follow later
changes to the module's parameters: build a new one after loading other weights.

Opt-in: ``compile_step=True`` (or ``OFER_CPU_COMPILE=1`` in the environment) runs the step through
``torch.compile`` (``nets/compiled_step.py``; needs a C++ compiler, falls back to this eager step with a
log line when there is none or compilation fails).

Opt-in, inexact: ``precision="bf16"`` (or ``OFER_CPU_PRECISION=bf16``) packs the large GEMMs' weights as bf16
and rounds their inputs to bf16 (``nets/cpu_precision.py``); only on CPUs with native bf16 dot products,
fp32 elsewhere (logged). The compiled step, when it runs, stays fp32.

By default the eager step cuts a batch of 50 rows or more into blocks, one per thread of the caller's
(``nets/row_lanes.py``; ``row_split=False`` or ``OFER_CPU_ROW_SPLIT=0`` runs it whole).

``use_onnx_step`` hands the eager fp32 step to ONNX Runtime where that agrees with it (``nets/onnx_step.py``;
the bundle does so by default, ``OFER_CPU_DENOISER_RUNTIME=torch`` keeps torch).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from . import compiled_step, cpu_precision, row_lanes
from .denoiser import (
    Attention,
    Denoiser,
    PointwiseConv,
    PreNorm,
    Residual,
    ResnetBlock,
    shared_condition,
)
from .onnx_step import StepRuntime, open_onnx_step

__all__ = ["FusedDenoiser", "mkldnn_linear_available"]

log = logging.getLogger(__name__)

#: Integer timesteps below this (the OFER schedule's T) have their FiLM time row memoised.
MEMO_STEPS = 1000
#: Weights with fewer entries run through ``F.linear``: oneDNN's per-call overhead lost to MKL below about
#: this size at batch 100 (50×50: 90 vs 40 µs; 300×300: even; 300×6144: 2-2.5× faster), loaded 2-core EPYC.
PACK_MIN_NUMEL = 65536
_EPS = 1e-5  # GroupNorm's eps in Block


def mkldnn_linear_available() -> bool:
    """Whether this torch build can run packed oneDNN linear layers (x86 and ARM builds with mkldnn)."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        packed = torch.ops.mkldnn._reorder_linear_weight(torch.ones(2, 2), 1)
        out = torch.ops.mkldnn._linear_pointwise(torch.ones(1, 2), packed, None, "none", [], "")
    except (RuntimeError, AttributeError, NotImplementedError):
        return False
    return bool(torch.equal(out, torch.full((1, 2), 2.0)))


class _Linear:
    """y = x Wᵀ + b, optionally followed by SiLU, on a packed oneDNN weight when available.

    With ``bf16`` the packed weight is bf16 and the input is rounded to bf16 here, at the GEMM; oneDNN
    accumulates and adds the fp32 bias in fp32 and returns bf16, widened to fp32 unless ``widen=False``
    (an output that only feeds the next GEMM, which would round it to bf16 anyway)."""

    def __init__(
        self, weight: torch.Tensor, bias: torch.Tensor | None, *, packed: bool, batch_hint: int, bf16: bool = False
    ) -> None:
        weight = weight.detach().to(torch.float32).contiguous().clone()
        self.bias = None if bias is None else bias.detach().to(torch.float32).contiguous().clone()
        pack = packed and weight.numel() >= PACK_MIN_NUMEL
        self.bf16 = bf16 and pack
        if self.bf16:
            weight = weight.to(torch.bfloat16)
        # The packed copy is oneDNN's own allocation: the plain one is then not kept (half the memory).
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight, batch_hint) if pack else None
        self.weight = None if pack else weight

    def __call__(self, x: torch.Tensor, silu: bool = False, widen: bool = True) -> torch.Tensor:
        if self.packed is not None:
            if self.bf16:
                x = x.to(torch.bfloat16)
            y = torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "swish" if silu else "none", [], "")
            return y.float() if widen and self.bf16 else y
        assert self.weight is not None
        y = F.linear(x.float(), self.weight, self.bias)
        return F.silu(y, inplace=True) if silu else y


def _conv(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    conv = cast(PointwiseConv, module)
    return conv.weight[:, :, 0], conv.bias


@dataclass
class _Block:
    """One ResnetBlock: the FiLM'd Block 1 reads its (a, b) at ``film`` of the stacked rows."""

    proj1: _Linear  # Block 1's projection, with the skip projection's rows below when there is one
    proj2: _Linear
    gamma2: torch.Tensor
    beta2: torch.Tensor
    projected_skip: bool
    film: slice


@dataclass
class _Attention:
    norm_eps: float
    qkv: _Linear
    out: _Linear
    pool: torch.Tensor  # (1, n, 1) the to_out_linear weights, one per query row
    heads: int
    tokens: int
    head_dim: int


class FusedDenoiser:
    """ε̂ = denoiser(x, t, context), equal to ``net`` within float rounding; see the module docstring."""

    def __init__(
        self,
        net: Denoiser,
        *,
        memo_steps: int = MEMO_STEPS,
        use_mkldnn: bool | None = None,
        compile_step: bool | None = None,
        precision: str | None = None,
        row_split: bool | None = None,
    ) -> None:
        self.net = net
        self.config = net.config
        self.feature_dim = net.config.feature_dim
        self.memo_steps = memo_steps
        self.uses_mkldnn = mkldnn_linear_available() if use_mkldnn is None else use_mkldnn
        # Opt-in bf16 GEMMs (nets/cpu_precision.py); fp32, with the reason, where the CPU has no native bf16.
        requested = cpu_precision.requested_precision() if precision is None else precision
        self.precision, self.precision_note = cpu_precision.resolve_precision(requested, onednn=self.uses_mkldnn)
        self._film_weights: list[tuple[torch.Tensor, torch.Tensor]] = []  # (weight, bias) rows of each block
        self._gamma1: list[torch.Tensor] = []
        self._beta1: list[torch.Tensor] = []
        with torch.no_grad():
            self._build(net)
            self._finish_film()
        self._time_rows: dict[int, torch.Tensor] = {}
        self._context: tuple[torch.Tensor, torch.Tensor] | None = None
        # Opt-in inductor step (nets/compiled_step.py), built on the first fused call; None = eager.
        self.compile_requested = compiled_step.compile_requested() if compile_step is None else compile_step
        self._compiled: compiled_step.StepFn | None = None
        self.compile_note = ""
        # The batch's rows in blocks on threads of their own (nets/row_lanes.py); None: whole on the caller's.
        split = row_lanes.row_split_requested() if row_split is None else row_split
        self.row_lanes = row_lanes.RowLanes() if split else None
        #: The eager fp32 step by ONNX Runtime (``use_onnx_step``); None: torch runs it.
        self.step_runtime: StepRuntime | None = None

    def use_onnx_step(self, cache_dir: Path, kind: str) -> StepRuntime:
        """Run the eager fp32 step by ONNX Runtime where it agrees with torch (``nets/onnx_step.py``); bf16
        GEMMs and the compiled step stay in torch."""
        if self.compile_requested or self.precision != "fp32":
            self.step_runtime = StepRuntime(None, "the compiled step and bf16 GEMMs run in torch")
        else:
            self.step_runtime = open_onnx_step(self, cache_dir, kind)
        return self.step_runtime

    @property
    def onnx_step(self) -> bool:
        """Whether ONNX Runtime runs the eager step."""
        return self.step_runtime is not None and self.step_runtime.step is not None

    # -- building -----------------------------------------------------------------------------------
    def _linear(self, weight: torch.Tensor, bias: torch.Tensor | None) -> _Linear:
        return _Linear(weight, bias, packed=self.uses_mkldnn, batch_hint=100, bf16=self.precision == "bf16")

    def _build(self, net: Denoiser) -> None:
        self.init_conv = self._linear(*_conv(net.init_conv))
        self.downs: list[tuple[_Block, _Block, _Attention, tuple[_Linear, _Linear]]] = []
        for level in net.downs:
            block1, block2, attention, down = list(cast(nn.ModuleList, level))
            self.downs.append(
                (self._block(block1), self._block(block2), self._attention(attention), self._resample(down))
            )
        self.mid = (self._block(net.mid_block1), self._attention(net.mid_attn), self._block(net.mid_block2))
        self.ups: list[tuple[tuple[_Linear, _Linear], _Block, _Block, _Attention]] = []
        for level in net.ups:
            up, block1, block2, attention = list(cast(nn.ModuleList, level))
            self.ups.append((self._resample(up), self._block(block1), self._block(block2), self._attention(attention)))
        block, attention, out_conv = list(cast(nn.ModuleList, net.finals[0]))
        self.final = (self._block(block), self._attention(attention), self._linear(*_conv(out_conv)))

    def _block(self, module: nn.Module) -> _Block:
        block = cast(ResnetBlock, module)
        film = cast(nn.Linear, block.mlp[1])
        d = block.block1.norm.num_channels
        # Rows of every block's FiLM product, split into scale and shift; stacked in _finish_film.
        self._film_weights.append((film.weight.detach().clone(), film.bias.detach().clone()))
        start = sum(g.numel() for g in self._gamma1)
        self._gamma1.append(block.block1.norm.weight.detach().clone())
        self._beta1.append(block.block1.norm.bias.detach().clone())
        w1, b1 = _conv(block.block1.proj)
        projected_skip = not isinstance(block.res_conv, nn.Identity)
        if projected_skip:  # Block 1 and the skip read the same input: one GEMM of twice the width
            w_res, b_res = _conv(block.res_conv)
            assert b1 is not None and b_res is not None
            w1, b1 = torch.cat([w1, w_res]), torch.cat([b1, b_res])
        return _Block(
            proj1=self._linear(w1, b1),
            proj2=self._linear(*_conv(block.block2.proj)),
            gamma2=block.block2.norm.weight.detach().clone(),
            beta2=block.block2.norm.bias.detach().clone(),
            projected_skip=projected_skip,
            film=slice(start, start + d),
        )

    def _resample(self, module: nn.Module) -> tuple[_Linear, _Linear]:
        first, _, second = list(cast(nn.Sequential, module))
        first, second = cast(nn.Linear, first), cast(nn.Linear, second)
        return self._linear(first.weight, first.bias), self._linear(second.weight, second.bias)

    def _attention(self, module: nn.Module) -> _Attention:
        prenorm = cast(PreNorm, cast(Residual, module).fn)
        attention = cast(Attention, prenorm.fn)
        norm = prenorm.norm
        count, _, dim, _ = attention.to_qkv.weight.shape
        heads, head_dim = attention.heads, attention.head_dim
        # (token, q|k|v, head, channel, in) → (head, q|k|v, token, channel, in): one strided batch axis.
        weight = attention.to_qkv.weight.detach()[..., 0].reshape(count, 3, heads, head_dim, dim)
        weight = weight.permute(2, 1, 0, 3, 4).clone()
        weight[:, 0] *= head_dim**-0.5  # the query scale
        weight = weight.reshape(heads * 3 * count * head_dim, dim) * (norm.g[0, :, 0] * norm.scale)[None, :]
        pool = attention.to_out_linear.weight.detach()[0]
        out_w, out_b = _conv(attention.to_out)
        assert out_b is not None
        bias = out_b * pool.sum() + attention.to_out_linear.bias
        return _Attention(
            norm_eps=1e-12,
            qkv=self._linear(weight, None),
            out=self._linear(out_w, bias),
            pool=pool.clone().reshape(1, count, 1),
            heads=heads,
            tokens=count,
            head_dim=head_dim,
        )

    def _finish_film(self) -> None:
        """Stack every block's FiLM rows as [all scales ‖ all shifts], split into time and context columns."""
        halves = [(w.shape[0] // 2, w, b) for w, b in self._film_weights]
        weight = torch.cat([w[:h] for h, w, _ in halves] + [w[h:] for h, w, _ in halves])
        bias = torch.cat([b[:h] for h, _, b in halves] + [b[h:] for h, _, b in halves])
        time_dim = self.config.time_dim
        self._film_time_w = weight[:, :time_dim].contiguous()
        self._film_ctx_w = weight[:, time_dim:].contiguous()
        self._film_bias = bias
        self._gamma = torch.cat(self._gamma1)
        self._beta = torch.cat(self._beta1)
        del self._film_weights, self._gamma1, self._beta1

    def _time_row(self, t: torch.Tensor) -> torch.Tensor:
        """FiLM time contribution incl. the bias (1, 2S) for one timestep t (1,); integer t < T memoised."""
        value = float(t[0])
        key = int(value) if value.is_integer() and 0 <= value < self.memo_steps else None
        row = self._time_rows.get(key) if key is not None else None
        if row is None:
            emb = F.silu(self.net.time_mlp(t))
            row = torch.addmm(self._film_bias, emb, self._film_time_w.t())
            if key is not None:
                self._time_rows[key] = row
        return row

    def _context_row(self, context: torch.Tensor) -> torch.Tensor:
        """FiLM context contribution (1, 2S) of one context (1, C); the last one is kept (one image per job)."""
        if self._context is None or not torch.equal(self._context[0], context):
            self._context = (context.clone(), F.linear(F.silu(context), self._film_ctx_w))
        return self._context[1]

    def _film_rows(self, t: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(a, b) each (S,): GroupNorm 1's affine with the FiLM of (t, context) folded in."""
        film = (self._time_row(t) + self._context_row(context))[0]
        half = film.shape[0] // 2
        gain = film[:half] + 1.0
        return self._gamma * gain, torch.addcmul(film[half:], self._beta, gain)

    # -- the step -----------------------------------------------------------------------------------
    def handles(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> bool:
        """Whether the fused path applies: CPU float32 inputs with one shared (t, context)."""
        return self._shared(x, t, context) is not None

    def _shared(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, ...] | None:
        """(t, context) as one row each when the fused path applies, else None."""
        if x.device.type != "cpu" or x.dtype != torch.float32 or context.dtype != torch.float32:
            return None
        t1, c1 = shared_condition(t, context)
        if t1.shape[0] != 1 or c1.shape[0] != 1 or t1.device.type != "cpu" or c1.device.type != "cpu":
            return None
        return t1, c1

    def __call__(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], self.feature_dim)
        shared = self._shared(x, t, context)
        with torch.no_grad():
            if shared is None:  # per-row conditions, other dtype or device: the plain module
                return cast(torch.Tensor, self.net(x, t, context))
            a, b = self._film_rows(shared[0].to(torch.float32), shared[1])
            if self.compile_requested:
                return self._compiled_step(x, a, b)
            runtime = self.step_runtime
            step = self._step if runtime is None or runtime.step is None else runtime.step
            if self.row_lanes is not None:
                return self.row_lanes.run(lambda rows: step(rows, a, b), x)
            return step(x, a, b)

    def _compiled_step(self, x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """The inductor step; on any failure to build or compile it, the eager step from then on (logged)."""
        if self._compiled is None:
            log.info("compiling the %d-feature denoiser step with inductor (once per process)", self.feature_dim)
            self._compiled, self.compile_note = compiled_step.compile_step(self)
        if self._compiled is not None:
            try:
                return self._compiled(x, a, b)
            except Exception as exc:  # inductor raises many types (compiler missing/broken, codegen)
                self._compiled, self.compile_note = None, f"compilation failed: {type(exc).__name__}: {exc}"
        log.warning("compiled denoiser step not used (%s): running the eager fused step", self.compile_note)
        self.compile_requested = False
        return self._step(x, a, b)

    def _step(self, x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        def film(block: _Block, h: torch.Tensor) -> torch.Tensor:
            return _resnet(block, h, a, b)

        x = self.init_conv(x)
        initial = x
        skips: list[torch.Tensor] = []
        for block1, block2, attention, (down1, down2) in self.downs:
            x = film(block1, x)
            skips.append(x)
            x = _attend(attention, film(block2, x))
            skips.append(x)
            x = down2(down1(x, silu=True, widen=False))
        block1, attention, block2 = self.mid
        x = film(block2, _attend(attention, film(block1, x)))
        for (up1, up2), block1, block2, attention in self.ups:
            x = up2(up1(x, silu=True, widen=False))
            x = film(block1, torch.cat([x, skips.pop()], dim=1))
            x = film(block2, torch.cat([x, skips.pop()], dim=1))
            x = _attend(attention, x)
        block, attention, out_conv = self.final
        x = film(block, torch.cat([x, initial], dim=1))
        return out_conv(_attend(attention, x))


def _resnet(block: _Block, x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    d = block.film.stop - block.film.start
    h = block.proj1(x)
    skip = h[:, d:] if block.projected_skip else x
    h = F.layer_norm(h[:, :d] if block.projected_skip else h, (d,), a[block.film], b[block.film], _EPS)
    h = F.layer_norm(block.proj2(F.silu(h, inplace=True)), (d,), block.gamma2, block.beta2, _EPS)
    return F.silu(h, inplace=True).add_(skip)


def _attend(attention: _Attention, x: torch.Tensor) -> torch.Tensor:
    """x + Attention(RMSNorm(x)) for x (B, d)."""
    batch = x.shape[0]
    heads, n, hd = attention.heads, attention.tokens, attention.head_dim
    normed = x / torch.linalg.vector_norm(x, dim=1, keepdim=True).clamp_min_(attention.norm_eps)
    qkv = attention.qkv(normed).view(batch * heads, 3, n, hd)
    q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]
    weights = torch.softmax(torch.bmm(q, k.transpose(1, 2)), dim=-1)  # (B·heads, n, n)
    # Pool the n query rows: a broadcast multiply-sum was faster than a stride-0 bmm (1×n by n×n per
    # head) at 1 and 2 threads (7-25 % of the attention core, medians of 15 interleaved rounds, loaded machine).
    pooled = weights.mul_(attention.pool).sum(dim=1, keepdim=True)  # (B·heads, 1, n)
    mixed = torch.bmm(pooled, v).view(batch, heads * hd)
    return attention.out(mixed).add_(x)
