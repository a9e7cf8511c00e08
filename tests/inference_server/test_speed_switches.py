"""The speed switches a batch captures and carries to its runners (inference_server/speed_switches.py)."""

from __future__ import annotations

import pytest

from inference_server.assets_config import resolve_assets
from inference_server.batch.runner import JobOptions
from inference_server.errors import BadRequestError
from inference_server.protocol import ReconstructArgs
from inference_server.speed_switches import (
    SPEED_SWITCHES,
    apply_switches,
    captured_switches,
    check_switches,
    result_switches,
)


def test_captured_switches_are_the_set_ones_and_applying_them_unsets_the_rest() -> None:
    shell = {"OFER_ENCODER_PRECISION": "auto", "OFER_CPU_ROW_SPLIT": "", "PATH": "/bin", "OFER_CUDA_GRAPHS": "0"}
    switches = captured_switches(shell)
    assert switches == {"OFER_ENCODER_PRECISION": "auto", "OFER_CUDA_GRAPHS": "0"}
    node = {"OFER_CPU_PRECISION": "bf16", "OFER_CUDA_GRAPHS": "1", "HOME": "/root"}  # what an actor's node has
    apply_switches(switches, node)
    assert node == {"OFER_ENCODER_PRECISION": "auto", "OFER_CUDA_GRAPHS": "0", "HOME": "/root"}
    assert result_switches(switches) == {"OFER_ENCODER_PRECISION": "auto"}


def test_every_switch_the_readme_names_is_carried() -> None:
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("Speed switches on CPU") : readme.index("## In Blender")]
    named = {word.strip("`=") for word in section.replace("(", " ").split() if word.strip("`").startswith("OFER_")}
    assert {name.split("=")[0] for name in named} <= set(SPEED_SWITCHES)


def test_the_fingerprint_changes_only_with_switches_that_change_the_samples() -> None:
    request = ReconstructArgs(image="", output="")
    assets = resolve_assets({})
    plain = JobOptions(request, assets).fingerprint()
    assert JobOptions(request, assets, switches={}).fingerprint() == plain  # earlier versions' items resume
    assert JobOptions(request, assets, switches={"OFER_CPU_ROW_SPLIT": "0"}).fingerprint() == plain
    bf16 = JobOptions(request, assets, switches={"OFER_CPU_PRECISION": "bf16"}).fingerprint()
    int8 = JobOptions(request, assets, switches={"OFER_ENCODER_PRECISION": "int8"}).fingerprint()
    assert len({plain, bf16, int8}) == 3


def test_a_misspelt_switch_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SPEED_SWITCHES:
        monkeypatch.delenv(name, raising=False)
    assert check_switches() is None
    monkeypatch.setenv("OFER_ENCODER_PRECISION", "auto")
    assert check_switches() == "auto"
    monkeypatch.setenv("OFER_CPU_DENOISER_RUNTIME", "tensorrt")
    with pytest.raises(BadRequestError, match="OFER_CPU_DENOISER_RUNTIME"):
        check_switches()
    monkeypatch.delenv("OFER_CPU_DENOISER_RUNTIME")
    for name in ("OFER_CUDA_GRAPHS", "OFER_CUDA_WHOLE_STEPS"):  # read where the bundle steps on a GPU, checked here
        monkeypatch.setenv(name, "graph")
        with pytest.raises(BadRequestError, match=name):
            check_switches()
        monkeypatch.delenv(name)
