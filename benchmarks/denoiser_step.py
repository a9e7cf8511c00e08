"""One denoiser step at batch 100, plain ``Denoiser`` against the fused CPU step, A/B in one process.

Run: ``OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/denoiser_step.py [--rounds 7] [--threads 2] [--compile]``

Official-size IdGen and ExpGen with random weights (norm gains and pooling random too). Each round times
``--calls`` calls of the plain module, then of the fused copy, then plain again (ABA), so load changes on a
shared machine hit both sides; the median over rounds of each side and of the per-round ratio is reported,
with the fused copy's build time, the largest relative difference of one step, and the load average.
Timesteps walk 999 → 0 as in a sampling run (the fused copy's FiLM time rows are memoised after the
first visit, as they are after the first image of a worker).

``--compile`` adds a third side, the fused copy with its step compiled by inductor
(``nets/compiled_step.py``), timed between the fused copy and the second plain call of each round, with
its compile time (first call) and its largest relative difference; a C++ compiler is needed.

``--cpu-precision bf16`` adds another side, the fused copy with bf16 GEMMs (``nets/cpu_precision.py``), timed
right after the fp32 fused copy in each round, with its largest relative difference to the plain module and
the per-round ratio fused fp32 / fused bf16; it stops with a message on a CPU without native bf16.

``--onnxruntime`` adds the fused copy whose step ONNX Runtime runs (``nets/onnx_step.py``, the default where
onnxruntime is installed; the plain "fused" side here is torch's step), timed right after the torch fused
copy in each round, with its open time (export into a fresh folder, session, probe), its largest relative
difference to the plain module and the per-round ratio torch fused / ONNX Runtime fused.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from inference_server.backends import configure_cpu_threads
from inference_server.nets.denoiser import EXPGEN_CONFIG, IDGEN_CONFIG, Denoiser
from inference_server.nets.fused_denoiser import FusedDenoiser


def _timed(step: object, x: torch.Tensor, context: torch.Tensor, times: list[int]) -> float:
    start = time.perf_counter()
    with torch.no_grad():
        for t in times:
            step(x, torch.tensor([t]).expand(x.shape[0]), context)  # type: ignore[operator]
    return (time.perf_counter() - start) / len(times) * 1000.0


def onnx_side(net: Denoiser, name: str, extra: dict[str, float]) -> FusedDenoiser:
    """The fused copy with its step by ONNX Runtime, exported into a fresh folder (open time in ``extra``)."""
    onnx = FusedDenoiser(net, compile_step=False, precision="fp32")
    start = time.perf_counter()
    runtime = onnx.use_onnx_step(Path(tempfile.mkdtemp(prefix="ofer-step-")), name)
    extra["onnx_open_s"] = time.perf_counter() - start
    if runtime.step is None:
        raise SystemExit(f"the ONNX Runtime step is not available: {runtime.note}")
    return onnx


def measure(
    name: str, rounds: int, calls: int, batch: int, compile_: bool = False, precision: str = "fp32",
    onnxruntime: bool = False,
) -> dict[str, float]:  # fmt: skip
    config = {"idgen": IDGEN_CONFIG, "expgen": EXPGEN_CONFIG}[name]
    torch.manual_seed(0)
    net = Denoiser(config).eval()
    with torch.no_grad():
        for key, param in net.named_parameters():
            if key.endswith((".g", "norm.weight")):
                param.uniform_(0.5, 1.5)
    start = time.perf_counter()
    fused = FusedDenoiser(net, compile_step=False, precision="fp32")  # torch's step: never use_onnx_step
    build_s = time.perf_counter() - start
    low = FusedDenoiser(net, compile_step=False, precision=precision) if precision != "fp32" else None
    if low is not None and low.precision != precision:
        raise SystemExit(f"the {precision} step is not available: {low.precision_note}")
    compiled = FusedDenoiser(net, compile_step=True) if compile_ else None
    x = torch.randn(batch, config.feature_dim)
    context = torch.randn(1, config.context_dim).expand(batch, -1)
    with torch.no_grad():
        want = net(x, torch.tensor([500]).expand(batch), context)
    error = float((fused(x, torch.tensor([500]).expand(batch), context) - want).abs().max() / want.abs().max())
    extra: dict[str, float] = {}
    onnx = onnx_side(net, name, extra) if onnxruntime else None
    if onnx is not None:
        got = onnx(x, torch.tensor([500]).expand(batch), context)
        extra["onnx_rel_diff"] = float((got - want).abs().max() / want.abs().max())
        _timed(onnx, x, context, list(range(1000)))
    if compiled is not None:
        start = time.perf_counter()
        got = compiled(x, torch.tensor([500]).expand(batch), context)
        extra["compile_s"] = time.perf_counter() - start
        extra["compiled_rel_diff"] = float((got - want).abs().max() / want.abs().max())
        if compiled._compiled is None:
            raise SystemExit(f"the compiled step did not build: {compiled.compile_note}")
        _timed(compiled, x, context, list(range(1000)))
    if low is not None:
        got = low(x, torch.tensor([500]).expand(batch), context)
        extra["low_rel_diff"] = float((got - want).abs().max() / want.abs().max())
        _timed(low, x, context, list(range(1000)))
    times = list(range(999, -1, -max(1, 1000 // calls)))[:calls]
    _timed(fused, x, context, list(range(1000)))  # memoise every time row, as after a worker's first image
    _timed(net, x, context, times[:3])
    plain_ms, fused_ms, ratios, compiled_ms, compiled_ratios, low_ms, low_ratios = [], [], [], [], [], [], []
    onnx_ms, onnx_ratios = [], []
    for _ in range(rounds):
        a1 = _timed(net, x, context, times)
        b = _timed(fused, x, context, times)
        if onnx is not None:
            o = _timed(onnx, x, context, times)
            onnx_ms.append(o)
            onnx_ratios.append(b / o)
        if low is not None:
            lo = _timed(low, x, context, times)
            low_ms.append(lo)
            low_ratios.append(b / lo)
        if compiled is not None:
            c = _timed(compiled, x, context, times)
            compiled_ms.append(c)
            compiled_ratios.append(b / c)
        a2 = _timed(net, x, context, times)
        plain_ms.append((a1 + a2) / 2)
        fused_ms.append(b)
        ratios.append((a1 + a2) / 2 / b)
    if onnx is not None:
        extra["onnx_ms"] = statistics.median(onnx_ms)
        extra["onnx_vs_fused"] = statistics.median(onnx_ratios)
    if low is not None:
        extra["low_ms"] = statistics.median(low_ms)
        extra["low_vs_fused"] = statistics.median(low_ratios)
    if compiled is not None:
        extra["compiled_ms"] = statistics.median(compiled_ms)
        extra["compiled_vs_fused"] = statistics.median(compiled_ratios)
    return extra | {
        "plain_ms": statistics.median(plain_ms),
        "fused_ms": statistics.median(fused_ms),
        "speedup": statistics.median(ratios),
        "build_s": build_s,
        "max_rel_diff": error,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--compile", action="store_true", help="also time the inductor-compiled fused step")
    parser.add_argument("--cpu-precision", choices=("fp32", "bf16"), default="fp32",
                        help="bf16: also time the fused step with bf16 GEMMs")  # fmt: skip
    parser.add_argument("--only", choices=("idgen", "expgen"), help="time one network only")
    parser.add_argument("--onnxruntime", action="store_true", help="also time the fused step by ONNX Runtime")
    opts = parser.parse_args()
    threads = configure_cpu_threads(opts.threads)
    print(f"torch {torch.__version__}, {threads} threads, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, "
          f"load average before {os.getloadavg()[0]:.2f}")  # fmt: skip
    total_plain = total_fused = total_low = total_onnx = 0.0
    for name in [opts.only] if opts.only else ["idgen", "expgen"]:
        r = measure(name, opts.rounds, opts.calls, opts.batch, opts.compile, opts.cpu_precision, opts.onnxruntime)
        total_plain += r["plain_ms"]
        total_fused += r["fused_ms"]
        total_low += r.get("low_ms", 0.0)
        total_onnx += r.get("onnx_ms", 0.0)
        print(f"{name:<7} plain {r['plain_ms']:7.2f} ms  fused {r['fused_ms']:7.2f} ms  speed-up {r['speedup']:.2f}x  "
              f"build {r['build_s']:.2f} s  max rel diff {r['max_rel_diff']:.1e}")  # fmt: skip
        if "onnx_ms" in r:
            print(f"{'':<7} onnxruntime {r['onnx_ms']:7.2f} ms  {r['onnx_vs_fused']:.2f}x the torch fused step  "
                  f"open {r['onnx_open_s']:.2f} s  max rel diff {r['onnx_rel_diff']:.1e}")  # fmt: skip
        if "low_ms" in r:
            print(f"{'':<7} {opts.cpu_precision} {r['low_ms']:7.2f} ms  {r['low_vs_fused']:.2f}x the fp32 fused step  "
                  f"max rel diff {r['low_rel_diff']:.1e}")  # fmt: skip
        if opts.compile:
            print(f"{'':<7} compiled {r['compiled_ms']:7.2f} ms  {r['compiled_vs_fused']:.2f}x the fused step  "
                  f"compile {r['compile_s']:.1f} s  max rel diff {r['compiled_rel_diff']:.1e}")  # fmt: skip
    print(f"both    plain {total_plain:7.2f} ms  fused {total_fused:7.2f} ms per step pair "
          f"(1000-step DDPM: {total_plain:.1f} s → {total_fused:.1f} s of sampling); "
          f"load average after {os.getloadavg()[0]:.2f}")  # fmt: skip
    if total_low:
        print(f"both    fused {opts.cpu_precision} {total_low:7.2f} ms per step pair ({total_low:.1f} s of sampling)")
    if total_onnx:
        print(f"both    onnxruntime {total_onnx:7.2f} ms per step pair ({total_onnx:.1f} s of sampling)")


if __name__ == "__main__":
    main()
