"""The distinct image encoders of one photo on two lanes (threads) on the CPU, each with its share of threads.

A batch-1 encoder pass does not keep two cores busy in lockstep (many kernels, each ending at an OpenMP
barrier; the shared host also steals CPU time), so two passes on one intra-op thread each finish sooner than
the same passes one after the other on two threads (benchmarks/README.md, "Encoders on two lanes"). torch ops
and ONNX Runtime's ``run`` release the GIL, and with OpenMP ``torch.set_num_threads`` is a setting of the
calling thread: the caller runs one lane with its share of the threads, a helper thread runs the other.

The lanes are balanced by estimated cost: multiply-accumulates from the encoder's kind and configuration
(``encoder_macs``) over the measured speed of the form it runs in (torch fp32 or bf16, ONNX Runtime fp32 or
int8: ``RUNTIME_SPEED``). A lane that starts a pass after the other lane has finished takes all the threads.
The embeddings are the ones a sequential run computes, bit for bit: the kernels of these encoders split work
over outputs, not over the reductions, so the thread count does not change the rounding (checked by the tests
for torch fp32, torch bf16 and ONNX Runtime).

Switch: ``OFER_CPU_ENCODER_LANES`` (``lanes_requested``), read per request: ``1`` lanes, ``0`` one after the
other; unset, lanes where they measured faster (``lanes_by_default``): when at least one distinct encoder runs in
a form of ``OFER_ENCODER_PRECISION=auto`` (torch bf16, ONNX Runtime int8: the fast preset's encode stage 1.16–1.21×
faster in-process on the 2-core machine at load 2–4, 1.34× in a separate-process pair), not when all run torch
fp32 (1.07–1.18× in-process but 0.81× in a separate-process pair at load 2–3, and 0.81–0.96× under load 5–8).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch

from .env_switch import read_switch
from .nets.arcface import ArcFaceConfig, ArcFaceEncoder
from .nets.clip_visual import ClipImageEncoder, ClipVisionConfig

__all__ = [
    "LANES_ENV",
    "EncoderJob",
    "LaneRun",
    "encoder_macs",
    "estimated_cost",
    "lanes_by_default",
    "lanes_requested",
    "partition",
    "run_encoders",
]

#: ``OFER_CPU_ENCODER_LANES=1`` / ``0``: two lanes / one after the other; unset: ``lanes_by_default``.
LANES_ENV = "OFER_CPU_ENCODER_LANES"
#: The encoder forms that measured faster on lanes (``ModelBundle.encoder_runtimes`` names): the ``auto`` ones.
#: Torch fp32 did not reliably; ONNX Runtime fp32 was not measured.
LANE_RUNTIMES = frozenset({"torch bf16", "onnxruntime int8"})


def lanes_requested(environ: Mapping[str, str] | None = None) -> bool | None:
    """Whether ``OFER_CPU_ENCODER_LANES`` asks for two lanes; None when unset (``lanes_by_default`` decides);
    other values are errors."""
    return read_switch(LANES_ENV, environ)


def lanes_by_default(runtimes: Iterable[str]) -> bool:
    """Lanes for encoders running in these forms when the switch is unset: where at least one runs in a form that
    measured faster on lanes (``LANE_RUNTIMES``)."""
    return any(runtime in LANE_RUNTIMES for runtime in runtimes)


def arcface_macs(config: ArcFaceConfig) -> int:
    """Multiply-accumulates of one iresnet pass (convolutions and the embedding layer; norms are negligible)."""
    size = config.input_size
    macs = 3 * config.widths[0] * 9 * size**2  # stem
    d_in = config.widths[0]
    for count, width in zip(config.layers, config.widths, strict=True):
        out = size // 2
        macs += d_in * width * 9 * size**2 + width * width * 9 * out**2 + d_in * width * out**2  # block 0
        macs += (count - 1) * 2 * width * width * 9 * out**2
        d_in, size = width, out
    return macs + d_in * size**2 * config.embedding_dim


def vit_macs(config: ClipVisionConfig) -> int:
    """Multiply-accumulates of one ViT pass: patch embedding, per layer QKV / output / MLP products and the
    two attention products, and the output projection."""
    grid = config.image_size // config.patch_size
    tokens, width = grid * grid + 1, config.width
    patch = grid * grid * 3 * config.patch_size**2 * width
    layer = (4 + 2 * config.mlp_ratio) * tokens * width**2 + 2 * tokens**2 * width
    return patch + config.layers * layer + width * config.output_dim


def encoder_macs(module: object) -> int:
    """Estimated cost of one pass of an encoder (works on released, meta-device modules: reads the config);
    1 for anything else (then every pass counts alike)."""
    if isinstance(module, ArcFaceEncoder):
        return arcface_macs(module.config)
    if isinstance(module, ClipImageEncoder):
        return vit_macs(module.config)
    return 1


#: Speed of each form an encoder runs in, relative to torch fp32 on the same CPU (official sizes, 2 threads:
#: benchmarks/README.md, "Encoders in bfloat16": bf16 copy 2.09× ArcFace / 2.63× FaRL, ONNX Runtime fp32
#: 1.35× / 1.44×, int8 4.15× FaRL). Without it three bf16 ArcFace passes (3 × 12.1 G) would be set against two
#: int8 FaRL passes (2 × 17.6 G) that take half as long.
RUNTIME_SPEED = {"torch fp32": 1.0, "torch bf16": 2.3, "onnxruntime fp32": 1.4, "onnxruntime int8": 4.15}


def estimated_cost(module: object, runtime: str = "torch fp32") -> float:
    """Estimated time of one pass, in torch-fp32 multiply-accumulates: ``encoder_macs`` over the speed of the
    form it runs in (``runtime`` as ``ModelBundle.encoder_runtimes`` names it; unknown forms count as fp32)."""
    return encoder_macs(module) / RUNTIME_SPEED.get(runtime, 1.0)


@dataclass(frozen=True)
class EncoderJob:
    """One distinct encoder pass: ``run()`` returns its embedding; ``cost`` balances the lanes."""

    slot: str
    run: Callable[[], torch.Tensor]
    cost: float


def partition(jobs: Sequence[EncoderJob]) -> tuple[list[EncoderJob], list[EncoderJob]]:
    """Two lanes whose larger estimated cost is smallest (exhaustive: a photo has at most five encoders; ties
    keep the first split found), each in the jobs' order; the costlier lane first."""
    best: tuple[float, list[EncoderJob], list[EncoderJob]] | None = None
    rest = list(jobs[1:])
    for picks in itertools.product((True, False), repeat=len(rest)):  # jobs[0] is always in lane a
        a = [jobs[0]] + [job for job, pick in zip(rest, picks, strict=True) if pick]
        b = [job for job, pick in zip(rest, picks, strict=True) if not pick]
        worst = max(sum(j.cost for j in a), sum(j.cost for j in b))
        if best is None or worst < best[0]:
            best = (worst, a, b)
    assert best is not None
    a, b = best[1], best[2]
    return (a, b) if sum(j.cost for j in a) >= sum(j.cost for j in b) else (b, a)


