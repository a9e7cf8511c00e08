"""Builders for checkpoint files in the OFFICIAL layout, written from the appendix tables.

Nothing here uses the project's network classes: key names and shapes come from
``ofer-checkpoint-keys.md`` (sections A-G), so a loader that drifts from the official layout fails.
Full-size ArcFace / FaRL state dicts are built once per session (they are ~65M / ~150M values).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.inference_server.checkpoints.var_sched import var_sched_buffers

Shapes = dict[str, tuple[int, ...]]

ATTENTION_PATHS = ("downs.0.2", "downs.1.2", "mid_attn", "ups.0.3", "ups.1.3", "finals.0.1")


# ----------------------------------------------------------------------------------------------- appendix B
def denoiser_shapes(feature: int, dims: tuple[int, ...], context: int, with_qkv: bool = True) -> Shapes:
    """Appendix B: the official denoiser ``net`` keys (174, plus the 6 ``qkv.weight`` after a forward)."""
    film_in = 512 + context
    shapes: Shapes = {
        "init_conv.weight": (feature, feature, 1),
        "init_conv.bias": (feature,),
        "time_mlp.1.weight": (512, 512),
        "time_mlp.1.bias": (512,),
        "time_mlp.3.weight": (512, 512),
        "time_mlp.3.bias": (512,),
    }

    def resblock(prefix: str, d_in: int, d_out: int) -> None:
        shapes[f"{prefix}.mlp.1.weight"] = (2 * d_out, film_in)
        shapes[f"{prefix}.mlp.1.bias"] = (2 * d_out,)
        for block, width in (("block1", d_in), ("block2", d_out)):
            shapes[f"{prefix}.{block}.proj.weight"] = (d_out, width, 1)
            shapes[f"{prefix}.{block}.proj.bias"] = (d_out,)
            shapes[f"{prefix}.{block}.norm.weight"] = (d_out,)
            shapes[f"{prefix}.{block}.norm.bias"] = (d_out,)
        if d_in != d_out:
            shapes[f"{prefix}.res_conv.weight"] = (d_out, d_in, 1)
            shapes[f"{prefix}.res_conv.bias"] = (d_out,)

    def attention(prefix: str, d: int) -> None:
        shapes[f"{prefix}.fn.fn.to_out.weight"] = (d, 128, 1)
        shapes[f"{prefix}.fn.fn.to_out.bias"] = (d,)
        shapes[f"{prefix}.fn.fn.to_out_linear.weight"] = (1, 16)
        shapes[f"{prefix}.fn.fn.to_out_linear.bias"] = (1,)
        if with_qkv:
            shapes[f"{prefix}.fn.fn.qkv.weight"] = (384, d, 1)
        shapes[f"{prefix}.fn.norm.g"] = (1, d, 1)

    def mlp(prefix: str, d_in: int, d_out: int) -> None:
        shapes[f"{prefix}.0.weight"] = (d_in, d_in)
        shapes[f"{prefix}.0.bias"] = (d_in,)
        shapes[f"{prefix}.2.weight"] = (d_out, d_in)
        shapes[f"{prefix}.2.bias"] = (d_out,)

    for i in range(len(dims) - 1):
        resblock(f"downs.{i}.0", dims[i], dims[i])
        resblock(f"downs.{i}.1", dims[i], dims[i])
        attention(f"downs.{i}.2", dims[i])
        mlp(f"downs.{i}.3", dims[i], dims[i + 1])
    for j in range(len(dims) - 1):
        low, d = dims[-1 - j], dims[-2 - j]
        mlp(f"ups.{j}.0", low, d)
        resblock(f"ups.{j}.1", 2 * d, d)
        resblock(f"ups.{j}.2", 2 * d, d)
        attention(f"ups.{j}.3", d)
    resblock("finals.0.0", 2 * feature, feature)
    attention("finals.0.1", feature)
    shapes["finals.0.2.weight"] = (feature, feature, 1)
    shapes["finals.0.2.bias"] = (feature,)
    mid = dims[-1]
    resblock("mid_block1", mid, mid)
    attention("mid_attn", mid)
    resblock("mid_block2", mid, mid)
    return shapes


# ----------------------------------------------------------------------------------------------- appendix E
def idrank_shapes() -> Shapes:
    widths = (10710, 4096, 1024, 256, 64, 1)
    shapes: Shapes = {}
    for k in range(5):
        shapes[f"ranklayers.{k}.mlp.weight"] = (widths[k + 1], widths[k])
        shapes[f"ranklayers.{k}.mlp.bias"] = (widths[k + 1],)
        shapes[f"ranklayers.{k}.scale.weight"] = (widths[k + 1], 1024)
        shapes[f"ranklayers.{k}.scale.bias"] = (widths[k + 1],)
        shapes[f"ranklayers.{k}.shift.weight"] = (widths[k + 1], 1024)
        if k < 4:
            shapes[f"ranklayers.{k}.gn.weight"] = (widths[k + 1],)
            shapes[f"ranklayers.{k}.gn.bias"] = (widths[k + 1],)
    return shapes


# ----------------------------------------------------------------------------------------------- appendix F
BN_SUFFIXES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def arcface_shapes(layers: tuple[int, ...] = (3, 13, 30, 3), widths: tuple[int, ...] = (64, 128, 256, 512)) -> Shapes:
    shapes: Shapes = {}

    def bn(prefix: str, width: int) -> None:
        for suffix in BN_SUFFIXES:
            shapes[f"{prefix}.{suffix}"] = () if suffix == "num_batches_tracked" else (width,)

    shapes["conv1.weight"] = (widths[0], 3, 3, 3)
    bn("bn1", widths[0])
    shapes["prelu.weight"] = (widths[0],)
    d_in = widths[0]
    for stage, (count, w) in enumerate(zip(layers, widths, strict=True), start=1):
        for k in range(count):
            block_in = d_in if k == 0 else w
            p = f"layer{stage}.{k}"
            bn(f"{p}.bn1", block_in)
            shapes[f"{p}.conv1.weight"] = (w, block_in, 3, 3)
            bn(f"{p}.bn2", w)
            shapes[f"{p}.prelu.weight"] = (w,)
            shapes[f"{p}.conv2.weight"] = (w, w, 3, 3)
            bn(f"{p}.bn3", w)
            if k == 0:
                shapes[f"{p}.downsample.0.weight"] = (w, block_in, 1, 1)
                bn(f"{p}.downsample.1", w)
        d_in = w
    bn("bn2", widths[-1])
    shapes["fc.weight"] = (512, widths[-1] * 7 * 7)
    shapes["fc.bias"] = (512,)
    bn("features", 512)
    return shapes


# ----------------------------------------------------------------------------------------------- appendix G
def clip_shapes(with_text: bool = True) -> Shapes:
    shapes: Shapes = {
        "visual.conv1.weight": (768, 3, 16, 16),
        "visual.class_embedding": (768,),
        "visual.positional_embedding": (197, 768),
        "visual.ln_pre.weight": (768,),
        "visual.ln_pre.bias": (768,),
    }

    def block(prefix: str, width: int) -> None:
        shapes.update(
            {
                f"{prefix}.ln_1.weight": (width,),
                f"{prefix}.ln_1.bias": (width,),
                f"{prefix}.attn.in_proj_weight": (3 * width, width),
                f"{prefix}.attn.in_proj_bias": (3 * width,),
                f"{prefix}.attn.out_proj.weight": (width, width),
                f"{prefix}.attn.out_proj.bias": (width,),
                f"{prefix}.ln_2.weight": (width,),
                f"{prefix}.ln_2.bias": (width,),
                f"{prefix}.mlp.c_fc.weight": (4 * width, width),
                f"{prefix}.mlp.c_fc.bias": (4 * width,),
                f"{prefix}.mlp.c_proj.weight": (width, 4 * width),
                f"{prefix}.mlp.c_proj.bias": (width,),
            }
        )

    for i in range(12):
        block(f"visual.transformer.resblocks.{i}", 768)
    shapes.update({"visual.ln_post.weight": (768,), "visual.ln_post.bias": (768,), "visual.proj": (768, 512)})
    if with_text:
        shapes.update({"positional_embedding": (77, 512), "token_embedding.weight": (49408, 512)})
        for i in range(12):
            block(f"transformer.resblocks.{i}", 512)
        shapes.update(
            {
                "ln_final.weight": (512,),
                "ln_final.bias": (512,),
                "text_projection": (512, 512),
                "logit_scale": (),
            }
        )
    return shapes


# ----------------------------------------------------------------------------------------------- values
def random_state(shapes: Shapes, seed: int, scale: float = 1.0) -> dict[str, torch.Tensor]:
    """Random tensors; 2-D+ weights scaled by 1/sqrt(fan_in) so a forward pass stays well conditioned."""
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(1234, dtype=torch.int64)
        elif key.endswith("running_var"):
            state[key] = 0.5 + torch.rand(shape, generator=generator)
        elif len(shape) >= 2:
            fan_in = math.prod(shape[1:])
            state[key] = (torch.rand(shape, generator=generator) * 2 - 1) * (scale / math.sqrt(fan_in))
        else:
            state[key] = torch.randn(shape, generator=generator) * 0.1 + (
                1.0 if key.endswith((".g", ".weight")) else 0.0
            )
    return state


def trainer_entries(net: dict[str, torch.Tensor]) -> dict[str, Any]:
    """What the official trainer adds: AdamW and ReduceLROnPlateau state dicts and counters."""
    keys = list(net)[:8]
    state = {
        i: {
            "step": torch.tensor(120.0),
            "exp_avg": torch.randn_like(net[k]),
            "exp_avg_sq": torch.rand_like(net[k]),
        }
        for i, k in enumerate(keys)
    }
    group = {
        "lr": 1e-4,
        "betas": (0.9, 0.999),
        "eps": 1e-8,
        "weight_decay": 0.01,
        "amsgrad": False,
        "maximize": False,
        "foreach": None,
        "capturable": False,
        "differentiable": False,
        "fused": None,
        "params": list(range(len(net))),
    }
    scheduler = {
        "factor": 0.5,
        "min_lrs": [0.0],
        "patience": 10,
        "cooldown": 0,
        "cooldown_counter": 0,
        "mode": "min",
        "threshold": 1e-4,
        "threshold_mode": "rel",
        "best": float("inf"),
        "num_bad_epochs": 0,
        "mode_worse": float("inf"),
        "eps": 1e-8,
        "last_epoch": 12,
        "_last_lr": [1e-4],
    }
    return {
        "optimizer": {"state": state, "param_groups": [group]},
        "scheduler": scheduler,
        "epoch": 12,
        "global_step": 34567,
        "batch_size": 64,
    }


def denoiser_checkpoint(
    net: dict[str, torch.Tensor], arcface: dict[str, torch.Tensor], farl: dict[str, torch.Tensor] | None
) -> dict[str, Any]:
    sched = var_sched_buffers()
    diffusion = {f"net.{k}": v.clone() for k, v in net.items()}
    diffusion.update({f"var_sched.{k}": v.clone() for k, v in sched.items()})
    raw: dict[str, Any] = {"arcface": arcface, "net": net, "var_sched": sched, "diffusion": diffusion}
    if farl is not None:
        raw = {"farl": farl, **raw}
    raw.update(trainer_entries(net))
    return raw


@pytest.fixture(scope="session")
def full_arcface_state() -> dict[str, torch.Tensor]:
    return random_state(arcface_shapes(), seed=11)


@pytest.fixture(scope="session")
def full_farl_state() -> dict[str, torch.Tensor]:
    return random_state(clip_shapes(), seed=12)


@pytest.fixture(scope="session")
def official_files(
    tmp_path_factory: pytest.TempPathFactory,
    full_arcface_state: dict[str, torch.Tensor],
    full_farl_state: dict[str, torch.Tensor],
) -> Iterator[dict[str, tuple[Path, dict[str, Any]]]]:
    """The three official files at full size: kind → (path, raw dict as saved)."""
    folder = tmp_path_factory.mktemp("official")
    idgen_net = random_state(denoiser_shapes(300, (300, 50, 10), 512), seed=1)
    expgen_net = random_state(denoiser_shapes(53, (53, 25, 10), 1024), seed=2)
    rank_net = random_state(idrank_shapes(), seed=3)
    # A reduced iresnet (same key template) keeps the third file smaller; full ArcFace is in the other two.
    small_arcface = random_state(arcface_shapes(layers=(1, 2, 1, 1), widths=(16, 16, 32, 64)), seed=13)
    raws = {
        "idgen": denoiser_checkpoint(idgen_net, full_arcface_state, None),
        "expgen": denoiser_checkpoint(expgen_net, full_arcface_state, full_farl_state),
        "idrank": {
            "net": rank_net,
            "arcface": small_arcface,
            "farl": full_farl_state,
            **trainer_entries(rank_net),
        },
    }
    names = {
        "idgen": "model_idgen_flame20.tar",
        "expgen": "model_expgen_flame20.tar",
        "idrank": "model_idrank.tar",
    }
    files = {}
    for kind, raw in raws.items():
        path = folder / names[kind]
        torch.save(raw, path)
        files[kind] = (path, raw)
    yield files


def small_idgen_checkpoint() -> dict[str, Any]:
    """A reduced IdGen-layout file (dims 12→6→4, small iresnet): same keys and rules, tiny tensors."""
    net = random_state(denoiser_shapes(12, (12, 6, 4), 512), seed=21)
    arcface = random_state(arcface_shapes(layers=(1, 1, 1, 1), widths=(8, 8, 16, 16)), seed=22)
    return denoiser_checkpoint(net, arcface, None)


@pytest.fixture
def small_idgen_raw() -> dict[str, Any]:
    return small_idgen_checkpoint()
