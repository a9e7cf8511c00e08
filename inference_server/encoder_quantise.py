"""Int8 encoders where the embeddings stay close: quantise, compare on real face crops, adopt or refuse.

ONNX Runtime's dynamic quantisation (int8 weights, activations quantised on the fly) makes the ViT (FaRL)
several times faster on a CPU, but how close the embeddings stay depends on the trained weights (cosine
0.99983 on official-size random weights, 0.947 on an earlier DEMO FaRL). So the decision is made per encoder,
on the user's weights, when the runtime opens: the int8 graph and the fp32 one embed the probe set
(``encoder_probe``) and int8 is adopted only when the **minimum** cosine over the set is at least
``MIN_INT8_COSINE``. The verdict is stored beside the int8 graph (``<kind>-<key>.int8pc7-<cpu>.json``, keyed like
the optimised graph: int8 kernels differ between CPUs) with the int8 graph's embedding of the fixed probe, so
later opens neither run fp32 nor the probe set, and a damaged or stale int8 graph is found (it no longer
reproduces that embedding) and made again.

Which operators are quantised: ``QUANTISED_OPS`` per encoder kind; ArcFace (convolutions) has none by default
(measured: benchmarks/README.md, "Encoders through ONNX Runtime: start-up, int8").
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path

from torch import nn

from .backends import OnnxNetwork
from .encoder_probe import (
    MIN_PROBE_COSINE,
    REFRAMINGS,
    judge,
    measure_verdict,
    probe_crops,
    read_verdict,
    reframe,
    verdict_holds,
)
from .encoder_runtime import EncoderFiles, EncoderRuntimeReport, Fp32Opener, kind_and_size, open_session

__all__ = ["MIN_INT8_COSINE", "QUANTISED_OPS", "REFRAMINGS", "open_int8", "probe_crops", "quantise", "reframe"]

log = logging.getLogger(__name__)

MIN_INT8_COSINE = MIN_PROBE_COSINE
#: Operators whose weights are quantised, per encoder kind (empty: no int8 graph is made).
QUANTISED_OPS: dict[str, tuple[str, ...]] = {"farl": ("MatMul", "Gemm"), "arcface": ()}


def quantise(graph: Path, target: Path, ops: tuple[str, ...]) -> None:
    """``graph`` with the weights of ``ops`` nodes in int8 (dynamic quantisation), written atomically."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".int8-") as tmp:
        staged = Path(tmp) / "int8.onnx"
        # 7-bit weights: x86 CPUs without VNNI multiply u8 activations by s8 weights with an instruction
        # (VPMADDUBSW) whose 16-bit pair sums saturate at full-range weights (official-size FaRL on an
        # AVX2-only CPU: minimum probe cosine 0.976 at 8 bits, 0.9995 at 7). One scale per output channel
        # then wins back the lost bit (0.9997; the DEMO FaRL 0.9988 -> 0.9995) at no measured cost in speed.
        quantize_dynamic(
            str(graph),
            str(staged),
            weight_type=QuantType.QInt8,
            op_types_to_quantize=list(ops),
            reduce_range=True,
            per_channel=True,
        )
        os.replace(staged, target)


def _int8_session(files: EncoderFiles, kind: str) -> tuple[OnnxNetwork, bool]:
    if not files.int8_graph.is_file():
        files.remove(int8_only=True)  # a verdict of an earlier int8 graph is not this one's
        quantise(files.graph, files.int8_graph, QUANTISED_OPS[kind])
    return open_session(files.int8_graph, files.int8_optimised)


def open_int8(
    module: nn.Module, files: EncoderFiles, slot: str, report: EncoderRuntimeReport, fp32: Fp32Opener
) -> OnnxNetwork | None:
    """The int8 network of ``module`` when its verdict adopts it, else None (the caller opens the next
    precision; ``fp32`` is its memoised fp32 opener, the reference of a new verdict)."""
    kind, size = kind_and_size(module)
    if not QUANTISED_OPS.get(kind):
        report.int8[slot] = {"adopted": False, "why": f"no int8 recipe for {kind} (nothing to gain measured)"}
        return None
    verdict = None
    start = time.perf_counter()
    for _ in range(2):
        if not files.graph.is_file() and fp32() is None:  # the int8 graph is made from the fp32 one
            report.int8[slot] = {"adopted": False, "why": "the fp32 graph could not be made"}
            return None
        try:
            network, reused = _int8_session(files, kind)
        except Exception as exc:  # a damaged int8 graph: made again once
            log.warning("int8 encoder graph %s unusable (%s)", files.int8_graph, exc)
            files.remove(int8_only=True)
            continue
        verdict = read_verdict(files.int8_verdict)
        if not verdict_holds(verdict, network, size):  # no verdict, or not this graph's
            reference = fp32()
            if reference is None:
                report.int8[slot] = {"adopted": False, "why": "no fp32 reference (the fp32 graph disagrees)"}
                return None
            ops = list(QUANTISED_OPS[kind])
            verdict = measure_verdict(files.int8_verdict, kind, size, reference, network, ops=ops)
        break
    report.timings.setdefault(slot, {})["int8"] = time.perf_counter() - start  # fp32's own steps included
    if verdict is None:
        report.int8[slot] = {"adopted": False, "why": "the int8 graph could not be made or opened"}
        return None
    report.int8[slot] = judge(verdict)
    if not report.int8[slot]["adopted"]:
        return None
    report.precision[slot] = "int8"
    if slot not in report.exported and slot not in report.reused:
        report.reused.append(slot)
    if reused:
        report.optimised_reused.append(slot)
    return network
