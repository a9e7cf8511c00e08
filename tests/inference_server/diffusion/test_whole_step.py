"""The whole-step sampler: the body a CUDA graph captures, run eagerly here, against ``run_plan`` step for step
(same draws, same samples), its buffers reused across runs, progress / cancel, and the fall-back when the capture
is refused. The capture itself runs only on a GPU (the last test)."""

from __future__ import annotations

import functools

import pytest
import torch

from inference_server.diffusion import NoiseSchedule, make_generator, plan_sampler, run_plan
from inference_server.diffusion.whole_step import (
    COEFFICIENT_COLUMNS,
    GraphCaptureError,
    WholeStepSampler,
    coefficient_table,
)
from inference_server.errors import CancelledError
from inference_server.nets.denoiser import Denoiser, DenoiserConfig

CONFIG = DenoiserConfig(feature_dim=12, dims=(12, 8, 6), context_dim=10)
SCHEDULE = NoiseSchedule.linear()
#: Every sampler with the terms it exercises: DDPM's noise on all but the last step, DDIM's partial noise,
#: DPM-Solver's previous x̂0, and both at once.
PLANS = [("ddpm", 60, 0.0), ("ddim", 25, 0.5), ("dpmsolver", 20, 0.0), ("dpmsolver_sde", 20, 0.0)]


@functools.cache
def _denoiser() -> Denoiser:
    torch.manual_seed(3)
    return Denoiser(CONFIG).eval()


def _inputs(n: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, CONFIG.feature_dim, generator=generator)
    context = torch.randn(1, CONFIG.context_dim, generator=generator).expand(n, -1)
    return x, context


def _both(sampler: str, steps: int, eta: float, x: torch.Tensor, context: torch.Tensor) -> dict[str, torch.Tensor]:
    """Both ways from the same seed; each also returns the generator's next draw (the draws used up)."""
    plan = plan_sampler(SCHEDULE, sampler, steps, eta)
    whole = WholeStepSampler(_denoiser(), graphs=False)
    out = {}
    for name, runner in (("run_plan", functools.partial(run_plan, _denoiser())), ("whole", whole)):
        generator = make_generator(7, "cpu")
        out[name] = runner(plan, x, context, generator)
        out[name + " next"] = torch.randn(3, generator=generator)
    return out


@pytest.mark.parametrize(("sampler", "steps", "eta"), PLANS)
def test_whole_steps_give_run_plans_samples_and_use_the_same_draws(sampler: str, steps: int, eta: float) -> None:
    x, context = _inputs()
    before = x.clone()
    out = _both(sampler, steps, eta, x, context)
    assert torch.equal(out["whole"], out["run_plan"])  # bit for bit on the CPU
    assert torch.equal(out["whole next"], out["run_plan next"])  # the same number of draws, in the same order
    assert torch.equal(x, before)  # the caller's state is not written
    assert out["whole"].std() > 0.1  # the network moved the samples: not a trivially equal pair


def test_a_wrong_coefficient_column_is_caught() -> None:
    """The equality above is sensitive: swapping two columns of the table changes the samples."""
    plan = plan_sampler(SCHEDULE, "dpmsolver_sde", 20)
    table = coefficient_table(plan, "cpu", torch.float32)
    assert table.shape == (20, len(COEFFICIENT_COLUMNS))
    torch.testing.assert_close(table[:, 1], plan.c_eps.float())
    x, context = _inputs()
    swapped = WholeStepSampler(_denoiser(), graphs=False)
    reference = swapped(plan, x, context, make_generator(7, "cpu"))
    import inference_server.diffusion.whole_step as whole_step

    original = whole_step.COEFFICIENT_COLUMNS
    try:
        whole_step.COEFFICIENT_COLUMNS = ("c_x", "c_eps", "c_noise", "c_prev_x0", "x0_from_x", "x0_from_eps")
        wrong = WholeStepSampler(_denoiser(), graphs=False)(plan, x, context, make_generator(7, "cpu"))
    finally:
        whole_step.COEFFICIENT_COLUMNS = original
    assert (wrong - reference).abs().max() > 0.05


def test_buffers_are_reused_and_nothing_carries_over_between_runs() -> None:
    whole = WholeStepSampler(_denoiser(), graphs=False)
    plan = plan_sampler(SCHEDULE, "dpmsolver_sde", 20)
    x, context = _inputs(seed=1)
    first = whole(plan, x, context, make_generator(5, "cpu"))
    other_x, other_context = _inputs(seed=2)
    whole(plan_sampler(SCHEDULE, "ddpm", 30), other_x, other_context, make_generator(6, "cpu"))
    again = whole(plan, x, context, make_generator(5, "cpu"))
    assert len(whole._programs) == 1  # one shape, one set of buffers (one graph on a GPU)
    assert torch.equal(first, again)
    whole(plan, *_inputs(n=4), make_generator(5, "cpu"))
    assert len(whole._programs) == 2


def test_progress_after_every_step_and_cancel_before_one() -> None:
    whole = WholeStepSampler(_denoiser(), graphs=False)
    plan = plan_sampler(SCHEDULE, "ddpm", 12)
    seen: list[tuple[int, int]] = []
    whole(plan, *_inputs(), make_generator(1, "cpu"), progress=lambda done, total: seen.append((done, total)))
    assert seen == [(i, 12) for i in range(1, 13)]
    calls = []

    def cancel_at_five() -> bool:
        calls.append(1)
        return len(calls) > 5

    with pytest.raises(CancelledError, match="step 5 of 12"):
        whole(plan, *_inputs(), make_generator(1, "cpu"), should_cancel=cancel_at_five)


def test_a_refused_capture_falls_back_to_the_same_samples(monkeypatch: pytest.MonkeyPatch) -> None:
    """The capture fails before any draw, so the fall-back (the network-only replay, here ``run_plan``) gives
    exactly what it gives on its own, and the sampler is not tried again."""
    whole = WholeStepSampler(_denoiser(), graphs=True, fallback=functools.partial(run_plan, _denoiser()))
    attempts = []

    def refuse(buffers: object) -> None:
        attempts.append(buffers)
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(whole, "_capture", refuse)
    plan = plan_sampler(SCHEDULE, "ddpm", 20)
    x, context = _inputs()
    got = whole(plan, x, context, make_generator(2, "cpu"))
    want = run_plan(_denoiser(), plan, x, context, make_generator(2, "cpu"))
    assert torch.equal(got, want)
    assert whole.failed and len(attempts) == 1
    assert torch.equal(whole(plan, x, context, make_generator(2, "cpu")), want)
    assert len(attempts) == 1
    alone = WholeStepSampler(_denoiser(), graphs=True)  # no fall-back: the refusal reaches the caller
    monkeypatch.setattr(alone, "_capture", refuse)
    with pytest.raises(GraphCaptureError, match="stream is capturing"):
        alone(plan, x, context, make_generator(2, "cpu"))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize(("sampler", "steps", "eta"), PLANS)
def test_the_captured_whole_step_gives_the_eager_samples_on_cuda(sampler: str, steps: int, eta: float) -> None:
    net = _denoiser().cuda()
    x, context = (t.cuda() for t in _inputs(n=100))
    plan = plan_sampler(SCHEDULE, sampler, steps, eta)
    want = run_plan(net, plan, x, context, make_generator(7, "cuda"))
    whole = WholeStepSampler(net, graphs=True)
    for _ in range(2):  # the second run replays the graph captured by the first
        got = whole(plan, x, context, make_generator(7, "cuda"))
        assert not whole.failed
        torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-5)
