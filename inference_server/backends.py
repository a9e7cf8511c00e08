"""One interface over the two ways the worker runs a network: a torch ``nn.Module`` or an ONNX Runtime
session. The pipeline and the samplers only ever call ``network(*tensors) -> tensor``.

- ``TorchNetwork(module)`` / ``OnnxNetwork(session)``: any network (ranker, encoders).
- ``TorchEpsModel`` / ``OnnxEpsModel``: the same for a denoiser, typed as ``eps(x, t, context)``.

Inputs and outputs are torch tensors in both cases. The ONNX back end converts each input to the element
type the graph declares (so the timestep may be int64 here and float in the graph) and returns the output
on the device of the first input. With the CUDA execution provider and CUDA inputs it binds the torch
buffers directly (no host round trip).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Self

import numpy as np
import torch

from .env_switch import read_switch
from .errors import MissingAssetError, WorkerError

if TYPE_CHECKING:
    import onnxruntime


class EpsModel(Protocol):
    """A denoiser: predicted noise ε̂ (N, F) for states x (N, F), timesteps t (N,) and context (N, C)."""

    def __call__(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor: ...


class Network(Protocol):
    """Any network with tensor inputs and one tensor output (ranker, encoders, denoisers)."""

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor: ...


class BackendError(WorkerError):
    """The requested back end or device cannot run here."""

    code = "bad_request"


class TorchNetwork:
    """Runs ``module`` in eval mode without autograd."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module.eval()

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            output = self.module(*inputs)
        if not isinstance(output, torch.Tensor):
            raise TypeError(f"{type(self.module).__name__} returned {type(output).__name__}, expected a tensor")
        return output


class TorchEpsModel(TorchNetwork):
    def __call__(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().__call__(x, t, context)


_ORT_TO_NUMPY: dict[str, Any] = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
}
_NUMPY_TO_TORCH: dict[Any, torch.dtype] = {
    np.float32: torch.float32,
    np.float64: torch.float64,
    np.float16: torch.float16,
    np.int64: torch.int64,
    np.int32: torch.int32,
}


def available_onnx_providers() -> list[str]:
    import onnxruntime

    return list(onnxruntime.get_available_providers())


def create_onnx_session(
    path: str | Path, *, device: str = "auto", intra_op_threads: int | None = None, spin: bool = True
) -> onnxruntime.InferenceSession:
    """An inference session on ``device`` ("auto", "cpu", "cuda" or "cuda:N").

    "auto" takes the CUDA execution provider when onnxruntime has it (the ``onnxruntime-gpu`` build) and
    the CPU one otherwise. The intra-op thread count defaults to torch's, so both back ends share the
    thread budget the worker set; inter-op parallelism is off (these graphs are single chains). ``spin=False``
    stops idle ORT workers from spinning (for a session run between torch stages).
    """
    import onnxruntime

    path = Path(path)
    if not path.is_file():
        raise MissingAssetError(
            f"ONNX model file not found: {path}", "Export the networks with `ofer-worker export-onnx`."
        )
    providers: list[Any] = ["CPUExecutionProvider"]
    wants_cuda = device == "auto" or device.startswith("cuda")
    if wants_cuda and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        device_id = int(device.split(":", 1)[1]) if ":" in device else 0
        providers.insert(0, ("CUDAExecutionProvider", {"device_id": device_id}))
    elif device.startswith("cuda"):
        raise BackendError(
            f"device {device!r} was asked for, but this onnxruntime has no CUDA execution provider "
            f"(it has {', '.join(onnxruntime.get_available_providers())})",
            "Install onnxruntime-gpu in the worker environment, or use device 'cpu'.",
        )
    elif device != "cpu" and device != "auto":
        raise BackendError(f"unknown device {device!r}", "Use 'auto', 'cpu' or 'cuda'.")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = intra_op_threads or max(1, min(torch.get_num_threads(), os.cpu_count() or 1))
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    if not spin:
        # ORT's idle workers otherwise spin after every run, taking the cores from torch's next stage.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return onnxruntime.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own exception types for unreadable graphs
        raise MissingAssetError(
            f"cannot load the ONNX model {path}: {exc}", "Export it again with `ofer-worker export-onnx`."
        ) from exc


