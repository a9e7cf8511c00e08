"""Export OFER's networks to ONNX for the onnxruntime back end (``backends.OnnxNetwork``).

Uses torch's TorchScript-based exporter (``dynamo=False``): the torch.export-based one needs
``onnxscript``, which the worker environment does not ship, and these graphs (static shapes apart from
the batch axis, no control flow) are what the tracing exporter handles well. Every graph gets a dynamic
batch axis, so one file serves any number of samples.

| network | inputs | output |
|---|---|---|
| denoiser | x (B, F) float32, t (B,) int64, context (B, C) float32 | eps (B, F) |
| ranker | x (N, 10710) float32, context (1 or N, 1024) float32 | logits (N,) |
| ArcFace | blob (B, 3, 112, 112) float32 | embedding (B, 512), L2-normalised |
| CLIP image tower (FaRL) | image (B, 3, 224, 224) float32 | embedding (B, 512) |
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .checkpoints.networks import LoadedNetworks
from .errors import MissingAssetError
from .nets.arcface import ArcFaceEncoder
from .nets.clip_visual import ClipImageEncoder
from .nets.denoiser import Denoiser
from .nets.idrank import IdRank

#: Lowest opset with LayerNormalization as one op; onnxruntime 1.18+ runs it everywhere.
OPSET = 17
MANIFEST_NAME = "onnx_manifest.json"
MANIFEST_FORMAT = "ofer-onnx/1"
_EXPORT_AGAIN = "Export the networks again with `ofer-worker export-onnx`."
#: Batch used for tracing; verification runs a different one to prove the batch axis is dynamic.
TRACE_BATCH = 2


@dataclass(frozen=True)
class GraphSpec:
    """What one exported file takes and returns (also written to the manifest)."""

    input_names: tuple[str, ...]
    output_name: str
    #: Per input: axis index → symbolic dimension name.
    dynamic_axes: tuple[dict[int, str], ...]
    output_axes: dict[int, str]


_BATCH = {0: "batch"}
DENOISER_SPEC = GraphSpec(("x", "t", "context"), "eps", (_BATCH, _BATCH, _BATCH), _BATCH)
RANKER_SPEC = GraphSpec(("x", "context"), "logits", ({0: "samples"}, {0: "context_rows"}), {0: "samples"})
ARCFACE_SPEC = GraphSpec(("blob",), "embedding", (_BATCH,), _BATCH)
CLIP_SPEC = GraphSpec(("image",), "embedding", (_BATCH,), _BATCH)


def _parameter_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    parameter = next(model.parameters())
    return parameter.device, parameter.dtype


def denoiser_example(model: Denoiser, batch: int = TRACE_BATCH, seed: int = 0) -> tuple[torch.Tensor, ...]:
    device, dtype = _parameter_device_dtype(model)
    generator = torch.Generator().manual_seed(seed)
    config = model.config
    x = torch.randn(batch, config.feature_dim, generator=generator)
    t = torch.randint(0, 1000, (batch,), generator=generator)
    context = torch.randn(batch, config.context_dim, generator=generator)
    return x.to(device, dtype), t.to(device), context.to(device, dtype)


def ranker_example(
    model: IdRank, samples: int = TRACE_BATCH, context_rows: int = 1, seed: int = 0
) -> tuple[torch.Tensor, ...]:
    device, dtype = _parameter_device_dtype(model)
    generator = torch.Generator().manual_seed(seed)
    config = model.config
    x = torch.randn(samples, config.input_dim, generator=generator)
    context = torch.randn(context_rows, config.context_dim, generator=generator)
    return x.to(device, dtype), context.to(device, dtype)


def image_example(model: nn.Module, size: int, batch: int = TRACE_BATCH, seed: int = 0) -> tuple[torch.Tensor]:
    device, dtype = _parameter_device_dtype(model)
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, 3, size, size, generator=generator).to(device, dtype),)


def export_network(
    model: nn.Module,
    example: Sequence[torch.Tensor],
    spec: GraphSpec,
    path: str | Path,
    *,
    opset: int = OPSET,
) -> Path:
    """Trace ``model`` on ``example`` and write the graph to ``path`` (parents created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dynamic_axes: dict[str, dict[int, str]] = dict(zip(spec.input_names, spec.dynamic_axes, strict=True))
    dynamic_axes[spec.output_name] = spec.output_axes
    was_training = model.training
    model.eval()
    # Frozen parameters: the tracer takes tensors that are not in the state dict under their own name
    # (the denoiser's stacked attention projections are saved one slice per key) as graph constants,
    # which it refuses for tensors that require grad. Constants and initialisers are equivalent here.
    requires_grad = [parameter.requires_grad for parameter in model.parameters()]
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    try:
        with warnings.catch_warnings():
            # The exporter warns that the TorchScript path is deprecated; it is the one that works offline.
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(
                model,
                tuple(example),
                str(path),
                dynamo=False,
                opset_version=opset,
                input_names=list(spec.input_names),
                output_names=[spec.output_name],
                dynamic_axes=dynamic_axes,
                do_constant_folding=True,
            )
    finally:
        model.train(was_training)
        for parameter, flag in zip(model.parameters(), requires_grad, strict=True):
            parameter.requires_grad_(flag)
    return path


def export_denoiser(model: Denoiser, path: str | Path, *, opset: int = OPSET) -> Path:
    return export_network(model, denoiser_example(model), DENOISER_SPEC, path, opset=opset)


def export_ranker(model: IdRank, path: str | Path, *, opset: int = OPSET) -> Path:
    return export_network(model, ranker_example(model), RANKER_SPEC, path, opset=opset)


def export_arcface(model: ArcFaceEncoder, path: str | Path, *, opset: int = OPSET) -> Path:
    example = image_example(model, model.config.input_size)
    return export_network(model, example, ARCFACE_SPEC, path, opset=opset)


def export_clip_visual(model: ClipImageEncoder, path: str | Path, *, opset: int = OPSET) -> Path:
    example = image_example(model, model.config.image_size)
    return export_network(model, example, CLIP_SPEC, path, opset=opset)


def max_abs_difference(model: nn.Module, path: str | Path, inputs: Sequence[torch.Tensor]) -> float:
    """Largest |torch - onnxruntime| over the output for ``inputs`` (CPU execution provider)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {
        node.name: tensor.detach().cpu().numpy() for node, tensor in zip(session.get_inputs(), inputs, strict=True)
    }
    (onnx_out,) = session.run(None, feeds)
    with torch.no_grad():
        torch_out = model.eval()(*inputs).detach().cpu().numpy()
    if onnx_out.shape != torch_out.shape:
        raise ValueError(f"ONNX output shape {onnx_out.shape} differs from torch's {torch_out.shape}")
    return float(np.max(np.abs(onnx_out.astype(np.float64) - torch_out.astype(np.float64))))


@dataclass(frozen=True)
class ExportedGraph:
    name: str
    path: Path
    spec: GraphSpec
    config: dict[str, Any]
    max_abs_difference: float


def export_and_verify(
    name: str, model: nn.Module, outdir: str | Path, *, opset: int = OPSET, verify_batch: int = 3
) -> ExportedGraph:
    """Export one network by type, then check onnxruntime against torch at a batch size other than the
    traced one. Returns the largest absolute difference found."""
    path = Path(outdir) / f"{name}.onnx"
    if isinstance(model, Denoiser):
        export_denoiser(model, path, opset=opset)
        spec, check = DENOISER_SPEC, denoiser_example(model, verify_batch, seed=1)
    elif isinstance(model, IdRank):
        export_ranker(model, path, opset=opset)
        spec, check = RANKER_SPEC, ranker_example(model, verify_batch, seed=1)
    elif isinstance(model, ArcFaceEncoder):
        export_arcface(model, path, opset=opset)
        spec, check = ARCFACE_SPEC, image_example(model, model.config.input_size, verify_batch, seed=1)
    elif isinstance(model, ClipImageEncoder):
        export_clip_visual(model, path, opset=opset)
        spec, check = CLIP_SPEC, image_example(model, model.config.image_size, verify_batch, seed=1)
    else:
        raise TypeError(f"no ONNX export defined for {type(model).__name__}")
    config = getattr(model, "config", None)
    config_dict = config.to_dict() if config is not None and hasattr(config, "to_dict") else {}
    difference = max_abs_difference(model, path, check)
    return ExportedGraph(name, path, spec, config_dict, difference)


def graph_name(kind: str, module_name: str) -> str:
    """File stem of one network of one model file, e.g. ``idgen_denoiser``, ``idrank_farl``."""
    return f"{kind}_{module_name}"


def export_loaded_networks(networks: LoadedNetworks, outdir: str | Path, *, opset: int = OPSET) -> list[ExportedGraph]:
    """Export every network of one model file (denoiser or rank net, plus its encoders) into ``outdir``."""
    return [
        export_and_verify(graph_name(networks.kind, name), module, outdir, opset=opset)
        for name, module in networks.modules().items()
    ]


def read_manifest(outdir: str | Path) -> dict[str, Any]:
    """The manifest of an export folder, or an empty one (``graphs``/``models`` empty) if there is none."""
    path = Path(outdir) / MANIFEST_NAME
    if not path.is_file():
        return {"format": MANIFEST_FORMAT, "opset": OPSET, "graphs": {}, "models": {}}
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MissingAssetError(f"unreadable ONNX manifest {path}: {exc}", _EXPORT_AGAIN) from exc
    if not isinstance(document, dict) or document.get("format") != MANIFEST_FORMAT:
        raise MissingAssetError(f"{path} is not an {MANIFEST_FORMAT} manifest", _EXPORT_AGAIN)
    return document


def write_manifest(outdir: str | Path, networks: LoadedNetworks, graphs: Sequence[ExportedGraph]) -> Path:
    """Add one model file's graphs and metadata to ``onnx_manifest.json`` (other models' entries stay)."""
    document = read_manifest(outdir)
    for graph in graphs:
        document["graphs"][graph.name] = {
            "file": graph.path.name,
            "kind": networks.kind,
            "inputs": list(graph.spec.input_names),
            "output": graph.spec.output_name,
            "config": graph.config,
            "max_abs_difference_vs_torch": graph.max_abs_difference,
        }
    document["models"][networks.kind] = networks.metadata
    document["opset"] = OPSET
    document["torch_version"] = torch.__version__
    path = Path(outdir) / MANIFEST_NAME
    path.write_text(json.dumps(document, indent=2, sort_keys=True, default=str), encoding="utf-8")
    return path
