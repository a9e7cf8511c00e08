"""The OFER noise schedule: linear β from 1e-4 to 1e-2 over T = 1000 steps, ε-prediction.

All tables are float64 so that per-step sampler coefficients (ratios and square roots of ᾱ near 0 and
near 1) are formed without float32 cancellation; samplers cast the final coefficients to the sampling
dtype. The same numbers come out of ``diffusers.DDPMScheduler(beta_start=1e-4, beta_end=1e-2,
beta_schedule="linear", variance_type="fixed_small")`` (float32) — the tests check it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

OFER_TRAIN_STEPS = 1000
OFER_BETA_START = 1e-4
OFER_BETA_END = 1e-2


@dataclass(frozen=True)
class NoiseSchedule:
    """Discrete DDPM schedule. Index t = 0..T-1; ``alphas_cumprod[t]`` is ᾱ_t (written A_t in the spec)."""

    betas: torch.Tensor
    alphas: torch.Tensor
    alphas_cumprod: torch.Tensor
    #: A_{t-1} with the convention A_{-1} = 1.
    alphas_cumprod_prev: torch.Tensor
    #: b_t (1 - A_{t-1}) / (1 - A_t): the variance of the DDPM ancestral step ("fixed_small").
    posterior_variance: torch.Tensor

    @classmethod
    def linear(
        cls,
        num_train_steps: int = OFER_TRAIN_STEPS,
        beta_start: float = OFER_BETA_START,
        beta_end: float = OFER_BETA_END,
    ) -> NoiseSchedule:
        if num_train_steps < 2:
            raise ValueError(f"num_train_steps must be at least 2, got {num_train_steps}")
        if not 0.0 < beta_start <= beta_end < 1.0:
            raise ValueError(f"need 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end}")
        betas = torch.linspace(beta_start, beta_end, num_train_steps, dtype=torch.float64)
        alphas = 1.0 - betas
        alphas_cumprod = torch.cumprod(alphas, dim=0)
        alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
        posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
        return cls(betas, alphas, alphas_cumprod, alphas_cumprod_prev, posterior_variance)

    @property
    def num_train_steps(self) -> int:
        return int(self.betas.shape[0])

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(A_t) x0 + sqrt(1 - A_t) ε for integer timesteps ``t`` of shape (B,) (training)."""
        a = self.alphas_cumprod.to(x0.device)[t].to(x0.dtype).unsqueeze(-1)
        return a.sqrt() * x0 + (1.0 - a).sqrt() * noise

    def trailing_timesteps(self, steps: int) -> list[int]:
        """``steps`` timesteps evenly spaced from T-1 down (diffusers' "trailing" spacing).

        Starting at T-1 keeps the first step at the state the sampler starts from (x_T ~ N(0, I));
        for T = 1000: 50 steps give 999, 979, ..., 19 and 250 steps give 999, 995, ..., 3.
        """
        total = self.num_train_steps
        if not 1 <= steps <= total:
            raise ValueError(f"steps must be between 1 and {total}, got {steps}")
        ratio = total / steps
        return [round(total - i * ratio) - 1 for i in range(steps)]
