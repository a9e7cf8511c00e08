"""``ofer-worker demo``: assets, FLAME round trip and a preview PNG of the expected size with a head on it."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from inference_server.__main__ import main
from inference_server.demo.assets import DemoAssetPaths
from inference_server.demo.cli import PREVIEW_POSES


def test_demo_command_writes_a_labelled_preview(
    tmp_path: Path, demo_assets: DemoAssetPaths, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    size = 96
    code = main(["demo", "-o", str(out), "--cache-dir", str(demo_assets.directory), "--size", str(size)])
    printed = capsys.readouterr().out
    assert code == 0
    assert "DEMO assets (not FLAME)" in printed and str(demo_assets.model_pkl) in printed
    assert "FLAME round trip" in printed
    image = cv2.imread(str(out / "demo_head.png"))
    assert image is not None, "a valid PNG"
    label_height = 30
    assert image.shape == (2 * (size + label_height), len(PREVIEW_POSES) * size, 3)
    for row in range(2):
        for col in range(len(PREVIEW_POSES)):
            top = row * (size + label_height)
            view = image[top + label_height : top + label_height + size, col * size : (col + 1) * size]
            assert 0.15 < (view != 255).any(axis=2).mean() < 0.9, f"a head in view {row}/{col}"
            assert (image[top : top + label_height, col * size : (col + 1) * size] != 255).any(), "caption"
    neutral = image[label_height : label_height + size, :size].astype(int)
    jaw_open = image[label_height : label_height + size, 4 * size : 5 * size].astype(int)
    assert np.abs(neutral - jaw_open).max() > 50, "the open jaw differs from the neutral head"


def test_demo_command_reports_an_unwritable_cache(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code = main(["demo", "-o", str(tmp_path / "out"), "--cache-dir", str(blocker / "demo")])
    assert code == 1
    assert "cannot write the demo assets" in capsys.readouterr().err
