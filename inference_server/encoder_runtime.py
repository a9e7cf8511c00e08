"""Image encoders (ArcFace, FaRL) through ONNX Runtime on the CPU (fp32, or int8 where it stays close).

The encoders are the largest single-image cost of a fast reconstruction on a CPU (one iresnet100 pass ~0.2 s,
one ViT-B/16 pass ~0.5 s on 2 cores). ONNX Runtime computes the same fp32 function with its own kernels
(same arithmetic up to float rounding: embeddings agree to cosine ≥ 0.99999 and are checked to).

Files, under ``<cache>/encoders_onnx/``, per encoder ``<kind>-<key>`` (``key``: ``weights_key``, a SHA-256
over the class, configuration and every state-dict entry — name, dtype, shape, a strided sample of values and
the float64 sum of all values — so a fine-tuned copy never finds another copy's files):

- ``.onnx``: the exported fp32 graph (portable);
- ``.probe.npy``: torch's embedding of the fixed probe (``probe_input``), stored at export, so opening a
  session validates the graph without a torch pass;
- ``.opt-<cpu>.onnx``: ONNX Runtime's optimised graph (``SessionOptions.optimized_model_filepath``). It may
  hold CPU-specific layouts (NCHWc), so ``<cpu>`` keys it by onnxruntime version and CPU identity
  (``cpu_identity``); a later open loads it with graph optimisation off (the optimisation was two thirds of
  the ~5 s an official-size session took to open);
- ``.int8pc7.onnx`` / ``.int8pc7.opt-<cpu>.onnx`` / ``.int8pc7-<cpu>.json``: the int8 graph (``pc7``: one
  scale per output channel, 7-bit weights; ``encoder_quantise``), its optimised form and its verdict; files
  of the earlier full-range recipe (``.int8.*``) are removed when the new graph is made.

Every file is written atomically (temporary name, then rename). Every open is validated: the session's
embedding of the probe must be within ``MIN_COSINE`` / ``ATOL`` of the stored one; a damaged, stale or
unreadable file is removed with the files derived from it and made again once (with a fresh torch probe), and
if that still disagrees the encoder stays on torch. Without ``onnxruntime`` (or off the CPU, or in half
precision) encoders run in torch.

Opt-in for the worker (``OFER_ENCODER_RUNTIME=onnxruntime``, ``OFER_ENCODER_PRECISION=int8|bf16|auto``; what
each precision tries per encoder: ``CHOICES``; bf16 runs a torch copy, ``encoder_bf16``); measured costs and
gains in benchmarks/README.md ("Encoders through ONNX Runtime: start-up, int8", "Encoders in bfloat16").
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import logging
import os
import platform
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .atomic_io import atomic_write_bytes
from .backends import OnnxNetwork
from .encoder_sharing import module_digest
from .errors import BadRequestError
from .nets.arcface import ArcFaceEncoder
from .nets.clip_visual import ClipImageEncoder

log = logging.getLogger(__name__)

#: Embedding agreement a cached graph must show against torch on the probe (fp32 rounding is ~1e-7).
MIN_COSINE = 0.99999
ATOL = 1e-3
#: Folder under the user cache.
CACHE_FOLDER = "encoders_onnx"
PRECISIONS = ("fp32", "int8", "bf16", "auto")
#: What each precision switch tries, per encoder kind, in order (the first adopted wins; "fp32" is ONNX Runtime
#: fp32, or torch fp32 where that is missing or disagrees). "auto" is ordered by the measured speed on a 2-core
#: EPYC with AVX512-BF16 (benchmarks/README.md, "Encoders in bfloat16"): FaRL ORT int8 < torch bf16 < ORT fp32,
#: ArcFace torch bf16 < ORT fp32 (ArcFace has no int8 recipe: slower on that CPU).
CHOICES: dict[str, dict[str, tuple[str, ...]]] = {
    "fp32": {"arcface": ("fp32",), "farl": ("fp32",)},
    "int8": {"arcface": ("int8", "fp32"), "farl": ("int8", "fp32")},  # ArcFace: the report says why not
    "bf16": {"arcface": ("bf16", "fp32"), "farl": ("bf16", "fp32")},
    "auto": {"arcface": ("bf16", "fp32"), "farl": ("int8", "bf16", "fp32")},
}


def requested_encoder_runtime(environ: Mapping[str, str]) -> str | None:
    """The encoder precision the environment opts into (``OFER_ENCODER_RUNTIME`` / ``OFER_ENCODER_PRECISION``),
    or None for torch. A misspelt value is an error, not a silent fall back to torch: the user asked for
    something and would otherwise measure the wrong thing."""
    runtime = environ.get("OFER_ENCODER_RUNTIME", "torch")
    precision = environ.get("OFER_ENCODER_PRECISION", "fp32")
    if runtime not in ("torch", "onnxruntime"):
        raise BadRequestError(
            f"OFER_ENCODER_RUNTIME={runtime!r} is not a known encoder runtime.",
            "Set it to 'onnxruntime' or 'torch', or unset it, and restart the worker.",
        )
    if precision not in PRECISIONS:
        raise BadRequestError(
            f"OFER_ENCODER_PRECISION={precision!r} is not a known encoder precision.",
            f"Set it to one of {', '.join(PRECISIONS)}, or unset it, and restart the worker.",
        )
    return precision if runtime == "onnxruntime" or precision != "fp32" else None


def onnxruntime_available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def weights_key(module: nn.Module) -> str:
    """Content key of an encoder: the sharing digest plus every tensor's float64 sum (reads every value)."""
    digest = hashlib.sha256(module_digest(module).encode())
    with torch.no_grad():
        sums = [tensor.detach().double().sum().item() for tensor in module.state_dict().values()]
    digest.update(np.asarray(sums, dtype=np.float64).tobytes())
    return digest.hexdigest()[:32]


