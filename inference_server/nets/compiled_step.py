"""The fused denoiser step as an ``nn.Module`` for ``torch.compile`` (inductor) on CPU: opt-in.

``FusedDenoiser`` runs its step eagerly: about a hundred small kernels per step (GEMMs, layer norms,
SiLU, adds, the attention core), each a separate ATen call. Inductor can fuse the element-wise work
into generated C++ loops and, with ``freezing``, fold constants and pack the weights for oneDNN. For
that it needs the weights as module parameters (so freezing sees constants) and a pure tensor
function: ``CompiledStep.forward(x, a, b)`` is exactly ``FusedDenoiser._step`` on plain weights, with
the FiLM rows (a, b) still computed and memoised by the ``FusedDenoiser`` outside the graph.

The batch axis is marked dynamic on purpose: for a dynamic batch inductor packs fp32 linear layers for
oneDNN (``mkldnn._linear_pointwise``, SiLU fused in), for a static one for MKL (``_mkl_linear``), and
oneDNN was the faster of the two on this AMD CPU (see ``fused_denoiser``). One compiled graph then
serves every batch above 1 (batch 1 is specialised by dynamo: one more compile).

Needs a C++ compiler at run time (inductor's CPU backend; gcc/clang on Linux and macOS, MSVC on
Windows). ``compile_step`` returns None, with the reason, where compilation cannot run; the caller then
keeps the eager fused step. Measured gains and costs: benchmarks/README.md, fidelity section.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from .fused_denoiser import FusedDenoiser, _Attention, _Block, _Linear

__all__ = ["COMPILE_ENV", "CompiledStep", "compile_requested", "compile_step", "compiler_available"]

log = logging.getLogger(__name__)

#: ``OFER_CPU_COMPILE=1`` turns the compiled step on for every fused denoiser built in this process.
COMPILE_ENV = "OFER_CPU_COMPILE"
_EPS = 1e-5  # GroupNorm's eps in Block


def compile_requested() -> bool:
    return os.environ.get(COMPILE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def compiler_available() -> str | None:
    """The C++ compiler inductor would call, or None when there is none on PATH."""
    candidates = [os.environ.get("CXX", "")] + (["cl"] if sys.platform == "win32" else ["g++", "c++", "clang++"])
    for name in candidates:
        if name and (path := shutil.which(name)):
            return path
    return None


class _Lin(nn.Module):
    """A frozen linear layer (weights as parameters, so inductor's freezing treats them as constants)."""

    def __init__(self, linear: _Linear) -> None:
        super().__init__()
        if linear.weight is None:
            raise ValueError("build the FusedDenoiser with use_mkldnn=False: packed weights cannot be traced")
        self.weight = nn.Parameter(linear.weight.clone(), requires_grad=False)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.clone(), requires_grad=False)

    def forward(self, x: torch.Tensor, silu: bool = False) -> torch.Tensor:
        y = F.linear(x, self.weight, self.bias)
        return F.silu(y) if silu else y


class _ResBlock(nn.Module):
    def __init__(self, block: _Block) -> None:
        super().__init__()
        self.proj1, self.proj2 = _Lin(block.proj1), _Lin(block.proj2)
        self.gamma2 = nn.Parameter(block.gamma2.clone(), requires_grad=False)
        self.beta2 = nn.Parameter(block.beta2.clone(), requires_grad=False)
        self.projected_skip = block.projected_skip
        self.start, self.stop = cast(int, block.film.start), cast(int, block.film.stop)

    def forward(self, x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        d = self.stop - self.start
        h = self.proj1(x)
        skip = h[:, d:] if self.projected_skip else x
        h = h[:, :d] if self.projected_skip else h
        h = F.layer_norm(h, (d,), a[self.start : self.stop], b[self.start : self.stop], _EPS)
        h = F.layer_norm(self.proj2(F.silu(h)), (d,), self.gamma2, self.beta2, _EPS)
        return F.silu(h) + skip


class _Attend(nn.Module):
    """x + Attention(RMSNorm(x)) as ``fused_denoiser._attend``, out of place (inductor fuses it anyway)."""

    def __init__(self, attention: _Attention) -> None:
        super().__init__()
        self.qkv, self.out = _Lin(attention.qkv), _Lin(attention.out)
        self.pool = nn.Parameter(attention.pool.clone(), requires_grad=False)
        self.norm_eps, self.heads = attention.norm_eps, attention.heads
        self.tokens, self.head_dim = attention.tokens, attention.head_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, heads, n, hd = x.shape[0], self.heads, self.tokens, self.head_dim
        normed = x / torch.linalg.vector_norm(x, dim=1, keepdim=True).clamp_min(self.norm_eps)
        qkv = self.qkv(normed).view(batch * heads, 3, n, hd)
        q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]
        weights = torch.softmax(torch.bmm(q, k.transpose(1, 2)), dim=-1)
        pooled = (weights * self.pool).sum(dim=1, keepdim=True)
        mixed = torch.bmm(pooled, v).view(batch, heads * hd)
        return self.out(mixed) + x


