"""The worker's hello says which torch build it runs and on what device (shown in the add-on's preferences)."""

from __future__ import annotations

import platform

import torch

from inference_server.assets_config import resolve_assets
from inference_server.pipeline import Reconstructor
from inference_server.runtime_info import runtime_info


def test_cpu_runtime_and_the_hello_carry_build_device_and_doctor_lines(monkeypatch, tmp_path) -> None:
    expected_build = f"cuda {torch.version.cuda}" if torch.version.cuda else "cpu"
    info = runtime_info("cpu")
    assert info["torch_build"] == expected_build
    assert info["device_name"] == (platform.processor() or platform.machine()) and info["device_memory_gb"] is None
    monkeypatch.setenv("OFER_CONFIG", str(tmp_path / "absent.toml"))
    for name in ("OFER_FLAME_MODEL", "OFER_CHECKPOINT_DIR", "OFER_FRONT_INDICES", "OFER_LANDMARK_EMBEDDING"):
        monkeypatch.delenv(name, raising=False)
    hello = Reconstructor(resolve_assets({}), device="cpu").hello_info()
    assert hello["torch_build"] == expected_build and hello["device"] == "cpu"
    doctor = "\n".join(hello["doctor"])
    assert "absent.toml (not present)" in doctor and "DEMO assets" in doctor
    assert hello["demo"] is True


def test_the_hello_says_which_encoder_precision_and_onnxruntime_the_worker_has(monkeypatch) -> None:
    import onnxruntime

    from inference_server import runtime_info as info_module

    monkeypatch.setenv("OFER_ENCODER_PRECISION", "auto")
    hello = Reconstructor(resolve_assets({}), device="cpu").hello_info()
    assert hello["encoder_precision"] == "auto" and hello["onnxruntime"] == onnxruntime.__version__
    assert runtime_info("cpu", {})["encoder_precision"] == "fp32"
    assert hello["denoiser_runtime"] == "onnxruntime" == runtime_info("cpu", {})["denoiser_runtime"]
    assert runtime_info("cpu", {"OFER_CPU_DENOISER_RUNTIME": "Torch"})["denoiser_runtime"] == "torch"
    monkeypatch.setattr(info_module.importlib.util, "find_spec", lambda name: None)
    assert runtime_info("cpu")["onnxruntime"] is None
    assert runtime_info("cpu", {})["denoiser_runtime"] == "torch"  # without onnxruntime the steps run in torch
