"""Load the official OFER model files (``model_idgen_flame20.tar`` & co.) key for key (spec section 10).

Every tensor goes through an explicit key map and a strict load: a missing or unexpected key is an
error that lists the keys, except the documented attention quirk (``qkv.weight`` → ``to_qkv.15``, slots
0-14 synthesised, see ``attention_compat``). Optimiser, scheduler and counters are ignored.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import BadCheckpointError
from ..nets.arcface import ArcFaceEncoder
from ..nets.clip_visual import ClipImageEncoder
from ..nets.denoiser import Denoiser
from ..nets.idrank import IdRank
from .attention_compat import (
    ATTENTION_SEED_BASE,
    OFFICIAL_QKV_SUFFIX,
    PROJECT_QKV_SUFFIX,
    SYNTHETIC_WARNING,
    synthetic_projections,
)
from .layout import (
    arcface_config_from,
    clip_text_tower_keys,
    clip_vision_config_from,
    denoiser_config_from,
    idrank_config_from,
)
from .networks import SCHEDULE, LoadedNetworks
from .safe_load import read_torch_checkpoint
from .schedule_check import VAR_SCHED_BUFFERS, check_var_sched

__all__ = ["load_official_checkpoint", "sha256_of_file"]

StateDict = Mapping[str, torch.Tensor]

#: Top-level entries written by the official trainer that inference does not need.
TRAINER_KEYS = frozenset({"optimizer", "scheduler", "epoch", "global_step", "batch_size", "validator"})
NETWORK_KEYS = frozenset({"net", "arcface", "farl", "var_sched", "diffusion"})

_USE_OFFICIAL = "use the unmodified official file from https://ofer.is.tue.mpg.de"


def sha256_of_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _bad(file_name: str, what: str, fix: str = _USE_OFFICIAL) -> BadCheckpointError:
    return BadCheckpointError(f"checkpoint {file_name}: {what}", fix)


def _key_list(keys: Iterable[str], limit: int = 12) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return f"{shown} (+{len(keys) - limit} more)" if len(keys) > limit else shown


def _state_dict(raw: Mapping[str, Any], entry: str, file_name: str) -> dict[str, torch.Tensor]:
    value = raw.get(entry)
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items()
    ):
        raise _bad(file_name, f"entry '{entry}' is missing or is not a state dict of named tensors")
    return dict(value)


def _load_strict(module: nn.Module, state: StateDict, file_name: str, entry: str) -> None:
    expected = set(module.state_dict())
    missing, unexpected = expected - set(state), set(state) - expected
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys [{_key_list(missing)}]")
        if unexpected:
            parts.append(f"unexpected keys [{_key_list(unexpected)}]")
        raise _bad(file_name, f"'{entry}' does not match the {type(module).__name__} layout: {'; '.join(parts)}")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as error:  # shape mismatches
        detail = " ".join(str(error).split())[:600]
        raise _bad(file_name, f"'{entry}' has tensors of the wrong shape: {detail}") from None


def _check_top_level(raw: Mapping[str, Any], required: set[str], file_name: str) -> None:
    missing = required - set(raw)
    unexpected = set(raw) - NETWORK_KEYS - TRAINER_KEYS
    if missing or unexpected:
        raise _bad(
            file_name,
            f"top-level entries missing {sorted(missing)} / unexpected {sorted(unexpected)}; found {sorted(raw)}",
        )


def _load_arcface(raw: Mapping[str, Any], file_name: str) -> ArcFaceEncoder:
    state = _state_dict(raw, "arcface", file_name)
    try:
        encoder = ArcFaceEncoder(arcface_config_from(state))
    except (KeyError, ValueError, IndexError) as error:
        raise _bad(file_name, f"'arcface' is not an iresnet state dict ({error})") from None
    _load_strict(encoder, state, file_name, "arcface")
    return encoder.eval()


def _load_farl(raw: Mapping[str, Any], file_name: str) -> ClipImageEncoder:
    state = _state_dict(raw, "farl", file_name)
    visual = {key: value for key, value in state.items() if key.startswith("visual.")}
    text = set(state) - set(visual)
    expected_text = clip_text_tower_keys()
    if text != expected_text:
        raise _bad(
            file_name,
            f"'farl' text tower keys differ from CLIP's: missing [{_key_list(expected_text - text)}]; "
            f"unexpected [{_key_list(text - expected_text)}]",
        )
    try:
        encoder = ClipImageEncoder(clip_vision_config_from(visual))
    except (KeyError, ValueError, IndexError) as error:
        raise _bad(file_name, f"'farl' has no CLIP image tower ({error})") from None
    _load_strict(encoder, visual, file_name, "farl")
    return encoder.eval()


def _denoiser_state(net: StateDict, model: Denoiser, file_name: str) -> dict[str, torch.Tensor]:
    """Official keys → project keys; each ``qkv.weight`` becomes slot 15, slots 0-14 are synthesised."""
    count = model.config.n_tokens
    mapped = {key: value for key, value in net.items() if not key.endswith(OFFICIAL_QKV_SUFFIX)}
    for path in model.attention_paths():
        official_key = path + OFFICIAL_QKV_SUFFIX
        if official_key not in net:
            continue  # reported as missing by the strict load below
        saved = net[official_key]
        dim = saved.shape[1] if saved.ndim == 3 else 0
        fills = synthetic_projections(path, dim, count=count - 1, width=saved.shape[0]) if dim else []
        for index, tensor in enumerate(fills):
            mapped[path + PROJECT_QKV_SUFFIX.format(index=index)] = tensor
        mapped[path + PROJECT_QKV_SUFFIX.format(index=count - 1)] = saved
    stray = [key for key in net if key.endswith(OFFICIAL_QKV_SUFFIX) and key[: -len(OFFICIAL_QKV_SUFFIX)]
             not in model.attention_paths()]  # fmt: skip
    if stray:
        raise _bad(file_name, f"'net' has attention keys at unknown paths [{_key_list(stray)}]")
    missing_qkv = [p + OFFICIAL_QKV_SUFFIX for p in model.attention_paths() if p + OFFICIAL_QKV_SUFFIX not in net]
    if missing_qkv:
        raise _bad(
            file_name,
            f"'net' lacks the saved attention projections [{_key_list(missing_qkv)}] "
            "(the official trainer writes them after its first step)",
        )
    return mapped


def _check_diffusion(raw: Mapping[str, Any], net: StateDict, file_name: str) -> None:
    diffusion = _state_dict(raw, "diffusion", file_name)
    expected = {f"net.{key}" for key in net} | {f"var_sched.{name}" for name in VAR_SCHED_BUFFERS}
    missing, unexpected = expected - set(diffusion), set(diffusion) - expected
    if missing or unexpected:
        raise _bad(
            file_name,
            f"'diffusion' should hold net.* and var_sched.*: missing [{_key_list(missing)}]; "
            f"unexpected [{_key_list(unexpected)}]",
        )
    differing = [key for key in net if not torch.equal(diffusion[f"net.{key}"], net[key])]
    if differing:
        raise _bad(
            file_name,
            f"'diffusion' holds different denoiser weights than 'net' (corrupt file): [{_key_list(differing)}]",
        )
    schedule = {name: diffusion[f"var_sched.{name}"] for name in VAR_SCHED_BUFFERS}
    check_var_sched(schedule, file_name, "diffusion.var_sched")
    if "var_sched" in raw:
        check_var_sched(_state_dict(raw, "var_sched", file_name), file_name, "var_sched")


def _load_denoiser(raw: Mapping[str, Any], file_name: str) -> Denoiser:
    net = _state_dict(raw, "net", file_name)
    try:
        model = Denoiser(denoiser_config_from(net))
    except (KeyError, ValueError, IndexError) as error:
        raise _bad(file_name, f"'net' is not an OFER denoiser ({error})") from None
    _load_strict(model, _denoiser_state(net, model, file_name), file_name, "net")
    _check_diffusion(raw, net, file_name)
    return model.eval()


def _load_rank_net(raw: Mapping[str, Any], file_name: str) -> IdRank:
    net = _state_dict(raw, "net", file_name)
    try:
        model = IdRank(idrank_config_from(net))
    except (KeyError, ValueError, IndexError) as error:
        raise _bad(file_name, f"'net' is not an IdRank network ({error})") from None
    _load_strict(model, net, file_name, "net")
    return model.eval()


def load_official_checkpoint(path: str | Path, *, compute_sha256: bool = True) -> LoadedNetworks:
    """Load one official OFER file; the kind (idgen / expgen / idrank) is read from its content.

    Warns (``UserWarning``) that 15 of 16 attention projections are synthetic for denoisers.
    """
    path = Path(path)
    name = path.name
    raw = read_torch_checkpoint(path)
    net = raw.get("net")
    if not isinstance(net, Mapping):
        raise _bad(name, f"no 'net' entry (found {sorted(raw)}); this is not an OFER model file")

    denoiser: Denoiser | None = None
    rank_net: IdRank | None = None
    if "ranklayers.0.mlp.weight" in net:
        kind = "idrank"
        _check_top_level(raw, {"net", "arcface", "farl"}, name)
        if "diffusion" in raw or "var_sched" in raw:
            raise _bad(name, "an IdRank file should not hold a diffusion schedule")
        rank_net = _load_rank_net(raw, name)
    elif "init_conv.weight" in net:
        kind = "expgen" if "farl" in raw else "idgen"
        _check_top_level(raw, {"net", "arcface", "diffusion"}, name)
        denoiser = _load_denoiser(raw, name)
    else:
        raise _bad(name, "'net' is neither an OFER denoiser nor an IdRank network")

    arcface = _load_arcface(raw, name)
    farl = _load_farl(raw, name) if kind != "idgen" else None
    context = arcface.config.embedding_dim + (farl.config.output_dim if farl else 0)
    needed = denoiser.config.context_dim if denoiser else rank_net.config.context_dim  # type: ignore[union-attr]
    if needed != context:
        raise _bad(name, f"the network expects a {needed}-d context but its encoders give {context}")

    synthetic = denoiser is not None
    if synthetic:
        warnings.warn(f"{name}: {SYNTHETIC_WARNING}", UserWarning, stacklevel=2)
    metadata: dict[str, Any] = {
        "kind": kind,
        "attention_synthetic": synthetic,
        "demo": False,
        "provenance": {
            "source_file": name,
            "source_sha256": sha256_of_file(path) if compute_sha256 else None,
            "source_format": "official OFER torch.save checkpoint",
        },
    }
    if synthetic:
        metadata["attention_seed_base"] = ATTENTION_SEED_BASE
        metadata["schedule"] = dict(SCHEDULE)
    return LoadedNetworks(
        kind=kind, arcface=arcface, denoiser=denoiser, farl=farl, rank_net=rank_net, metadata=metadata
    )
