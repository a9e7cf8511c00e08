"""``ofer-worker sequence``: the command line becomes a request checked by the protocol's own table."""

from __future__ import annotations

from pathlib import Path

import pytest

from inference_server.__main__ import build_parser, main
from inference_server.protocol import ProtocolError, SequenceArgs
from inference_server.sequence.cli import sequence_args


def _parse(*argv: str) -> SequenceArgs:
    return sequence_args(build_parser().parse_args(["sequence", *argv]))


def test_defaults_and_flags_become_the_request() -> None:
    request = _parse("clip.mp4", "-o", "out/clip.npz")
    assert (request.resume, request.extra, request.n_expressions, request.fps) == ("auto", {"preset": "fast"}, 32, None)
    request = _parse("clip.mp4", "-o", "c.npz", "--sampler", "ddim", "--steps", "7", "--resume", "--fps", "10")
    assert (request.sampler, request.steps, request.extra, request.resume, request.fps) == (
        "ddim",
        7,
        {},
        "require",
        10.0,
    )
    assert _parse("f", "-o", "c.npz", "--restart", "--no-hypotheses").keep_hypotheses is False
    with pytest.raises(ProtocolError, match="'fps'"):
        _parse("clip.mp4", "-o", "c.npz", "--fps", "0")
    with pytest.raises(ProtocolError, match="'output'"):
        _parse("clip.mp4", "-o", "c.txt")


def test_a_bad_clip_is_a_clear_error_and_exit_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["sequence", str(tmp_path / "empty"), "-o", str(tmp_path / "c.npz"), "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "error (bad_request)" in err and "holds no images" in err and "fix:" in err
    assert main(["sequence", "x.mp4", "-o", str(tmp_path / "c.npz"), "--fps", "-1"]) == 2
