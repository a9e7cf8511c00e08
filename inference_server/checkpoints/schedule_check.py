"""Check the stored ``var_sched`` buffers against the schedule the project recomputes (appendix D).

The samplers never read these buffers; a mismatch means the file was trained with another schedule,
which the project's samplers would then get wrong.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..errors import BadCheckpointError
from .networks import SCHEDULE

__all__ = ["VAR_SCHED_BUFFERS", "check_var_sched"]

VAR_SCHED_BUFFERS = (
    "betas",
    "alphas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alpha_cumprod",
    "sqrt_alpha",
    "sqrt_recip_alpha",
    "sqrt_one_minus_alpha_cumprod",
    "log_one_minus_alpha_cumprod",
    "sqrt_recip_alpha_cumprod",
    "sqrt_recip_minus_one_alpha_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coeff1",
    "posterior_mean_coeff2",
    "posterior_mean_coeff3",
    "mean_coeff",
)


def _reference() -> dict[str, torch.Tensor]:
    steps = int(SCHEDULE["num_steps"])
    betas = torch.linspace(SCHEDULE["beta_start"], SCHEDULE["beta_end"], steps, dtype=torch.float64)
    alphas = 1.0 - betas
    cumprod = torch.cumprod(alphas, dim=0)
    return {
        "betas": betas,
        "alphas": alphas,
        "alphas_cumprod": cumprod,
        "sqrt_alpha_cumprod": cumprod.sqrt(),
        "sqrt_one_minus_alpha_cumprod": (1.0 - cumprod).sqrt(),
    }


def check_var_sched(buffers: Mapping[str, torch.Tensor], file_name: str, where: str) -> None:
    """Raise ``BadCheckpointError`` unless ``buffers`` are the 17 buffers of OFER's schedule."""
    names = set(buffers)
    missing = sorted(set(VAR_SCHED_BUFFERS) - names)
    unexpected = sorted(names - set(VAR_SCHED_BUFFERS))
    if missing or unexpected:
        raise BadCheckpointError(
            f"checkpoint {file_name}: {where} has missing buffers {missing} / unexpected {unexpected}",
            "this is not an OFER denoiser checkpoint; use the official model_idgen/expgen_flame20.tar",
        )
    steps = int(SCHEDULE["num_steps"])
    for name, expected in _reference().items():
        stored = buffers[name]
        ok = tuple(stored.shape) == (steps,) and torch.allclose(
            stored.to(torch.float64), expected, rtol=1e-4, atol=1e-7
        )
        if not ok:
            raise BadCheckpointError(
                f"checkpoint {file_name}: {where}.{name} does not match the linear beta schedule "
                f"{SCHEDULE['beta_start']}…{SCHEDULE['beta_end']} with T={steps} that OFER uses",
                "the file was trained with another diffusion schedule; use the official OFER checkpoints",
            )
