"""A second face detector: the MTCNN cascade (Zhang et al. 2016), run with the weights that come inside the
``facenet-pytorch`` wheel (MIT licence; installed with ``--no-deps``, never imported).

Why a second detector: the official preprocessing detects with SCRFD, which answers with a box and five
points even where the eyes are covered. MediaPipe's face mesh guesses hidden eyes differently (a 5–10°
rotation on the fixtures, docs/preprocessing.md section 5); MTCNN, like SCRFD, regresses the five points
(eye centres, nose tip, mouth corners: the ArcFace template's convention) directly from the face patch.

The cascade, written here from the paper (the package is only a weight carrier: it imports torchvision,
which the worker does not have):

1. P-Net, fully convolutional, on an image pyramid (the face sizes ``min_face`` … the image, factor
   0.709): every 12×12 window (stride 2) scoring ≥ 0.6 is a proposal, refined by its box regression;
   non-maximum suppression (NMS) per scale (IoU 0.5) and over all scales (0.7);
2. R-Net on each proposal squared and resampled to 24×24 (zero outside the photo): score ≥ 0.7, NMS 0.7,
   box regression;
3. O-Net on 48×48 resamples: score ≥ 0.7, box regression, five landmarks (fractions of the box), and NMS
   by the overlap over the smaller box (0.7).

The weights were converted from the authors' Caffe models, trained on column-major (MATLAB) images: the
convolutions take ordinary (C, H, W) images, but the dense layers of R-Net and O-Net expect their input
flattened in (W, H, C) order. Input pixels are RGB, scaled as (x − 127.5) / 128.
"""

from __future__ import annotations

import importlib.util
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

#: The pip package that carries the weights, and the version whose files were checked (sizes below).
WEIGHTS_PACKAGE = "facenet_pytorch"
WEIGHTS_REQUIREMENT = "facenet-pytorch==2.6.0"
MTCNN_FIX = (
    "Install the MTCNN weights into the worker's environment without their dependencies: "
    f"`pip install --no-deps {WEIGHTS_REQUIREMENT}` (the managed environment does this). "
    "Without them the face mesh chain is used alone."
)
#: Score thresholds of the three stages (the paper's released settings).
THRESHOLDS = (0.6, 0.7, 0.7)
PYRAMID_FACTOR = 0.709
MIN_FACE = 20

#: Every tensor of the three state dicts and its shape: a file that does not match is refused.
SHAPES: dict[str, dict[str, tuple[int, ...]]] = {
    "pnet": {
        "conv1.weight": (10, 3, 3, 3), "conv1.bias": (10,), "prelu1.weight": (10,),
        "conv2.weight": (16, 10, 3, 3), "conv2.bias": (16,), "prelu2.weight": (16,),
        "conv3.weight": (32, 16, 3, 3), "conv3.bias": (32,), "prelu3.weight": (32,),
        "conv4_1.weight": (2, 32, 1, 1), "conv4_1.bias": (2,), "conv4_2.weight": (4, 32, 1, 1), "conv4_2.bias": (4,),
    },
    "rnet": {
        "conv1.weight": (28, 3, 3, 3), "conv1.bias": (28,), "prelu1.weight": (28,),
        "conv2.weight": (48, 28, 3, 3), "conv2.bias": (48,), "prelu2.weight": (48,),
        "conv3.weight": (64, 48, 2, 2), "conv3.bias": (64,), "prelu3.weight": (64,),
        "dense4.weight": (128, 576), "dense4.bias": (128,), "prelu4.weight": (128,),
        "dense5_1.weight": (2, 128), "dense5_1.bias": (2,), "dense5_2.weight": (4, 128), "dense5_2.bias": (4,),
    },
    "onet": {
        "conv1.weight": (32, 3, 3, 3), "conv1.bias": (32,), "prelu1.weight": (32,),
        "conv2.weight": (64, 32, 3, 3), "conv2.bias": (64,), "prelu2.weight": (64,),
        "conv3.weight": (64, 64, 3, 3), "conv3.bias": (64,), "prelu3.weight": (64,),
        "conv4.weight": (128, 64, 2, 2), "conv4.bias": (128,), "prelu4.weight": (128,),
        "dense5.weight": (256, 1152), "dense5.bias": (256,), "prelu5.weight": (256,),
        "dense6_1.weight": (2, 256), "dense6_1.bias": (2,), "dense6_2.weight": (4, 256), "dense6_2.bias": (4,),
        "dense6_3.weight": (10, 256), "dense6_3.bias": (10,),
    },
}  # fmt: skip
#: O-Net as a landmark regressor on a face box found otherwise (``Mtcnn.landmarks_in_box``): its input
#: box jittered by these scales and shifts (fractions of the box side), each patch also mirrored; the
#: points are averaged. One 48-px patch is coarse: averaging 16 of them steadies the points (on the
#: fixtures: 5.34 px from one patch and its mirror, 5.03 from these 16, 5.13 from 54; docs/preprocessing.md).
REFINE_SCALES: tuple[float, ...] = (0.95, 1.05)
REFINE_SHIFTS: tuple[float, ...] = (-0.03, 0.03)
#: A mirror image's five points in the ArcFace order (left and right swap).
MIRROR_ORDER = (1, 0, 2, 4, 3)
#: Largest weight file accepted (the three are 29 KB, 402 KB and 1.6 MB).
MAX_FILE_BYTES = 4 * 2**20