def cpu_identity() -> str:
    """Key of what an optimised ONNX Runtime graph depends on: onnxruntime's version and the CPU (model, flags)."""
    import onnxruntime

    cpu = ""
    try:  # Linux: the first processor's model name and instruction-set flags
        text = Path("/proc/cpuinfo").read_text()
        cpu = "|".join(line for line in text.splitlines() if line.startswith(("model name", "flags")))[:8192]
    except OSError:
        pass
    parts = (onnxruntime.__version__, platform.machine(), platform.processor(), cpu)
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


def kind_and_size(module: nn.Module) -> tuple[str, int]:
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
    """(cosine, max |difference|) between two (1, D) embeddings; (0, inf) when their sizes differ."""
    a, b = reference.double().reshape(-1), candidate.double().reshape(-1)
    if a.shape != b.shape:
        return 0.0, float("inf")
    cosine = float(torch.dot(a, b) / (a.norm() * b.norm()).clamp_min(1e-30))
    return cosine, float((a - b).abs().max())


def agrees(found: tuple[float, float]) -> bool:
    return found[0] >= MIN_COSINE and found[1] <= ATOL


@dataclass
class EncoderRuntimeReport:
    """What opening the runtimes cost and found (for the benchmark, the logs and the result's meta)."""

    exported: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    on_torch: dict[str, str] = field(default_factory=dict)  # slot → why
    agreement: dict[str, tuple[float, float]] = field(default_factory=dict)
    precision: dict[str, str] = field(default_factory=dict)  # slot → "fp32" / "int8" (ONNX Runtime), "bf16" (torch)
    int8: dict[str, dict[str, object]] = field(default_factory=dict)  # slot → verdict (cosines, adopted, why)
    bf16: dict[str, dict[str, object]] = field(default_factory=dict)  # slot → verdict (cosines, adopted, why)
    optimised_reused: list[str] = field(default_factory=list)  # sessions opened from a stored optimised graph
    timings: dict[str, dict[str, float]] = field(default_factory=dict)  # slot → step → seconds
    seconds: float = 0.0


#: Names the int8 recipe in the cache file names, so a graph made by an earlier recipe is never reused.
INT8_VARIANT = ".int8pc7"


@dataclass(frozen=True)
class EncoderFiles:
    """The cache files of one encoder (see the module docstring)."""

    stem: Path  # <folder>/<kind>-<key>
    cpu: str

    @property
    def graph(self) -> Path:
        return self.stem.with_name(self.stem.name + ".onnx")

    @property
    def probe(self) -> Path:
        return self.stem.with_name(self.stem.name + ".probe.npy")

    def optimised(self, variant: str = "") -> Path:
        return self.stem.with_name(f"{self.stem.name}{variant}.opt-{self.cpu}.onnx")

    @property
    def int8_graph(self) -> Path:
        return self.stem.with_name(f"{self.stem.name}{INT8_VARIANT}.onnx")

    @property
    def int8_optimised(self) -> Path:
        return self.optimised(INT8_VARIANT)

    @property
    def int8_verdict(self) -> Path:
        return self.stem.with_name(f"{self.stem.name}{INT8_VARIANT}-{self.cpu}.json")

    def remove(self, *, int8_only: bool = False) -> None:
        """Remove the files of this encoder (or only those derived from its int8 graph): all of them belong
        to the graph that is being replaced."""
        for path in self.stem.parent.glob(self.stem.name + (".int8*" if int8_only else ".*")):
            path.unlink(missing_ok=True)


