"""The project format (safetensors + JSON) reproduces the in-memory networks bit for bit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from inference_server.checkpoints import (
    FORMAT_VERSION,
    LoadedNetworks,
    load_networks,
    load_official_checkpoint,
    load_project_checkpoint,
    save_project_checkpoint,
)
from inference_server.errors import BadCheckpointError
from inference_server.nets.arcface import ArcFaceConfig, ArcFaceEncoder
from inference_server.nets.clip_visual import ClipImageEncoder, ClipVisionConfig
from inference_server.nets.denoiser import Denoiser, DenoiserConfig
from inference_server.nets.idrank import IdRank, IdRankConfig


def _assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        assert sa[key].dtype == sb[key].dtype and torch.equal(sa[key], sb[key]), key


def _demo_networks(kind: str) -> LoadedNetworks:
    torch.manual_seed(3)
    arcface = ArcFaceEncoder(ArcFaceConfig(layers=(1, 1, 1, 1), widths=(8, 8, 16, 16), embedding_dim=32))
    farl = ClipImageEncoder(ClipVisionConfig(width=64, layers=2, heads=2, patch_size=16, image_size=64, output_dim=32))
    if kind == "idrank":
        rank = IdRank(IdRankConfig(input_dim=60, hidden_dims=(32, 16), context_dim=64))
        return LoadedNetworks(kind, arcface, farl=farl, rank_net=rank, metadata={"demo": True})
    denoiser = Denoiser(DenoiserConfig(feature_dim=9, dims=(9, 5, 3), context_dim=64, time_dim=32))
    return LoadedNetworks(kind, arcface, denoiser=denoiser, farl=farl, metadata={"demo": True, "note": "x"})


@pytest.mark.parametrize("kind", ["expgen", "idrank"])
def test_demo_round_trip(tmp_path: Path, kind: str) -> None:
    original = _demo_networks(kind)
    written = save_project_checkpoint(tmp_path / "demo", original, name=f"demo_{kind}")
    assert written == tmp_path / "demo" / f"demo_{kind}.safetensors"
    assert written.with_suffix(".json").is_file()
    restored = load_networks(written.with_suffix(".json"))
    assert restored.kind == kind and restored.demo
    assert restored.metadata.get("note") == ("x" if kind == "expgen" else None)
    for name, module in original.modules().items():
        _assert_same_weights(module, restored.modules()[name])
        assert restored.modules()[name].config == module.config
    meta = json.loads(written.with_suffix(".json").read_text())
    assert meta["format_version"] == FORMAT_VERSION and meta["demo"] is True
    assert ("schedule" in meta) == (kind != "idrank")


def test_official_round_trip(tmp_path: Path, official_files: dict[str, tuple[Path, dict[str, Any]]]) -> None:
    with pytest.warns(UserWarning, match="15 of 16"):
        original = load_official_checkpoint(official_files["idgen"][0], compute_sha256=False)
    written = save_project_checkpoint(tmp_path, original)
    assert written.name == "model_idgen_flame20.safetensors"
    restored = load_project_checkpoint(written)
    assert restored.farl is None and restored.rank_net is None
    _assert_same_weights(original.arcface, restored.arcface)
    _assert_same_weights(original.denoiser, restored.denoiser)  # type: ignore[arg-type]
    meta = restored.metadata
    assert meta["attention_synthetic"] is True and meta["demo"] is False
    assert meta["provenance"]["source_file"] == "model_idgen_flame20.tar"
    assert meta["schedule"] == {
        "num_steps": 1000,
        "beta_start": 1e-4,
        "beta_end": 1e-2,
        "beta_schedule": "linear",
        "prediction": "epsilon",
    }
    sidecar = json.loads(written.with_suffix(".json").read_text())
    assert sidecar["networks"]["denoiser"] == {
        "architecture": "ofer-denoiser-unet1d",
        "config": {"feature_dim": 300, "dims": [300, 50, 10], "context_dim": 512, "time_dim": 512,
                   "n_tokens": 16, "heads": 4, "head_dim": 32},
    }  # fmt: skip
    x, t, c = torch.randn(3, 300), torch.tensor([5, 500, 999]), torch.randn(3, 512)
    with torch.no_grad():
        assert torch.equal(original.denoiser(x, t, c), restored.denoiser(x, t, c))  # type: ignore[misc]


def test_missing_sidecar(tmp_path: Path) -> None:
    written = save_project_checkpoint(tmp_path, _demo_networks("idrank"), name="m")
    written.with_suffix(".json").unlink()
    with pytest.raises(BadCheckpointError, match=r"no metadata file m\.json"):
        load_networks(written)


def test_wrong_format_version(tmp_path: Path) -> None:
    written = save_project_checkpoint(tmp_path, _demo_networks("idrank"), name="m")
    meta_path = written.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    meta["format_version"] = "ofer-checkpoint/99"
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(BadCheckpointError, match="ofer-checkpoint/99"):
        load_networks(written)


def test_damaged_tensor_file(tmp_path: Path) -> None:
    written = save_project_checkpoint(tmp_path, _demo_networks("expgen"), name="m")
    written.write_bytes(written.read_bytes()[:1000])
    with pytest.raises(BadCheckpointError, match=r"m\.safetensors is damaged"):
        load_networks(written)


def test_config_that_does_not_fit_the_tensors(tmp_path: Path) -> None:
    written = save_project_checkpoint(tmp_path, _demo_networks("idrank"), name="m")
    meta_path = written.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    meta["networks"]["rank_net"]["config"]["hidden_dims"] = [32, 24]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(BadCheckpointError, match="rank_net"):
        load_networks(written)