class MtcnnUnavailableError(RuntimeError):
    """The weights are not installed or not what was checked; the message says how to install them."""


@dataclass(frozen=True)
class MtcnnFace:
    """One face: ``box`` [x0, y0, x1, y1] in pixels (x1 − x0 pixels wide), ``points5`` (5, 2) in the
    ArcFace order (image-left eye, image-right eye, nose tip, image-left and image-right mouth corner),
    O-Net's ``score``."""

    box: np.ndarray
    points5: np.ndarray
    score: float


@dataclass(frozen=True)
class BoxLandmarks:
    """O-Net's five points for a given face box, averaged over jittered and mirrored patches, and the
    median of its face scores over those patches (how much it takes the box for a face)."""

    points5: np.ndarray
    score: float
    spread: float


def weights_folder() -> Path | None:
    """The folder holding pnet.pt, rnet.pt and onet.pt, found without importing the package (its
    ``__init__`` imports torchvision), or None when the package is not installed."""
    try:
        spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        folder = Path(location) / "data"
        if all((folder / f"{name}.pt").is_file() for name in SHAPES):
            return folder
    return None


def load_state(path: Path, name: str) -> dict[str, torch.Tensor]:
    """One network's state dict, loaded with ``weights_only=True`` and checked tensor by tensor."""
    import torch

    if path.stat().st_size > MAX_FILE_BYTES:
        raise MtcnnUnavailableError(f"{path} is {path.stat().st_size} bytes, larger than any MTCNN network")
    state = torch.load(path, map_location="cpu", weights_only=True)
    expected = SHAPES[name]
    if not isinstance(state, dict) or set(state) != set(expected):
        raise MtcnnUnavailableError(f"{path} does not hold the {name} tensors this detector was written for")
    for key, shape in expected.items():
        tensor = state[key]
        if not isinstance(tensor, torch.Tensor) or tuple(tensor.shape) != shape or not tensor.is_floating_point():
            raise MtcnnUnavailableError(f"{path}: {key} is not a float tensor of shape {shape}")
    return {key: state[key].float().contiguous() for key in expected}


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, mode: str = "union") -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, best score first: a box is dropped when its overlap
    with a kept one exceeds ``threshold``, overlap being intersection over union ("union") or over the
    smaller box ("min", which also removes a small box nested in a large one)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    scores = np.asarray(scores, np.float64).reshape(-1)
    if mode not in ("union", "min"):
        raise ValueError(f"unknown NMS mode {mode!r}")
    areas = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    order = np.argsort(-scores, kind="stable")
    kept: list[int] = []
    while order.size:
        best, rest = int(order[0]), order[1:]
        kept.append(best)
        low = np.maximum(boxes[best, :2], boxes[rest, :2])
        high = np.minimum(boxes[best, 2:], boxes[rest, 2:])
        inter = np.prod(np.clip(high - low, 0, None), axis=1)
        smaller = np.minimum(areas[best], areas[rest])
        denominator = areas[best] + areas[rest] - inter if mode == "union" else smaller
        ratio = np.where(denominator > 0, inter / np.maximum(denominator, 1e-12), 0.0)
        order = rest[ratio <= threshold]
    return np.array(kept, dtype=np.int64)


