"""Network configurations read from the key layout and tensor shapes of an official state dict."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import torch

from ..nets.arcface import ArcFaceConfig
from ..nets.clip_visual import ClipVisionConfig
from ..nets.denoiser import DenoiserConfig
from ..nets.idrank import IdRankConfig

__all__ = [
    "arcface_config_from",
    "clip_text_tower_keys",
    "clip_vision_config_from",
    "denoiser_config_from",
    "idrank_config_from",
]

StateDict = Mapping[str, torch.Tensor]


def _shape(state: StateDict, key: str) -> tuple[int, ...]:
    return tuple(state[key].shape)


def denoiser_config_from(net: StateDict) -> DenoiserConfig:
    """Official denoisers use 4 heads; the head width follows from the attention output conv."""
    feature = _shape(net, "init_conv.weight")[0]
    dims = [feature]
    while f"downs.{len(dims) - 1}.3.2.weight" in net:
        dims.append(_shape(net, f"downs.{len(dims) - 1}.3.2.weight")[0])
    time_dim = _shape(net, "time_mlp.1.weight")[0]
    film_in = _shape(net, "downs.0.0.mlp.1.weight")[1]
    n_tokens = _shape(net, "mid_attn.fn.fn.to_out_linear.weight")[1]
    inner = _shape(net, "mid_attn.fn.fn.to_out.weight")[1]
    heads = 4
    return DenoiserConfig(
        feature_dim=feature,
        dims=tuple(dims),
        context_dim=film_in - time_dim,
        time_dim=time_dim,
        n_tokens=n_tokens,
        heads=heads,
        head_dim=inner // heads,
    )


def idrank_config_from(net: StateDict) -> IdRankConfig:
    count = 0
    while f"ranklayers.{count}.mlp.weight" in net:
        count += 1
    widths = [_shape(net, f"ranklayers.{k}.mlp.weight")[0] for k in range(count)]
    return IdRankConfig(
        input_dim=_shape(net, "ranklayers.0.mlp.weight")[1],
        hidden_dims=tuple(widths[:-1]),
        context_dim=_shape(net, "ranklayers.0.scale.weight")[1],
    )


def arcface_config_from(state: StateDict) -> ArcFaceConfig:
    layers: list[int] = []
    widths: list[int] = []
    stage = 1
    while f"layer{stage}.0.conv1.weight" in state:
        pattern = re.compile(rf"^layer{stage}\.(\d+)\.conv1\.weight$")
        layers.append(1 + max(int(m.group(1)) for key in state if (m := pattern.match(key))))
        widths.append(_shape(state, f"layer{stage}.0.conv1.weight")[0])
        stage += 1
    embedding, fc_in = _shape(state, "fc.weight")
    final_map = math.isqrt(fc_in // widths[-1])
    return ArcFaceConfig(
        layers=tuple(layers),
        widths=tuple(widths),
        embedding_dim=embedding,
        input_size=final_map * 2 ** len(layers),
    )


def clip_vision_config_from(state: StateDict, prefix: str = "visual.") -> ClipVisionConfig:
    """OpenAI CLIP uses heads = width / 64 for its image towers."""
    width, _, patch, _ = _shape(state, f"{prefix}conv1.weight")
    layers = 0
    while f"{prefix}transformer.resblocks.{layers}.ln_1.weight" in state:
        layers += 1
    grid = math.isqrt(_shape(state, f"{prefix}positional_embedding")[0] - 1)
    return ClipVisionConfig(
        width=width,
        layers=layers,
        heads=max(1, width // 64),
        patch_size=patch,
        image_size=grid * patch,
        output_dim=_shape(state, f"{prefix}proj")[1],
        mlp_ratio=_shape(state, f"{prefix}transformer.resblocks.0.mlp.c_fc.weight")[0] // width,
    )


def clip_text_tower_keys(layers: int = 12) -> set[str]:
    """The 150 text-tower keys of an OpenAI CLIP state dict (unused by OFER, checked then dropped)."""
    block = (
        "ln_1.weight", "ln_1.bias", "attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight",
        "attn.out_proj.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias",
        "mlp.c_proj.weight", "mlp.c_proj.bias",
    )  # fmt: skip
    keys = {f"transformer.resblocks.{i}.{name}" for i in range(layers) for name in block}
    keys |= {
        "positional_embedding", "token_embedding.weight", "ln_final.weight", "ln_final.bias",
        "text_projection", "logit_scale",
    }  # fmt: skip
    return keys
