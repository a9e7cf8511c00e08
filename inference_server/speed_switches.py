"""The worker's speed switches: checked before any work, and carried to every actor of a batch.

A misspelt value is refused before any model loads (``check_switches``; each switch's own reader words the
error, and the worker's request fails, not the worker).

A batch runs with the switches of the shell that started it. On a Ray cluster an actor's environment is its node's,
not the environment of the shell that ran ``ofer-worker batch``: without this, ``OFER_ENCODER_PRECISION=auto
ofer-worker batch … --address auto`` would run the int8 / bf16 encoders on a local Ray only and fp32 on a cluster,
and say nothing. The batch captures the switches once (``captured_switches``) and every item runner sets exactly
those (``apply_switches``: one that the shell left unset is unset in the actor too, whatever its node has).

The switches that change the samples beyond float rounding (int8 / bf16 encoders, bf16 denoiser GEMMs) are part of
the job's fingerprint (``result_switches``), so that a resumed run with other values redoes its items; the others
(the concurrent draw, the row split, ONNX Runtime steps, CUDA graphs, …) give the same samples within float
rounding and resume as before.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping

__all__ = [
    "RESULT_SWITCHES",
    "SPEED_SWITCHES",
    "apply_switches",
    "captured_switches",
    "check_switches",
    "result_switches",
]

#: Every switch the worker reads per request (README, "Speed switches").
SPEED_SWITCHES = (
    "OFER_ENCODER_PRECISION",
    "OFER_ENCODER_RUNTIME",
    "OFER_CPU_PRECISION",
    "OFER_CPU_CONCURRENT_SAMPLERS",
    "OFER_CPU_ROW_SPLIT",
    "OFER_CPU_DENOISER_RUNTIME",
    "OFER_CPU_ENCODER_LANES",
    "OFER_CPU_COMPILE",
    "OFER_CUDA_GRAPHS",
    "OFER_CUDA_WHOLE_STEPS",
)
#: Those whose values give other samples (beyond float rounding): part of the batch's resume fingerprint.
RESULT_SWITCHES = ("OFER_ENCODER_PRECISION", "OFER_ENCODER_RUNTIME", "OFER_CPU_PRECISION")


def captured_switches(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The switches set (non-empty) in ``environ`` (default: this process's environment)."""
    env = os.environ if environ is None else environ
    return {name: env[name] for name in SPEED_SWITCHES if env.get(name, "").strip()}


def apply_switches(switches: Mapping[str, str], environ: MutableMapping[str, str] | None = None) -> None:
    """Make ``environ`` (default: this process's) hold exactly ``switches`` among the speed switches."""
    env = os.environ if environ is None else environ
    for name in SPEED_SWITCHES:
        if name in switches:
            env[name] = switches[name]
        else:
            env.pop(name, None)


def result_switches(switches: Mapping[str, str]) -> dict[str, str]:
    """The part of ``switches`` that changes the results (for the resume fingerprint)."""
    return {name: value for name, value in switches.items() if name in RESULT_SWITCHES}


def check_switches() -> str | None:
    """Read every per-request switch of this process's environment once, so that a misspelt value is a
    ``BadRequestError`` naming it before anything loads; returns the encoder precision asked for (None: fp32)."""
    from .backends import cuda_graphs_requested, whole_steps_requested
    from .diffusion.background_draw import concurrent_requested
    from .encoder_lanes import lanes_requested
    from .encoder_runtime import requested_encoder_runtime
    from .nets.cpu_precision import requested_precision
    from .nets.onnx_step import requested_step_runtime
    from .nets.row_lanes import row_split_requested

    precision = requested_encoder_runtime(os.environ)
    concurrent_requested()
    lanes_requested()  # read again by ModelBundle.contexts
    requested_precision()  # read again where the fused denoiser is built
    row_split_requested()  # likewise
    requested_step_runtime()  # likewise
    cuda_graphs_requested()  # read again where the bundle steps on a CUDA device
    whole_steps_requested()  # likewise
    return precision
