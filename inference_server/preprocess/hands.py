"""Hands in the photo: MediaPipe's bundled palm detector and hand landmarks → a hand mask in photo pixels.

A hand over the face is skin to every colour test (texture/occluder.py, occlusion.py); its *shape* is
what a hand detector sees. The legacy Hands solution of the ``mediapipe==0.10.21`` wheel (Apache-2.0)
ships its palm detector and 21-point landmark model inside the wheel, so nothing is downloaded. The mask
is drawn from the landmarks with widths that follow the hand's own size (the wrist to middle-finger knuckle
length): the palm as the landmarks' hull widened, each finger as a chain of thick capsules.

The palm detector misses small or cut hands; when the whole photo gives none, the mirrored photo and a
crop around the face (twice the face's size, scaled up) are tried (docs/preprocessing.md, section 6).
Without the hand models (an older or missing MediaPipe) nothing is found and the log says so once.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

LOG = logging.getLogger(__name__)

#: Landmark indices (MediaPipe's hand topology): the wrist, the knuckles the palm is spanned by, fingers.
WRIST = 0
MIDDLE_MCP = 9
PALM = (0, 1, 2, 5, 9, 13, 17)
FINGERS = ((1, 2, 3, 4), (5, 6, 7, 8), (9, 10, 11, 12), (13, 14, 15, 16), (17, 18, 19, 20))
#: Finger width (full width of a capsule) as a fraction of the wrist to middle-knuckle length: adult
#: fingers are ~1.6-2 cm wide against a ~9-10 cm palm; calibrated by eye on the fixture photos (0.25 keeps
#: the finger edges inside the mask where the landmarks sit a little off the finger's middle).
FINGER_WIDTH = 0.25
#: The palm hull is widened by this fraction of the same length: the knuckle and wrist landmarks lie inside
#: the hand, the palm's edge (the little-finger side, the thumb's ball) beyond them.
PALM_MARGIN = 0.14
#: Hands whose handedness score is below this are not trusted (the landmark model's own confidence).
MIN_SCORE = 0.5
#: The face crop of the last try: this many face sizes around the face centre, scaled so its side is at
#: least ``CROP_SIDE`` pixels (the palm detector looks at a 192-pixel image; a small hand becomes larger).
CROP_FACES = 2.0
CROP_SIDE = 512
#: Hands found only in the face crop need this handedness score: there the palm detector also takes a blurred
#: jaw or face for a palm (scores 0.81 and 0.97 on blurred faces; the real hands the crop finds on the fixtures
#: score 0.84-0.98, so the score alone cannot tell them: the landmark check also asks for a sharp face).
CROP_MIN_SCORE = 0.8
#: The face box the face crop is centred on: this many eye distances across, around the five points
#: (about the detector's face box, 2.4-3.2 eye distances on the fixtures). The crop try is fickle: on the
#: fixture photos a 2.5 / 3.0 / 3.5 box finds a hand in 4 / 6 / 5 of the 7 with a hand at the face.
FACE_BOX_IOD = 3.0
#: A "hand" covering this many of the five face points is the face seen as a palm (measured: the palm
#: detector takes a face blurred by 10-15 % of the eye distance for a hand covering 4-5 of them; real
#: hands over the fixture faces cover 1).
FACE_LIKE_POINTS = 4


@dataclass(frozen=True)
class Hand:
    """One hand: 21 landmarks (x, y) in photo pixels, the model's handedness score, which try found it."""

    landmarks: np.ndarray  # (21, 2)
    score: float
    variant: str  # "photo", "mirrored" or "face_crop"

    @property
    def size(self) -> float:
        """Wrist to middle-finger knuckle length in pixels: the scale every width is drawn with."""
        return float(np.linalg.norm(self.landmarks[MIDDLE_MCP] - self.landmarks[WRIST]))


@dataclass(frozen=True)
class HandEvidence:
    """The hands found in one photo (possibly none) and whether the hand models could run at all."""

    hands: tuple[Hand, ...] = ()
    available: bool = True
    tries: tuple[str, ...] = field(default=())

    def mask(self, height: int, width: int) -> np.ndarray:
        """(H, W) bool: pixels covered by a detected hand."""
        return hand_mask(self.hands, height, width)