class CompiledStep(nn.Module):
    """``FusedDenoiser._step`` as a module: ε̂ = step(x (B, F), a (S,), b (S,)) with the FiLM rows a, b."""

    def __init__(self, fused: FusedDenoiser) -> None:
        super().__init__()
        self.init_conv = _Lin(fused.init_conv)
        self.downs = nn.ModuleList(
            nn.ModuleList([_ResBlock(b1), _ResBlock(b2), _Attend(at), _Lin(d1), _Lin(d2)])
            for b1, b2, at, (d1, d2) in fused.downs
        )
        mid1, mid_attention, mid2 = fused.mid
        self.mid = nn.ModuleList([_ResBlock(mid1), _Attend(mid_attention), _ResBlock(mid2)])
        self.ups = nn.ModuleList(
            nn.ModuleList([_Lin(u1), _Lin(u2), _ResBlock(b1), _ResBlock(b2), _Attend(at)])
            for (u1, u2), b1, b2, at in fused.ups
        )
        block, attention, out_conv = fused.final
        self.final = nn.ModuleList([_ResBlock(block), _Attend(attention), _Lin(out_conv)])

    def forward(self, x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        x = self.init_conv(x)
        initial = x
        skips: list[torch.Tensor] = []
        for level in self.downs:
            block1, block2, attention, down1, down2 = list(cast(nn.ModuleList, level))
            x = block1(x, a, b)
            skips.append(x)
            x = attention(block2(x, a, b))
            skips.append(x)
            x = down2(down1(x, silu=True))
        mid1, mid_attention, mid2 = self.mid
        x = mid2(mid_attention(mid1(x, a, b)), a, b)
        for level in self.ups:
            up1, up2, block1, block2, attention = list(cast(nn.ModuleList, level))
            x = up2(up1(x, silu=True))
            x = block1(torch.cat([x, skips.pop()], dim=1), a, b)
            x = block2(torch.cat([x, skips.pop()], dim=1), a, b)
            x = attention(x)
        block, attention, out_conv = self.final
        x = block(torch.cat([x, initial], dim=1), a, b)
        return cast(torch.Tensor, out_conv(attention(x)))


StepFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def compile_step(fused: FusedDenoiser) -> tuple[StepFn | None, str]:
    """(compiled step, "") or (None, why not). Compilation itself happens on the first call (lazy)."""
    if compiler_available() is None:
        return None, "no C++ compiler on PATH (inductor's CPU backend needs g++/clang++ or MSVC cl)"
    from .fused_denoiser import FusedDenoiser as _Fused

    try:
        import torch._inductor.config as inductor_config

        module = CompiledStep(
            _Fused(fused.net, memo_steps=0, use_mkldnn=False, compile_step=False, precision="fp32")
        ).eval()
        compiled = torch.compile(module, dynamic=False)
    except Exception as exc:  # torch builds without dynamo/inductor raise various types
        return None, f"torch.compile unavailable: {exc}"

    def step(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > 1:
            torch._dynamo.mark_dynamic(x, 0)  # the oneDNN packing path (module docstring)
        # Freezing (weights as constants, packed once for oneDNN, folded), patched for this graph's compiles
        # only: ``torch.compile(options={"freezing": True})`` was measured NOT to freeze (no weight packing).
        with inductor_config.patch(freezing=True):
            return cast(torch.Tensor, compiled(x, a, b))

    return step, ""
