"""``ofer-worker reconstruct | batch | doctor`` as a researcher uses them at the command line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image

from inference_server.__main__ import main
from inference_server.result import read_result

SAMPLE = Path(__file__).resolve().parents[2] / "inference_server" / "assets" / "sample_occluded_face.jpg"
SMALL = ["-n", "8", "-m", "5", "-k", "3", "--sampler", "ddim", "--steps", "4", "--device", "cpu"]


def test_reconstruct_writes_result_meshes_params_and_contact_sheet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out dir"
    assert main(["reconstruct", str(SAMPLE), "-o", str(out), *SMALL]) == 0
    printed = capsys.readouterr().out
    assert "DEMO assets" in printed and "contact sheet" in printed
    assert "identities:    3 kept of 8: ID 01 (p=" in printed and "% of ID 01)" in printed
    assert "head on photo: " in printed
    result = read_result(out / "result.npz")
    assert len(result.identity_params) == 3 and len(result.expression_params) == 5
    mesh = trimesh.load(out / "expression_005.ply", process=False)
    assert isinstance(mesh, trimesh.Trimesh)
    np.testing.assert_allclose(mesh.vertices, result.expression_vertices[4], atol=1e-6)
    np.testing.assert_array_equal(mesh.faces, result.faces)
    params = json.loads((out / "params.json").read_text())
    assert params["demo"] is True and len(params["identities"]) == 3
    sheet = Image.open(out / "contact_sheet.png")
    assert sheet.width >= 1000 and sheet.height >= 500


def test_batch_reports_each_photo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(SAMPLE, photos / "good.jpg")
    (photos / "broken.png").write_bytes(b"not a png")
    (photos / "readme.txt").write_text("ignored: not a photo suffix")
    code = main(["batch", str(photos), "-o", str(tmp_path / "out"), "--no-contact-sheet", *SMALL])
    captured = capsys.readouterr()
    assert code == 1
    assert "1 of 2 photos reconstructed" in captured.out
    assert "broken.png: error (bad_image)" in captured.err
    assert (tmp_path / "out" / "good" / "result.npz").is_file()
    assert not (tmp_path / "out" / "broken" / "result.npz").exists()


def test_reconstruct_bad_photo_exits_with_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "x.jpg").write_bytes(b"")
    assert main(["reconstruct", str(tmp_path / "x.jpg"), "-o", str(tmp_path / "o"), *SMALL]) == 1
    err = capsys.readouterr().err
    assert "error (bad_image)" in err and "fix:" in err


def test_doctor_says_demo_or_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor"]) == 0
    assert "DEMO assets" in capsys.readouterr().out
    missing = tmp_path / "nowhere.pkl"
    assert main(["doctor", "--flame-model", str(missing), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["demo"] is False and "flame_model" in report["missing"]
    assert report["flame_model"]["source"] == "flag" and report["flame_model"]["exists"] is False


def test_partial_user_assets_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pkl = tmp_path / "generic_model.pkl"
    pkl.write_bytes(b"x")
    assert main(["reconstruct", str(SAMPLE), "-o", str(tmp_path / "o"), "--flame-model", str(pkl), *SMALL]) == 1
    err = capsys.readouterr().err
    assert "error (missing_asset)" in err and "checkpoint" in err


def test_flame_controls_flag_reaches_the_request(tmp_path: Path) -> None:
    from inference_server.__main__ import build_parser
    from inference_server.worker_cli import _job_request

    for flags, expected in (([], None), (["--flame-controls"], True)):
        args = build_parser().parse_args(["reconstruct", str(SAMPLE), "-o", str(tmp_path), *flags])
        assert _job_request(args, SAMPLE, tmp_path).extra.get("flame_controls") is expected


def test_refine_expression_flag_reaches_the_request(tmp_path: Path) -> None:
    from inference_server.__main__ import build_parser
    from inference_server.worker_cli import _job_request

    for flags, expected in (([], None), (["--refine-expression"], True)):
        args = build_parser().parse_args(["reconstruct", str(SAMPLE), "-o", str(tmp_path), *flags])
        assert _job_request(args, SAMPLE, tmp_path).extra.get("refine_expression") is expected


def test_no_fit_flag_reaches_the_request_and_refuses_refine_expression(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from inference_server.__main__ import build_parser
    from inference_server.worker_cli import _job_request

    for flags, expected in (([], None), (["--no-fit"], False)):
        args = build_parser().parse_args(["reconstruct", str(SAMPLE), "-o", str(tmp_path), *flags])
        assert _job_request(args, SAMPLE, tmp_path).extra.get("fit") is expected
    code = main(["reconstruct", str(SAMPLE), "-o", str(tmp_path / "out"), "--no-fit", "--refine-expression"])
    err = capsys.readouterr().err
    assert code == 1 and "--no-fit skips the fit" in err and "Drop one of the two" in err
    assert not (tmp_path / "out" / "result.npz").exists()


def test_reconstruct_pools_the_identity_over_extra_photos(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from skimage import data

    side = tmp_path / "plain.png"
    Image.fromarray(data.astronaut()).save(side)
    out = tmp_path / "o"
    assert main(["reconstruct", str(SAMPLE), "--photos", str(side), "-o", str(out), "--no-contact-sheet", *SMALL]) == 0
    printed = capsys.readouterr().out
    assert "identity pooled over 2 photos" in printed and "plain.png" in printed
    meta = read_result(out / "result.npz").meta
    assert [p["path"] for p in meta["photos"]] == [str(SAMPLE.resolve()), str(side.resolve())]
    assert meta["identity_pooling"]["n_samples"] == 16
    # A copy of the main photo under another name is refused, naming both.
    shutil.copy(SAMPLE, tmp_path / "again.jpg")
    code = main(["reconstruct", str(SAMPLE), "--photos", str(tmp_path / "again.jpg"), "-o", str(out), *SMALL])
    err = capsys.readouterr().err
    assert code == 1 and "photo 2 of 2 (again.jpg) is the same picture as photo 1 of 2" in err
