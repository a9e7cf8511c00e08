"""The project's own checkpoint format: ``<name>.safetensors`` (tensors) + ``<name>.json`` (metadata).

safetensors holds only raw tensors, so loading a converted file can never execute code. Tensor names
are ``<network>.<state-dict key>`` with network ∈ {denoiser, rank_net, arcface, farl}; the JSON sidecar
names the format version, the kind, each network's architecture and configuration, the diffusion
schedule, the provenance (source file and its SHA-256), and the attention / demo flags.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .. import __version__
from ..errors import BadCheckpointError, MissingAssetError
from ..nets.arcface import ArcFaceConfig, ArcFaceEncoder
from ..nets.clip_visual import ClipImageEncoder, ClipVisionConfig
from ..nets.denoiser import Denoiser, DenoiserConfig
from ..nets.idrank import IdRank, IdRankConfig
from .networks import FORMAT_VERSION, LoadedNetworks

__all__ = ["ARCHITECTURES", "load_project_checkpoint", "project_paths", "save_project_checkpoint"]

#: network slot → (architecture name, config class, module class)
ARCHITECTURES: dict[str, tuple[str, Any, Callable[[Any], nn.Module]]] = {
    "denoiser": ("ofer-denoiser-unet1d", DenoiserConfig, Denoiser),
    "rank_net": ("ofer-idrank-mlp", IdRankConfig, IdRank),
    "arcface": ("arcface-iresnet", ArcFaceConfig, ArcFaceEncoder),
    "farl": ("clip-vit-image-tower", ClipVisionConfig, ClipImageEncoder),
}

_RECONVERT = "convert the official file again with `ofer-worker convert SRC.tar -o DIR`"


def project_paths(path: str | Path) -> tuple[Path, Path]:
    """(tensor file, metadata file) for ``x.safetensors``, ``x.json`` or ``x`` (suffix-less)."""
    path = Path(path)
    base = path.with_suffix("") if path.suffix in (".safetensors", ".json") else path
    return base.with_name(base.name + ".safetensors"), base.with_name(base.name + ".json")


def save_project_checkpoint(destination: str | Path, networks: LoadedNetworks, *, name: str | None = None) -> Path:
    """Write ``networks`` to ``destination`` (a ``.safetensors`` file, or a folder + ``name``).

    ``name`` defaults to the source file's stem, else the kind. Returns the ``.safetensors`` path; the
    JSON sidecar sits next to it.
    """
    destination = Path(destination)
    if destination.suffix == ".safetensors":
        tensor_path, meta_path = project_paths(destination)
    else:
        source = networks.metadata.get("provenance", {}).get("source_file")
        stem = name or (Path(source).stem if source else networks.kind)
        tensor_path, meta_path = project_paths(destination / stem)
    tensor_path.parent.mkdir(parents=True, exist_ok=True)

    tensors: dict[str, torch.Tensor] = {}
    descriptions: dict[str, Any] = {}
    for slot, module in networks.modules().items():
        architecture = ARCHITECTURES[slot][0]
        descriptions[slot] = {"architecture": architecture, "config": module.config.to_dict()}
        for key, value in module.state_dict().items():
            tensors[f"{slot}.{key}"] = value.detach().to("cpu").contiguous().clone()

    metadata = {key: value for key, value in networks.metadata.items() if key not in ("networks", "tensor_file")}
    metadata.update(
        format_version=FORMAT_VERSION,
        kind=networks.kind,
        networks=descriptions,
        tensor_file=tensor_path.name,
        written_by=f"ofer-worker {__version__}",
    )
    save_file(tensors, str(tensor_path), metadata={"format_version": FORMAT_VERSION, "kind": networks.kind})
    meta_path.write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return tensor_path


def _read_metadata(meta_path: Path, tensor_path: Path) -> dict[str, Any]:
    if not meta_path.is_file():
        raise BadCheckpointError(f"checkpoint {tensor_path.name} has no metadata file {meta_path.name}", _RECONVERT)
    try:
        metadata = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BadCheckpointError(f"metadata {meta_path.name} is not valid JSON: {error}", _RECONVERT) from None
    if not isinstance(metadata, dict) or metadata.get("format_version") != FORMAT_VERSION:
        found = metadata.get("format_version") if isinstance(metadata, dict) else None
        raise BadCheckpointError(
            f"metadata {meta_path.name} has format version {found!r}, this worker reads {FORMAT_VERSION!r}",
            _RECONVERT,
        )
    return metadata


def _build(slot: str, description: Any, meta_name: str) -> nn.Module:
    architecture, config_cls, module_cls = ARCHITECTURES[slot]
    if not isinstance(description, dict) or description.get("architecture") != architecture:
        raise BadCheckpointError(f"metadata {meta_name}: network '{slot}' is not a {architecture}", _RECONVERT)
    try:
        return module_cls(config_cls.from_dict(description["config"]))
    except (KeyError, TypeError, ValueError) as error:
        raise BadCheckpointError(f"metadata {meta_name}: bad '{slot}' config ({error})", _RECONVERT) from None


def load_project_checkpoint(path: str | Path) -> LoadedNetworks:
    """Load a project checkpoint (either of its two files may be named); networks in eval mode."""
    tensor_path, meta_path = project_paths(path)
    if not tensor_path.is_file():
        raise MissingAssetError(f"checkpoint {tensor_path} does not exist", "check the checkpoint folder setting")
    metadata = _read_metadata(meta_path, tensor_path)
    descriptions = metadata.get("networks")
    if not isinstance(descriptions, dict) or not set(descriptions) <= set(ARCHITECTURES):
        raise BadCheckpointError(f"metadata {meta_path.name} lists unknown networks", _RECONVERT)
    try:
        tensors = load_file(str(tensor_path), device="cpu")
    except (SafetensorError, OSError, ValueError) as error:
        raise BadCheckpointError(f"checkpoint {tensor_path.name} is damaged: {error}", _RECONVERT) from None

    modules: dict[str, nn.Module] = {}
    for slot, description in descriptions.items():
        module = _build(slot, description, meta_path.name)
        prefix = f"{slot}."
        state = {key[len(prefix) :]: value for key, value in tensors.items() if key.startswith(prefix)}
        try:
            result = module.load_state_dict(state, strict=False)
        except RuntimeError as error:  # shape mismatches
            detail = " ".join(str(error).split())[:600]
            raise BadCheckpointError(
                f"checkpoint {tensor_path.name}: '{slot}' tensors do not fit its config: {detail}",
                _RECONVERT,
            ) from None
        if result.missing_keys or result.unexpected_keys:
            raise BadCheckpointError(
                f"checkpoint {tensor_path.name}: '{slot}' missing {sorted(result.missing_keys)[:12]}, "
                f"unexpected {sorted(result.unexpected_keys)[:12]}",
                _RECONVERT,
            )
        modules[slot] = module.eval()
    stray = sorted(key for key in tensors if key.split(".", 1)[0] not in descriptions)
    if stray:
        raise BadCheckpointError(f"checkpoint {tensor_path.name} has unexplained tensors {stray[:12]}", _RECONVERT)

    info = {key: value for key, value in metadata.items() if key != "networks"}
    try:
        return LoadedNetworks(
            kind=str(metadata.get("kind")),
            arcface=modules["arcface"],  # type: ignore[arg-type]
            denoiser=modules.get("denoiser"),  # type: ignore[arg-type]
            farl=modules.get("farl"),  # type: ignore[arg-type]
            rank_net=modules.get("rank_net"),  # type: ignore[arg-type]
            metadata=info,
        )
    except (KeyError, ValueError) as error:
        raise BadCheckpointError(f"checkpoint {tensor_path.name} is incomplete: {error}", _RECONVERT) from None
