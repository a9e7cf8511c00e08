"""Every deviation from the official layout is a BadCheckpointError that names the offending keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from inference_server.checkpoints import load_official_checkpoint
from inference_server.errors import BadCheckpointError


def _save(tmp_path: Path, raw: dict[str, Any], name: str = "model.tar") -> Path:
    path = tmp_path / name
    torch.save(raw, path)
    return path


def test_reduced_official_layout_loads(tmp_path: Path, small_idgen_raw: dict[str, Any]) -> None:
    with pytest.warns(UserWarning, match="15 of 16 attention projections synthetic"):
        networks = load_official_checkpoint(_save(tmp_path, small_idgen_raw))
    assert networks.kind == "idgen" and networks.denoiser is not None
    assert networks.denoiser.config.dims == (12, 6, 4) and networks.denoiser.config.context_dim == 512
    assert networks.arcface.config.layers == (1, 1, 1, 1)


def test_missing_net_key_is_listed(tmp_path: Path, small_idgen_raw: dict[str, Any]) -> None:
    del small_idgen_raw["net"]["ups.0.1.res_conv.bias"]
    small_idgen_raw["diffusion"].pop("net.ups.0.1.res_conv.bias")
    with pytest.raises(BadCheckpointError, match=r"missing keys \[ups\.0\.1\.res_conv\.bias\]"):
        load_official_checkpoint(_save(tmp_path, small_idgen_raw))


def test_unexpected_net_key_is_listed(tmp_path: Path, small_idgen_raw: dict[str, Any]) -> None:
    small_idgen_raw["net"]["mid_attn.fn.fn.extra.weight"] = torch.zeros(3)
    small_idgen_raw["diffusion"]["net.mid_attn.fn.fn.extra.weight"] = torch.zeros(3)
    with pytest.raises(BadCheckpointError, match=r"unexpected keys \[mid_attn\.fn\.fn\.extra\.weight\]"):
        load_official_checkpoint(_save(tmp_path, small_idgen_raw))


def test_missing_saved_attention_projection_is_an_error(tmp_path: Path, small_idgen_raw: dict[str, Any]) -> None:
    del small_idgen_raw["net"]["ups.1.3.fn.fn.qkv.weight"]
    small_idgen_raw["diffusion"].pop("net.ups.1.3.fn.fn.qkv.weight")
    with pytest.raises(BadCheckpointError, match=r"ups\.1\.3\.fn\.fn\.qkv\.weight"):
        load_official_checkpoint(_save(tmp_path, small_idgen_raw))


def test_wrong_shape_is_an_error(tmp_path: Path, small_idgen_raw: dict[str, Any]) -> None:
    small_idgen_raw["net"]["finals.0.2.bias"] = torch.zeros(13)
    small_idgen_raw["diffusion"]["net.finals.0.2.bias"] = torch.zeros(13)
    with pytest.raises(BadCheckpointError, match=r"wrong shape.*finals\.0\.2\.bias"):
        load_official_checkpoint(_save(tmp_path, small_idgen_raw))


def test_arcface_key_mismatch_is_an_error(tmp_path: Path, small_idgen_raw: dict[str, Any]) -> None:
    small_idgen_raw["arcface"].pop("features.running_var")
    with pytest.raises(BadCheckpointError, match=r"'arcface'.*missing keys \[features\.running_var\]"):
        load_official_checkpoint(_save(tmp_path, small_idgen_raw))


def test_unknown_top_level_entry_is_an_error(tmp_path: Path, small_idgen_raw: dict[str, Any]) -> None:
    small_idgen_raw["ema"] = {}
    with pytest.raises(BadCheckpointError, match=r"unexpected \['ema'\]"):
        load_official_checkpoint(_save(tmp_path, small_idgen_raw))


def test_trainer_entries_are_ignored(tmp_path: Path, small_idgen_raw: dict[str, Any]) -> None:
    for key in ("optimizer", "scheduler", "epoch", "global_step", "batch_size"):
        del small_idgen_raw[key]
    with pytest.warns(UserWarning):
        assert load_official_checkpoint(_save(tmp_path, small_idgen_raw)).kind == "idgen"


@pytest.mark.parametrize("where", ["var_sched", "diffusion"])
def test_other_schedule_is_rejected(tmp_path: Path, small_idgen_raw: dict[str, Any], where: str) -> None:
    betas = torch.linspace(1e-4, 2e-2, 1000)
    if where == "var_sched":
        small_idgen_raw["var_sched"]["betas"] = betas
    else:
        small_idgen_raw["diffusion"]["var_sched.betas"] = betas
    with pytest.raises(BadCheckpointError, match=rf"{where}.*betas does not match the linear beta schedule"):
        load_official_checkpoint(_save(tmp_path, small_idgen_raw))


def test_missing_schedule_buffer_is_rejected(tmp_path: Path, small_idgen_raw: dict[str, Any]) -> None:
    small_idgen_raw["diffusion"].pop("var_sched.mean_coeff")
    with pytest.raises(BadCheckpointError, match=r"missing \[var_sched\.mean_coeff\]"):
        load_official_checkpoint(_save(tmp_path, small_idgen_raw))


def test_context_width_must_match_the_encoders(tmp_path: Path, small_idgen_raw: dict[str, Any]) -> None:
    # An IdGen file (ArcFace only, 512-d context) whose denoiser expects 1024: the FaRL half is absent.
    for key, value in list(small_idgen_raw["net"].items()):
        if key.endswith(".mlp.1.weight"):  # FiLM projections, not time_mlp
            widened = torch.cat([value, value[:, :512]], dim=1)  # 512 + 1024 inputs
            small_idgen_raw["net"][key] = widened
            small_idgen_raw["diffusion"][f"net.{key}"] = widened
    with pytest.raises(BadCheckpointError, match="expects a 1024-d context but its encoders give 512"):
        load_official_checkpoint(_save(tmp_path, small_idgen_raw))


def test_corrupt_diffusion_copy_is_rejected(tmp_path: Path, small_idgen_raw: dict[str, Any]) -> None:
    small_idgen_raw["diffusion"]["net.init_conv.bias"] = small_idgen_raw["diffusion"]["net.init_conv.bias"] + 1.0
    with pytest.raises(BadCheckpointError, match=r"different denoiser weights.*init_conv\.bias"):
        load_official_checkpoint(_save(tmp_path, small_idgen_raw))
