"""``ofer-worker export-onnx`` on converted checkpoints built by the test (small network configs)."""

from __future__ import annotations

import json
from pathlib import Path

import onnxruntime
import pytest
import torch

from inference_server.__main__ import main
from inference_server.checkpoints import load_networks, save_project_checkpoint
from inference_server.checkpoints.networks import LoadedNetworks
from inference_server.nets.arcface import ArcFaceConfig, ArcFaceEncoder
from inference_server.nets.clip_visual import ClipImageEncoder, ClipVisionConfig
from inference_server.nets.idrank import IdRank, IdRankConfig
from inference_server.onnx_export import MANIFEST_NAME


def _idrank_file(folder: Path) -> Path:
    torch.manual_seed(0)
    networks = LoadedNetworks(
        kind="idrank",
        arcface=ArcFaceEncoder(
            ArcFaceConfig(layers=(1, 1, 1, 1), widths=(8, 8, 16, 16), embedding_dim=16, input_size=32)
        ),
        farl=ClipImageEncoder(
            ClipVisionConfig(width=32, layers=1, heads=2, patch_size=8, image_size=32, output_dim=16)
        ),
        rank_net=IdRank(IdRankConfig(input_dim=48, hidden_dims=(16, 8), context_dim=32, groups=4)),
    )
    return save_project_checkpoint(folder, networks, name="model_idrank")


def test_export_onnx_writes_checked_graphs_and_a_manifest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    checkpoint = _idrank_file(tmp_path / "models")
    out = tmp_path / "onnx"
    assert main(["export-onnx", str(tmp_path / "models"), "-o", str(out)]) == 0  # a folder of model files
    printed = capsys.readouterr().out
    assert printed.count(", ok)") == 3
    manifest = json.loads((out / MANIFEST_NAME).read_text(encoding="utf-8"))
    assert set(manifest["graphs"]) == {"idrank_rank_net", "idrank_arcface", "idrank_farl"}
    assert manifest["models"]["idrank"]["kind"] == "idrank"

    # The graphs compute what the checkpoint's networks compute.
    loaded = load_networks(checkpoint)
    assert loaded.rank_net is not None
    session = onnxruntime.InferenceSession(str(out / "idrank_rank_net.onnx"), providers=["CPUExecutionProvider"])
    x, context = torch.randn(5, 48), torch.randn(1, 32)
    (logits,) = session.run(None, {"x": x.numpy(), "context": context.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(logits), loaded.rank_net(x, context), rtol=0, atol=1e-4)


def test_export_onnx_reports_missing_sources(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export-onnx", str(tmp_path / "nothing.tar"), "-o", str(tmp_path / "out")]) == 1
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["export-onnx", str(tmp_path / "empty"), "-o", str(tmp_path / "out")]) == 1
    assert "no OFER model file" in capsys.readouterr().err


def test_export_onnx_reports_a_damaged_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    damaged = tmp_path / "model_idgen_flame20.tar"
    damaged.write_bytes(b"\x80\x04not a checkpoint")
    assert main(["export-onnx", str(damaged), "-o", str(tmp_path / "out")]) == 1
    assert "error:" in capsys.readouterr().err
    assert not (tmp_path / "out" / MANIFEST_NAME).exists()
