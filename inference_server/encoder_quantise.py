"""Int8 encoders where the embeddings stay close: quantise, compare on real face crops, adopt or refuse.

ONNX Runtime's dynamic quantisation (int8 weights, activations quantised on the fly) makes the ViT (FaRL)
several times faster on a CPU, but how close the embeddings stay depends on the trained weights (cosine
0.99983 on official-size random weights, 0.947 on the DEMO's trained FaRL). So the decision is made per
encoder, on the user's weights, when the runtime opens: the int8 graph and the fp32 one embed a probe set of
real face crops — the bundled sample photo's ArcFace and FaRL crops and re-framings of them (mirrored,
shifted, rotated, zoomed) — and int8 is adopted only when the **minimum** cosine over the set is at least
``MIN_INT8_COSINE``. The verdict (cosines, adopted or not) is stored beside the int8 graph
(``<kind>-<key>.int8-<cpu>.json``, keyed like the optimised graph: int8 kernels differ between CPUs) with the
int8 graph's embedding of the fixed probe, so later opens neither run fp32 nor the probe set, and a damaged
or stale int8 graph is found (it no longer reproduces that embedding) and made again.

Which operators are quantised: ``QUANTISED_OPS`` per encoder kind; ArcFace (convolutions) has none by default
(measured: benchmarks/README.md, "Encoders through ONNX Runtime: start-up, int8").
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .atomic_io import atomic_write_text
from .backends import OnnxNetwork
from .encoder_runtime import (
    EncoderFiles,
    EncoderRuntimeReport,
    Fp32Opener,
    agreement,
    agrees,
    kind_and_size,
    open_session,
    probe_input,
)

log = logging.getLogger(__name__)

#: The least cosine (int8 against fp32, over the probe crops) at which int8 is adopted. From the meshes:
#: embeddings perturbed to cosine 0.999 move the DEMO's sampled meshes by less than a tenth of what a
#: different seed moves them (benchmarks/README.md, "Int8: how close is close").
MIN_INT8_COSINE = 0.999
#: Operators whose weights are quantised, per encoder kind (empty: no int8 graph is made).
QUANTISED_OPS: dict[str, tuple[str, ...]] = {"farl": ("MatMul", "Gemm"), "arcface": ()}
SAMPLE_PHOTO = Path(__file__).resolve().parent / "assets" / "sample_occluded_face.jpg"
#: Re-framings of each crop: (mirror, shift x, shift y as a fraction of the side, rotation in degrees, zoom).
REFRAMINGS = ((False, 0.0, 0.0, 0.0, 1.0), (True, 0.0, 0.0, 0.0, 1.0), (False, 0.06, -0.04, 0.0, 1.0),
              (False, -0.05, 0.05, 0.0, 1.0), (False, 0.0, 0.0, 10.0, 1.0), (True, 0.0, 0.0, -10.0, 1.0),
              (False, 0.0, 0.02, 0.0, 1.12))  # fmt: skip


def reframe(crop: torch.Tensor, mirror: bool, dx: float, dy: float, degrees: float, zoom: float) -> torch.Tensor:
    """(1, 3, S, S) crop re-framed: mirrored, shifted, rotated about its centre and zoomed (border pixels
    repeat, like a crop taken a little off)."""
    angle = math.radians(degrees)
    cos, sin = math.cos(angle) / zoom, math.sin(angle) / zoom
    theta = torch.tensor([[[cos, -sin, 2 * dx], [sin, cos, 2 * dy]]], dtype=torch.float32)
    grid = F.affine_grid(theta, list(crop.shape), align_corners=False)
    out = F.grid_sample(crop, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.flip(-1) if mirror else out


@functools.cache
def _sample_crops() -> tuple[torch.Tensor, torch.Tensor]:
    """The sample photo's ArcFace blob (1, 3, 112, 112) and FaRL image (1, 3, 224, 224), as the pipeline
    makes them."""
    from .preprocess.crops import arcface_crop, farl_crop
    from .preprocess.detect import FaceDetector
    from .preprocess.image import load_image

    image = load_image(SAMPLE_PHOTO)
    detection = FaceDetector().detect(image)
    blob = torch.from_numpy(np.ascontiguousarray(arcface_crop(image.rgb, detection.points5, "BGR").blob))[None]
    return blob.float(), torch.from_numpy(farl_crop(image.rgb, detection.box).tensor)[None].float()


def probe_crops(kind: str, size: int) -> list[torch.Tensor]:
    """The probe set of one encoder kind at its input size: the sample photo's crop and its re-framings."""
    crop = _sample_crops()[0 if kind == "arcface" else 1]
    if crop.shape[-1] != size:  # a reduced test encoder: the same crops at its size
        crop = F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return [reframe(crop, *framing) for framing in REFRAMINGS]


