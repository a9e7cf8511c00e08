"""Frames of a clip, streamed: a video through OpenCV, or a folder of images in natural name order.

Everything that can make a clip unusable is checked when the source is opened, before any heavy work:
a missing path, a video OpenCV cannot open or whose first frame does not decode, an empty folder, images
of different sizes, more frames than the limit. Frames are then decoded one at a time (never all in
memory); a single frame that does not decode is yielded as ``None`` and reported by the caller.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import BadImageError, BadRequestError
from ..preprocess.image import ACCEPTED_FORMATS, MAX_PIXELS, MIN_SIDE, load_image
from ..sequence_result import MAX_FRAMES

#: File name endings of frames in a folder (other files, e.g. a notes.txt, are ignored).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp")
#: Frame rate recorded for a folder of images when none is given.
DEFAULT_FOLDER_FPS = 24.0
_SHORTER_FIX = "Trim the clip, lower --fps, or set --max-frames (at most {limit}); or split the clip."


@dataclass(frozen=True)
class Frame:
    index: int  # position in the clip as processed (0..n_frames-1)
    name: str  # file name, or "frame_000123" (the source frame number) for a video
    rgb: np.ndarray | None  # (H, W, 3) uint8, None when this frame could not be decoded
    error: str = ""  # why rgb is None


@dataclass(frozen=True)
class FrameSource:
    """An opened clip: what it is and how to read it again (each ``frames()`` call streams from the start)."""

    path: str
    kind: str  # "video" | "folder"
    fps: float  # of the frames as processed (after any subsampling)
    width: int
    height: int
    n_frames: int
    files: tuple[str, ...] = ()  # folder: the frame files in order
    step: int = 1  # video: every step-th source frame is processed

    def meta(self) -> dict[str, object]:
        return {"path": self.path, "kind": self.kind, "fps": self.fps, "width": self.width, "height": self.height,
                "n_frames": self.n_frames, "step": self.step}  # fmt: skip

    def frames(self, start: int = 0, only: Collection[int] | None = None) -> Iterator[Frame]:
        """Frames ``start``.. in order (or just those in ``only``), decoded one at a time."""
        wanted = set(range(start, self.n_frames)) if only is None else {i for i in only if start <= i < self.n_frames}
        if self.kind == "folder":
            yield from self._folder_frames(sorted(wanted))
        else:
            yield from self._video_frames(wanted)

    def _folder_frames(self, indices: list[int]) -> Iterator[Frame]:
        for index in indices:
            path = Path(self.path) / self.files[index]
            try:
                image = load_image(path)
            except BadImageError as exc:
                yield Frame(index, path.name, None, exc.message)
                continue
            if (image.width, image.height) != (self.width, self.height):
                yield Frame(index, path.name, None, f"{image.width}x{image.height}, not {self.width}x{self.height}")
                continue
            yield Frame(index, path.name, image.rgb)

    def _video_frames(self, indices: set[int]) -> Iterator[Frame]:
        import cv2

        capture = cv2.VideoCapture(self.path)
        try:
            position = 0  # the source frame the capture delivers next
            for index in range(max(indices, default=-1) + 1):
                wanted = index * self.step
                name = f"frame_{wanted:06d}"
                ok = True
                while ok and position < wanted:  # skipped frames are grabbed, not converted
                    ok, position = capture.grab(), position + 1
                if index not in indices:  # done before a resume, or not asked for: not decoded
                    continue
                bgr = None
                if ok:
                    ok, bgr = capture.read()
                    position += 1
                if not ok or bgr is None:
                    yield Frame(index, name, None, "this frame of the video could not be decoded")
                    continue
                yield Frame(index, name, np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))
        finally:
            capture.release()


def natural_key(name: str) -> list[object]:
    """Sort key: digit runs compare as numbers (frame_9 before frame_10), the rest case-insensitively."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def open_source(path: str, *, max_frames: int = MAX_FRAMES, fps: float | None = None) -> FrameSource:
    """Open a video file or a folder of images; raise a clear error before any work if it cannot be used."""
    target = Path(path).expanduser()
    limit = min(max_frames, MAX_FRAMES)
    fix = "Give a video file or a folder of images that you may read."
    try:
        if not target.exists():
            raise BadRequestError(f"no such video or folder: {path}", fix)
        if target.is_dir():
            return _open_folder(target, limit, fps)
        if not target.is_file():
            raise BadRequestError(f"{path} is neither a file nor a folder", fix)
        return _open_video(target, limit, fps)
    except OSError as exc:  # a folder that cannot be listed, a file that cannot be opened
        raise BadRequestError(f"cannot read {path}: {exc.strerror or exc}", fix) from None


