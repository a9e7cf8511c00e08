"""``ofer-worker batch`` with the local engine: per-item results, the summary table, resuming."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inference_server.__main__ import main
from inference_server.assets_config import resolve_assets
from inference_server.batch.command import run_batch_job
from inference_server.batch.items import BatchItem
from inference_server.batch.records import ITEM_FILE, ItemOutcome
from inference_server.batch.runner import JobOptions
from inference_server.pipeline import Reconstructor
from inference_server.protocol import ReconstructArgs
from inference_server.result import read_result

from .conftest import SMALL, sha256


def _summary(out: Path) -> dict[str, dict[str, str]]:
    with (out / "summary.csv").open(newline="", encoding="utf-8") as handle:
        return {row["id"]: row for row in csv.DictReader(handle)}


def _stamps(out: Path, ids: list[str]) -> dict[str, tuple[int, str]]:
    return {i: ((out / i / "result.npz").stat().st_mtime_ns, (out / i / ITEM_FILE).read_text()) for i in ids}


def test_local_batch_results_summary_and_resume(
    photo_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    args = ["batch", str(photo_folder), "-o", str(out), "--no-contact-sheet", *SMALL]
    assert main(args) == 1  # one photo failed
    printed = capsys.readouterr()
    assert "3 of 4 photos reconstructed" in printed.out
    assert "broken.jpg: error (bad_image)" in printed.err and "fix:" in printed.err

    summary = _summary(out)
    assert sorted(summary) == ["broken", "face_a", "face_b", "face_c"]
    assert summary["broken"]["status"] == "failed" and summary["broken"]["error_code"] == "bad_image"
    good = ["face_a", "face_b", "face_c"]
    shapes = []
    for item_id in good:
        row = summary[item_id]
        assert row["status"] == "ok" and row["error_code"] == "" and row["results"] == "result.npz"
        assert float(row["seconds_total"]) >= float(row["seconds_sample_shapes"]) > 0
        result = read_result(out / item_id / "result.npz")
        photo = Path(row["image"])
        assert photo.parent == photo_folder and photo.stem == item_id
        assert result.meta["image"]["sha256"] == sha256(photo)  # each folder holds its own photo's result
        assert result.identity_params.shape == (2, 300) and len(result.expression_params) == 4
        assert (out / item_id / "identity_01.ply").is_file()
        shapes.append(result.identity_params)
    assert not np.allclose(shapes[0], shapes[1])  # different photos, different hypotheses

    before = _stamps(out, good)
    assert main(args) == 1  # the broken photo is tried again and fails again
    printed = capsys.readouterr()
    assert "3 of 4 photos were done by an earlier run: skipped" in printed.out
    assert "face_a.jpg ->" not in printed.out  # no reconstruction ran for them
    assert _stamps(out, good) == before
    summary = _summary(out)
    assert [summary[i]["status"] for i in good] == ["skipped"] * 3
    assert summary["broken"]["status"] == "failed"

    # Other settings are other results: nothing is skipped.
    assert main([*args, "--seed", "7"]) == 1
    assert all(_summary(out)[i]["status"] == "ok" for i in good)
    assert read_result(out / "face_a" / "result.npz").meta["seed"] == 7


def test_an_unexpected_error_fails_one_item_only(
    photo_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_run = Reconstructor.run

    def flaky(self: Reconstructor, args: ReconstructArgs, progress: Any, cancel: Any) -> Any:
        if Path(args.image).stem == "face_b":
            raise RuntimeError("simulated crash in a stage")
        return real_run(self, args, progress, cancel)

    monkeypatch.setattr(Reconstructor, "run", flaky)
    (photo_folder / "broken.jpg").unlink()
    out = tmp_path / "out"
    assert main(["batch", str(photo_folder), "-o", str(out), "--no-contact-sheet", *SMALL]) == 1
    summary = _summary(out)
    assert summary["face_b"]["status"] == "failed" and summary["face_b"]["error_code"] == "internal"
    assert "simulated crash" in summary["face_b"]["error_message"]
    assert summary["face_a"]["status"] == summary["face_c"]["status"] == "ok"
    record = json.loads((out / "face_b" / ITEM_FILE).read_text())
    assert record["status"] == "failed" and "RuntimeError" in record["error_message"]


def test_a_stopped_engine_leaves_pending_rows_and_the_done_work(tmp_path: Path) -> None:
    items = [BatchItem("one", "/p/one.jpg"), BatchItem("two", "/p/two.jpg")]

    def stops_after_one(pending: list[BatchItem], options: JobOptions, out_root: Path) -> Iterator[ItemOutcome]:
        yield ItemOutcome(id="one", image="/p/one.jpg", status="ok", output=str(out_root / "one"), seconds_total=1.5)
        raise KeyboardInterrupt

    options = JobOptions(ReconstructArgs(image="", output=""), resolve_assets({}))
    with pytest.raises(KeyboardInterrupt):
        run_batch_job(items, options, tmp_path, engine=stops_after_one, out=io.StringIO(), err=io.StringIO())
    summary = _summary(tmp_path)
    assert summary["one"]["status"] == "ok" and summary["one"]["seconds_total"] == "1.5"
    assert summary["two"]["status"] == "pending" and "stopped" in summary["two"]["error_message"]


def test_a_switch_that_changes_the_samples_redoes_the_items_on_resume_and_others_do_not(
    one_photo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The speed switches the batch runs with are printed; bf16 GEMMs (other samples) redo a finished photo, the
    row split (the same samples within float rounding) does not; a misspelt one stops the batch before any
    photo, naming the variable."""
    for name in ("OFER_CPU_ROW_SPLIT", "OFER_CPU_PRECISION"):
        monkeypatch.delenv(name, raising=False)
    out = tmp_path / "out"
    args = ["batch", str(one_photo), "-o", str(out), "--no-contact-sheet", *SMALL]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert "[1/1]" in first and "every photo runs with" not in first
    stamp = _stamps(out, ["face"])

    monkeypatch.setenv("OFER_CPU_ROW_SPLIT", "0")
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "every photo runs with OFER_CPU_ROW_SPLIT=0" in printed
    assert "1 of 1 photos were done by an earlier run: skipped" in printed and "[1/1]" not in printed
    assert _stamps(out, ["face"]) == stamp

    monkeypatch.setenv("OFER_CPU_PRECISION", "bf16")
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "every photo runs with OFER_CPU_PRECISION=bf16, OFER_CPU_ROW_SPLIT=0" in printed
    assert "skipped" not in printed and "[1/1]" in printed
    assert _stamps(out, ["face"]) != stamp

    monkeypatch.setenv("OFER_CPU_ROW_SPLIT", "sometimes")
    assert main(args) == 2
    refused = capsys.readouterr()
    assert "OFER_CPU_ROW_SPLIT" in refused.err and "[1/1]" not in refused.out


