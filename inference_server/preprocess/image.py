"""Reading a user's photo into an upright 8-bit RGB array, or a clear ``bad_image`` error.

Decisions (docs/preprocessing.md):

- Formats: JPEG (and phone MPO), PNG, WebP, TIFF, BMP and GIF. Pillow is restricted to these decoders so a
  renamed file never reaches an exotic one (EPS would even start Ghostscript).
- The file's bytes are read by Python and decoded from memory: no path ever reaches a C library, so spaces
  and non-ASCII names work everywhere (``cv2.imread`` fails on those on Windows).
- The EXIF orientation is applied; every coordinate the worker reports is in the upright photo.
- Transparency is composited over white (a cut-out face on white is what a viewer would show, and black
  would darken hair and beard edges the detectors rely on).
- 16-bit and float images are scaled to 8 bits; palette, grayscale, CMYK etc. are converted to RGB.
- Animated GIF / multi-page TIFF: the first frame is used (``n_frames`` tells how many there were).
- Sizes are checked from the header before decoding: more than ``MAX_PIXELS`` is refused (a decompression
  bomb costs no memory), so is a side shorter than ``MIN_SIDE`` (no face fits).
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import BadImageError

#: Largest accepted photo, in pixels (≈ a 12,000 × 8,300 photo; a 100-megapixel RGB array is 300 MB).
MAX_PIXELS = 100_000_000
#: Largest accepted file, in bytes.
MAX_FILE_BYTES = 512 * 1024 * 1024
#: Smallest accepted side, in pixels: the detectors need a face of a few dozen pixels.
MIN_SIDE = 32
#: Pillow decoder names accepted (phone MPO files open through the JPEG decoder).
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "TIFF", "BMP", "GIF")

_CONVERT_FIX = "Open the photo in an image editor and export it as JPEG or PNG, then try again."


@dataclass(frozen=True)
class LoadedImage:
    """An upright photo as 8-bit RGB plus where it came from.

    ``rgb`` is (height, width, 3) uint8, C-contiguous. ``original_size`` is (width, height) as stored in
    the file, before the EXIF orientation was applied; ``width``/``height`` are those of ``rgb``.
    """

    rgb: np.ndarray
    path: str
    sha256: str
    width: int
    height: int
    original_size: tuple[int, int]
    format: str
    mode: str
    exif_orientation: int = 1
    n_frames: int = 1
    notes: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class ScaledImage:
    """A copy of a photo resized for detection. ``scale`` = copy pixels per original pixel."""

    rgb: np.ndarray
    scale: float

    def to_original(self, points: np.ndarray) -> np.ndarray:
        """Map (…, 2) pixel coordinates of this copy back to the original photo."""
        return np.asarray(points, dtype=np.float64) / self.scale


def load_image(
    path: str | os.PathLike[str],
    *,
    max_pixels: int = MAX_PIXELS,
    max_file_bytes: int = MAX_FILE_BYTES,
    min_side: int = MIN_SIDE,
) -> LoadedImage:
    """Read the photo at ``path``; raise ``BadImageError`` (message + fix) for anything unusable."""
    data, resolved = _read_file_bytes(Path(path), max_file_bytes)
    rgb, info = decode_image_bytes(data, name=resolved.name, max_pixels=max_pixels, min_side=min_side)
    return LoadedImage(
        rgb=rgb,
        path=str(resolved),
        sha256=hashlib.sha256(data).hexdigest(),
        width=int(rgb.shape[1]),
        height=int(rgb.shape[0]),
        original_size=info.original_size,
        format=info.format,
        mode=info.mode,
        exif_orientation=info.exif_orientation,
        n_frames=info.n_frames,
        notes=info.notes,
    )


def downscale_for_detection(rgb: np.ndarray, max_side: int = 1920) -> ScaledImage:
    """A copy whose longer side is at most ``max_side`` (area-averaged), and its scale factor.

    Detectors work at a few hundred pixels, so a 50-megapixel photo only costs time; coordinates found
    on the copy go back with ``ScaledImage.to_original``.
    """
    import cv2

    if max_side < 1:
        raise ValueError("max_side must be positive")
    height, width = rgb.shape[:2]
    longest = max(height, width)
    if longest <= max_side:
        return ScaledImage(rgb=rgb, scale=1.0)
    scale = max_side / longest
    new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = cv2.resize(rgb, new_size, interpolation=cv2.INTER_AREA)
    # The rounding makes the two axes' factors differ slightly; report the mean (error < half a pixel).
    actual = (new_size[0] / width + new_size[1] / height) / 2.0
    return ScaledImage(rgb=np.ascontiguousarray(small), scale=actual)


@dataclass(frozen=True)
class _DecodeInfo:
    original_size: tuple[int, int]
    format: str
    mode: str
    exif_orientation: int
    n_frames: int
    notes: tuple[str, ...]


def _read_file_bytes(path: Path, max_file_bytes: int) -> tuple[bytes, Path]:
    shown = str(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise BadImageError(
            f"The photo '{shown}' does not exist.", "Check the path (and that the drive is mounted)."
        ) from None
    except PermissionError:
        raise BadImageError(
            f"The photo '{shown}' cannot be reached: permission denied on a folder of its path.",
            "Move the photo to a folder you can read, or fix the folder permissions.",
        ) from None
    except OSError as exc:
        raise BadImageError(f"The photo '{shown}' cannot be read: {exc}.", "Check the path.") from None
    if stat.S_ISDIR(info.st_mode):
        raise BadImageError(f"'{shown}' is a folder, not a photo.", "Choose an image file inside it.")
    if not stat.S_ISREG(info.st_mode):
        # A FIFO or device would block or never end; refuse before opening.
        raise BadImageError(f"'{shown}' is not a regular file.", "Choose a JPEG or PNG photo file.")
    if info.st_size == 0:
        raise BadImageError(
            f"The photo '{shown}' is empty (0 bytes).",
            "The file was not saved or copied completely; export or copy it again.",
        )
    if info.st_size > max_file_bytes:
        raise BadImageError(
            f"The photo '{shown}' is {info.st_size / 2**20:.0f} MB; the limit is {max_file_bytes / 2**20:.0f} MB.",
            "Export a smaller JPEG (a few thousand pixels on the long side is plenty).",
        )
    try:
        with open(path, "rb") as handle:
            data = handle.read(max_file_bytes + 1)
    except PermissionError:
        raise BadImageError(
            f"The photo '{shown}' cannot be read: permission denied.",
            "Give your user read permission on the file, or copy it somewhere you own.",
        ) from None
    except OSError as exc:
        raise BadImageError(f"The photo '{shown}' cannot be read: {exc}.", "Copy it to a local disk.") from None
    if not data:
        raise BadImageError(f"The photo '{shown}' is empty (0 bytes).", "Export or copy the photo again.")
    return data, path.resolve()


def decode_image_bytes(
    data: bytes, *, name: str = "image", max_pixels: int = MAX_PIXELS, min_side: int = MIN_SIDE
) -> tuple[np.ndarray, _DecodeInfo]:
    """Decode an encoded photo held in memory to upright 8-bit RGB (see the module notes)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    notes: list[str] = []
    try:
        with warnings.catch_warnings():
            # Our own pixel limit below is stricter; Pillow's warning between its two limits is noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except Image.DecompressionBombError:
        raise _too_large(name, None, max_pixels) from None
    except UnidentifiedImageError:
        raise BadImageError(
            f"'{name}' is not a photo in a supported format ({_kind_hint(data)}).",
            "Use a JPEG, PNG, WebP, TIFF or BMP photo. " + _CONVERT_FIX,
        ) from None
    except Exception as exc:  # Pillow raises SyntaxError, ValueError, struct.error ... on corrupt headers
        raise BadImageError(
            f"'{name}' looks like an image but its header is damaged ({exc}).",
            "The file is corrupt; " + _CONVERT_FIX,
        ) from None

    with image:
        width, height = image.size
        if width * height > max_pixels:
            raise _too_large(name, (width, height), max_pixels)
        if width < min_side or height < min_side:
            raise BadImageError(
                f"'{name}' is only {width}×{height} pixels; a face needs at least {min_side} pixels.",
                "Use a larger photo in which the face is at least about 100 pixels wide.",
            )
        n_frames = int(getattr(image, "n_frames", 1) or 1)
        if n_frames > 1:
            notes.append(f"the file holds {n_frames} frames; the first one is used")
        file_format = str(image.format)
        file_mode = str(image.mode)
        try:
            image.load()
        except Exception as exc:  # truncated data, bad CRC, broken compression stream, ...
            raise BadImageError(
                f"'{name}' could not be decoded: {exc}.",
                "The file is incomplete or damaged (an interrupted download or copy?); "
                "get the photo again or re-export it.",
            ) from None
        orientation = _exif_orientation(image)
        upright: Image.Image = image
        if orientation != 1:
            try:
                upright = ImageOps.exif_transpose(image)
            except Exception as exc:  # a broken EXIF block must not lose the photo
                notes.append(f"the EXIF orientation {orientation} could not be applied ({exc})")
        rgb = _to_rgb8(upright)
    return rgb, _DecodeInfo(
        original_size=(int(width), int(height)),
        format=file_format,
        mode=file_mode,
        exif_orientation=orientation,
        n_frames=n_frames,
        notes=tuple(notes),
    )


