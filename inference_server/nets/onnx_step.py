"""The fused denoiser step run by ONNX Runtime on the CPU (issue 19, item 3: the fidelity preset's step).

The fused step (``nets/fused_denoiser.py``) is a function of the rows ``x`` and the FiLM rows ``(a, b)`` of
one timestep and image: about 130 kernels per call, most of them small. ONNX Runtime runs the same graph
with less time between kernels: on the 2-core AMD EPYC (AVX-512) the official-size step pair at batch 100
in row blocks on two threads took 19.2 ms against torch's 25.3 (IdGen 1.30×, ExpGen 1.39×; one thread 1.06×),
and the fidelity preset's sampling (1000 DDPM steps, IdGen ∥ ExpGen) 19.7-21.8 → 16.9-17.3 s, 9.7 → 5.4 s with
the DEMO weights (benchmarks/README.md, "The denoiser step through ONNX Runtime").

The graph is traced from a plain-weight copy of the fused step (``use_mkldnn=False``: the packed oneDNN
weights are not traceable), with a dynamic batch axis and ``(a, b)`` as inputs, so the FiLM rows stay
memoised in torch. It is kept in ``<cache>/denoisers_onnx/<kind>-<key>.onnx`` (``key``: SHA-256 of every
weight byte and of ``RECIPE``), written atomically, and checked against the torch step on a fixed probe at
every open (largest difference at most ``MAX_RELATIVE`` of the torch output's largest value, the fused
step's own bound against the plain module); a damaged or disagreeing file is exported again once, and
a graph that still disagrees leaves the denoiser on torch. Sessions run on the calling thread's torch
thread count (one per count, opened on first use), their idle workers never spin.

Switch: ``OFER_CPU_DENOISER_RUNTIME`` — ``onnxruntime`` (the default where onnxruntime and onnx are
installed) or ``torch``. bf16 GEMMs (``OFER_CPU_PRECISION=bf16``) and the compiled step
(``OFER_CPU_COMPILE=1``) stay on torch.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import os
import tempfile
import threading
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..errors import BadRequestError

if TYPE_CHECKING:
    from .fused_denoiser import FusedDenoiser

__all__ = [
    "CACHE_FOLDER",
    "MAX_RELATIVE",
    "RUNTIME_ENV",
    "OnnxStep",
    "StepRuntime",
    "open_onnx_step",
    "requested_step_runtime",
    "step_key",
]

log = logging.getLogger(__name__)

RUNTIME_ENV = "OFER_CPU_DENOISER_RUNTIME"
RUNTIMES = ("onnxruntime", "torch")
CACHE_FOLDER = "denoisers_onnx"
#: Names what the graph computes: raise it when the fused step's arithmetic changes, so no stale graph is
#: ever opened (the probe would also refuse one, at the cost of an export).
RECIPE = "fused-step/1"
#: Largest |ONNX Runtime − torch| on the probe, relative to the torch output's largest |value|.
MAX_RELATIVE = 1e-5
PROBE_ROWS = 8
PROBE_STEP = 500
OPSET = 17
#: torch.onnx.export keeps process-wide state: two denoisers built at once (IdGen and ExpGen draw on two
#: threads) must not export at the same time.
_EXPORT_LOCK = threading.Lock()


def requested_step_runtime(environ: Mapping[str, str] | None = None) -> str:
    """What ``OFER_CPU_DENOISER_RUNTIME`` asks for ("onnxruntime" when unset); a misspelt value is an error."""
    value = (os.environ if environ is None else environ).get(RUNTIME_ENV, "").strip().lower()
    if value == "":
        return "onnxruntime"
    if value not in RUNTIMES:
        raise BadRequestError(
            f"{RUNTIME_ENV}={value!r} is not a known denoiser runtime.",
            f"Set it to one of {', '.join(RUNTIMES)}, or unset it, and restart the worker.",
        )
    return value


def step_key(net: nn.Module) -> str:
    """SHA-256 (32 hex digits) of the recipe, the configuration and every weight's name, shape and bytes."""
    digest = hashlib.sha256(f"{RECIPE}|{getattr(net, 'config', None)!r}".encode())
    for name, tensor in net.state_dict().items():
        value = tensor.detach().to("cpu", torch.float32).contiguous()
        digest.update(f"{name}|{tuple(value.shape)}".encode())
        digest.update(value.view(torch.uint8).numpy().data if value.numel() else b"")
    return digest.hexdigest()[:32]


