"""Opening a clip: natural frame order, streaming, and every unusable input refused before any work."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from inference_server.errors import BadImageError, BadRequestError
from inference_server.sequence.source import natural_key, open_source


def _frame(i: int, size: tuple[int, int] = (64, 48)) -> np.ndarray:
    image = np.zeros((size[1], size[0], 3), np.uint8)
    image[:, :, 0] = 10 * i  # the frame's number, readable back from the pixels
    return image


def _folder(tmp: Path, names: list[str], size: tuple[int, int] = (64, 48)) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        cv2.imwrite(str(tmp / name), cv2.cvtColor(_frame(i, size), cv2.COLOR_RGB2BGR))
    return tmp


def test_folder_frames_come_in_natural_order(tmp_path: Path) -> None:
    names = ["f1.png", "f2.png", "f10.png", "f9.png"]  # written in this order: red = 0, 10, 20, 30
    source = open_source(str(_folder(tmp_path, names)), fps=12)
    assert source.kind == "folder" and source.n_frames == 4 and (source.width, source.height) == (64, 48)
    frames = list(source.frames())
    assert [f.name for f in frames] == ["f1.png", "f2.png", "f9.png", "f10.png"]
    assert [int(f.rgb[0, 0, 0]) for f in frames if f.rgb is not None] == [0, 10, 30, 20]
    assert [f.index for f in source.frames(start=2)] == [2, 3]
    assert [f.index for f in source.frames(only=[3, 1])] == [1, 3]
    assert sorted(["b10", "b2", "A1"], key=natural_key) == ["A1", "b2", "b10"]


def test_a_broken_frame_is_reported_not_fatal(tmp_path: Path) -> None:
    folder = _folder(tmp_path, ["a1.png", "a2.png", "a3.png"])
    (folder / "a2.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    frames = list(open_source(str(folder)).frames())
    assert [f.rgb is None for f in frames] == [False, True, False]
    assert frames[1].error


@pytest.mark.parametrize("case", ["empty", "mixed", "too_many", "missing", "all_broken"])
def test_unusable_folders_are_refused_before_work(tmp_path: Path, case: str) -> None:
    folder = tmp_path / "clip"
    folder.mkdir()
    limit = 3000
    if case == "mixed":
        _folder(folder, ["a1.png", "a2.png"])
        _folder(folder, ["a3.png"], size=(80, 48))
    elif case == "too_many":
        _folder(folder, [f"a{i}.png" for i in range(4)])
        limit = 3
    elif case == "missing":
        folder = tmp_path / "nowhere"
    elif case == "all_broken":
        (folder / "a.png").write_bytes(b"nothing")
    else:
        (folder / "notes.txt").write_text("not a frame")
    expected = BadImageError if case == "all_broken" else BadRequestError
    with pytest.raises(expected) as caught:
        open_source(str(folder), max_frames=limit)
    message = caught.value.message
    assert {"empty": "holds no images", "mixed": "different sizes", "too_many": "more than the limit of 3",
            "missing": "no such", "all_broken": "can be read"}[case] in message  # fmt: skip
    if case == "mixed":
        assert "80x48 (a3.png)" in message and caught.value.fix


def _video(path: Path, n: int, fps: float = 20.0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (64, 48))
    assert writer.isOpened()
    for i in range(n):
        writer.write(cv2.cvtColor(_frame(i), cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def test_video_frames_stream_and_subsample(tmp_path: Path) -> None:
    source = open_source(str(_video(tmp_path / "clip.avi", 10)))
    assert (source.kind, source.n_frames, source.fps, source.step) == ("video", 10, 20.0, 1)
    reds = [int(f.rgb[10, 10, 0]) for f in source.frames() if f.rgb is not None]
    assert len(reds) == 10 and np.all(np.abs(np.array(reds) - 10 * np.arange(10)) <= 3)  # MJPG is lossy
    half = open_source(str(tmp_path / "clip.avi"), fps=10)
    assert (half.n_frames, half.fps, half.step) == (5, 10.0, 2)
    frames = list(half.frames(start=2))
    assert [f.name for f in frames] == ["frame_000004", "frame_000006", "frame_000008"]
    assert abs(int(frames[0].rgb[10, 10, 0]) - 40) <= 3  # type: ignore[index]
    with pytest.raises(BadRequestError, match="more than the limit"):
        open_source(str(tmp_path / "clip.avi"), max_frames=9)


def test_a_file_that_is_not_a_video_is_refused(tmp_path: Path) -> None:
    (tmp_path / "clip.mp4").write_bytes(b"\x00" * 2048)
    with pytest.raises(BadImageError) as caught:
        open_source(str(tmp_path / "clip.mp4"))
    assert "clip.mp4" in caught.value.message and "video" in caught.value.fix
