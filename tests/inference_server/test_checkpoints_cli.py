"""``ofer-worker convert``: official-layout file in, safetensors + JSON out, loadable by the worker."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from inference_server.__main__ import main
from inference_server.checkpoints import load_networks
from inference_server.nets.arcface import ArcFaceConfig, ArcFaceEncoder
from inference_server.nets.denoiser import Denoiser, DenoiserConfig
from tests.inference_server.checkpoints.var_sched import var_sched_buffers


def _official_style_file(path: Path) -> dict[str, torch.Tensor]:
    """A small IdGen file as the official trainer writes it: only slot 15 saved, as ``qkv.weight``."""
    torch.manual_seed(0)
    state = Denoiser(DenoiserConfig(feature_dim=8, dims=(8, 4, 2), context_dim=32)).state_dict()
    net = {k: v for k, v in state.items() if ".to_qkv." not in k}
    net |= {k.replace(".to_qkv.15.", ".qkv."): v for k, v in state.items() if ".to_qkv.15." in k}
    arcface = ArcFaceEncoder(ArcFaceConfig(layers=(1, 1, 1, 1), widths=(8, 8, 8, 8), embedding_dim=32)).state_dict()
    sched = var_sched_buffers()
    diffusion = {f"net.{k}": v for k, v in net.items()} | {f"var_sched.{k}": v for k, v in sched.items()}
    torch.save({"arcface": arcface, "net": net, "var_sched": sched, "diffusion": diffusion, "epoch": 3}, path)
    return net


def test_convert_writes_a_loadable_project_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "model_idgen_flame20.tar"
    net = _official_style_file(source)
    assert main(["convert", str(source), "-o", str(tmp_path / "out")]) == 0
    captured = capsys.readouterr()
    assert "15 of 16 attention projections synthetic" in captured.err
    written = tmp_path / "out" / "model_idgen_flame20.safetensors"
    assert str(written) in captured.out and written.with_suffix(".json").is_file()

    networks = load_networks(written)
    assert networks.kind == "idgen" and networks.attention_synthetic
    state = networks.denoiser.state_dict()  # type: ignore[union-attr]
    assert torch.equal(state["mid_attn.fn.fn.to_qkv.15.weight"], net["mid_attn.fn.fn.qkv.weight"])
    assert torch.equal(state["init_conv.weight"], net["init_conv.weight"])


def test_convert_reports_a_bad_file_and_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "model_expgen_flame20.tar"
    bad.write_bytes(b"definitely not a checkpoint")
    assert main(["convert", str(bad), "-o", str(tmp_path / "out")]) == 1
    assert "model_expgen_flame20.tar" in capsys.readouterr().err
    assert not (tmp_path / "out" / "model_expgen_flame20.safetensors").exists()
