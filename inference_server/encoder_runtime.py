"""Image encoders (ArcFace, FaRL) through ONNX Runtime fp32 on the CPU, exported once and cached by content.

The encoders are the largest single-image cost of a fast reconstruction on a CPU (one iresnet100 pass ~0.2 s,
one ViT-B/16 pass ~0.5 s on 2 cores). ONNX Runtime computes the same fp32 function with its own kernels
(same arithmetic up to float rounding: embeddings agree to cosine ≥ 0.99999 and are checked to). Whether it
is faster depends on the machine; ``benchmarks/reconstruction.py --plain-encoders`` measures both in one run.

- **Cache**: ``<cache>/encoders_onnx/<kind>-<key>.onnx``, ``key`` a SHA-256 over the class, configuration and
  every state-dict entry (``weights_key``: name, dtype, shape, a strided sample of values and the float64
  sum of all values, so a fine-tuned copy never finds another copy's graph). Written atomically (temporary
  name, then rename), so a killed export leaves no half file behind.
- **Validated** every time a session is opened: torch and ONNX Runtime embed the same deterministic probe;
  a graph whose embedding is not within ``MIN_COSINE`` / ``ATOL`` of torch's (a stale or damaged file) is
  exported again once, and if that still disagrees the encoder stays on torch.
- **Fallback**: without ``onnxruntime`` (or off the CPU, or in half precision) encoders run in torch.

Opt-in for the worker (``OFER_ENCODER_RUNTIME=onnxruntime``): on a loaded 2-core machine it made the encode
stage 1.3x faster (1.3x fewer CPU-seconds per pass) but opening the five official-size sessions took 25-100 s
per worker start and the sessions hold a second copy of the encoder weights (peak RSS 2.3 → 4.8 GB).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .atomic_io import atomic_write_bytes
from .backends import OnnxNetwork, create_onnx_session
from .encoder_sharing import module_digest
from .nets.arcface import ArcFaceEncoder
from .nets.clip_visual import ClipImageEncoder

log = logging.getLogger(__name__)

#: Embedding agreement a cached graph must show against torch on the probe (fp32 rounding is ~1e-7).
MIN_COSINE = 0.99999
ATOL = 1e-3
#: Folder under the user cache.
CACHE_FOLDER = "encoders_onnx"


def onnxruntime_available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def weights_key(module: nn.Module) -> str:
    """Content key of an encoder: the sharing digest plus every tensor's float64 sum (reads every value)."""
    digest = hashlib.sha256(module_digest(module).encode())
    with torch.no_grad():
        sums = [tensor.detach().double().sum().item() for tensor in module.state_dict().values()]
    digest.update(np.asarray(sums, dtype=np.float64).tobytes())
    return digest.hexdigest()[:32]


def _kind_and_size(module: nn.Module) -> tuple[str, int]:
    if isinstance(module, ArcFaceEncoder):
        return "arcface", module.config.input_size
    if isinstance(module, ClipImageEncoder):
        return "farl", module.config.image_size
    raise TypeError(f"no ONNX encoder runtime for {type(module).__name__}")


def probe_input(size: int) -> torch.Tensor:
    """The fixed validation input: one image-sized tensor of values in [-1, 1] (same every time)."""
    generator = torch.Generator().manual_seed(20250611)
    return torch.rand(1, 3, size, size, generator=generator) * 2 - 1


def agreement(reference: torch.Tensor, candidate: torch.Tensor) -> tuple[float, float]:
    """(cosine, max |difference|) between two (1, D) embeddings."""
    a, b = reference.double().reshape(-1), candidate.double().reshape(-1)
    cosine = float(torch.dot(a, b) / (a.norm() * b.norm()).clamp_min(1e-30))
    return cosine, float((a - b).abs().max())


@dataclass
class EncoderRuntimeReport:
    """What opening the runtimes cost and found (for the benchmark and the logs)."""

    exported: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    on_torch: dict[str, str] = field(default_factory=dict)  # slot → why
    agreement: dict[str, tuple[float, float]] = field(default_factory=dict)
    seconds: float = 0.0


def _export(module: nn.Module, path: Path) -> None:
    from .onnx_export import export_arcface, export_clip_visual

    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        staged = Path(tmp) / "graph.onnx"
        if isinstance(module, ArcFaceEncoder):
            export_arcface(module, staged)
        else:
            assert isinstance(module, ClipImageEncoder)
            export_clip_visual(module, staged)
        atomic_write_bytes(path, staged.read_bytes())


def open_encoder(module: nn.Module, cache_dir: Path, slot: str, report: EncoderRuntimeReport) -> OnnxNetwork | None:
    """An ``OnnxNetwork`` computing ``module`` (exported into the cache when missing), or None (stay on torch)."""
    kind, size = _kind_and_size(module)
    folder = cache_dir / CACHE_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{kind}-{weights_key(module)}.onnx"
    probe = probe_input(size)
    with torch.no_grad():
        expected = module.eval()(probe).float()
    for attempt in range(2):
        fresh = not path.is_file()
        if fresh:
            _export(module, path)
        try:
            network = OnnxNetwork(create_onnx_session(path, device="cpu", spin=False))
            found = agreement(expected, network(probe))
        except Exception as exc:  # an unreadable or damaged file: export again
            log.warning("encoder graph %s unusable (%s)", path, exc)
            found = (0.0, float("inf"))
        if found[0] >= MIN_COSINE and found[1] <= ATOL:
            (report.exported if fresh else report.reused).append(slot)
            report.agreement[slot] = found
            return network
        path.unlink(missing_ok=True)
        if attempt == 1 or fresh:
            break
    report.on_torch[slot] = f"ONNX Runtime disagrees with torch (cosine {found[0]:.6f}, max |d| {found[1]:.2e})"
    return None


def encoder_networks(
    modules: dict[str, nn.Module], cache_dir: Path
) -> tuple[dict[str, OnnxNetwork], EncoderRuntimeReport]:
    """ONNX Runtime networks for the given encoder slots (only those that validated) and the report."""
    report = EncoderRuntimeReport()
    start = time.perf_counter()
    networks: dict[str, OnnxNetwork] = {}
    if not onnxruntime_available():
        report.on_torch = {slot: "onnxruntime is not installed" for slot in modules}
        return networks, report
    for slot, module in modules.items():
        network = open_encoder(module, cache_dir, slot, report)
        if network is not None:
            networks[slot] = network
    report.seconds = time.perf_counter() - start
    return networks, report
