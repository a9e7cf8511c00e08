"""A sampler step — network, update and noise — over static buffers, so that a CUDA graph replays it whole.

``backends.CudaGraphEpsModel`` replays the network only. The sampler's update around it (``run_plan``: a
multiply, three scaled adds, the x̂0 of the multistep solvers) and its per-step noise draw stay eager, and the
Python that calls them is what a step costs on a GPU: measured on an H200 (benchmarks/README.md, "GPU"), a DDPM
step with the network replayed took 1.1 ms against 0.3 ms for the replay itself. Here the whole step is one
replay. What changes from step to step lives in device buffers the graph reads: the timestep, a row of the
plan's coefficients, the noise (drawn by the caller's generator into its buffer, in ``run_plan``'s order, so a
seed gives the same draws). The loop then costs three small copies, at most one draw and one replay per step.

The same body runs eagerly where there is no graph (``graphs=False``): that is how the CPU tests check it
against ``run_plan``, and the CUDA path differs only in capturing it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..errors import CancelledError
from .samplers import CancelCheck, ProgressCallback, SamplerPlan

log = logging.getLogger(__name__)

__all__ = ["GraphCaptureError", "StepBuffers", "WholeStepSampler", "coefficient_table", "sampler_step"]

#: Columns of ``coefficient_table``: the update's four coefficients, then x̂0's two.
COEFFICIENT_COLUMNS = ("c_x", "c_eps", "c_prev_x0", "c_noise", "x0_from_x", "x0_from_eps")

Network = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class GraphCaptureError(RuntimeError):
    """The driver refused to capture the step; raised before any noise is drawn, so the caller can sample
    the same draws another way."""


def coefficient_table(plan: SamplerPlan, device: torch.device | str, dtype: torch.dtype) -> torch.Tensor:
    """(steps, 6) — one row per step, ``COEFFICIENT_COLUMNS`` — rounded once to ``dtype`` (the state's, float32:
    a half-precision coefficient would round DDPM's 1/sqrt(α) ≈ 1.00005 to 1)."""
    columns = [getattr(plan, name) for name in COEFFICIENT_COLUMNS]
    return torch.stack(columns, dim=1).to(device=device, dtype=dtype)


@dataclass(frozen=True)
class StepBuffers:
    """Everything one step reads and writes; a captured graph holds their addresses, so they are never replaced."""

    state: torch.Tensor  # (N, F) x_t in, x_next out
    spare: torch.Tensor  # (N, F) the update is assembled here before it becomes the state
    previous_x0: torch.Tensor  # (N, F) x̂0 of the step before (multistep solvers; zero before the first step)
    noise: torch.Tensor  # (N, F) this step's draw (left as it was where the step draws none: its c_noise is 0)
    coefficients: torch.Tensor  # (6,) this step's row of ``coefficient_table``
    timestep: torch.Tensor  # (1,) int64
    context: torch.Tensor  # (1, C) the image's condition, shared by the N samples

    @classmethod
    def allocate(cls, n: int, feature_dim: int, context: torch.Tensor, dtype: torch.dtype) -> StepBuffers:
        device = context.device

        def zeros() -> torch.Tensor:
            return torch.zeros((n, feature_dim), device=device, dtype=dtype)

        return cls(
            state=zeros(),
            spare=zeros(),
            previous_x0=zeros(),
            noise=zeros(),
            coefficients=torch.zeros(len(COEFFICIENT_COLUMNS), device=device, dtype=dtype),
            timestep=torch.zeros(1, device=device, dtype=torch.int64),
            context=torch.zeros((1, context.shape[-1]), device=device, dtype=context.dtype),
        )


def sampler_step(net: Network, b: StepBuffers) -> None:
    """One step of ``run_plan``'s update rule with the coefficients read from ``b.coefficients``.

    The terms ``run_plan`` leaves out (no previous x̂0 yet, no noise on this step) are added here with a zero
    coefficient: the graph has one shape for every step, and adding 0·(a finite buffer) changes nothing.
    """
    n = b.state.shape[0]
    eps = net(b.state, b.timestep.expand(n), b.context.expand(n, -1)).to(b.state.dtype)
    c = b.coefficients
    torch.mul(b.state, c[0], out=b.spare)
    b.spare.addcmul_(eps, c[1])
    b.spare.addcmul_(b.previous_x0, c[2])
    b.spare.addcmul_(b.noise, c[3])
    torch.mul(b.state, c[4], out=b.previous_x0)
    b.previous_x0.addcmul_(eps, c[5])
    b.state.copy_(b.spare)


@dataclass
class _Program:
    buffers: StepBuffers
    replay: Callable[[], None]


class WholeStepSampler:
    """Runs sampler plans with ``net``, one whole step per replay (a CUDA graph, or the same body eagerly).

    Buffers and graphs are kept per (batch, widths, dtype, device): a warm worker captures once per shape.
    """

    def __init__(
        self, net: Network, *, graphs: bool, warmup: int = 2, fallback: Callable[..., torch.Tensor] | None = None
    ) -> None:
        self.net = net
        self.graphs = graphs
        self.warmup = warmup
        #: Runs the plan where the capture is refused (then and from then on), with ``run_plan``'s arguments;
        #: None: the refusal is raised.
        self.fallback = fallback
        self._programs: dict[tuple[object, ...], _Program] = {}
        #: A capture failed once: the owner stops offering this sampler (``ModelBundle.whole_step_runner``).
        self.failed = False

    def __call__(
        self,
        plan: SamplerPlan,
        x: torch.Tensor,
        context: torch.Tensor,
        generator: torch.Generator,
        *,
        progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
    ) -> torch.Tensor:
        """``run_plan``'s contract: x (N, F) is not written; context is (N, C) or (1, C), one shared row."""
        n, feature_dim = x.shape
        try:
            if self.failed:
                raise GraphCaptureError("an earlier capture was refused")
            program = self._program(n, feature_dim, context[:1], x.dtype)
        except GraphCaptureError as exc:  # raised before any draw: the fall-back gives the same samples
            if self.fallback is None:
                raise
            log.warning("whole-step CUDA graph capture failed (%s); stepping the other way", exc)
            return self.fallback(plan, x, context, generator, progress=progress, should_cancel=should_cancel)
        b = program.buffers
        table = coefficient_table(plan, x.device, x.dtype)
        timesteps = torch.tensor(plan.timesteps, dtype=torch.int64, device=x.device)
        draws = [c != 0.0 for c in plan.c_noise.tolist()]
        b.state.copy_(x)
        b.previous_x0.zero_()
        b.noise.zero_()
        b.context.copy_(context[:1])
        total = plan.steps
        with torch.no_grad():
            for i in range(total):
                if should_cancel is not None and should_cancel():
                    raise CancelledError(f"sampling cancelled at step {i} of {total}")
                b.timestep.copy_(timesteps[i : i + 1])
                b.coefficients.copy_(table[i])
                if draws[i]:
                    torch.randn(b.noise.shape, generator=generator, out=b.noise)
                program.replay()
                if progress is not None:
                    progress(i + 1, total)
        return b.state.clone()

    def _program(self, n: int, feature_dim: int, context: torch.Tensor, dtype: torch.dtype) -> _Program:
        key = (n, feature_dim, tuple(context.shape), context.dtype, dtype, context.device)
        if key not in self._programs:
            buffers = StepBuffers.allocate(n, feature_dim, context, dtype)
            if self.graphs:
                try:
                    replay = self._capture(buffers)
                except RuntimeError as exc:
                    self.failed = True
                    raise GraphCaptureError(str(exc)) from exc
            else:
                replay = lambda: sampler_step(self.net, buffers)  # noqa: E731
            self._programs[key] = _Program(buffers, replay)
        return self._programs[key]

    def _capture(self, buffers: StepBuffers) -> Callable[[], None]:
        """The step as a CUDA graph. Warm-up runs on a side stream first, as capture requires; it writes the
        zeroed buffers, which every run overwrites before its first replay."""
        device = buffers.state.device
        stream = torch.cuda.Stream(device=device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.no_grad(), torch.cuda.stream(stream):
            for _ in range(self.warmup):
                sampler_step(self.net, buffers)
        torch.cuda.current_stream(device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(graph):
            sampler_step(self.net, buffers)
        log.info("captured a whole sampler step as a CUDA graph (batch %d)", buffers.state.shape[0])
        return graph.replay