def square_boxes(boxes: np.ndarray) -> np.ndarray:
    """Each box made square (side = its longer side) around its centre."""
    boxes = np.asarray(boxes, np.float64).copy()
    centre = (boxes[:, :2] + boxes[:, 2:4]) / 2.0
    half = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])[:, None] / 2.0
    boxes[:, :2], boxes[:, 2:4] = centre - half, centre + half
    return boxes


def regress(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Boxes moved by the networks' regression: each edge by its offset × the box width or height."""
    size = np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]] * 2, axis=1)
    return boxes[:, :4] + offsets * size


class Mtcnn:
    """The cascade over the three networks (CPU, float32; a photo costs tens of milliseconds)."""

    def __init__(self, folder: Path | None = None, *, min_face: int = MIN_FACE) -> None:
        folder = folder if folder is not None else weights_folder()
        if folder is None:
            raise MtcnnUnavailableError(f"The MTCNN weights ({WEIGHTS_REQUIREMENT}) are not installed. {MTCNN_FIX}")
        self.state = {name: load_state(folder / f"{name}.pt", name) for name in SHAPES}
        self.min_face = min_face

    def detect(self, rgb: np.ndarray, thresholds: tuple[float, float, float] = THRESHOLDS) -> list[MtcnnFace]:
        """Every face in an (H, W, 3) uint8 RGB image, best score first."""
        import torch

        rgb = np.ascontiguousarray(rgb[:, :, :3], dtype=np.uint8)
        with torch.inference_mode():
            boxes = self._proposals(rgb, thresholds[0])
            if len(boxes):
                boxes = self._refine(rgb, boxes, thresholds[1])
            if not len(boxes):
                return []
            return self._output(rgb, boxes, thresholds[2])

    def landmarks_in_box(self, rgb: np.ndarray, box: np.ndarray) -> BoxLandmarks:
        """O-Net's five points for the face in ``box`` (e.g. the SCRFD-equivalent box of a face the face
        mesh found), averaged over jittered boxes and mirrored patches (module constants)."""
        import torch

        rgb = np.ascontiguousarray(rgb[:, :, :3], dtype=np.uint8)
        box = np.asarray(box, np.float64)
        centre, side = (box[:2] + box[2:4]) / 2.0, float((box[2] - box[0]) + (box[3] - box[1])) / 2.0
        jittered = []
        for scale, dx, dy in itertools.product(REFINE_SCALES, REFINE_SHIFTS, REFINE_SHIFTS):
            shifted = centre + np.array([dx, dy]) * side
            jittered.append(np.concatenate([shifted - scale * side / 2.0, shifted + scale * side / 2.0]))
        boxes = np.array(jittered)
        plain = patches(rgb, boxes, 48)
        # A mirrored patch is the patch of the mirrored box in the mirrored photo: its points come back
        # with x fractions reflected and left and right swapped.
        with torch.inference_mode():
            scores, _, marks = self._onet(np.concatenate([plain, plain[:, :, ::-1]]))
        fractions = np.stack([marks[:, :5], marks[:, 5:]], axis=2)
        n = len(boxes)
        mirrored = fractions[n:][:, list(MIRROR_ORDER)]
        mirrored[:, :, 0] = 1.0 - mirrored[:, :, 0]
        size = (boxes[:, 2:4] - boxes[:, :2])[:, None, :]
        points = np.concatenate([boxes[:, None, :2] + fractions[:n] * size, boxes[:, None, :2] + mirrored * size])
        mean = points.mean(axis=0)
        spread = float(np.linalg.norm(points - mean, axis=2).mean() / max(side, 1e-6))
        return BoxLandmarks(points5=mean, score=float(np.median(scores)), spread=spread)

    def _proposals(self, rgb: np.ndarray, threshold: float) -> np.ndarray:
        """Stage 1: P-Net windows over the pyramid, NMS per scale and overall, regressed and squared."""
        import cv2

        height, width = rgb.shape[:2]
        found = []
        scale = 12.0 / self.min_face
        while min(height, width) * scale >= 12.0:
            size = (int(width * scale + 1), int(height * scale + 1))
            scaled = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
            probability, offsets = self._pnet(scaled)
            rows, cols = np.nonzero(probability >= threshold)
            if rows.size:
                # Each output cell sees a 12×12 window of the scaled image at stride 2.
                windows = np.stack([cols * 2.0, rows * 2.0, cols * 2.0 + 12.0, rows * 2.0 + 12.0], axis=1) / scale
                scores = probability[rows, cols]
                keep = nms(windows, scores, 0.5)
                found.append(np.hstack([windows[keep], scores[keep, None], offsets[:, rows, cols].T[keep]]))
            scale *= PYRAMID_FACTOR
        if not found:
            return np.empty((0, 5))
        every = np.vstack(found)
        every = every[nms(every[:, :4], every[:, 4], 0.7)]
        return np.hstack([square_boxes(regress(every[:, :4], every[:, 5:9])), every[:, 4:5]])

    def _refine(self, rgb: np.ndarray, boxes: np.ndarray, threshold: float) -> np.ndarray:
        """Stage 2: R-Net on 24×24 resamples; kept boxes regressed and squared."""
        scores, offsets = self._rnet(patches(rgb, boxes, 24))
        keep = scores >= threshold
        boxes, scores, offsets = boxes[keep], scores[keep], offsets[keep]
        order = nms(boxes[:, :4], scores, 0.7)
        return np.hstack([square_boxes(regress(boxes[order, :4], offsets[order])), scores[order, None]])

    def _output(self, rgb: np.ndarray, boxes: np.ndarray, threshold: float) -> list[MtcnnFace]:
        """Stage 3: O-Net on 48×48 resamples: score, final box, five points."""
        scores, offsets, marks = self._onet(patches(rgb, boxes, 48))
        keep = scores >= threshold
        boxes, scores, offsets, marks = boxes[keep, :4], scores[keep], offsets[keep], marks[keep]
        size = np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], axis=1)
        # O-Net gives the five x fractions, then the five y fractions, of the (squared) input box.
        points = boxes[:, None, :2] + np.stack([marks[:, :5], marks[:, 5:]], axis=2) * size[:, None, :]
        final = regress(boxes, offsets)
        order = nms(final, scores, 0.7, mode="min")
        return [MtcnnFace(box=final[i], points5=points[i], score=float(scores[i])) for i in order]

    def _pnet(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import torch.nn.functional as F

        s = self.state["pnet"]
        x = _conv_prelu(_tensor(rgb[None]), s, "1")
        x = F.max_pool2d(x, 2, 2, ceil_mode=True)
        x = _conv_prelu(_conv_prelu(x, s, "2"), s, "3")
        probability = F.softmax(F.conv2d(x, s["conv4_1.weight"], s["conv4_1.bias"]), dim=1)[0, 1]
        offsets = F.conv2d(x, s["conv4_2.weight"], s["conv4_2.bias"])[0]
        return probability.numpy().astype(np.float64), offsets.numpy().astype(np.float64)

    def _rnet(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import torch.nn.functional as F

        s = self.state["rnet"]
        x = F.max_pool2d(_conv_prelu(_tensor(batch), s, "1"), 3, 2, ceil_mode=True)
        x = F.max_pool2d(_conv_prelu(x, s, "2"), 3, 2, ceil_mode=True)
        x = _dense_prelu(_flatten_whc(_conv_prelu(x, s, "3")), s, "dense4", "prelu4")
        probability = F.softmax(F.linear(x, s["dense5_1.weight"], s["dense5_1.bias"]), dim=1)[:, 1]
        offsets = F.linear(x, s["dense5_2.weight"], s["dense5_2.bias"])
        return probability.numpy().astype(np.float64), offsets.numpy().astype(np.float64)

    def _onet(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        import torch.nn.functional as F

        s = self.state["onet"]
        x = F.max_pool2d(_conv_prelu(_tensor(batch), s, "1"), 3, 2, ceil_mode=True)
        x = F.max_pool2d(_conv_prelu(x, s, "2"), 3, 2, ceil_mode=True)
        x = F.max_pool2d(_conv_prelu(x, s, "3"), 2, 2, ceil_mode=True)
        x = _dense_prelu(_flatten_whc(_conv_prelu(x, s, "4")), s, "dense5", "prelu5")
        probability = F.softmax(F.linear(x, s["dense6_1.weight"], s["dense6_1.bias"]), dim=1)[:, 1]
        offsets = F.linear(x, s["dense6_2.weight"], s["dense6_2.bias"])
        marks = F.linear(x, s["dense6_3.weight"], s["dense6_3.bias"])
        return (
            probability.numpy().astype(np.float64),
            offsets.numpy().astype(np.float64),
            marks.numpy().astype(np.float64),
        )


def patches(rgb: np.ndarray, boxes: np.ndarray, side: int) -> np.ndarray:
    """(N, side, side, 3) resamples of the boxes (whole pixels; zero outside the photo, as the paper's
    cascade pads a box that leaves the image rather than squeezing it)."""
    import cv2

    height, width = rgb.shape[:2]
    out = np.zeros((len(boxes), side, side, 3), np.uint8)
    for i, box in enumerate(boxes[:, :4]):
        x0, y0 = int(np.floor(box[0])), int(np.floor(box[1]))
        x1, y1 = max(int(np.ceil(box[2])), x0 + 1), max(int(np.ceil(box[3])), y0 + 1)
        canvas = np.zeros((y1 - y0, x1 - x0, 3), np.uint8)
        sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
        if sx1 > sx0 and sy1 > sy0:
            canvas[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = rgb[sy0:sy1, sx0:sx1]
        interpolation = cv2.INTER_AREA if canvas.shape[0] > side else cv2.INTER_LINEAR
        out[i] = cv2.resize(canvas, (side, side), interpolation=interpolation)
    return out


def _tensor(images: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 → (N, 3, H, W) float32 scaled as the networks were trained."""
    import torch

    return (torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() - 127.5) * 0.0078125


def _conv_prelu(x: torch.Tensor, state: dict[str, torch.Tensor], n: str) -> torch.Tensor:
    import torch.nn.functional as F

    return F.prelu(F.conv2d(x, state[f"conv{n}.weight"], state[f"conv{n}.bias"]), state[f"prelu{n}.weight"])


def _dense_prelu(x: torch.Tensor, state: dict[str, torch.Tensor], dense: str, prelu: str) -> torch.Tensor:
    import torch.nn.functional as F

    return F.prelu(F.linear(x, state[f"{dense}.weight"], state[f"{dense}.bias"]), state[f"{prelu}.weight"])


def _flatten_whc(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) → (N, W·H·C): the Caffe-converted dense layers' input order (module notes)."""
    return x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)
