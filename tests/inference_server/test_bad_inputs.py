"""Bad input of every kind sent to one real worker: the right error code, a message and a fix, and the
worker keeps serving (it never crashes)."""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.inference_server.test_worker_process import SAMPLE, Worker

Maker = Callable[[Path], dict[str, Any]]


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _huge_png(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of any size at the cost of a few MB (a decompression-bomb-sized photo)."""
    compressor = zlib.compressobj(9)
    row = b"\x00" * (1 + (width + 7) // 8)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def _save(path: Path, array: np.ndarray, fmt: str = "PNG") -> Path:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    path.write_bytes(buffer.getvalue())
    return path


def _file(name: str, data: bytes) -> Maker:
    def make(tmp: Path) -> dict[str, Any]:
        path = tmp / name
        path.write_bytes(data)
        return {"image": str(path)}

    return make


def _truncated_jpeg(tmp: Path) -> dict[str, Any]:
    data = SAMPLE.read_bytes()
    (tmp / "cut.jpg").write_bytes(data[: len(data) // 3])
    return {"image": str(tmp / "cut.jpg")}


def _corrupt_png_crc(tmp: Path) -> dict[str, Any]:
    data = bytearray(_save(tmp / "ok.png", np.full((64, 64, 3), 128, np.uint8)).read_bytes())
    data[-20] ^= 0xFF  # inside the IDAT data: the CRC no longer matches
    (tmp / "crc.png").write_bytes(bytes(data))
    return {"image": str(tmp / "crc.png")}


def _array(name: str, array: np.ndarray) -> Maker:
    return lambda tmp: {"image": str(_save(tmp / name, array))}


def _two_faces(tmp: Path) -> dict[str, Any]:
    face = np.asarray(Image.open(SAMPLE).convert("RGB"))
    return {"image": str(_save(tmp / "two.png", np.concatenate([face, face], axis=1)))}


def _with(**args: Any) -> Maker:
    return lambda tmp: {"image": str(SAMPLE), **args}


def _output(name: str) -> Maker:
    def make(tmp: Path) -> dict[str, Any]:
        (tmp / "a_folder.npz").mkdir(exist_ok=True)
        return {"image": str(SAMPLE), "output": name.replace("TMP", str(tmp))}

    return make


rng = np.random.default_rng(0)
CASES: list[tuple[str, Maker, str]] = [
    ("empty file", _file("empty.jpg", b""), "bad_image"),
    ("truncated JPEG", _truncated_jpeg, "bad_image"),
    ("text renamed .jpg", _file("notes.jpg", b"these are my notes, not a photo\n" * 20), "bad_image"),
    ("HTML renamed .png", _file("page.png", b"<!DOCTYPE html><html><body>hi</body></html>"), "bad_image"),
    ("PDF renamed .jpg", _file("doc.jpg", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n"), "bad_image"),
    ("random bytes", _file("noise.bmp", rng.integers(0, 256, 5000, dtype=np.uint8).tobytes()), "bad_image"),
    ("zero-size WebP", _file("x.webp", b"RIFF\x00\x00\x00\x00WEBP"), "bad_image"),
    ("corrupt PNG CRC", _corrupt_png_crc, "bad_image"),
    ("1x1 image", _array("one.png", np.zeros((1, 1, 3), np.uint8)), "bad_image"),
    ("10x400 sliver", _array("sliver.png", np.zeros((10, 400, 3), np.uint8)), "bad_image"),
    ("20000x20000 PNG", _file("huge.png", _huge_png(20000, 20000)), "bad_image"),
    ("directory instead of file", lambda tmp: {"image": str(tmp)}, "bad_image"),
    ("missing file", lambda tmp: {"image": str(tmp / "nope.jpg")}, "bad_image"),
    ("flat grey: no face", _array("grey.png", np.full((300, 300, 3), 127, np.uint8)), "no_face"),
    ("noise: no face", _array("noise.png", rng.integers(0, 256, (300, 300, 3), dtype=np.uint8)), "no_face"),
    ("box outside the photo", _with(box=[5000, 5000, 6000, 6000]), "bad_request"),
    ("box with x1 < x0", _with(box=[300, 10, 100, 200]), "bad_request"),
    ("four points", _with(points=[[1, 2], [3, 4], [5, 6], [7, 8]]), "bad_request"),
    ("points off the photo", _with(points=[[-900, 1], [-800, 1], [-850, 50], [-880, 90], [-820, 90]]), "bad_request"),
    ("n_shapes 0", _with(n_shapes=0), "bad_request"),
    ("top_k above n_shapes", _with(n_shapes=5, top_k=6), "bad_request"),
    ("unknown sampler", _with(sampler="euler"), "bad_request"),
    ("steps 5000", _with(steps=5000), "bad_request"),
    ("negative jaw scale", _with(jaw_scale=-1), "bad_request"),
    ("image path not a string", _with(image=42), "bad_request"),
    ("output not .npz", _output("TMP/result.txt"), "bad_request"),
    ("output is a folder", _output("TMP/a_folder.npz"), "bad_request"),
    ("output folder cannot be created", _output("/proc/ofer-cannot-write/r.npz"), "bad_request"),
]
if shutil.which("nvidia-smi") is None:
    CASES.append(("cuda requested without CUDA", _with(device="cuda"), "bad_request"))
if os.geteuid() != 0:

    def _unreadable(tmp: Path) -> dict[str, Any]:
        path = tmp / "locked.jpg"
        path.write_bytes(SAMPLE.read_bytes())
        path.chmod(0)
        return {"image": str(path)}

    CASES.append(("unreadable permissions", _unreadable, "bad_image"))


@pytest.fixture(scope="module")
def worker() -> Any:
    w = Worker()
    yield w
    w.close()


@pytest.mark.parametrize(("label", "make", "code"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_its_error(worker: Worker, tmp_path: Path, label: str, make: Maker, code: str) -> None:
    args = {"output": str(tmp_path / "r.npz"), "n_shapes": 4, "n_expressions": 2, "top_k": 2, "sampler": "ddim",
            "steps": 2} | make(tmp_path)  # fmt: skip
    worker.send(label, "reconstruct", **args)
    ev, _ = worker.until(label, ("result", "error", "cancelled"))
    assert ev["event"] == "error", f"{label}: {ev}"
    assert ev["code"] == code, f"{label}: {ev}"
    assert len(ev["message"]) > 10 and len(ev["fix"]) > 10, ev
    assert not (tmp_path / "r.npz").exists()
    assert worker.proc.poll() is None


def test_nan_in_a_raw_line_is_a_bad_request(worker: Worker) -> None:
    worker.send_raw(
        b'{"id": "nan", "op": "reconstruct", "args": {"image": "a.jpg", "output": "r.npz", "jaw_scale": NaN}}'
    )
    ev, _ = worker.until("nan", ("error",))
    assert ev["code"] == "bad_request"


def test_several_faces_pick_the_one_nearest_the_centre(worker: Worker, tmp_path: Path) -> None:
    args = {"output": str(tmp_path / "r.npz"), "n_shapes": 4, "n_expressions": 2, "top_k": 2, "sampler": "ddim",
            "steps": 2} | _two_faces(tmp_path)  # fmt: skip
    worker.send("two", "reconstruct", **args)
    ev, _ = worker.until("two", ("result", "error"))
    assert ev["event"] == "result", ev
    meta = json.loads(str(np.load(ev["path"])["meta_json"]))
    assert meta["detection"]["n_faces"] >= 2
    assert worker.proc.poll() is None