def hand_mask(hands: tuple[Hand, ...] | list[Hand], height: int, width: int) -> np.ndarray:
    """(H, W) bool mask of ``hands``: palm hull widened by PALM_MARGIN, fingers as FINGER_WIDTH capsules."""
    mask = np.zeros((height, width), np.uint8)
    shift = 4  # sub-pixel drawing: OpenCV takes fixed-point coordinates with this many fraction bits
    for hand in hands:
        size = max(hand.size, 1.0)
        pts = np.round(hand.landmarks * (1 << shift)).astype(np.int32)
        hull = cv2.convexHull(pts[list(PALM)])
        cv2.fillConvexPoly(mask, hull, (1,), lineType=cv2.LINE_8, shift=shift)
        margin = max(1, round(PALM_MARGIN * size))
        cv2.polylines(mask, [hull], True, (1,), thickness=2 * margin, lineType=cv2.LINE_8, shift=shift)
        thickness = max(1, round(FINGER_WIDTH * size))
        for finger in FINGERS:
            chain = pts[[*finger]]
            cv2.polylines(mask, [chain], False, (1,), thickness=thickness, lineType=cv2.LINE_8, shift=shift)
            for point in chain:  # round joints and tips (polylines' ends are flat)
                cv2.circle(mask, tuple(int(v) for v in point), (thickness // 2) << shift, (1,), -1, shift=shift)
    return mask.astype(bool)


class HandFinder:
    """Owns the MediaPipe Hands graph (built on first use); not thread-safe, use one per thread."""

    def __init__(self, max_hands: int = 4, confidence: float = 0.5) -> None:
        self.max_hands = max_hands
        self.confidence = confidence
        self._graph: Any = None
        self.unavailable: str | None = None

    def _hands_graph(self) -> Any:
        if self._graph is None and self.unavailable is None:
            try:
                import mediapipe as mp

                self._graph = mp.solutions.hands.Hands(
                    static_image_mode=True, max_num_hands=self.max_hands, model_complexity=1,
                    min_detection_confidence=self.confidence,
                )  # fmt: skip
            except (ImportError, AttributeError, RuntimeError, ValueError, OSError) as exc:
                self.unavailable = f"{type(exc).__name__}: {exc}"
                LOG.warning("No hand detection (MediaPipe's hand models are not usable: %s); "
                            "hands over the face are judged by colour only", self.unavailable)  # fmt: skip
        return self._graph

    def run(self, rgb: np.ndarray) -> list[tuple[np.ndarray, float]]:
        """Hands in ``rgb`` (H, W, 3 uint8) as (21, 2) pixel landmarks and handedness score."""
        graph = self._hands_graph()
        if graph is None:
            return []
        height, width = rgb.shape[:2]
        result = graph.process(np.ascontiguousarray(rgb))
        out = []
        for marks, handed in zip(result.multi_hand_landmarks or (), result.multi_handedness or (), strict=False):
            points = np.array([(lm.x * width, lm.y * height) for lm in marks.landmark], dtype=np.float64)
            score = float(handed.classification[0].score)
            if points.shape == (21, 2) and np.all(np.isfinite(points)) and score >= MIN_SCORE:
                out.append((points, score))
        return out

    def find(self, rgb: np.ndarray) -> HandEvidence:
        """The hands in the whole photo, or, when it shows none, in the mirrored photo (the palm detector
        is not mirror-symmetric: it finds some hands only one way round)."""
        width = rgb.shape[1]
        hands = [Hand(p, s, "photo") for p, s in self.run(rgb)]
        tries = ["photo"]
        if not hands and self._graph is not None:
            tries.append("mirrored")
            for points, score in self.run(np.ascontiguousarray(rgb[:, ::-1])):
                points[:, 0] = width - points[:, 0]
                hands.append(Hand(points, score, "mirrored"))
        return HandEvidence(tuple(hands), available=self.unavailable is None, tries=tuple(tries))

    def find_in_face_crop(self, rgb: np.ndarray, box: np.ndarray) -> tuple[Hand, ...]:
        """Hands in a crop CROP_FACES times the face ``box`` [x0, y0, x1, y1] around its centre, scaled up
        to at least CROP_SIDE pixels: a hand small in the photo is large in the crop."""
        centre = (box[:2] + box[2:]) / 2
        side = CROP_FACES * float(max(box[2] - box[0], box[3] - box[1], 1.0))
        scale = max(1.0, CROP_SIDE / side)
        # Crop and scale in one warp; outside the photo is black (no hand there).
        warp = np.array([[scale, 0, -(centre[0] - side / 2) * scale], [0, scale, -(centre[1] - side / 2) * scale]])
        out_side = max(1, round(side * scale))
        crop = cv2.warpAffine(rgb, warp, (out_side, out_side), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))
        hands = []
        for points, score in self.run(np.ascontiguousarray(crop)):
            if score < CROP_MIN_SCORE:
                continue
            hands.append(Hand(points / scale + (centre - side / 2), score, "face_crop"))
        return tuple(hands)


_LOCAL = threading.local()
#: The last few photos' evidence: the detection's landmark check and the texture ask about the same photo.
_CACHE_SIZE = 4


def find_hands(rgb: np.ndarray, face_points: np.ndarray | None = None) -> HandEvidence:
    """The hands in ``rgb`` with this thread's finder, remembered for the last few photos (keyed by the
    pixels, and for the face crop by the face) so the stages that ask about one photo (the landmark check,
    the texture) pay for it once. ``face_points`` (5, 2): the face's five points (eyes, nose tip, mouth
    corners) in pixels; with them a face crop is tried when the photo shows no hand, and a "hand" that
    covers FACE_LIKE_POINTS of them is dropped: that is the face itself seen as a palm (it happens on
    blurred faces), not a hand over it."""
    finder: HandFinder | None = getattr(_LOCAL, "finder", None)
    cache: OrderedDict[tuple[object, ...], Any] | None = getattr(_LOCAL, "cache", None)
    if finder is None or cache is None:
        finder, cache = HandFinder(), OrderedDict()
        _LOCAL.finder, _LOCAL.cache = finder, cache
    image = np.ascontiguousarray(rgb)
    digest = hashlib.blake2b(image.data, digest_size=16).hexdigest()
    whole: HandEvidence = _cached(cache, (image.shape, digest), lambda: finder.find(image))
    if face_points is None:
        return whole
    points = np.asarray(face_points, np.float64).reshape(5, 2)
    hands = _not_face(whole.hands, points, image.shape[:2])
    if hands or not whole.available:
        return HandEvidence(hands, available=whole.available, tries=whole.tries)
    iod = max(float(np.linalg.norm(points[1] - points[0])), 1.0)
    centre, half = points.mean(axis=0), 0.5 * FACE_BOX_IOD * iod
    box = np.concatenate([centre - half, centre + half])
    key = (image.shape, digest, *(round(float(v) / 8) for v in box))
    crop: tuple[Hand, ...] = _cached(cache, key, lambda: finder.find_in_face_crop(image, box))
    return HandEvidence(_not_face(crop, points, image.shape[:2]), available=True, tries=(*whole.tries, "face_crop"))


def _not_face(hands: tuple[Hand, ...], points: np.ndarray, shape: tuple[int, ...]) -> tuple[Hand, ...]:
    """``hands`` without those whose mask covers FACE_LIKE_POINTS or more of the five face ``points``."""
    kept = []
    for hand in hands:
        mask = hand_mask([hand], shape[0], shape[1])
        xy = np.clip(np.floor(points).astype(np.int64), 0, [shape[1] - 1, shape[0] - 1])
        if int(mask[xy[:, 1], xy[:, 0]].sum()) < FACE_LIKE_POINTS:
            kept.append(hand)
    return tuple(kept)


def _cached(cache: OrderedDict[tuple[object, ...], Any], key: tuple[object, ...], compute: Any) -> Any:
    if key in cache:
        cache.move_to_end(key)
        return cache[key]
    value = compute()
    cache[key] = value
    while len(cache) > _CACHE_SIZE:
        cache.popitem(last=False)
    return value
