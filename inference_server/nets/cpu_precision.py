"""The fused denoiser step's GEMM precision on CPU: fp32 (default, exact) or bf16 (opt-in, inexact).

``OFER_CPU_PRECISION=bf16`` in the worker's environment (or ``FusedDenoiser(net, precision="bf16")``) runs
the fused step's large linear maps with bfloat16 operands: weights packed as bf16 for oneDNN once, the
activation rounded to bf16 at the GEMM input only; oneDNN accumulates in fp32 and adds the fp32 bias in
fp32, then rounds its output to bf16, which is widened back to fp32 at once. Norms, SiLU, softmax, the
attention core, the residual stream and the sampler's arithmetic stay fp32. On a CPU with native bf16
dot products (AVX512-BF16 / AMX on x86, BF16 on ARM: what oneDNN reports) the GEMMs run at up to twice
the fp32 rate; elsewhere oneDNN would emulate bf16 (slower than fp32), so the step stays fp32 and says so
in the log. Never the default: a bf16 step differs from fp32 by about 1e-2 relative per step (bf16 has 8
significant bits); what that does to whole sampling runs is measured in benchmarks/README.md.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Mapping

import torch

from ..errors import BadRequestError

__all__ = ["PRECISIONS", "PRECISION_ENV", "bf16_supported", "requested_precision", "resolve_precision"]

log = logging.getLogger(__name__)

#: ``OFER_CPU_PRECISION=bf16`` turns the bf16 GEMMs on for every fused denoiser built in this process.
PRECISION_ENV = "OFER_CPU_PRECISION"
PRECISIONS = ("fp32", "bf16")


def requested_precision(environ: Mapping[str, str] | None = None) -> str:
    """The precision ``OFER_CPU_PRECISION`` asks for (fp32 when unset). A misspelt value is an error, not a
    silent fp32: the user asked for something and would otherwise measure the wrong thing."""
    value = (os.environ if environ is None else environ).get(PRECISION_ENV, "").strip()
    if value == "":
        return "fp32"
    if value.lower() not in PRECISIONS:
        raise BadRequestError(
            f"{PRECISION_ENV}={value!r} is not a known CPU denoiser precision.",
            f"Set it to one of {', '.join(PRECISIONS)}, or unset it, and restart the worker.",
        )
    return value.lower()


@functools.cache
def bf16_supported() -> bool:
    """Whether oneDNN runs bf16 GEMMs natively on this CPU, and this torch build can pack them."""
    try:
        if not (torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()):
            return False
        weight = torch.ops.mkldnn._reorder_linear_weight(torch.ones(2, 2, dtype=torch.bfloat16), 1)
        out = torch.ops.mkldnn._linear_pointwise(torch.ones(1, 2, dtype=torch.bfloat16), weight, None, "none", [], "")
    except (RuntimeError, AttributeError, NotImplementedError):
        return False
    return bool(torch.equal(out.float(), torch.full((1, 2), 2.0)))


def resolve_precision(requested: str, *, onednn: bool) -> tuple[str, str]:
    """(precision the step will use, why it differs from ``requested`` or ""); logs a fallback once per call."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {requested!r}")
    if requested == "fp32":
        return "fp32", ""
    if not onednn:
        note = "oneDNN linear layers are not in use"
    elif not bf16_supported():
        note = "this CPU has no native bf16 dot products (oneDNN would emulate them, slower than fp32)"
    else:
        return "bf16", ""
    log.info("bf16 denoiser GEMMs requested but not used (%s): the fused step runs in fp32", note)
    return "fp32", note
