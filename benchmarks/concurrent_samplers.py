"""IdGen ∥ ExpGen: the two fidelity samplers run concurrently (threads split by work) vs one after the other,
whole or with each step's rows split over the threads.

ExpGen does not need IdGen's result, so the two sampling chains could overlap. Each round times, on the same
official-size random fused denoisers (batch 100, DDPM):

- **sequential**: IdGen's chain then ExpGen's, ``--threads`` intra-op threads (the pipeline with
  ``OFER_CPU_CONCURRENT_SAMPLERS=0``);
- **concurrent**: what the pipeline runs (``diffusion/background_draw.py``): ExpGen's chain in a background
  thread with its share of the threads (``split_threads`` of ``work_share``: one of two here), IdGen's in the
  calling thread with the others, for the whole draw (torch ops release the GIL; with OpenMP the thread count
  is a per-thread setting: checked by reading ``torch.get_num_threads()`` back in both threads while they run
  and in the main thread afterwards);
- **row split**: one after the other, each step's batch cut into blocks of rows, one per thread
  (``nets/row_lanes.py``, ``OFER_CPU_ROW_SPLIT``); the other two ways run the batch whole;
- **concurrent + row split** (the pipeline's default since stop 28): ExpGen's chain in the background on its
  share, IdGen's in the caller on all the threads with its rows in single-thread blocks (``BackgroundDraw``'s
  ``caller_keeps_threads``): the background thread shares the cores with the blocks.

Rounds alternate the four ways (ABCDABCD…) so load changes hit all; the median per-round ratio to the
concurrent draw is reported, with the load average, and whether the ways drew the same samples (same seeds).

Run: ``OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/concurrent_samplers.py [--steps 200] [--rounds 3]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch

from inference_server.backends import configure_cpu_threads
from inference_server.diffusion import sample
from inference_server.diffusion.background_draw import BackgroundDraw, work_share
from inference_server.nets.denoiser import EXPGEN_CONFIG, IDGEN_CONFIG, Denoiser, DenoiserConfig
from inference_server.nets.fused_denoiser import FusedDenoiser


def _fused(config: DenoiserConfig, seed: int, precision: str, row_split: bool = False) -> FusedDenoiser:
    torch.manual_seed(seed)
    net = Denoiser(config).eval()
    with torch.no_grad():
        for key, param in net.named_parameters():
            if key.endswith((".g", "norm.weight")):
                param.uniform_(0.5, 1.5)
    return FusedDenoiser(net, precision=precision, row_split=row_split)


def _chain(
    step: FusedDenoiser,
    context: torch.Tensor,
    steps: int,
    seed: int,
    progress: Callable[[int, int], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> torch.Tensor:
    return sample(step, context, 100, step.feature_dim, sampler="ddpm", steps=steps, seed=seed,
                  progress=progress, should_cancel=should_cancel)  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--cpu-precision", choices=("fp32", "bf16"), default="fp32")
    opts = parser.parse_args()
    threads = configure_cpu_threads(opts.threads)
    idgen, expgen = _fused(IDGEN_CONFIG, 0, opts.cpu_precision), _fused(EXPGEN_CONFIG, 1, opts.cpu_precision)
    split_idgen = _fused(IDGEN_CONFIG, 0, opts.cpu_precision, row_split=True)
    split_expgen = _fused(EXPGEN_CONFIG, 1, opts.cpu_precision, row_split=True)
    share = work_share(Denoiser(EXPGEN_CONFIG), 100, Denoiser(IDGEN_CONFIG), 100)
    contexts = torch.randn(1, 512), torch.randn(1, 1024)
    print(f"torch {torch.__version__}, {threads} threads sequential, ExpGen's work share {share:.2f} concurrent, "
          f"{opts.steps} DDPM steps, "
          f"{opts.cpu_precision}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, "
          f"load average before {os.getloadavg()[0]:.2f}")  # fmt: skip

    def sequential() -> tuple[torch.Tensor, torch.Tensor]:
        return _chain(idgen, contexts[0], opts.steps, 1), _chain(expgen, contexts[1], opts.steps, 2)

    def row_split() -> tuple[torch.Tensor, torch.Tensor]:
        return _chain(split_idgen, contexts[0], opts.steps, 1), _chain(split_expgen, contexts[1], opts.steps, 2)

    seen_threads: dict[str, int] = {}

    def concurrent(split: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """ExpGen in a BackgroundDraw, IdGen here, each on its share of the threads; with ``split`` IdGen keeps
        all the threads and cuts its rows into blocks (what the pipeline runs)."""
        label = " + row split" if split else ""

        def draw(progress: Callable[[int, int], None], should_cancel: Callable[[], bool]) -> torch.Tensor:
            seen_threads["background" + label] = torch.get_num_threads()
            return _chain(expgen, contexts[1], opts.steps, 2, progress, should_cancel)

        background = BackgroundDraw(draw, concurrent=True, progress=lambda d, t: None, should_cancel=lambda: False,
                                    background_share=share, caller_keeps_threads=split)  # fmt: skip
        with background as bg:
            seen_threads["main" + label] = torch.get_num_threads()
            shapes = _chain(split_idgen if split else idgen, contexts[0], opts.steps, 1)
            return shapes, bg.result()

    for step in (idgen, expgen, split_idgen, split_expgen):  # warm: FiLM rows, allocator, lane threads
        _chain(step, contexts[0 if step.feature_dim == idgen.feature_dim else 1], 10, 0)
    ways = {"sequential": sequential, "concurrent": concurrent, "row split": row_split,
            "concurrent + row split": lambda: concurrent(split=True)}  # fmt: skip
    times: dict[str, list[float]] = {name: [] for name in ways}
    results = {}
    for _ in range(opts.rounds):
        for name, fn in ways.items():
            start = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - start)
    print(f"threads read back while both ran: {seen_threads}; main thread after: "
          f"{torch.get_num_threads()}")  # fmt: skip
    for name, values in times.items():
        print(
            f"{name:<22} " + "  ".join(f"{v:6.2f}" for v in values) + f" s   median {statistics.median(values):.2f} s"
        )
    for name in ("sequential", "row split", "concurrent + row split"):
        ratios = [a / b for a, b in zip(times[name], times["concurrent"], strict=True)]
        print(f"concurrent / {name} per round: " + "  ".join(f"{1 / r:.2f}x" for r in ratios)
              + f"   median {statistics.median(1 / r for r in ratios):.2f}x")  # fmt: skip
        pairs = zip(results["concurrent"], results[name], strict=True)
        same = [float((c - s).abs().max() / s.abs().max()) for c, s in pairs]
        print(f"  samples against the concurrent draw's: max relative difference IdGen {same[0]:.1e}, "
              f"ExpGen {same[1]:.1e}")  # fmt: skip
    print(f"load average after {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