def _header_size(path: Path) -> tuple[int, int] | None:
    """(width, height) of an image, upright, from its header; None when the header does not read."""
    from PIL import Image

    try:
        with Image.open(path, formats=ACCEPTED_FORMATS) as image:
            width, height = image.size
            orientation = image.getexif().get(0x0112, 1)
    except Exception:  # any decoder failure: the frame is reported unreadable, the clip goes on
        return None
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def _open_folder(folder: Path, limit: int, fps: float | None) -> FrameSource:
    files = sorted((p.name for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
                   key=natural_key)  # fmt: skip
    if not files:
        raise BadRequestError(
            f"the folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})",
            "Put the frames (one image per frame, named in order) in the folder, or give a video file.",
        )
    if len(files) > limit:
        raise BadRequestError(f"the folder holds {len(files)} images, more than the limit of {limit} frames",
                              _SHORTER_FIX.format(limit=MAX_FRAMES))  # fmt: skip
    sizes = {name: _header_size(folder / name) for name in files}
    readable = {name: size for name, size in sizes.items() if size is not None}
    if not readable:
        raise BadImageError(
            f"none of the {len(files)} images in {folder} can be read", "Export the frames as PNG or JPEG."
        )
    distinct = sorted(set(readable.values()))
    if len(distinct) > 1:
        first = {size: next(n for n, s in readable.items() if s == size) for size in distinct}
        shown = ", ".join(f"{w}x{h} ({first[(w, h)]})" for w, h in distinct[:4])
        raise BadRequestError(f"the images in {folder} have different sizes: {shown}",
                              "Export every frame at the same size.")  # fmt: skip
    width, height = distinct[0]
    _check_frame_size(width, height, str(folder))
    return FrameSource(str(folder), "folder", float(fps or DEFAULT_FOLDER_FPS), width, height, len(files), tuple(files))


def _check_frame_size(width: int, height: int, where: str) -> None:
    if width * height > MAX_PIXELS or min(width, height) < MIN_SIDE:
        raise BadImageError(
            f"the frames of {where} are {width}x{height} pixels",
            f"Frames must be at least {MIN_SIDE} pixels a side and at most {MAX_PIXELS:,} pixels.",
        )


def _open_video(path: Path, limit: int, fps: float | None) -> FrameSource:
    import cv2

    fix = "Check that the file is a video OpenCV can read (MP4/H.264, AVI, MOV), or export the frames as images."
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise BadImageError(f"{path} is not a video this worker can open", fix)
        ok, first = capture.read()
        if not ok or first is None:
            raise BadImageError(f"{path} holds no frame that can be decoded (an empty or broken video)", fix)
        source_fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        if count <= 0:  # some containers do not say: count by grabbing (no decoding)
            count = 1
            while capture.grab():
                count += 1
    finally:
        capture.release()
    source_fps = source_fps if math.isfinite(source_fps) and source_fps > 0 else DEFAULT_FOLDER_FPS
    step = max(1, round(source_fps / fps)) if fps else 1
    n_frames = (count + step - 1) // step
    if n_frames > limit:
        raise BadRequestError(f"the video has {n_frames} frames to process, more than the limit of {limit}",
                              _SHORTER_FIX.format(limit=MAX_FRAMES))  # fmt: skip
    height, width = first.shape[:2]
    _check_frame_size(width, height, str(path))
    return FrameSource(str(path), "video", source_fps / step, width, height, n_frames, step=step)