def quantise(graph: Path, target: Path, ops: tuple[str, ...]) -> None:
    """``graph`` with the weights of ``ops`` nodes in int8 (dynamic quantisation), written atomically."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".int8-") as tmp:
        staged = Path(tmp) / "int8.onnx"
        quantize_dynamic(str(graph), str(staged), weight_type=QuantType.QInt8, op_types_to_quantize=list(ops))
        os.replace(staged, target)


def probe_cosines(reference: OnnxNetwork, candidate: OnnxNetwork, crops: list[torch.Tensor]) -> list[float]:
    return [agreement(reference(crop), candidate(crop))[0] for crop in crops]


def _read_verdict(path: Path) -> dict[str, object] | None:
    try:
        verdict = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    keys = {"cosines", "min_cosine", "probe_embedding"}
    return verdict if isinstance(verdict, dict) and keys <= set(verdict) else None


def _measure(
    files: EncoderFiles, kind: str, size: int, network: OnnxNetwork, fp32: Fp32Opener
) -> dict[str, object] | None:
    """Cosines of the int8 graph against fp32 over the probe crops, stored as the verdict; None when fp32
    itself does not open (the encoder then stays on torch)."""
    reference = fp32()
    if reference is None:
        return None
    cosines = probe_cosines(reference, network, probe_crops(kind, size))
    embedding = network(probe_input(size))
    verdict: dict[str, object] = {
        "cosines": [round(c, 8) for c in cosines],
        "min_cosine": min(cosines),
        "probe_embedding": embedding.reshape(-1).tolist(),
        "ops": list(QUANTISED_OPS[kind]),
    }
    atomic_write_text(files.int8_verdict, json.dumps(verdict))
    return verdict


def _int8_session(files: EncoderFiles, kind: str) -> tuple[OnnxNetwork, bool]:
    if not files.int8_graph.is_file():
        files.remove(int8_only=True)  # a verdict of an earlier int8 graph is not this one's
        quantise(files.graph, files.int8_graph, QUANTISED_OPS[kind])
    return open_session(files.int8_graph, files.optimised(".int8"))


def open_int8(
    module: nn.Module, files: EncoderFiles, slot: str, report: EncoderRuntimeReport, fp32: Fp32Opener
) -> OnnxNetwork | None:
    """The int8 network of ``module`` when its verdict adopts it, else the fp32 one (or None: torch)."""
    kind, size = kind_and_size(module)
    if not QUANTISED_OPS.get(kind):
        report.int8[slot] = {"adopted": False, "why": f"no int8 recipe for {kind} (nothing to gain measured)"}
        return fp32()
    opened: list[OnnxNetwork | None] = []

    def fp32_once() -> OnnxNetwork | None:  # the fp32 session, opened at most once
        if not opened:
            opened.append(fp32())
        return opened[0]

    verdict = None
    start = time.perf_counter()
    for _ in range(2):
        if not files.graph.is_file() and fp32_once() is None:  # the int8 graph is made from the fp32 one
            return None
        try:
            network, reused = _int8_session(files, kind)
        except Exception as exc:  # a damaged int8 graph: made again once
            log.warning("int8 encoder graph %s unusable (%s)", files.int8_graph, exc)
            files.remove(int8_only=True)
            continue
        verdict = _read_verdict(files.int8_verdict)
        stored = None if verdict is None else torch.tensor([verdict["probe_embedding"]], dtype=torch.float32)
        if stored is not None and agrees(agreement(stored, network(probe_input(size)))):
            break
        verdict = _measure(files, kind, size, network, fp32_once)  # no verdict, or not this graph's
        if verdict is None:
            return None
        break
    report.timings.setdefault(slot, {})["int8"] = time.perf_counter() - start  # fp32's own steps included
    if verdict is None:
        report.int8[slot] = {"adopted": False, "why": "the int8 graph could not be made or opened"}
        return fp32_once()
    minimum = float(verdict["min_cosine"])  # type: ignore[arg-type]
    adopted = minimum >= MIN_INT8_COSINE
    why = f"minimum probe cosine {minimum:.5f} {'≥' if adopted else '<'} {MIN_INT8_COSINE}"
    report.int8[slot] = {"adopted": adopted, "min_cosine": minimum, "cosines": verdict["cosines"], "why": why}
    if not adopted:
        return fp32_once()
    report.precision[slot] = "int8"
    if slot not in report.exported and slot not in report.reused:
        report.reused.append(slot)
    if reused:
        report.optimised_reused.append(slot)
    return network
