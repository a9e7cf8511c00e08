"""Photos for batch tests: three different real faces (the bundled sample, mirrored, re-framed) + a bad one."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from PIL import Image, ImageOps

SAMPLE = Path(__file__).resolve().parents[3] / "inference_server" / "assets" / "sample_occluded_face.jpg"
#: Small jobs: the batch machinery is under test here, not the networks.
SMALL = ["-n", "6", "-m", "4", "-k", "2", "--sampler", "ddim", "--steps", "3", "--device", "cpu"]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def photo_folder(tmp_path: Path) -> Path:
    """``face_a.jpg`` (the sample), ``face_b.png`` (mirrored), ``face_c.jpg`` (re-framed), ``broken.jpg``."""
    folder = tmp_path / "photos"
    folder.mkdir()
    image = Image.open(SAMPLE).convert("RGB")
    image.save(folder / "face_a.jpg", quality=95)
    ImageOps.mirror(image).save(folder / "face_b.png")
    w, h = image.size
    image.crop((w // 12, 0, w, h - h // 12)).save(folder / "face_c.jpg", quality=90)
    (folder / "broken.jpg").write_bytes(b"this is not a JPEG")
    return folder


@pytest.fixture
def one_photo(tmp_path: Path) -> Path:
    """A folder holding only ``face.jpg`` (the sample): for tests that run a batch several times."""
    folder = tmp_path / "one"
    folder.mkdir()
    (folder / "face.jpg").write_bytes(SAMPLE.read_bytes())
    return folder
