"""Training data: one record per image (photo path, face points, FLAME targets) and the crops the encoders see.

Three layouts are read:

* **synthetic / index** – a folder with ``index.json`` (written by :mod:`.synthetic`): ``images/*.png`` and
  ``labels/*.npz`` holding ``shape`` (300), ``expression`` (50), ``jaw`` (3), ``points5`` and ``box``.
* **mica** – MICA-style per-subject FLAME fits: ``ROOT/<subject>/`` holds the subject's images
  (``.jpg`` / ``.jpeg`` / ``.png``) and one ``*.npz`` with the identity as ``shape`` or ``betas`` (the first
  300 values are used; shorter vectors are zero-padded). Every image of the subject gets that shape.
* **famos** – FaMoS-style expression fits: every ``ROOT/**/<frame>.npz`` holds ``expression`` (≥ 50 values)
  and ``pose``, whose jaw is ``pose[3:6]`` (FaMoS order [neck, jaw, eyes], spec section 2); the frame's
  image is ``<frame>.png`` / ``.jpg`` next to it. A ``shape`` array, when present, is kept too.

Face points: ``<image stem>.points5.json`` (five [x, y] pairs: eye centres, nose tip, mouth corners) next
to an image is used when present; otherwise the worker's face detector runs once per image.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import WorkerError
from ..preprocess.alignment import box_from_points5
from ..preprocess.crops import arcface_crop, clip_normalise, farl_crop

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
N_SHAPE = 300
N_EXPRESSION = 50
FORMATS = ("index", "mica", "famos")


class DatasetError(WorkerError):
    """A training data folder that cannot be read as the requested layout."""

    code = "bad_request"


@dataclass(frozen=True)
class TrainingRecord:
    """One training image and its targets; ``shape`` / ``expression`` (50 + 3 jaw) may be absent."""

    image: Path
    points5: np.ndarray | None
    shape: np.ndarray | None
    expression: np.ndarray | None
    label: Path | None = None  # the synthetic label file (visibility masks for evaluation)


def _pad(values: np.ndarray, width: int) -> np.ndarray:
    values = np.asarray(values, dtype=np.float32).reshape(-1)[:width]
    return np.pad(values, (0, width - len(values)))


def _npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: np.asarray(data[key]) for key in data.files}
    except (OSError, ValueError) as error:
        raise DatasetError(f"cannot read {path}: {error}", "Write the fit as a plain numpy .npz file.") from None


def _points_file(image: Path) -> np.ndarray | None:
    path = image.with_name(image.stem + ".points5.json")
    if not path.is_file():
        return None
    points = np.asarray(json.loads(path.read_text(encoding="utf-8")), dtype=np.float64)
    if points.shape != (5, 2):
        raise DatasetError(f"{path} must hold five [x, y] pairs, got shape {points.shape}", "Fix the file.")
    return points


def read_index(folder: Path) -> list[TrainingRecord]:
    """Records of an ``index.json`` folder (the synthetic data set)."""
    from .synthetic import INDEX_NAME

    path = Path(folder) / INDEX_NAME
    if not path.is_file():
        raise DatasetError(f"{folder} has no {INDEX_NAME}", "Make one with `ofer-worker train synth --out DIR`.")
    index = json.loads(path.read_text(encoding="utf-8"))
    records = []
    for entry in index.get("entries", []):
        label = Path(folder) / entry["label"]
        data = _npz(label)
        records.append(
            TrainingRecord(
                image=Path(folder) / entry["image"],
                points5=np.asarray(data["points5"], dtype=np.float64),
                shape=_pad(data["shape"], N_SHAPE),
                expression=np.concatenate([_pad(data["expression"], N_EXPRESSION), _pad(data["jaw"], 3)]),
                label=label,
            )
        )
    return records


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def read_mica(root: Path) -> list[TrainingRecord]:
    """MICA-style subjects: ``ROOT/<subject>/`` with images and one ``*.npz`` holding ``shape`` or ``betas``."""
    records = []
    for subject in sorted(p for p in Path(root).iterdir() if p.is_dir()):
        fits = sorted(subject.glob("*.npz"))
        images = _images_in(subject)
        if not fits or not images:
            continue
        data = _npz(fits[0])
        key = "shape" if "shape" in data else "betas" if "betas" in data else None
        if key is None:
            raise DatasetError(
                f"{fits[0]} has neither 'shape' nor 'betas' (keys: {sorted(data)})",
                "Save the subject's FLAME identity coefficients under 'shape'.",
            )
        shape = _pad(data[key], N_SHAPE)
        records += [TrainingRecord(image, _points_file(image), shape, None) for image in images]
    if not records:
        raise DatasetError(f"no subject folder with images and a .npz fit under {root}", "See the layout in the docs.")
    return records


def read_famos(root: Path) -> list[TrainingRecord]:
    """FaMoS-style frames: ``<frame>.npz`` with ``expression`` and ``pose`` (jaw = pose[3:6]) beside an image."""
    records = []
    for fit in sorted(Path(root).rglob("*.npz")):
        image = next((fit.with_suffix(s) for s in IMAGE_SUFFIXES if fit.with_suffix(s).is_file()), None)
        if image is None:
            continue
        data = _npz(fit)
        if "expression" not in data or "pose" not in data:
            raise DatasetError(
                f"{fit} needs 'expression' and 'pose' (keys: {sorted(data)})",
                "Save the frame's FLAME expression and the FaMoS pose vector [neck, jaw, eyes].",
            )
        pose = np.asarray(data["pose"], dtype=np.float32).reshape(-1)
        if pose.shape[0] < 6:
            raise DatasetError(f"{fit}: 'pose' has {pose.shape[0]} values, the jaw is pose[3:6]", "Fix the fit.")
        expression = np.concatenate([_pad(data["expression"], N_EXPRESSION), pose[3:6]])
        shape = _pad(data["shape"], N_SHAPE) if "shape" in data else None
        records.append(TrainingRecord(image, _points_file(image), shape, expression))
    if not records:
        raise DatasetError(f"no <frame>.npz with an image beside it under {root}", "See the layout in the docs.")
    return records


def read_records(folder: Path, data_format: str = "index") -> list[TrainingRecord]:
    readers: dict[str, Callable[[Path], list[TrainingRecord]]] = {
        "index": read_index,
        "mica": read_mica,
        "famos": read_famos,
    }
    if data_format not in readers:
        raise DatasetError(f"unknown data format {data_format!r}", f"Use one of {', '.join(FORMATS)}.")
    if not Path(folder).is_dir():
        raise DatasetError(f"the data folder {folder} does not exist", "Check --data.")
    return readers[data_format](Path(folder))


@dataclass
class CropBatch:
    blob: torch.Tensor  # (B, 3, 112, 112) ArcFace input
    image: torch.Tensor  # (B, 3, 224, 224) CLIP-normalised FaRL input
    shape: torch.Tensor  # (B, 300)
    expression: torch.Tensor  # (B, 53)
    index: torch.Tensor  # (B,) record indices


class CropDataset:
    """The encoder crops of every record, made once and kept as uint8 (records are small in number)."""

    def __init__(self, records: Sequence[TrainingRecord], channel_order: str = "BGR") -> None:
        if not records:
            raise DatasetError("the training data set is empty", "Point --data at a folder with samples.")
        self.records = list(records)
        self.channel_order = channel_order
        self._arc: dict[int, np.ndarray] = {}
        self._farl: dict[int, np.ndarray] = {}
        self._detector: object | None = None

    def __len__(self) -> int:
        return len(self.records)

    def _points(self, i: int, rgb: np.ndarray) -> np.ndarray:
        record = self.records[i]
        if record.points5 is not None:
            return record.points5
        from ..preprocess.detect import FaceDetector
        from ..preprocess.image import load_image

        if self._detector is None:
            self._detector = FaceDetector()
        detection = self._detector.detect(load_image(record.image))  # type: ignore[attr-defined]
        return np.asarray(detection.points5, dtype=np.float64)

    def _crops(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if i not in self._arc:
            import cv2

            bgr = cv2.imread(str(self.records[i].image), cv2.IMREAD_COLOR)
            if bgr is None:
                raise DatasetError(f"cannot read image {self.records[i].image}", "Replace the file.")
            rgb = np.ascontiguousarray(bgr[:, :, ::-1])
            points = self._points(i, rgb)
            self._arc[i] = arcface_crop(rgb, points, "RGB").image
            self._farl[i] = farl_crop(rgb, box_from_points5(points)).image
        return self._arc[i], self._farl[i]

    def batch(self, indices: Sequence[int], *, crops: bool = True) -> CropBatch:
        """Crops (normalised) and targets of ``indices``; ``crops=False``: targets only, empty crop tensors
        (a trainer whose frozen encoders' context is already cached needs no pixels)."""
        blobs, images, shapes, expressions = [], [], [], []
        for i in indices:
            if crops:
                arc, farl = self._crops(int(i))
                planes = arc if self.channel_order == "RGB" else arc[:, :, ::-1]
                blobs.append(((planes.astype(np.float32) - 127.5) / 127.5).transpose(2, 0, 1))
                images.append(clip_normalise(farl))
            record = self.records[int(i)]
            shapes.append(record.shape if record.shape is not None else np.full(N_SHAPE, np.nan, np.float32))
            expressions.append(record.expression if record.expression is not None else np.full(53, np.nan, np.float32))
        empty = torch.empty(0, 3, 0, 0)
        return CropBatch(
            blob=torch.from_numpy(np.ascontiguousarray(np.stack(blobs))) if crops else empty,
            image=torch.from_numpy(np.stack(images)) if crops else empty,
            shape=torch.from_numpy(np.stack(shapes).astype(np.float32)),
            expression=torch.from_numpy(np.stack(expressions).astype(np.float32)),
            index=torch.as_tensor(list(indices), dtype=torch.int64),
        )