@dataclass
class LaneRun:
    """What one call ran (for the benchmark): each lane's slots and seconds (one lane when sequential)."""

    lanes: list[list[str]]
    seconds: list[float]


def run_encoders(jobs: Sequence[EncoderJob], *, lanes: bool, record: LaneRun | None = None) -> dict[str, torch.Tensor]:
    """slot → embedding of every job: on two lanes when ``lanes`` and torch has ≥ 2 threads and there are ≥ 2
    jobs, else one after the other here. The caller's thread count (and torch's process-wide default) is
    restored; an error in either lane reaches the caller after both lanes have stopped."""
    threads = torch.get_num_threads()
    if not lanes or threads < 2 or len(jobs) < 2:
        start = time.perf_counter()
        embeddings = {job.slot: job.run() for job in jobs}
        if record is not None:
            record.lanes, record.seconds = [[job.slot for job in jobs]], [time.perf_counter() - start]
        return embeddings
    first, second = partition(jobs)
    shares = (threads - threads // 2, threads // 2)
    grad, inference = torch.is_grad_enabled(), torch.is_inference_mode_enabled()  # thread-local: carried over
    out: dict[str, torch.Tensor] = {}
    errors: list[BaseException] = []
    seconds = [0.0, 0.0]
    stop = threading.Event()
    done = (threading.Event(), threading.Event())

    def lane(index: int, own: list[EncoderJob]) -> None:
        start = time.perf_counter()
        try:
            with torch.inference_mode(inference), torch.set_grad_enabled(grad):
                for job in own:
                    if stop.is_set():
                        return
                    # The other lane done: this pass may use every thread (a setting of this thread).
                    torch.set_num_threads(threads if done[1 - index].is_set() else shares[index])
                    out[job.slot] = job.run()
        except BaseException as exc:  # handed to the caller once both lanes stopped
            errors.append(exc)
            stop.set()
        finally:
            seconds[index] = time.perf_counter() - start
            done[index].set()

    helper = threading.Thread(target=lane, args=(1, second), name="encoder-lane", daemon=True)
    try:
        helper.start()
        lane(0, first)
    finally:
        helper.join()
        # Back to the caller's count; this also resets torch's process-wide default that threads started
        # later begin with, which the helper thread's set_num_threads had changed.
        torch.set_num_threads(threads)
    if errors:
        raise errors[0]
    if record is not None:
        record.lanes = [[j.slot for j in first], [j.slot for j in second]]
        record.seconds = seconds
    return {job.slot: out[job.slot] for job in jobs}
