"""``ofer-worker evaluate sequence``: scores printed, nothing left behind unless ``--work`` asks to keep it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from inference_server.__main__ import main

SMALL = ["--frames", "3", "--clips", "1", "-m", "2", "-n", "4", "--identity-frames", "2", "--steps", "2"]


def test_evaluate_sequence_keeps_frames_only_where_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    scores = tmp_path / "scores.json"
    assert main(["evaluate", "sequence", *SMALL, "--json", str(scores)]) == 0
    assert "chosen path" in capsys.readouterr().out
    assert sorted(os.listdir(tmp_path)) == ["scores.json"]  # no stray work folder in the current one
    assert len(json.loads(scores.read_text())) == 1

    kept = tmp_path / "kept"
    assert main(["evaluate", "sequence", *SMALL, "--work", str(kept)]) == 0
    assert len(list((kept / "clip_0" / "frames").glob("*.png"))) == 3 and (kept / "clip_0" / "sequence.npz").is_file()
    assert str(kept) in capsys.readouterr().err