def session_options(level: str) -> object:
    """CPU session options: torch's thread count, sequential, idle workers not spinning (they would take the
    cores from the torch stage that follows), graph optimisation ``level`` ("all" or "none")."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = max(1, min(torch.get_num_threads(), os.cpu_count() or 1))
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    levels = onnxruntime.GraphOptimizationLevel
    options.graph_optimization_level = levels.ORT_ENABLE_ALL if level == "all" else levels.ORT_DISABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def open_session(graph: Path, optimised: Path) -> tuple[OnnxNetwork, bool]:
    """A CPU session of ``graph``: from its stored optimised graph when there is one (True), else optimising
    ``graph`` and storing the result at ``optimised`` (atomically) for the next open (False)."""
    import onnxruntime

    providers = ["CPUExecutionProvider"]
    if optimised.is_file():
        try:
            session = onnxruntime.InferenceSession(str(optimised), session_options("none"), providers=providers)
            return OnnxNetwork(session), True
        except Exception as exc:  # damaged or from another onnxruntime: optimise again
            log.warning("optimised encoder graph %s unusable (%s): optimising again", optimised, exc)
            optimised.unlink(missing_ok=True)
    options = session_options("all")
    with tempfile.TemporaryDirectory(dir=optimised.parent, prefix=".opt-") as tmp:
        staged = Path(tmp) / "optimised.onnx"
        options.optimized_model_filepath = str(staged)  # type: ignore[attr-defined]
        session = onnxruntime.InferenceSession(str(graph), options, providers=providers)
        if staged.is_file():
            os.replace(staged, optimised)
    return OnnxNetwork(session), False


def _export(module: nn.Module, path: Path) -> None:
    from .onnx_export import export_arcface, export_clip_visual

    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".export-") as tmp:
        staged = Path(tmp) / "graph.onnx"
        if isinstance(module, ArcFaceEncoder):
            export_arcface(module, staged)
        else:
            assert isinstance(module, ClipImageEncoder)
            export_clip_visual(module, staged)
        os.replace(staged, path)


def save_array(path: Path, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array, dtype=np.float32), allow_pickle=False)
    atomic_write_bytes(path, buffer.getvalue())


def load_array(path: Path) -> torch.Tensor | None:
    """A stored (1, D) float32 embedding, or None when missing or unreadable (no pickles)."""
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    if array.dtype != np.float32 or array.ndim != 2 or array.shape[0] != 1 or array.shape[1] > 1 << 16:
        return None
    return torch.from_numpy(array)


def trim_heap() -> None:
    """Hand freed heap memory back to the system (glibc keeps it otherwise: releasing the five official-size
    torch encoders dropped the RSS by 0.15 GB without this, by 1.4 GB with it). A no-op elsewhere."""
    import ctypes
    import ctypes.util

    if platform.system() != "Linux":
        return
    with contextlib.suppress(OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)


def _timed(timings: dict[str, float], step: str, start: float) -> float:
    now = time.perf_counter()
    timings[step] = timings.get(step, 0.0) + now - start
    return now


def open_encoder(module: nn.Module, files: EncoderFiles, slot: str, report: EncoderRuntimeReport) -> OnnxNetwork | None:
    """An fp32 ``OnnxNetwork`` computing ``module`` (exported into the cache when missing), or None (torch)."""
    size = kind_and_size(module)[1]
    probe = probe_input(size)
    timings = report.timings.setdefault(slot, {})
    found = (0.0, float("inf"))
    for attempt in range(2):
        start = time.perf_counter()
        fresh = not files.graph.is_file()
        if fresh:
            files.remove()  # everything derived from an earlier graph under this key
            _export(module, files.graph)
            start = _timed(timings, "export", start)
        expected = None if attempt else load_array(files.probe)
        if expected is None:  # first export, or a retry: torch's embedding, stored for later opens
            with torch.no_grad():
                expected = module.eval()(probe).float()
            save_array(files.probe, expected.numpy())
            start = _timed(timings, "torch_probe", start)
        try:
            network, reused = open_session(files.graph, files.optimised())
            start = _timed(timings, "session", start)
            found = agreement(expected, network(probe))
            _timed(timings, "validate", start)
        except Exception as exc:  # an unreadable or damaged file: export again
            log.warning("encoder graph %s unusable (%s)", files.graph, exc)
            found = (0.0, float("inf"))
        if agrees(found):
            (report.exported if fresh else report.reused).append(slot)
            if reused:
                report.optimised_reused.append(slot)
            report.agreement[slot] = found
            report.precision[slot] = "fp32"
            return network
        files.remove()
        if fresh or attempt == 1:  # a fresh export that disagrees is not tried again
            break
    report.on_torch[slot] = f"ONNX Runtime disagrees with torch (cosine {found[0]:.6f}, max |d| {found[1]:.2e})"
    return None


Encoder = Callable[[torch.Tensor], torch.Tensor]
Fp32Opener = Callable[[], OnnxNetwork | None]


def encoder_networks(
    modules: Mapping[str, nn.Module], cache_dir: Path, precision: str = "fp32"
) -> tuple[dict[str, Encoder], EncoderRuntimeReport]:
    """Faster networks for the given encoder slots (only those that validated or were adopted) and the report.

    Per encoder the ``CHOICES`` of ``precision`` are tried in order: "int8" (ONNX Runtime, where
    ``encoder_quantise`` adopts it), "bf16" (torch, where ``encoder_bf16`` adopts it), "fp32" (ONNX Runtime);
    a slot with none of them stays on its torch fp32 module."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown encoder precision {precision!r} (expected one of {', '.join(PRECISIONS)})")
    report = EncoderRuntimeReport()
    start = time.perf_counter()
    networks: dict[str, Encoder] = {}
    folder = cache_dir / CACHE_FOLDER
    ort = onnxruntime_available()
    cpu = cpu_identity() if ort else "no-onnxruntime"
    if _wants_bf16(precision) or ort:  # nothing is written otherwise (and the bf16 check logs once)
        folder.mkdir(parents=True, exist_ok=True)
    for slot, module in modules.items():
        step = time.perf_counter()
        kind = kind_and_size(module)[0]
        files = EncoderFiles(folder / f"{kind}-{weights_key(module)}", cpu)
        _timed(report.timings.setdefault(slot, {}), "hash", step)
        network = open_choices(module, files, slot, report, CHOICES[precision][kind], ort)
        if network is not None:
            networks[slot] = network
        elif slot not in report.on_torch:
            report.on_torch[slot] = "onnxruntime is not installed" if not ort else "no faster precision adopted"
    report.seconds = time.perf_counter() - start
    return networks, report


