"""The probe set and the stored verdicts that decide whether a faster encoder precision is adopted.

A faster encoder (ONNX Runtime int8: ``encoder_quantise``; torch bfloat16: ``encoder_bf16``) is adopted per
encoder, on the user's weights, only when it stays close to fp32 on a **probe set** of real face crops — the
bundled sample photo's ArcFace and FaRL crops and re-framings of them (mirrored, shifted, rotated, zoomed) —
measured as the **minimum** cosine over the set against fp32, at least ``MIN_PROBE_COSINE``. The verdict
(cosines, minimum, and the candidate's embedding of the fixed probe ``encoder_runtime.probe_input``) is stored
as JSON beside the encoder's cache files, so later opens run neither fp32 nor the probe set: one pass of the
candidate on the fixed probe checks that it still computes what was judged (a damaged graph or other kernels
do not reproduce the stored embedding, and the verdict is measured again).
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .atomic_io import atomic_write_text
from .encoder_runtime import agreement, agrees, probe_input

#: The least cosine (candidate against fp32, over the probe crops) at which a faster precision is adopted. From
#: the meshes: embeddings perturbed to cosine 0.999 move the DEMO's sampled meshes by less than a tenth of what
#: a different seed moves them (benchmarks/README.md, "Int8: how close is close").
MIN_PROBE_COSINE = 0.999
SAMPLE_PHOTO = Path(__file__).resolve().parent / "assets" / "sample_occluded_face.jpg"
#: Re-framings of each crop: (mirror, shift x, shift y as a fraction of the side, rotation in degrees, zoom).
REFRAMINGS = ((False, 0.0, 0.0, 0.0, 1.0), (True, 0.0, 0.0, 0.0, 1.0), (False, 0.06, -0.04, 0.0, 1.0),
              (False, -0.05, 0.05, 0.0, 1.0), (False, 0.0, 0.0, 10.0, 1.0), (True, 0.0, 0.0, -10.0, 1.0),
              (False, 0.0, 0.02, 0.0, 1.12))  # fmt: skip

Embedder = Callable[[torch.Tensor], torch.Tensor]


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


def probe_cosines(reference: Embedder, candidate: Embedder, crops: list[torch.Tensor]) -> list[float]:
    with torch.no_grad():
        return [agreement(reference(crop), candidate(crop))[0] for crop in crops]


def read_verdict(path: Path) -> dict[str, object] | None:
    """A stored verdict, or None when missing, unreadable or incomplete."""
    try:
        verdict = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    keys = {"cosines", "min_cosine", "probe_embedding"}
    return verdict if isinstance(verdict, dict) and keys <= set(verdict) else None


def verdict_holds(verdict: dict[str, object] | None, candidate: Embedder, size: int) -> bool:
    """Whether ``candidate`` still reproduces the probe embedding stored with ``verdict`` (one pass)."""
    if verdict is None:
        return False
    stored = torch.tensor([verdict["probe_embedding"]], dtype=torch.float32)
    with torch.no_grad():
        return agrees(agreement(stored, candidate(probe_input(size))))


def measure_verdict(
    path: Path, kind: str, size: int, reference: Embedder, candidate: Embedder, **extra: object
) -> dict[str, object]:
    """Cosines of ``candidate`` against ``reference`` (fp32) over the probe crops, stored at ``path``."""
    cosines = probe_cosines(reference, candidate, probe_crops(kind, size))
    with torch.no_grad():
        embedding = candidate(probe_input(size))
    verdict: dict[str, object] = {
        "cosines": [round(c, 8) for c in cosines],
        "min_cosine": min(cosines),
        "probe_embedding": embedding.reshape(-1).tolist(),
    } | extra
    atomic_write_text(path, json.dumps(verdict))
    return verdict


def judge(verdict: dict[str, object]) -> dict[str, object]:
    """The report entry of a verdict: adopted when its minimum cosine reaches ``MIN_PROBE_COSINE``."""
    minimum = float(verdict["min_cosine"])  # type: ignore[arg-type]
    adopted = minimum >= MIN_PROBE_COSINE
    why = f"minimum probe cosine {minimum:.5f} {'≥' if adopted else '<'} {MIN_PROBE_COSINE}"
    return {"adopted": adopted, "min_cosine": minimum, "cosines": verdict["cosines"], "why": why}
