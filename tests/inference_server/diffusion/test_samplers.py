"""Samplers: step by step against diffusers' schedulers, against the exact answers of a Gaussian target,
and the promises of ``sample`` (seeding, progress, cancel, one context per image)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

from inference_server.diffusion import NoiseSchedule, make_generator, plan_sampler, sample
from inference_server.errors import CancelledError

SCHEDULE = NoiseSchedule.linear()
DIFFUSERS_SCHEDULE = {
    "num_train_timesteps": 1000,
    "beta_start": 1e-4,
    "beta_end": 1e-2,
    "beta_schedule": "linear",
    "timestep_spacing": "trailing",
}
N, F, C = 8, 4, 6


def stand_in_network(x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """A smooth non-linear ε that depends on x, t and the context, like a real denoiser would."""
    level = (t.to(x.dtype) / 1000.0).unsqueeze(-1)
    return 0.9 * torch.tanh(0.7 * x + level) + 0.1 * context[:, : x.shape[1]]


class Recorder:
    """Wraps a model and keeps every state it was evaluated at."""

    def __init__(self, model: Callable[..., torch.Tensor]) -> None:
        self.model = model
        self.states: list[torch.Tensor] = []
        self.contexts: list[torch.Tensor] = []

    def __call__(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        self.states.append(x.clone())
        self.contexts.append(context)
        return self.model(x, t, context)


def _diffusers_states(
    scheduler: Any, steps: int, seed: int, context: torch.Tensor, **step_kwargs: float
) -> list[torch.Tensor]:
    """The diffusers sampling loop; same random stream as ``sample``: x_T, then the step noises."""
    scheduler.set_timesteps(steps)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn((N, F), generator=generator)
    states = []
    for t in scheduler.timesteps:
        states.append(x.clone())
        eps = stand_in_network(x, t.expand(N), context.expand(N, C))
        x = scheduler.step(eps, t, x, generator=generator, **step_kwargs).prev_sample
    states.append(x)
    return states


def _our_states(sampler: str, steps: int, seed: int, context: torch.Tensor, eta: float = 0.0) -> list[torch.Tensor]:
    recorder = Recorder(stand_in_network)
    final = sample(recorder, context, N, F, sampler=sampler, steps=steps, eta=eta, seed=seed)
    return [*recorder.states, final]


def _assert_trajectories_close(ours: list[torch.Tensor], theirs: list[torch.Tensor], tolerance: float) -> None:
    """Every visited state agrees. diffusers keeps float32 tables and we float64 coefficients, so
    rounding drifts along the trajectory; a wrong coefficient at any step would be off by far more."""
    assert len(ours) == len(theirs)
    for step, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        torch.testing.assert_close(
            a,
            b,
            rtol=tolerance,
            atol=tolerance,
            msg=f"step {step}",
        )


CONTEXT = torch.linspace(-1.0, 1.0, C).unsqueeze(0)


@pytest.mark.parametrize("steps", [1000, 50])
def test_ddpm_follows_diffusers_ddpm_step_by_step(steps: int) -> None:
    scheduler = DDPMScheduler(**DIFFUSERS_SCHEDULE, variance_type="fixed_small", clip_sample=False)
    theirs = _diffusers_states(scheduler, steps, 3, CONTEXT)
    _assert_trajectories_close(_our_states("ddpm", steps, 3, CONTEXT), theirs, tolerance=2e-4)


@pytest.mark.parametrize(("steps", "eta"), [(50, 0.0), (25, 0.0), (50, 1.0), (20, 0.3)])
def test_ddim_follows_diffusers_ddim_step_by_step(steps: int, eta: float) -> None:
    # set_alpha_to_one: after the last step A_next = 1 (returns x̂0). diffusers moves to t - T/steps,
    # which is the next visited timestep only when steps divides T; those are the counts used here.
    scheduler = DDIMScheduler(**DIFFUSERS_SCHEDULE, clip_sample=False, set_alpha_to_one=True)
    theirs = _diffusers_states(scheduler, steps, 5, CONTEXT, eta=eta)
    _assert_trajectories_close(_our_states("ddim", steps, 5, CONTEXT, eta), theirs, tolerance=2e-5)


@pytest.mark.parametrize(("sampler", "algorithm"), [("dpmsolver", "dpmsolver++"), ("dpmsolver_sde", "sde-dpmsolver++")])
@pytest.mark.parametrize("steps", [20, 10])
def test_dpm_solver_pp_2m_follows_diffusers_step_by_step(sampler: str, algorithm: str, steps: int) -> None:
    scheduler = DPMSolverMultistepScheduler(
        **DIFFUSERS_SCHEDULE,
        algorithm_type=algorithm,
        solver_order=2,
        solver_type="midpoint",
        lower_order_final=True,
        final_sigmas_type="zero",
    )
    theirs = _diffusers_states(scheduler, steps, 7, CONTEXT)
    _assert_trajectories_close(_our_states(sampler, steps, 7, CONTEXT), theirs, tolerance=2e-5)


def test_strided_ddpm_is_ddim_with_eta_one() -> None:
    ddpm = sample(stand_in_network, CONTEXT, N, F, sampler="ddpm", steps=40, seed=11, dtype=torch.float64)
    ddim = sample(stand_in_network, CONTEXT, N, F, sampler="ddim", steps=40, eta=1.0, seed=11, dtype=torch.float64)
    torch.testing.assert_close(ddpm, ddim, rtol=0, atol=1e-10)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpmsolver", "dpmsolver_sde"])
def test_last_step_returns_the_predicted_x0(sampler: str) -> None:
    plan = plan_sampler(SCHEDULE, sampler, steps=10, eta=1.0)
    a = SCHEDULE.alphas_cumprod[plan.timesteps[-1]].item()
    assert plan.c_x[-1].item() == pytest.approx(1 / math.sqrt(a), rel=1e-12)
    assert plan.c_eps[-1].item() == pytest.approx(-math.sqrt((1 - a) / a), rel=1e-9)
    assert plan.c_noise[-1].item() == 0.0 and plan.c_prev_x0[-1].item() == 0.0


# --- Oracle: a Gaussian target, for which the exact ε and the samplers' exact outputs are known. ---

MU, SIGMA = 2.0, 0.5
ORACLE_SAMPLES = 20_000
A = SCHEDULE.alphas_cumprod


LEVELS = A.tolist()


def exact_eps(x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """E[ε | x_t] for x0 ~ N(μ, σ²): x_t ~ N(sqrt(A) μ, A σ² + 1 - A) and Cov(ε, x_t) = sqrt(1 - A)."""
    assert bool((t == t[0]).all())  # one timestep per step: use scalars, keeps 20,000 samples cheap
    a = LEVELS[int(t[0])]
    return (x - math.sqrt(a) * MU) * (math.sqrt(1.0 - a) / (a * SIGMA**2 + 1.0 - a))


def _oracle(sampler: str, steps: int, eta: float = 0.0, seed: int = 0) -> torch.Tensor:
    out = sample(
        exact_eps,
        torch.zeros(1, 1),
        ORACLE_SAMPLES,
        1,
        sampler=sampler,
        steps=steps,
        eta=eta,
        seed=seed,
        dtype=torch.float64,
    )
    return out[:, 0]


def _relative_errors(x: torch.Tensor) -> tuple[float, float]:
    return abs(x.mean().item() - MU) / MU, abs(x.std().item() - SIGMA) / SIGMA


@pytest.mark.parametrize(
    ("sampler", "steps", "eta"), [("ddpm", 1000, 0.0), ("dpmsolver_sde", 20, 0.0), ("ddim", 500, 1.0)]
)
def test_oracle_recovers_mean_and_std_within_two_percent(sampler: str, steps: int, eta: float) -> None:
    mean_error, std_error = _relative_errors(_oracle(sampler, steps, eta))
    assert mean_error < 0.02 and std_error < 0.02, (mean_error, std_error)


def _ddim_moments(steps: int, eta: float) -> tuple[float, float]:
    """Exact mean and std after DDIM(η) on the Gaussian target, from the spec's update written for
    d = x - sqrt(A) μ: d_next = k d + σ_η z, k = (sqrt(A_n A_t) s² + sqrt(1 - A_n - σ_η²) sqrt(1 - A_t)) / v_t
    with v_t = A_t s² + 1 - A_t (exact ε̂ and x̂0 are linear in d)."""
    timesteps = SCHEDULE.trailing_timesteps(steps)
    levels = [A[t].item() for t in timesteps] + [1.0]
    mean, variance = -math.sqrt(levels[0]) * MU, 1.0  # x_T ~ N(0, 1)
    for a_t, a_n in itertools.pairwise(levels):
        v_t = a_t * SIGMA**2 + 1.0 - a_t
        noise = eta * math.sqrt((1 - a_n) / (1 - a_t)) * math.sqrt(1 - a_t / a_n)
        k = (math.sqrt(a_n * a_t) * SIGMA**2 + math.sqrt(max(1 - a_n - noise**2, 0.0)) * math.sqrt(1 - a_t)) / v_t
        mean, variance = k * mean, k * k * variance + noise**2
    return MU + mean, math.sqrt(variance)


@pytest.mark.parametrize("eta", [1.0, 0.5])
def test_oracle_ddim_50_steps_matches_its_exact_moments(eta: float) -> None:
    x = _oracle("ddim", 50, eta)
    mean, std = _ddim_moments(50, eta)
    # Within 5 standard errors of the exact values (not of the target: 50 DDIM steps are biased, below).
    assert abs(x.mean().item() - mean) < 5 * std / math.sqrt(ORACLE_SAMPLES)
    assert abs(x.std().item() - std) < 5 * std / math.sqrt(2 * ORACLE_SAMPLES)


def test_oracle_ddim_eta_zero_is_the_exact_deterministic_map() -> None:
    """With η = 0 every sample is x0 = μ + (x_T - sqrt(A_T) μ)·Π k: check it per sample."""
    x = _oracle("ddim", 50, 0.0, seed=4)
    x_T = torch.randn((ORACLE_SAMPLES, 1), generator=make_generator(4, "cpu"), dtype=torch.float64)[:, 0]
    mean, std = _ddim_moments(50, 0.0)
    gain = std  # Var(x_T) = 1, so the std of the output is the product of the k's
    expected = MU + (x_T - math.sqrt(A[999].item()) * MU) * gain
    torch.testing.assert_close(x, expected, rtol=0, atol=1e-9)
    assert mean == pytest.approx(MU - math.sqrt(A[999].item()) * MU * gain, rel=1e-12)


def test_fifty_ddim_steps_cannot_meet_two_percent_on_this_schedule() -> None:
    """Documents why the 2 % oracle runs DDIM at 500 steps: at 50 steps the terminal-SNR bias (η = 0)
    and the shrinking of coarse ancestral steps (η = 1) each cost more than 2 %."""
    for eta in (0.0, 0.25, 0.5, 0.75, 1.0):
        mean, std = _ddim_moments(50, eta)
        assert abs(mean - MU) / MU > 0.02 or abs(std - SIGMA) / SIGMA > 0.02, eta


def test_oracle_deterministic_dpm_solver_follows_the_exact_flow_map() -> None:
    """DPM-Solver++(2M) integrates the probability-flow ODE, which maps x_T to
    μ + (x_T - sqrt(A_T) μ) s / sqrt(v_T) for this target. From x_T ~ N(0, 1) that is the terminal-SNR
    bias: mean μ(1 - s sqrt(A_T / v_T)), about 4 % low."""
    x = _oracle("dpmsolver", 50, seed=4)
    x_T = torch.randn((ORACLE_SAMPLES, 1), generator=make_generator(4, "cpu"), dtype=torch.float64)[:, 0]
    a_T = A[999].item()
    v_T = a_T * SIGMA**2 + 1 - a_T
    exact = MU + (x_T - math.sqrt(a_T) * MU) * SIGMA / math.sqrt(v_T)
    torch.testing.assert_close(x, exact, rtol=0, atol=2e-3)


# --- sample(): seeds, progress, cancel, context handling, arguments. ---


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpmsolver", "dpmsolver_sde"])
def test_same_seed_same_samples_other_seed_other_samples(sampler: str) -> None:
    def run(seed: int) -> torch.Tensor:
        return sample(stand_in_network, CONTEXT, N, F, sampler=sampler, steps=12, eta=0.5, seed=seed)

    first = run(1)
    assert torch.equal(first, run(1))
    assert not torch.allclose(first, run(2))


def test_progress_is_reported_once_per_step() -> None:
    calls: list[tuple[int, int]] = []
    sample(stand_in_network, CONTEXT, N, F, sampler="ddim", steps=9, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(i, 9) for i in range(1, 10)]


@pytest.mark.parametrize("sampler", ["ddpm", "dpmsolver"])
def test_cancel_stops_within_one_step(sampler: str) -> None:
    recorder = Recorder(stand_in_network)
    checks = 0

    def should_cancel() -> bool:
        nonlocal checks
        checks += 1
        return checks > 3

    with pytest.raises(CancelledError):
        sample(recorder, CONTEXT, N, F, sampler=sampler, steps=30, should_cancel=should_cancel)
    assert len(recorder.states) == 3


def test_context_is_broadcast_without_copies() -> None:
    context = torch.randn(1, C)
    recorder = Recorder(stand_in_network)
    sample(recorder, context, N, F, sampler="ddim", steps=3)
    for seen in recorder.contexts:
        assert seen.shape == (N, C)
        assert seen.stride(0) == 0  # a view of the one row
        assert seen.data_ptr() == context.data_ptr()
    # A 1-D context is one image's context too.
    torch.testing.assert_close(
        sample(stand_in_network, context[0], N, F, sampler="ddim", steps=3),
        sample(stand_in_network, context, N, F, sampler="ddim", steps=3),
    )


def test_timesteps_reach_the_model_as_int64_per_sample() -> None:
    seen: list[torch.Tensor] = []

    def model(x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        seen.append(t.clone())
        return torch.zeros_like(x)

    sample(model, CONTEXT, N, F, sampler="ddim", steps=4)
    assert [row.tolist() for row in seen] == [[t] * N for t in (999, 749, 499, 249)]
    assert all(row.dtype == torch.int64 for row in seen)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sampler": "euler"}, "unknown sampler"),
        ({"eta": 1.5}, "eta"),
        ({"steps": 0}, "steps"),
        ({"n_samples": 0}, "n_samples"),
        ({"feature_dim": 0}, "feature_dim"),
        ({"context": torch.zeros(2, C)}, "one image"),
    ],
)
def test_bad_arguments_are_refused(kwargs: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {"context": CONTEXT, "n_samples": N, "feature_dim": F, **kwargs}
    with pytest.raises(ValueError, match=message):
        sample(stand_in_network, **arguments)  # type: ignore[arg-type]
