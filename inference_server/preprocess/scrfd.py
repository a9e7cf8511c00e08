"""Optional SCRFD face detector (insightface's antelopev2 ``scrfd_10g_bnkps.onnx``) through onnxruntime.

The official OFER preprocessing used this detector; users who have the file can choose it. Never
downloaded: the user gives the path. The decoding follows the published SCRFD design (anchor-free
distance regression on strides 8, 16 and 32, two anchors per location, five keypoints):

- input: the photo resized (aspect kept) into a ``det_size`` canvas at the top-left, zero-padded, RGB,
  (pixel − 127.5) / 128, NCHW float32;
- outputs: for each stride, scores (A, 1), box distances (A, 4) and keypoint offsets (A, 10), all in
  stride units from the anchor centre; 9 outputs ordered scores×3, boxes×3, keypoints×3;
- boxes: centre − (d0, d1) and centre + (d2, d3); keypoints: centre + offset, in the template order
  (image-left eye first); then score threshold and non-maximum suppression.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import MissingAssetError

STRIDES = (8, 16, 32)
ANCHORS_PER_LOCATION = 2


@dataclass(frozen=True)
class ScrfdFace:
    box: np.ndarray
    points5: np.ndarray
    score: float


class ScrfdDetector:
    """Runs an SCRFD ``.onnx`` with onnxruntime on the CPU (it is small).

    ``det_size`` (224, 224) and the 0.5 threshold are what the official preprocessing used (spec §9).
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        *,
        det_size: tuple[int, int] = (224, 224),
        score_threshold: float = 0.5,
        nms_threshold: float = 0.4,
    ) -> None:
        import onnxruntime as ort

        path = Path(model_path)
        if not path.is_file():
            raise MissingAssetError(
                f"The SCRFD detector model '{path}' does not exist.",
                "Give the path of scrfd_10g_bnkps.onnx from insightface's antelopev2 pack, or use the "
                "default MediaPipe detector.",
            )
        try:
            self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise MissingAssetError(
                f"'{path}' could not be loaded as an ONNX model ({exc}).",
                "Check that it is the SCRFD .onnx file and that it is complete.",
            ) from None
        outputs = self.session.get_outputs()
        if len(outputs) != 3 * len(STRIDES):
            raise MissingAssetError(
                f"'{path}' has {len(outputs)} outputs; an SCRFD detector with keypoints has 9.",
                "Use scrfd_10g_bnkps.onnx (the model with keypoints) from the antelopev2 pack.",
            )
        self.input_name = self.session.get_inputs()[0].name
        self.det_size = det_size
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold

    def detect(self, rgb: np.ndarray) -> list[ScrfdFace]:
        """Faces in an RGB uint8 photo, coordinates in its pixels, highest score first."""
        blob, scale = scrfd_input(rgb, self.det_size)
        raw = self.session.run(None, {self.input_name: blob})
        return decode_scrfd_outputs(
            [np.asarray(r) for r in raw],
            input_size=(blob.shape[3], blob.shape[2]),
            scale=scale,
            score_threshold=self.score_threshold,
            nms_threshold=self.nms_threshold,
        )


def scrfd_input(rgb: np.ndarray, det_size: tuple[int, int]) -> tuple[np.ndarray, float]:
    """The (1, 3, H, W) float32 input and the resize factor (input pixels per photo pixel)."""
    import cv2

    width, height = det_size
    image_h, image_w = rgb.shape[:2]
    scale = min(width / image_w, height / image_h)
    new_w, new_h = max(1, round(image_w * scale)), max(1, round(image_h * scale))
    canvas = np.zeros((height, width, 3), dtype=np.float32)
    canvas[:new_h, :new_w] = cv2.resize(rgb, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    blob = ((canvas - 127.5) / 128.0).transpose(2, 0, 1)[None]
    return np.ascontiguousarray(blob, dtype=np.float32), scale


def anchor_centres(input_size: tuple[int, int], stride: int) -> np.ndarray:
    """(A, 2) anchor centres (x, y) in input pixels, row-major, each location repeated per anchor."""
    width, height = input_size
    rows, cols = height // stride, width // stride
    ys, xs = np.mgrid[:rows, :cols]
    centres = np.stack([xs, ys], axis=-1).reshape(-1, 2).astype(np.float64) * stride
    return np.repeat(centres, ANCHORS_PER_LOCATION, axis=0)


def decode_scrfd_outputs(
    outputs: list[np.ndarray],
    *,
    input_size: tuple[int, int],
    scale: float,
    score_threshold: float = 0.5,
    nms_threshold: float = 0.4,
) -> list[ScrfdFace]:
    """Turn the 9 raw outputs into faces in photo pixels (see the module notes)."""
    n = len(STRIDES)
    boxes, points, scores = [], [], []
    for level, stride in enumerate(STRIDES):
        score = outputs[level].reshape(-1)
        distance = outputs[level + n].reshape(-1, 4) * stride
        offset = outputs[level + 2 * n].reshape(-1, 10) * stride
        centres = anchor_centres(input_size, stride)
        if len(centres) != len(score):
            raise ValueError(f"SCRFD output for stride {stride} has {len(score)} anchors, expected {len(centres)}")
        keep = score >= score_threshold
        c = centres[keep]
        d = distance[keep]
        boxes.append(np.concatenate([c - d[:, :2], c + d[:, 2:]], axis=1))
        points.append(offset[keep].reshape(-1, 5, 2) + c[:, None, :])
        scores.append(score[keep])
    all_boxes = np.concatenate(boxes) / scale
    all_points = np.concatenate(points) / scale
    all_scores = np.concatenate(scores)
    kept = non_maximum_suppression(all_boxes, all_scores, nms_threshold)
    return [ScrfdFace(box=all_boxes[i], points5=all_points[i], score=float(all_scores[i])) for i in kept]


def non_maximum_suppression(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> list[int]:
    """Indices kept, best score first; a box overlapping a kept one above the threshold is dropped."""
    order = list(np.argsort(-scores, kind="stable"))
    kept: list[int] = []
    areas = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    while order:
        best = order.pop(0)
        kept.append(int(best))
        remaining = []
        for other in order:
            w = min(boxes[best, 2], boxes[other, 2]) - max(boxes[best, 0], boxes[other, 0])
            h = min(boxes[best, 3], boxes[other, 3]) - max(boxes[best, 1], boxes[other, 1])
            inter = max(w, 0.0) * max(h, 0.0)
            union = areas[best] + areas[other] - inter
            if union <= 0 or inter / union <= iou_threshold:
                remaining.append(other)
        order = remaining
    return kept