def test_a_batch_with_first_meshes_writes_two_plys_per_photo_and_redoes_on_the_change(
    one_photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--meshes first`` on a data set: the result file, params.json and two PLYs per photo. Changing the
    option on resume redoes the photo (its files would otherwise not match the option); a default run's
    fingerprint is what earlier versions wrote."""
    out = tmp_path / "out"
    args = ["batch", str(one_photo), "-o", str(out), "--no-contact-sheet", *SMALL]
    assert main(args) == 0
    assert len(list((out / "face").glob("*.ply"))) == 2 + 4  # SMALL keeps 2 identities, 4 expressions
    assert main([*args, "--meshes", "first"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("[1/1]") == 2  # the second run redid the photo
    assert sorted(p.name for p in (out / "face").glob("*.ply")) == ["expression_001.ply", "identity_01.ply"]
    assert (out / "face" / "result.npz").is_file() and (out / "face" / "params.json").is_file()
    request = ReconstructArgs(image="", output="")
    # the fingerprint as stop 42 computed it, from the same settings without a meshes entry
    fields = dataclasses.asdict(request)
    fields.pop("image"), fields.pop("output")
    settings = {"request": fields, "millimetres": False, "contact_sheet": True, "backend": "torch",
                "precision": "fp32", "all_faces": False}  # fmt: skip
    earlier = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]
    assert JobOptions(request, resolve_assets({})).fingerprint() == earlier
    assert JobOptions(request, resolve_assets({}), meshes="none").fingerprint() != earlier
    no_fit = dataclasses.replace(request, extra={"fit": False})  # --no-fit: other files, so the item is redone
    assert JobOptions(no_fit, resolve_assets({})).fingerprint() != earlier