class OnnxNetwork:
    """Runs an ONNX Runtime session with torch tensors in and out (one output)."""

    def __init__(self, session: onnxruntime.InferenceSession) -> None:
        self.session = session
        self._inputs = session.get_inputs()
        outputs = session.get_outputs()
        if len(outputs) != 1:
            raise ValueError(f"expected a graph with one output, got {len(outputs)}")
        self._output = outputs[0]
        self.input_names = [node.name for node in self._inputs]
        self._input_types = [_ORT_TO_NUMPY.get(node.type) for node in self._inputs]
        self._output_type = _ORT_TO_NUMPY.get(self._output.type)
        self.uses_cuda = "CUDAExecutionProvider" in session.get_providers()

    @classmethod
    def from_path(cls, path: str | Path, *, device: str = "auto", intra_op_threads: int | None = None) -> Self:
        return cls(create_onnx_session(path, device=device, intra_op_threads=intra_op_threads))

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        if len(inputs) != len(self._inputs):
            expected = f"{len(self._inputs)} inputs ({', '.join(self.input_names)})"
            raise ValueError(f"the graph takes {expected}, got {len(inputs)}")
        if self.uses_cuda and all(tensor.is_cuda for tensor in inputs):
            return self._run_bound(inputs)
        feeds = {
            node.name: _to_numpy(tensor, dtype)
            for node, tensor, dtype in zip(self._inputs, inputs, self._input_types, strict=True)
        }
        (output,) = self.session.run([self._output.name], feeds)
        return torch.from_numpy(np.ascontiguousarray(output)).to(inputs[0].device)

    def _run_bound(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        """CUDA inputs: bind torch's device buffers as the graph's inputs and output."""
        binding = self.session.io_binding()
        keep_alive: list[torch.Tensor] = []
        symbols: dict[str, int] = {}
        for node, tensor, dtype in zip(self._inputs, inputs, self._input_types, strict=True):
            if dtype is None:
                raise ValueError(f"unsupported input type {node.type} of {node.name}")
            ready = tensor.to(_NUMPY_TO_TORCH[dtype]).contiguous()
            keep_alive.append(ready)
            for declared, actual in zip(node.shape, ready.shape, strict=False):
                if isinstance(declared, str):
                    symbols[declared] = int(actual)
            binding.bind_input(node.name, "cuda", ready.device.index or 0, dtype, list(ready.shape), ready.data_ptr())
        device = inputs[0].device
        # torch may still be writing the inputs on its stream; ORT uses its own stream.
        torch.cuda.current_stream(device).synchronize()
        declared = self._output.shape
        if self._output_type is None or any(isinstance(d, str) and d not in symbols for d in declared):
            # Output size not derivable from the inputs: let ORT allocate it and copy it back.
            binding.bind_output(self._output.name, "cuda", device.index or 0)
            self.session.run_with_iobinding(binding)
            return torch.from_numpy(binding.copy_outputs_to_cpu()[0]).to(device)
        shape = [symbols[d] if isinstance(d, str) else int(d) for d in declared]
        output = torch.empty(shape, dtype=_NUMPY_TO_TORCH[self._output_type], device=device)
        binding.bind_output(self._output.name, "cuda", device.index or 0, self._output_type, shape, output.data_ptr())
        self.session.run_with_iobinding(binding)
        return output


class OnnxEpsModel(OnnxNetwork):
    def __call__(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().__call__(x, t, context)


def _to_numpy(tensor: torch.Tensor, dtype: Any) -> np.ndarray:
    array = tensor.detach().cpu().numpy()
    if dtype is not None and array.dtype != dtype:
        array = array.astype(dtype)
    # Broadcast views (the expanded context) have zero strides; ORT needs dense buffers.
    return np.ascontiguousarray(array)


# -- CPU threads --------------------------------------------------------------------------------------
def physical_cpu_cores() -> int:
    """Physical cores available to this process (hyper-threads share one core's arithmetic units).

    Counts distinct (package, core) pairs of the CPUs in this process's affinity mask from sysfs; falls
    back to the number of usable CPUs where sysfs is missing (macOS, Windows, containers without it).
    """
    try:
        usable = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)
    cores: set[tuple[str, str]] = set()
    for cpu in usable:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add(
                (
                    (topology / "physical_package_id").read_text().strip(),
                    (topology / "core_id").read_text().strip(),
                )
            )
        except OSError:
            return max(1, len(usable))
    return max(1, len(cores))


def configure_cpu_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads to ``threads`` (default: the physical cores) and return the count.

    The networks are small GEMM chains: threads beyond the physical cores only add synchronisation.
    Inter-op threads stay at 1 where torch still allows setting them (these graphs are single chains).
    Set ``OMP_WAIT_POLICY=PASSIVE`` in the environment *before* the worker starts (torch reads it when it
    loads OpenMP) on machines shared with other busy programs: spinning OpenMP workers then stop
    stealing the CPU from each other (3-5x faster steps measured on a loaded 2-core machine).
    """
    count = max(1, int(threads)) if threads else physical_cpu_cores()
    torch.set_num_threads(count)
    with contextlib.suppress(RuntimeError):  # already set, or parallel work has already run here
        torch.set_num_interop_threads(1)
    return count


# -- accelerated denoiser calls (GPU) -------------------------------------------------------------------
AUTOCAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


class AutocastEpsModel:
    """Runs a float32 denoiser under autocast (bf16/fp16 matmuls, fp32 norms and softmax); ε̂ in float32.

    Autocast keeps the weights in float32 and lets torch choose per op, which holds accuracy better than
    casting the whole network (GroupNorm/RMSNorm and the softmax stay float32). Works on CPU (bf16) and
    CUDA (fp16 or bf16).
    """

    def __init__(self, net: torch.nn.Module, feature_dim: int, precision: str = "bf16") -> None:
        if precision not in AUTOCAST_DTYPES:
            raise BackendError(f"unknown autocast precision {precision!r}", f"Use one of {', '.join(AUTOCAST_DTYPES)}.")
        self.net = net.eval()
        self.feature_dim = feature_dim
        self.dtype = AUTOCAST_DTYPES[precision]

    def __call__(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), torch.autocast(device_type=x.device.type, dtype=self.dtype):
            return self.net(x, t, context).float()


#: ``OFER_CUDA_GRAPHS=0`` samples with the plain modules on a CUDA device (the bundle replays CUDA graphs there).
CUDA_GRAPHS_ENV = "OFER_CUDA_GRAPHS"


def cuda_graphs_requested(environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``OFER_CUDA_GRAPHS`` leaves the denoisers' CUDA graph replay on (on when unset)."""
    return read_switch(CUDA_GRAPHS_ENV, environ) is not False


#: ``OFER_CUDA_WHOLE_STEPS=1``: where CUDA graphs replay, replay the whole sampler step, update and noise included
#: (``diffusion/whole_step.py``). Off when unset until a GPU session has measured it (benchmarks/gpu_session.sh).
CUDA_WHOLE_STEPS_ENV = "OFER_CUDA_WHOLE_STEPS"


def whole_steps_requested(environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``OFER_CUDA_WHOLE_STEPS`` turns the whole-step graphs on (off when unset)."""
    return read_switch(CUDA_WHOLE_STEPS_ENV, environ) is True


class CudaGraphEpsModel:
    """Replays one denoiser evaluation as a CUDA graph: one launch per sampler step instead of ~200.

    The networks are tiny, so on a GPU a step costs kernel launches, not arithmetic. The graph is
    captured per (batch, dtype) on the first call with static input buffers; later calls copy the new
    x / t / context into them and replay. The timestep and context keep their broadcast shape (one row,
    expanded), so the captured graph contains the once-per-step FiLM path. The returned ε̂ is a view of
    the graph's output buffer, overwritten by the next call: the samplers consume it before that.
    """

    def __init__(self, net: torch.nn.Module, feature_dim: int, warmup: int = 3) -> None:
        if not torch.cuda.is_available():
            raise BackendError("CUDA graphs need a CUDA device", "Run without --cuda-graphs on this machine.")
        self.net = net.eval()
        self.feature_dim = feature_dim
        self.warmup = warmup
        self._graphs: dict[tuple[Any, ...], tuple[torch.cuda.CUDAGraph, list[torch.Tensor], torch.Tensor]] = {}

    def __call__(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        if not x.is_cuda:
            raise BackendError("CUDA graphs need CUDA tensors", "Move the inputs to the GPU.")
        shared = t.stride(0) == 0 and context.stride(0) == 0
        # Inputs as stored: one row for a broadcast t / context, all rows otherwise.
        rows_t = t[:1] if shared else t
        rows_c = context[:1] if shared else context
        key = (x.shape, x.dtype, rows_t.shape, rows_c.shape, rows_c.dtype, shared, x.device)
        if key not in self._graphs:
            self._graphs[key] = self._capture(x, rows_t, rows_c, shared)
        graph, (static_x, static_t, static_c), output = self._graphs[key]
        static_x.copy_(x)
        static_t.copy_(rows_t)
        static_c.copy_(rows_c)
        graph.replay()
        return output

    def _capture(
        self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, shared: bool
    ) -> tuple[torch.cuda.CUDAGraph, list[torch.Tensor], torch.Tensor]:
        static = [x.clone(), t.clone(), context.clone()]
        n = x.shape[0]

        def step() -> torch.Tensor:
            sx, st, sc = static
            if shared:
                return self.net(sx, st.expand(n), sc.expand(n, -1))
            return self.net(sx, st, sc)

        stream = torch.cuda.Stream(device=x.device)
        stream.wait_stream(torch.cuda.current_stream(x.device))
        with torch.no_grad(), torch.cuda.stream(stream):
            for _ in range(self.warmup):  # warm-up on a side stream, as CUDA graph capture requires
                step()
        torch.cuda.current_stream(x.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(graph):
            output = step()
        return graph, static, output


class CompiledEpsModel:
    """``torch.compile`` of the denoiser (``mode="reduce-overhead"`` uses CUDA graphs on a GPU)."""

    def __init__(self, net: torch.nn.Module, feature_dim: int, mode: str = "reduce-overhead") -> None:
        self.net = net.eval()
        self.feature_dim = feature_dim
        self.compiled = torch.compile(self.net, mode=mode, dynamic=False)

    def __call__(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.compiled(x, t, context)


def accelerated_denoiser(
    net: torch.nn.Module,
    feature_dim: int,
    *,
    cuda_graphs: bool = False,
    compile_: bool = False,
    autocast: str | None = None,
) -> AutocastEpsModel | CudaGraphEpsModel | CompiledEpsModel | TorchEpsModel:
    """The fastest wrapper asked for: CUDA graph replay, torch.compile, autocast, or the plain module.

    CUDA graphs and autocast do not combine here (the capture would record autocast's casts each step
    anyway; use fp16 weights via the bundle's precision instead).
    """
    if cuda_graphs and compile_:
        raise BackendError("choose CUDA graphs or torch.compile, not both", "Drop one of the two flags.")
    if cuda_graphs:
        return CudaGraphEpsModel(net, feature_dim)
    if compile_:
        return CompiledEpsModel(net, feature_dim)
    if autocast:
        return AutocastEpsModel(net, feature_dim, autocast)
    model = TorchEpsModel(net)
    model.feature_dim = feature_dim  # type: ignore[attr-defined]
    return model