def open_choices(
    module: nn.Module, files: EncoderFiles, slot: str, report: EncoderRuntimeReport, choices: tuple[str, ...], ort: bool
) -> Encoder | None:
    """The first of ``choices`` that opens and is adopted for this encoder, or None (torch fp32)."""
    from .encoder_bf16 import open_bf16
    from .encoder_quantise import open_int8

    opened: list[OnnxNetwork | None] = []

    def fp32() -> OnnxNetwork | None:  # the ONNX Runtime fp32 session, opened at most once
        if not opened:
            opened.append(open_encoder(module, files, slot, report) if ort else None)
        return opened[0]

    for choice in choices:
        network: Encoder | None = None
        if choice == "bf16":
            network = open_bf16(module, files.stem, slot, report)
        elif choice == "int8" and ort:
            network = open_int8(module, files, slot, report, fp32)
        elif choice == "fp32":
            network = fp32()
        if network is not None:
            return network
    return None


def _wants_bf16(precision: str) -> bool:
    """Whether ``precision`` tries bf16 on a CPU that has it; one log line when it would but the CPU has not
    (each encoder's report says so too)."""
    from .encoder_bf16 import native_bf16

    if not any("bf16" in choices for choices in CHOICES[precision].values()):
        return False
    if not native_bf16():
        log.info("encoder precision %s: this CPU has no native bf16 arithmetic; bf16 is not used", precision)
        return False
    return True
