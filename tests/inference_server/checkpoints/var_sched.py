"""The official ``var_sched`` buffers (spec appendix D), shared by the checkpoint tests."""

from __future__ import annotations

import numpy as np
import torch


def var_sched_buffers(steps: int = 1000, beta_1: float = 1e-4, beta_T: float = 1e-2) -> dict[str, torch.Tensor]:
    """The 17 buffers with the dtypes of appendix D (float64 where the official code prepends a float)."""
    b = np.linspace(beta_1, beta_T, steps)
    a = 1.0 - b
    A = np.cumprod(a)
    A_prev = np.concatenate([[1.0], A[:-1]])
    post_var = b * (1 - A_prev) / (1 - A)
    f32 = {
        "betas": b,
        "alphas": a,
        "alphas_cumprod": A,
        "sqrt_alpha_cumprod": np.sqrt(A),
        "sqrt_alpha": np.sqrt(a),
        "sqrt_recip_alpha": 1 / np.sqrt(a),
        "sqrt_one_minus_alpha_cumprod": np.sqrt(1 - A),
        "log_one_minus_alpha_cumprod": np.log(1 - A),
        "sqrt_recip_alpha_cumprod": 1 / np.sqrt(A),
        "sqrt_recip_minus_one_alpha_cumprod": np.sqrt(1 / A - 1),
        "posterior_mean_coeff3": b / np.sqrt(1 - A),
        "mean_coeff": (1 - A) / b,
    }
    f64 = {
        "alphas_cumprod_prev": A_prev,
        "posterior_variance": post_var,
        "posterior_log_variance_clipped": np.log(np.maximum(post_var, 1e-20)),
        "posterior_mean_coeff1": b * np.sqrt(A_prev) / (1 - A),
        "posterior_mean_coeff2": (1 - A_prev) * np.sqrt(a) / (1 - A),
    }
    out = {k: torch.tensor(v, dtype=torch.float32) for k, v in f32.items()}
    out.update({k: torch.tensor(v, dtype=torch.float64) for k, v in f64.items()})
    return out
