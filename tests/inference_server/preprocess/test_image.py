"""Photo loading: every supported kind of file decodes to upright 8-bit RGB; everything else is a clear
``bad_image`` error with a message and a fix."""

from __future__ import annotations

import functools
import hashlib
import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inference_server.errors import BadImageError
from inference_server.preprocess.image import MIN_SIDE, downscale_for_detection, load_image


def _pattern(width: int = 64, height: int = 48) -> np.ndarray:
    """An asymmetric RGB test pattern (distinct values along both axes)."""
    ys, xs = np.mgrid[:height, :width]
    return np.stack([xs * 255 // (width - 1), ys * 255 // (height - 1), (xs + ys) % 256], axis=-1).astype(np.uint8)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


@functools.cache
def _huge_png(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of any size, written row by row so it costs a few MB of CPU, not gigabytes."""
    compressor = zlib.compressobj(9)
    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    parts = [compressor.compress(row) for _ in range(height)]
    idat = b"".join(parts) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def _encoded(array: np.ndarray, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


# -- files that load ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "suffix", "lossless"),
    [
        ("PNG", ".png", True),
        ("BMP", ".bmp", True),
        ("TIFF", ".tif", True),
        ("WEBP", ".webp", False),
        ("JPEG", ".jpg", False),
    ],
)
def test_common_formats_load_as_rgb(tmp_path: Path, fmt: str, suffix: str, lossless: bool) -> None:
    pattern = _pattern()
    path = tmp_path / f"photo{suffix}"
    data = _encoded(pattern, fmt, **({"quality": 95} if not lossless else {}))
    path.write_bytes(data)
    image = load_image(path)
    assert image.rgb.dtype == np.uint8 and image.rgb.shape == (48, 64, 3)
    assert (image.width, image.height) == (64, 48) and image.original_size == (64, 48)
    assert image.sha256 == hashlib.sha256(data).hexdigest()
    assert image.rgb.flags["C_CONTIGUOUS"]
    difference = np.abs(image.rgb.astype(int) - pattern.astype(int))
    assert difference.max() == 0 if lossless else difference.mean() < 6


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    pattern = _pattern(64, 40)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    path = tmp_path / "rotated.png"
    path.write_bytes(_encoded(pattern, "PNG", exif=exif))
    image = load_image(path)
    assert image.exif_orientation == 6
    assert image.original_size == (64, 40) and (image.width, image.height) == (40, 64)
    # Orientation 6 displays the stored image turned 90° clockwise.
    np.testing.assert_array_equal(image.rgb, np.rot90(pattern, k=-1))


def test_grayscale_16bit_and_float_are_scaled_to_8_bits(tmp_path: Path) -> None:
    ramp16 = (np.arange(64 * 40, dtype=np.uint32).reshape(40, 64) * 25).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(ramp16).save(path)
    image = load_image(path)
    expected = np.clip(np.rint(ramp16 * (255.0 / 65535.0)), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(image.rgb[:, :, 0], expected)
    np.testing.assert_array_equal(image.rgb[:, :, 0], image.rgb[:, :, 2])

    gray = _pattern()[:, :, 0]
    path = tmp_path / "gray.jpg"
    Image.fromarray(gray).save(path, quality=100)
    loaded = load_image(path)
    assert loaded.mode == "L" and np.abs(loaded.rgb[:, :, 1].astype(int) - gray).max() <= 2

    ramp = np.linspace(0.0, 1.0, 64 * 40, dtype=np.float32).reshape(40, 64)
    path = tmp_path / "float.tif"
    Image.fromarray(ramp, mode="F").save(path)
    np.testing.assert_array_equal(load_image(path).rgb[:, :, 0], np.rint(ramp * 255).astype(np.uint8))


def test_16bit_rgb_tiff_loads(tmp_path: Path) -> None:
    import cv2

    pattern16 = _pattern().astype(np.uint16) * 257
    ok, encoded = cv2.imencode(".tiff", pattern16[:, :, ::-1])
    assert ok
    path = tmp_path / "deep_rgb.tiff"
    path.write_bytes(encoded.tobytes())
    np.testing.assert_array_equal(load_image(path).rgb, _pattern())


def test_transparency_is_composited_over_white(tmp_path: Path) -> None:
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:, :20, 3] = 255  # left half opaque red-ish, right half fully transparent
    rgba[:, 20:30, 3] = 128
    path = tmp_path / "cutout.png"
    Image.fromarray(rgba, "RGBA").save(path)
    rgb = load_image(path).rgb
    np.testing.assert_array_equal(rgb[0, 0], [200, 0, 0])
    np.testing.assert_array_equal(rgb[0, 35], [255, 255, 255])
    half = 128 / 255
    expected = np.rint([200 * half + 255 * (1 - half), 255 * (1 - half), 255 * (1 - half)])
    assert np.abs(rgb[0, 25].astype(float) - expected).max() <= 1

    palette = Image.new("P", (40, 40), 0)
    palette.putpalette([0, 0, 255, 10, 20, 30] + [0] * 762)
    palette.paste(1, (0, 0, 20, 40))
    palette.info["transparency"] = 0
    path = tmp_path / "palette.png"
    palette.save(path, transparency=0)
    rgb = load_image(path).rgb
    np.testing.assert_array_equal(rgb[5, 5], [10, 20, 30])
    np.testing.assert_array_equal(rgb[5, 30], [255, 255, 255])


def test_cmyk_and_animated_gif(tmp_path: Path) -> None:
    path = tmp_path / "print.jpg"
    Image.fromarray(_pattern()).convert("CMYK").save(path, quality=95)
    image = load_image(path)
    assert image.mode == "CMYK" and image.rgb.shape == (48, 64, 3)

    frames = [Image.fromarray(np.full((40, 40, 3), value, np.uint8)) for value in (30, 220)]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    gif = load_image(path)
    assert gif.n_frames == 2 and any("first" in note for note in gif.notes)
    assert abs(int(gif.rgb.mean()) - 30) <= 2


def test_paths_with_spaces_and_non_ascii_names(tmp_path: Path) -> None:
    folder = tmp_path / "Fotos für Ömer"
    folder.mkdir()
    path = folder / "лицо 顔 photo.png"
    path.write_bytes(_encoded(_pattern(), "PNG"))
    image = load_image(str(path))
    np.testing.assert_array_equal(image.rgb, _pattern())
    assert image.path == str(path.resolve())


def test_downscale_for_detection_keeps_coordinates() -> None:
    rgb = np.zeros((3000, 4000, 3), np.uint8)
    rgb[1500:1520, 2000:2040] = 255
    scaled = downscale_for_detection(rgb, max_side=1000)
    assert max(scaled.rgb.shape[:2]) == 1000 and scaled.scale == pytest.approx(0.25)
    ys, xs = np.nonzero(scaled.rgb[:, :, 0] > 127)
    centre_small = np.array([xs.mean() + 0.5, ys.mean() + 0.5])
    np.testing.assert_allclose(scaled.to_original(centre_small), [2020.0, 1510.0], atol=2.5)
    same = downscale_for_detection(rgb[:500, :600], max_side=1000)
    assert same.scale == 1.0 and same.rgb.shape == (500, 600, 3)


# -- files that are refused --------------------------------------------------------------------------


def _jpeg() -> bytes:
    rng = np.random.default_rng(0)
    return _encoded(rng.integers(0, 255, (200, 200, 3), dtype=np.uint8), "JPEG", quality=90)


def _png() -> bytes:
    return _encoded(_pattern(), "PNG")


def _corrupt_png_crc() -> bytes:
    data = bytearray(_png())
    data[29] ^= 0xFF  # a byte of the IHDR CRC
    return bytes(data)


def _corrupt_png_data() -> bytes:
    data = bytearray(_png())
    idat = data.index(b"IDAT")
    length = struct.unpack(">I", data[idat - 4 : idat])[0]
    data[idat + 4 : idat + 4 + length] = bytes(length)  # zero the compressed stream, fix nothing else
    body = bytes(data[idat : idat + 4 + length])
    data[idat + 4 + length : idat + 8 + length] = struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)
    return bytes(data)


def _zero_size_tiff() -> bytes:
    """A little-endian TIFF whose width and height tags are 0."""
    entries = [
        (256, 3, 1, 0),
        (257, 3, 1, 0),
        (258, 3, 1, 8),
        (259, 3, 1, 1),
        (262, 3, 1, 1),
        (273, 4, 1, 8),
        (277, 3, 1, 1),
        (279, 4, 1, 0),
    ]
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries) + b"\0\0\0\0"
    return b"II*\x00" + struct.pack("<I", 8) + ifd


BAD_FILES: dict[str, tuple[str, bytes]] = {
    "empty": ("empty.jpg", b""),
    "text renamed .jpg": ("notes.jpg", b"Just some notes, not a picture.\n" * 20),
    "html page": ("download.png", b"<!DOCTYPE html><html><body>404 Not Found</body></html>"),
    "svg": ("vector.png", b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"></svg>'),
    "pdf": ("scan.jpg", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n"),
    "eps (a decoder we never run)": ("figure.jpg", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\n"),
    "zip archive": ("photos.jpg", b"PK\x03\x04" + bytes(100)),
    "heic": ("iphone.jpg", b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64)),
    "random bytes": ("noise.bmp", np.random.default_rng(3).integers(0, 255, 4096, dtype=np.uint8).tobytes()),
    "truncated jpeg": ("cut.jpg", _jpeg()[: len(_jpeg()) // 2]),
    "jpeg header only": ("head.jpg", _jpeg()[:20]),
    "truncated png": ("cut.png", _png()[:60]),
    "png with a bad crc": ("crc.png", _corrupt_png_crc()),
    "png with a broken stream": ("stream.png", _corrupt_png_data()),
    "1x1 png": ("dot.png", _encoded(np.zeros((1, 1, 3), np.uint8), "PNG")),
    "thin strip": ("strip.png", _encoded(np.zeros((400, MIN_SIDE - 1, 3), np.uint8), "PNG")),
    "20000x20000 png": ("bomb.png", _huge_png(20000, 20000)),
    "12000x10000 png (over our limit, under Pillow's)": ("big.png", _huge_png(12000, 10000)),
    "zero-size tiff": ("zero.tif", _zero_size_tiff()),
    "ico (not a photo format)": ("icon.jpg", _encoded(np.zeros((48, 48, 3), np.uint8), "ICO")),
}


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_bad_files_give_bad_image_with_fix(tmp_path: Path, kind: str) -> None:
    name, data = BAD_FILES[kind]
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(BadImageError) as info:
        load_image(path)
    error = info.value
    assert error.code == "bad_image"
    assert error.message and error.fix and error.message != error.fix


def test_messages_say_what_is_wrong(tmp_path: Path) -> None:
    def message(name: str, data: bytes) -> str:
        (tmp_path / name).write_bytes(data)
        with pytest.raises(BadImageError) as info:
            load_image(tmp_path / name)
        return info.value.message

    assert "empty" in message("a.jpg", b"")
    assert "HTML" in message("b.jpg", b"<html><body>hi</body></html>")
    assert "1×1" in message("c.png", _encoded(np.zeros((1, 1, 3), np.uint8), "PNG"))
    assert "20000×20000" in message("d.png", _huge_png(20000, 20000)) or "megapixels" in message(
        "d.png", _huge_png(20000, 20000)
    )
    assert "decoded" in message("e.jpg", _jpeg()[:-3000])


def test_missing_directory_fifo_and_size_limit(tmp_path: Path) -> None:
    with pytest.raises(BadImageError, match="does not exist"):
        load_image(tmp_path / "nope.jpg")
    with pytest.raises(BadImageError, match="folder"):
        load_image(tmp_path)
    link = tmp_path / "dangling.jpg"
    link.symlink_to(tmp_path / "gone.jpg")
    with pytest.raises(BadImageError, match="does not exist"):
        load_image(link)
    if hasattr(os, "mkfifo"):
        fifo = tmp_path / "pipe.jpg"
        os.mkfifo(fifo)
        with pytest.raises(BadImageError, match="regular file"):
            load_image(fifo)  # must not block waiting for a writer
    path = tmp_path / "ok.png"
    path.write_bytes(_png())
    with pytest.raises(BadImageError, match="MB"):
        load_image(path, max_file_bytes=100)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can read any file")
def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "secret.png"
    path.write_bytes(_png())
    path.chmod(0)
    try:
        with pytest.raises(BadImageError, match="permission"):
            load_image(path)
    finally:
        path.chmod(0o600)
