"""Bfloat16 encoders in torch on CPUs with native bf16 arithmetic, adopted per encoder where they stay close.

On a CPU with bf16 dot-product instructions (x86 AVX512-BF16 / AMX, Arm BF16) oneDNN runs bf16 convolutions
and matrix products natively (``jit_bf16:avx512_core_bf16`` on the benchmark's EPYC): official-size ArcFace
1.6× and FaRL 2.8× faster than torch fp32 on 2 cores (benchmarks/README.md, "Encoders in bfloat16"). A
converted copy (bf16 weights and activations, LayerNorm kept in fp32 — the ViT computes it in fp32 anyway) was
faster than ``torch.autocast`` (which converts the weights again at every call) with the same embeddings. On
CPUs without native bf16 the same arithmetic is emulated and slower than fp32, so bf16 is never used there.

Adoption follows ``encoder_probe``: the bf16 copy and the fp32 module embed the probe set and bf16 is adopted
only when the minimum cosine is ≥ ``MIN_BF16_COSINE``. The verdict is stored at
``<cache>/encoders_onnx/<kind>-<key>.bf16-<cpu>.json`` (``<cpu>``: torch's version and the CPU, the things the
bf16 kernels depend on) with the bf16 copy's embedding of the fixed probe, so a later open runs one bf16 pass
instead of the probe set, and a change of kernels is noticed (the verdict is measured again).
"""

from __future__ import annotations

import copy
import functools
import hashlib
import logging
import platform
import time
from pathlib import Path

import torch
from torch import nn

from .encoder_probe import MIN_PROBE_COSINE, judge, measure_verdict, read_verdict, verdict_holds
from .encoder_runtime import EncoderRuntimeReport, kind_and_size

log = logging.getLogger(__name__)

MIN_BF16_COSINE = MIN_PROBE_COSINE
#: /proc/cpuinfo flags of native bf16 arithmetic (x86: AVX512-BF16, AMX-BF16; Arm: the BF16 extension).
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The first processor's instruction-set flags (Linux ``flags`` / Arm ``Features``); empty elsewhere."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def native_bf16() -> bool:
    """Whether this CPU computes bf16 natively and torch's oneDNN can use it."""
    return bool(cpu_flags() & NATIVE_BF16_FLAGS) and torch.backends.mkldnn.is_available()


def bf16_identity() -> str:
    """Key of what the bf16 embeddings depend on besides the weights: torch's version and the CPU."""
    parts = (torch.__version__, platform.machine(), " ".join(sorted(cpu_flags())))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


def bf16_copy(module: nn.Module) -> nn.Module:
    """A bf16 copy of ``module`` (independent storage, eval mode) whose LayerNorms keep their fp32 weights."""
    twin = copy.deepcopy(module).eval().to(torch.bfloat16)
    originals = dict(module.named_modules())
    with torch.no_grad():
        for name, sub in twin.named_modules():
            if isinstance(sub, nn.LayerNorm):
                for pname, param in originals[name].named_parameters(recurse=False):
                    getattr(sub, pname).data = param.detach().float().clone()
    return twin


class Bf16Encoder:
    """Embeds an fp32 image with the bf16 copy of an encoder; the embedding comes back in fp32."""

    def __init__(self, module: nn.Module) -> None:
        self.module = bf16_copy(module)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.module(x.to(torch.bfloat16)).float()


def open_bf16(module: nn.Module, stem: Path, slot: str, report: EncoderRuntimeReport) -> Bf16Encoder | None:
    """The bf16 encoder of ``module`` when its verdict (stored or measured now) adopts it, else None."""
    if not native_bf16():
        report.bf16[slot] = {"adopted": False, "why": "this CPU has no native bf16 arithmetic"}
        return None
    start = time.perf_counter()
    kind, size = kind_and_size(module)
    encoder = Bf16Encoder(module)
    path = stem.with_name(f"{stem.name}.bf16-{bf16_identity()}.json")
    verdict = read_verdict(path)
    if verdict is None or not verdict_holds(verdict, encoder, size):  # none yet, or other kernels: measure
        verdict = measure_verdict(path, kind, size, module.eval(), encoder, torch=torch.__version__)
    report.timings.setdefault(slot, {})["bf16"] = time.perf_counter() - start
    report.bf16[slot] = judge(verdict)
    if not report.bf16[slot]["adopted"]:
        return None
    report.precision[slot] = "bf16"
    return encoder