class _StepModule(nn.Module):
    """The fused step as a module for the exporter: plain weights, ``(x, a, b) -> eps``."""

    def __init__(self, plain: FusedDenoiser) -> None:
        super().__init__()
        self.plain = plain

    def forward(self, x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.plain._step(x, a, b)


def _export(net: nn.Module, path: Path) -> None:
    """Trace the fused step of ``net`` into ``path`` (atomically: a reader never sees half a file)."""
    from .fused_denoiser import FusedDenoiser

    plain = FusedDenoiser(net, use_mkldnn=False, compile_step=False, precision="fp32", row_split=False)  # type: ignore[arg-type]
    width = int(plain._gamma.shape[0])
    example = (torch.zeros(2, plain.feature_dim), torch.ones(width), torch.zeros(width))
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".export-") as tmp:
        staged = Path(tmp) / "step.onnx"
        with _EXPORT_LOCK, torch.no_grad(), warnings.catch_warnings():
            # The TorchScript exporter is deprecated in favour of one that needs onnxscript (not installed).
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(
                _StepModule(plain), example, str(staged), input_names=["x", "a", "b"], output_names=["eps"],
                dynamic_axes={"x": {0: "batch"}, "eps": {0: "batch"}}, opset_version=OPSET, dynamo=False,
            )  # fmt: skip
        os.replace(staged, path)


def _session(graph: Path, threads: int) -> Any:
    """A CPU session on ``threads`` intra-op threads, with the encoders' options (sequential, fully optimised,
    idle workers not spinning: they would take the cores from torch)."""
    import onnxruntime

    from ..encoder_runtime import session_options

    options = session_options("all")
    options.intra_op_num_threads = max(1, threads)  # type: ignore[attr-defined]
    return onnxruntime.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])


@dataclass
class OnnxStep:
    """``step(x, a, b)``: the fused step by ONNX Runtime, on a session of the caller's torch thread count."""

    graph: Path
    sessions: dict[int, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def session(self, threads: int) -> Any:
        found = self.sessions.get(threads)  # every step asks: no lock once the session exists
        if found is not None:
            return found
        with self._lock:
            if threads not in self.sessions:
                self.sessions[threads] = _session(self.graph, threads)
            return self.sessions[threads]

    def __call__(self, x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        feeds = {name: value.detach().contiguous().numpy() for name, value in (("x", x), ("a", a), ("b", b))}
        return torch.from_numpy(self.session(torch.get_num_threads()).run(None, feeds)[0])


@dataclass
class StepRuntime:
    """What opening the ONNX Runtime step found: the step (None: torch runs it) and why, for logs and meta."""

    step: OnnxStep | None
    note: str  # "exported", "reused", or why torch runs the step


def _probe(fused: FusedDenoiser) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fixed rows and the FiLM rows of a fixed timestep and context (the same for every open)."""
    generator = torch.Generator().manual_seed(20261206)
    x = torch.randn(PROBE_ROWS, fused.feature_dim, generator=generator)
    context = torch.randn(1, fused.config.context_dim, generator=generator)
    with torch.no_grad():
        a, b = fused._film_rows(torch.tensor([float(PROBE_STEP)]), context)
    return x, a.clone(), b.clone()


def _disagreement(fused: FusedDenoiser, step: OnnxStep) -> float:
    """Largest |ONNX Runtime − torch| on the probe over the torch output's largest |value|."""
    x, a, b = _probe(fused)
    with torch.no_grad():
        expected = fused._step(x.clone(), a, b)
    found = step(x, a, b)
    if found.shape != expected.shape:
        return float("inf")
    return float((found - expected).abs().max() / expected.abs().max().clamp_min(1e-30))


def open_onnx_step(fused: FusedDenoiser, cache_dir: Path, kind: str) -> StepRuntime:
    """The ONNX Runtime step of ``fused`` (exported into the cache when missing), checked on the probe; a
    ``StepRuntime`` without a step says why torch keeps it."""
    if importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnx") is None:
        return StepRuntime(None, "onnxruntime or onnx is not installed")
    graph = cache_dir / CACHE_FOLDER / f"{kind}-{step_key(fused.net)}.onnx"
    note = ""
    for attempt in range(2):
        fresh = attempt > 0 or not graph.is_file()
        try:
            if fresh:
                _export(fused.net, graph)
            step = OnnxStep(graph)
            worst = _disagreement(fused, step)
        except Exception as exc:  # exporter, runtime or file errors of many types: torch keeps the step
            note = f"the ONNX Runtime step could not be made ({type(exc).__name__}: {exc})"
        else:
            if worst <= MAX_RELATIVE:
                return StepRuntime(step, "exported" if fresh else "reused")
            note = f"ONNX Runtime disagrees with the torch step (largest relative difference {worst:.1e})"
        with contextlib.suppress(OSError):  # a read-only cache: nothing to clean, torch runs the step
            graph.unlink(missing_ok=True)
        if fresh:  # a graph just exported that fails is not exported again
            break
    log.warning("%s denoiser: %s; sampling with torch", kind, note)
    return StepRuntime(None, note)