def _too_large(name: str, size: tuple[int, int] | None, max_pixels: int) -> BadImageError:
    shown = f"{size[0]}×{size[1]} pixels" if size else "too many pixels"
    return BadImageError(
        f"'{name}' has {shown}; the limit is {max_pixels / 1e6:.0f} megapixels.",
        "Downscale the photo (a few thousand pixels on the long side is plenty) and try again.",
    )


def _exif_orientation(image: object) -> int:
    try:
        value = int(image.getexif().get(0x0112, 1))  # type: ignore[attr-defined]
    except Exception:
        return 1
    return value if 1 <= value <= 8 else 1


def _to_rgb8(image: object) -> np.ndarray:
    """Any Pillow mode → (H, W, 3) uint8 RGB, transparency composited over white."""
    from PIL import Image

    assert isinstance(image, Image.Image)
    mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        gray = _scale_to_uint8(np.asarray(image), mode)
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    has_alpha = mode in ("RGBA", "LA", "La", "RGBa", "PA") or (
        mode in ("P", "L", "RGB") and "transparency" in image.info
    )
    if has_alpha:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        white.alpha_composite(rgba)
        return np.ascontiguousarray(np.asarray(white.convert("RGB")))
    return np.ascontiguousarray(np.asarray(image.convert("RGB")))


