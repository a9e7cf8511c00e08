from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from inference_server.train.datasets import CropDataset, DatasetError, read_records


def _image_with_points(synthetic_set: Path, i: int, target: Path) -> None:
    shutil.copy(synthetic_set / "images" / f"{i:06d}.png", target)
    with np.load(synthetic_set / "labels" / f"{i:06d}.npz") as label:
        points = label["points5"].tolist()
    target.with_name(target.stem + ".points5.json").write_text(json.dumps(points))


def test_mica_layout(tmp_path: Path, synthetic_set: Path) -> None:
    for s in range(2):
        subject = tmp_path / f"subject{s}"
        subject.mkdir()
        for k in range(2):
            _image_with_points(synthetic_set, 2 * s + k, subject / f"img{k}.png")
        key = "betas" if s else "shape"
        np.savez(subject / "fit.npz", **{key: np.arange(100, dtype=np.float32) + s})
    records = read_records(tmp_path, "mica")
    assert len(records) == 4
    for record in records:
        s = int(record.image.parent.name[-1])
        assert record.shape is not None and record.shape.shape == (300,)
        np.testing.assert_array_equal(record.shape[:100], np.arange(100) + s)
        assert not record.shape[100:].any() and record.expression is None and record.points5 is not None
    batch = CropDataset(records).batch([0, 3])
    assert batch.blob.shape == (2, 3, 112, 112) and batch.image.shape == (2, 3, 224, 224)
    assert float(batch.blob.abs().max()) <= 1.0


def test_mica_layout_without_shape_key(tmp_path: Path, synthetic_set: Path) -> None:
    (tmp_path / "s").mkdir()
    _image_with_points(synthetic_set, 0, tmp_path / "s" / "a.png")
    np.savez(tmp_path / "s" / "fit.npz", other=np.zeros(3))
    with pytest.raises(DatasetError, match="neither 'shape' nor 'betas'"):
        read_records(tmp_path, "mica")


def test_famos_layout_takes_the_jaw_from_pose_3_to_6(tmp_path: Path, synthetic_set: Path) -> None:
    sequence = tmp_path / "subjectA" / "smile"
    sequence.mkdir(parents=True)
    rng = np.random.default_rng(0)
    fits = []
    for k in range(3):
        _image_with_points(synthetic_set, k, sequence / f"frame{k:03d}.png")
        fit = {"expression": rng.normal(size=100).astype(np.float32), "pose": rng.normal(size=15).astype(np.float32)}
        np.savez(sequence / f"frame{k:03d}.npz", **fit)
        fits.append(fit)
    records = read_records(tmp_path, "famos")
    assert len(records) == 3
    for record, fit in zip(records, fits, strict=True):
        assert record.expression is not None
        np.testing.assert_array_equal(record.expression[:50], fit["expression"][:50])
        np.testing.assert_array_equal(record.expression[50:], fit["pose"][3:6])
        assert record.shape is None


def test_famos_layout_errors(tmp_path: Path, synthetic_set: Path) -> None:
    _image_with_points(synthetic_set, 0, tmp_path / "f.png")
    np.savez(tmp_path / "f.npz", expression=np.zeros(50))
    with pytest.raises(DatasetError, match="'expression' and 'pose'"):
        read_records(tmp_path, "famos")
    with pytest.raises(DatasetError, match="does not exist"):
        read_records(tmp_path / "missing", "famos")
    with pytest.raises(DatasetError, match="unknown data format"):
        read_records(tmp_path, "coma")
