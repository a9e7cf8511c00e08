"""The OFER schedule against diffusers' DDPMScheduler configured as the spec says (an independent
implementation of the same linear-β DDPM tables)."""

from __future__ import annotations

from typing import cast

import numpy as np
import pytest
import torch

# From its own module: through the package root, mypy sees diffusers' torch-less placeholder class.
from diffusers.schedulers.scheduling_ddpm import DDPMScheduler

from inference_server.diffusion import NoiseSchedule


def _diffusers_ddpm() -> DDPMScheduler:
    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=1e-4,
        beta_end=1e-2,
        beta_schedule="linear",
        variance_type="fixed_small",
        clip_sample=False,
    )


def test_tables_equal_diffusers_to_float_precision() -> None:
    schedule = NoiseSchedule.linear()
    reference = _diffusers_ddpm()
    assert schedule.num_train_steps == 1000
    assert schedule.alphas_cumprod.dtype == torch.float64
    # diffusers keeps float32 tables (its cumulative product carries float32 rounding).
    torch.testing.assert_close(schedule.betas.float(), reference.betas, rtol=1e-6, atol=0)
    torch.testing.assert_close(schedule.alphas.float(), reference.alphas, rtol=1e-6, atol=0)
    torch.testing.assert_close(schedule.alphas_cumprod.float(), reference.alphas_cumprod, rtol=2e-5, atol=0)


def test_posterior_std_equals_diffusers_fixed_small() -> None:
    schedule = NoiseSchedule.linear()
    reference = _diffusers_ddpm()
    reference_std = torch.stack([reference._get_variance(t) ** 0.5 for t in range(1000)])
    ours = schedule.posterior_variance.sqrt().float()
    # diffusers forms b'_t = 1 - A_t/A_{t-1} in float32, which cancels to about 6e-8 absolute in b'_t,
    # i.e. a few 1e-6 in the std at small t; the float64 formula is checked exactly below.
    torch.testing.assert_close(ours[1:], reference_std[1:], rtol=2e-5, atol=5e-6)
    # t = 0 has no noise (diffusers clamps its variance to 1e-20 there).
    assert ours[0] == 0 and reference_std[0] < 1e-9


def test_documented_terminal_values_and_posterior_formula() -> None:
    schedule = NoiseSchedule.linear()
    betas = np.linspace(1e-4, 1e-2, 1000)
    cumulative = np.cumprod(1.0 - betas)
    assert schedule.alphas_cumprod[-1].item() == pytest.approx(cumulative[-1], rel=1e-12)
    assert schedule.alphas_cumprod[-1].item() == pytest.approx(0.0063, abs=5e-5)  # spec section 7
    expected = betas[1:] * (1 - cumulative[:-1]) / (1 - cumulative[1:])
    np.testing.assert_allclose(schedule.posterior_variance[1:].numpy(), expected, rtol=1e-12)
    assert schedule.alphas_cumprod_prev[0].item() == 1.0


@pytest.mark.parametrize("steps", [1, 3, 7, 20, 25, 50, 250, 1000])
def test_trailing_timesteps_equal_diffusers_trailing_spacing(steps: int) -> None:
    reference = DDPMScheduler(num_train_timesteps=1000, timestep_spacing="trailing")
    reference.set_timesteps(steps)
    assert NoiseSchedule.linear().trailing_timesteps(steps) == reference.timesteps.tolist()


def test_spec_examples_of_trailing_timesteps() -> None:
    schedule = NoiseSchedule.linear()
    assert schedule.trailing_timesteps(250)[:3] == [999, 995, 991]
    assert schedule.trailing_timesteps(250)[-1] == 3
    assert schedule.trailing_timesteps(1000) == list(range(999, -1, -1))


def test_add_noise_equals_diffusers() -> None:
    generator = torch.Generator().manual_seed(0)
    x0 = torch.randn(6, 5, generator=generator)
    noise = torch.randn(6, 5, generator=generator)
    t = torch.tensor([0, 1, 250, 500, 998, 999])
    ours = NoiseSchedule.linear().add_noise(x0, noise, t)
    # diffusers annotates the steps as the legacy IntTensor; any integer tensor is what it indexes with.
    theirs = _diffusers_ddpm().add_noise(x0, noise, cast(torch.IntTensor, t))
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_train_steps": 1}, "at least 2"),
        ({"beta_start": 0.0}, "beta_start"),
        ({"beta_start": 0.02, "beta_end": 0.01}, "beta_start"),
    ],
)
def test_bad_schedule_arguments_are_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        NoiseSchedule.linear(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("steps", [0, 1001])
def test_bad_step_counts_are_refused(steps: int) -> None:
    with pytest.raises(ValueError, match="steps must be between 1 and 1000"):
        NoiseSchedule.linear().trailing_timesteps(steps)