def _scale_to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    """16-bit / 32-bit integer and float grayscale to 8 bits."""
    if mode == "F":
        finite = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        # Float images are either in [0, 1] or in 8/16-bit units; pick the range that contains them.
        top = float(finite.max(initial=0.0))
        full = 1.0 if top <= 1.0 else 255.0 if top <= 255.0 else 65535.0
        return np.clip(np.rint(finite / full * 255.0), 0, 255).astype(np.uint8)
    as_int = values.astype(np.int64)
    top = int(as_int.max(initial=0))
    # Mode "I" also holds 8-bit data widened by some writers; only scale when the values need it.
    full = 65535 if (mode.startswith("I;16") or top > 255) else 255
    return np.clip(np.rint(as_int * (255.0 / full)), 0, 255).astype(np.uint8)


def _kind_hint(data: bytes) -> str:
    """A short description of what the bytes actually are, for the error message."""
    head = data[:512].lstrip()
    lowered = head.lower()
    if lowered.startswith((b"<!doctype html", b"<html")) or b"<html" in lowered:
        return "it is an HTML page, maybe a saved web page instead of the picture"
    if lowered.startswith(b"<?xml") or b"<svg" in lowered:
        return "it is an XML/SVG file"
    if head.startswith(b"%PDF"):
        return "it is a PDF document"
    if head.startswith(b"%!PS"):
        return "it is a PostScript/EPS file"
    if head.startswith(b"PK\x03\x04"):
        return "it is a ZIP archive"
    if data[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftypmsf1", b"ftypavif"):
        return "it is a HEIC/AVIF photo, which is not supported"
    try:
        data[:256].decode("utf-8")
    except UnicodeDecodeError:
        return "unrecognised binary data"
    return "it is a text file"
