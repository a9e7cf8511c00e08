"""Face choice and input warnings end to end at the command line, on photos made from the shared fixtures:
two portraits side by side, and a portrait cut by the frame."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from inference_server.__main__ import main
from inference_server.preprocess.alignment import box_from_points5
from inference_server.preprocess.official_reference import find_fixtures
from inference_server.result import read_result

FIXTURES = find_fixtures()
pytestmark = pytest.mark.skipif(
    FIXTURES is None, reason="shared/fixtures/official-preprocessing is not on this machine"
)
SMALL = ["-n", "8", "-m", "5", "-k", "3", "--sampler", "ddim", "--steps", "4", "--device", "cpu"]
LEFT, RIGHT = "model-fashion-beauty-black-thumb", "smoke-young-human-model-thumb"


def _fixture(name: str) -> np.ndarray:
    assert FIXTURES is not None
    return np.asarray(Image.open(FIXTURES / "images" / f"{name}.jpg").convert("RGB"))


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("photos")
    two = np.concatenate([_fixture(LEFT), _fixture(RIGHT)], axis=1)
    Image.fromarray(two).save(folder / "two faces.png")
    Image.fromarray(np.ascontiguousarray(_fixture(LEFT)[:, 30:])).save(folder / "cut.png")
    return {"two": folder / "two faces.png", "cut": folder / "cut.png"}


def _faces_json(photo: Path, capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    assert main(["faces", str(photo), "--json"]) == 0
    listing: list[dict[str, Any]] = json.loads(capsys.readouterr().out)["faces"]
    return listing


def test_faces_lists_both_faces_with_boxes(photos: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    listing = _faces_json(photos["two"], capsys)
    assert [f["face_index"] for f in listing] == [0, 1]
    boxes = np.array([f["box"] for f in listing], dtype=float)
    width = Image.open(photos["two"]).width
    # Face 0 is the one nearest the centre; each box holds one of the two portraits.
    assert abs(boxes[0, [0, 2]].mean() - width / 2) < abs(boxes[1, [0, 2]].mean() - width / 2)
    assert sorted(((boxes[:, 0] + boxes[:, 2]) / 2 > 200).tolist()) == [False, True]
    assert all("several_faces" in [w["code"] for w in f["warnings"]] for f in listing)
    assert main(["faces", str(photos["two"])]) == 0
    printed = capsys.readouterr().out
    assert "2 faces" in printed and "face:          1 of 2" in printed and "--face N" in printed


def test_reconstruct_the_second_face_and_say_there_were_two(
    photos: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    listing = _faces_json(photos["two"], capsys)
    out = tmp_path / "face1"
    assert main(["reconstruct", str(photos["two"]), "-o", str(out), "--face", "1", *SMALL]) == 0
    printed = capsys.readouterr().out
    assert "WARNING several_faces" in printed and "face:          1 of 2" in printed
    meta = read_result(out / "result.npz").meta
    assert meta["detection"]["face_index"] == 1
    np.testing.assert_allclose(meta["detection"]["box"], listing[1]["box"], atol=1e-6)
    assert "several_faces" in [w["code"] for w in meta["warnings"]]
    # The DEMO weights were trained on five-point boxes: their 224 crop keeps that convention.
    np.testing.assert_allclose(meta["crop_box"], box_from_points5(np.array(meta["detection"]["points5"])), atol=1e-6)
    # A face number that does not exist: a clear error, nothing written.
    bad = tmp_path / "face5"
    assert main(["reconstruct", str(photos["two"]), "-o", str(bad), "--face", "5", *SMALL]) == 1
    assert "no face number 5" in capsys.readouterr().err and not (bad / "result.npz").exists()


def test_a_face_cut_by_the_frame_is_reported_in_the_file_and_on_the_sheet(
    photos: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cut"
    assert main(["reconstruct", str(photos["cut"]), "-o", str(out), *SMALL]) == 0
    assert "WARNING cut_by_frame" in capsys.readouterr().out
    meta = read_result(out / "result.npz").meta
    assert meta["detection"]["cut_by_frame"] is True and meta["detection"]["box"][0] < 0
    assert "cut_by_frame" in [w["code"] for w in meta["warnings"]]
    # The contact sheet opens with a warning banner (its own colour) above the photo row.
    sheet = np.asarray(Image.open(out / "contact_sheet.png").convert("RGB"))
    banner = (255, 222, 190)
    assert (np.abs(sheet[:30, :, :].astype(int) - banner).sum(axis=2) == 0).mean() > 0.5


def test_batch_all_faces_writes_one_result_per_face(
    photos: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "two.png").write_bytes(photos["two"].read_bytes())
    out = tmp_path / "out"
    assert main(["batch", str(folder), "-o", str(out), "--all-faces", "--no-contact-sheet", *SMALL]) == 0
    boxes = [read_result(out / "two" / f"face_{i}" / "result.npz").meta["detection"]["box"] for i in (0, 1)]
    assert abs(boxes[0][0] - boxes[1][0]) > 100  # two different faces
