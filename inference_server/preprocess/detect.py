"""Finding the face and its five ArcFace points, offline, with a fallback chain for occluded faces.

The chain (MediaPipe, the models bundled in the wheel), each step tried only when the previous found
nothing:

1. ``face_mesh``: the face mesh (478 landmarks) on the whole photo;
2. the face detector, short range then full range, on the whole photo, then on overlapping tiles
   (small faces in large photos); when it finds a face,
3. ``face_mesh_on_detector_box``: the face mesh on an enlarged, zero-padded crop around the detector box
   (a small face, a face cut by the frame, or one the mesh's own detector rejected), mapped back;
4. ``detector_keypoints``: otherwise the five points derived from the detector's six keypoints, for
   a confident detection only.

The face nearest the image centre wins. With a ``box`` the chain runs on an enlarged crop around it
and the face nearest the box centre wins (``face_mesh_on_box`` when step 1 found it there). With
``points`` no detector runs (``points``). An SCRFD ``.onnx`` (insightface antelopev2) can replace the
chain (``scrfd``). No face → ``NoFaceError`` saying how to mark the face by hand.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from ..errors import NoFaceError, WorkerError
from .alignment import ARCFACE_TEMPLATE_112, apply_affine, box_from_points5, fit_similarity, invert_affine
from .image import LoadedImage, downscale_for_detection
from .mediapipe_faces import MESH_POINTS5, DetectorFace, MediaPipeFaces

DetectionMethod = Literal[
    "points",
    "face_mesh",
    "face_mesh_on_box",
    "face_mesh_on_detector_box",
    "detector_keypoints",
    "scrfd",
]
DetectorChoice = Literal["auto", "mediapipe", "scrfd"]

#: Longest side of the copy the detectors see (coordinates are mapped back to the photo).
DETECTION_MAX_SIDE = 1280
#: The chain's steps, in order (``run_chain`` can leave some out for measurements).
ALL_STEPS = ("face_mesh", "detector", "detector_on_tiles", "face_mesh_on_detector_box", "detector_keypoints")
#: A detector hit the face mesh cannot confirm is used alone only above this score: the short-range
#: detector scores noise and textures up to ~0.65 (docs/preprocessing.md).
MIN_UNCONFIRMED_SCORE = 0.75
#: How many detector hits, nearest the target first, the face mesh tries to confirm.
MAX_CONFIRMATIONS = 4
#: Accepted detector-box side / mesh eye distance when the mesh confirms a detector hit (frontal faces
#: measure ~2.6; turned faces have a shorter eye distance, so the upper bound is generous).
MESH_BOX_RATIO = (1.5, 6.0)
#: Smallest tile for the tiled detector pass, in pixels.
MIN_TILE = 256
#: Side of the square crop the face mesh sees in steps 3 and the box mode, in pixels.
CROP_SIDE = 384
#: Crop side around a detector box / a user box, as a multiple of the box's longer side: the face mesh's
#: own detector is trained on faces that fill roughly half the frame.
CROP_CONTEXT = 2.0

NO_FACE_FIX = (
    "Mark the face by hand: draw a box around it or click the five points (eye centres, nose tip, mouth "
    "corners) in the Blender Image Editor, or pass --box X0 Y0 X1 Y1 / --points on the command line. "
    "A sharper, larger or less covered view of the face also helps."
)


class BadRegionError(WorkerError):
    """A ``box`` or ``points`` argument that cannot describe a face in this photo."""

    code = "bad_request"


@dataclass(frozen=True)
class FaceDetection:
    """The face chosen in a photo, in the photo's pixel coordinates (x right, y down).

    ``points5`` (5, 2): left eye centre, right eye centre, nose tip, left mouth corner, right mouth corner,
    in the ArcFace template order (the image-left eye first for an upright face). ``box`` [x0, y0, x1, y1]
    is the face box implied by the five points (one convention whichever step found the face; the FaRL
    crop uses it). ``found_box`` is the box the step itself saw (detector box, landmark extents, the
    user's box). ``landmarks`` (478, 2) when the face mesh ran, else None. ``n_faces``: faces the
    successful step found (before choosing one).
    """

    box: np.ndarray
    points5: np.ndarray
    landmarks: np.ndarray | None
    method: DetectionMethod
    n_faces: int
    found_box: np.ndarray
    score: float | None = None
    detector_model: str | None = None

    def to_meta(self) -> dict[str, object]:
        """JSON-ready summary for the result file's ``meta_json``."""
        return {
            "box": [float(v) for v in self.box],
            "points5": [[float(x), float(y)] for x, y in self.points5],
            "method": self.method,
            "n_faces": self.n_faces,
            "found_box": [float(v) for v in self.found_box],
            "score": None if self.score is None else float(self.score),
            "detector_model": self.detector_model,
        }


@dataclass(frozen=True)
class _Found:
    """A face found on a working copy; coordinates in that copy."""

    points5: np.ndarray
    landmarks: np.ndarray | None
    found_box: np.ndarray
    method: DetectionMethod
    n_faces: int
    score: float | None = None
    detector_model: str | None = None

    def mapped(self, to_photo: np.ndarray) -> _Found:
        """The same face with coordinates sent through the 2×3 affine ``to_photo``."""
        corners = apply_affine(to_photo, self.found_box.reshape(2, 2))
        return _Found(
            points5=apply_affine(to_photo, self.points5),
            landmarks=None if self.landmarks is None else apply_affine(to_photo, self.landmarks),
            found_box=np.concatenate([corners.min(axis=0), corners.max(axis=0)]),
            method=self.method,
            n_faces=self.n_faces,
            score=self.score,
            detector_model=self.detector_model,
        )


class FaceDetector:
    """Finds faces; owns the (slow to build) detector graphs, so keep one per process or thread.

    ``scrfd_model``: optional path to an SCRFD ``.onnx`` (insightface antelopev2 ``scrfd_10g_bnkps.onnx``),
    used when ``detector`` is "scrfd", and first by "auto" (the MediaPipe chain stays the fallback).
    """

    def __init__(
        self,
        *,
        scrfd_model: str | os.PathLike[str] | None = None,
        detection_max_side: int = DETECTION_MAX_SIDE,
        mesh_confidence: float = 0.5,
        detector_confidence: float = 0.5,
    ) -> None:
        self.mediapipe = MediaPipeFaces(
            mesh_confidence=mesh_confidence, detector_confidence=detector_confidence
        )
        self.detection_max_side = detection_max_side
        self.scrfd_model = Path(scrfd_model) if scrfd_model is not None else None
        self._scrfd: object | None = None

    def close(self) -> None:
        self.mediapipe.close()
        self._scrfd = None

    def __enter__(self) -> FaceDetector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def detect(
        self,
        image: LoadedImage | np.ndarray,
        *,
        box: Sequence[float] | np.ndarray | None = None,
        points: Sequence[Sequence[float]] | np.ndarray | None = None,
        detector: DetectorChoice = "auto",
    ) -> FaceDetection:
        """Find the face (see the module notes); raise ``NoFaceError`` when there is none."""
        rgb = image.rgb if isinstance(image, LoadedImage) else image
        height, width = rgb.shape[:2]
        if points is not None:
            return _from_given_points(points, width, height)
        user_box = None if box is None else _checked_box(box, width, height)
        if detector not in ("auto", "mediapipe", "scrfd"):
            raise ValueError(f"unknown detector {detector!r}; use 'auto', 'mediapipe' or 'scrfd'")

        found: _Found | None = None
        if detector == "scrfd" or (detector == "auto" and self.scrfd_model is not None):
            found = self._run_scrfd(rgb, user_box)
        if found is None and detector != "scrfd":
            found = self._run_mediapipe(rgb, user_box)
        if found is None:
            where = "inside the given box" if user_box is not None else "in the photo"
            raise NoFaceError(f"No face was found {where}.", NO_FACE_FIX)
        return _finish(found)

    # -- MediaPipe chain -------------------------------------------------------------------------

    def _run_mediapipe(self, rgb: np.ndarray, user_box: np.ndarray | None) -> _Found | None:
        if user_box is not None:
            crop, to_photo = square_crop(rgb, user_box, CROP_CONTEXT, CROP_SIDE)
            centre = np.array([CROP_SIDE / 2.0, CROP_SIDE / 2.0])
            found = self.run_chain(crop, centre)
            if found is None:
                return None
            if found.method == "face_mesh":
                found = _with_method(found, "face_mesh_on_box")
            return found.mapped(to_photo)
        scaled = downscale_for_detection(rgb, self.detection_max_side)
        height, width = scaled.rgb.shape[:2]
        found = self.run_chain(scaled.rgb, np.array([width / 2.0, height / 2.0]))
        if found is None:
            return None
        return found.mapped(np.array([[1.0 / scaled.scale, 0.0, 0.0], [0.0, 1.0 / scaled.scale, 0.0]]))

    def run_chain(
        self,
        rgb: np.ndarray,
        target: np.ndarray,
        steps: Sequence[str] = ALL_STEPS,
    ) -> _Found | None:
        """The fallback chain on one image; the face nearest ``target`` wins. ``steps`` may leave some out
        (the measurement in docs/preprocessing.md switches steps off to see what each one recovers)."""
        if "face_mesh" in steps:
            meshes = self.mediapipe.face_mesh(rgb)
            if meshes:
                landmarks = meshes[_nearest([_extent(m) for m in meshes], target)]
                return _Found(
                    points5=landmarks[list(MESH_POINTS5)],
                    landmarks=landmarks,
                    found_box=_extent(landmarks),
                    method="face_mesh",
                    n_faces=len(meshes),
                )
        if "detector" not in steps:
            return None
        faces = self._detector_faces(rgb, tiles="detector_on_tiles" in steps)
        if not faces:
            return None
        order = sorted(range(len(faces)), key=lambda i: _distance(faces[i].box, target))
        if "face_mesh_on_detector_box" in steps:
            # Nearest the target first; a detection the mesh cannot confirm may be a false positive,
            # so a farther face the mesh does confirm is preferred to it.
            for index in order[:MAX_CONFIRMATIONS]:
                face = faces[index]
                found = self._mesh_on_box(rgb, face)
                if found is not None:
                    return _Found(
                        points5=found.points5,
                        landmarks=found.landmarks,
                        found_box=face.box,
                        method="face_mesh_on_detector_box",
                        n_faces=len(faces),
                        score=face.score,
                        detector_model=face.model,
                    )
        if "detector_keypoints" not in steps:
            return None
        trusted = [i for i in order if faces[i].score >= MIN_UNCONFIRMED_SCORE]
        if not trusted:
            return None
        face = faces[trusted[0]]
        return _Found(
            points5=points5_from_detector_keypoints(face.keypoints),
            landmarks=None,
            found_box=face.box,
            method="detector_keypoints",
            n_faces=len(faces),
            score=face.score,
            detector_model=face.model,
        )

    def _detector_faces(self, rgb: np.ndarray, tiles: bool) -> list[DetectorFace]:
        """Detector hits: short range, else full range on the whole image, else (``tiles``) both on
        overlapping tiles of decreasing size — the bundled detectors squash the whole image to 128 or
        192 pixels, so a face under ~10 % of a large photo is invisible to them without tiling."""
        for model in ("short", "full"):
            faces = self.mediapipe.face_detector(rgb, model)
            if faces:
                return faces
        if not tiles:
            return []
        height, width = rgb.shape[:2]
        for side in _tile_sides(width, height):
            hits: list[DetectorFace] = []
            for x, y in _tile_origins(width, height, side):
                tile = rgb[y : y + side, x : x + side]
                for model in ("short", "full"):
                    for face in self.mediapipe.face_detector(tile, model):
                        shift = np.array([x, y], dtype=np.float64)
                        hits.append(
                            DetectorFace(
                                box=face.box + np.tile(shift, 2),
                                keypoints=face.keypoints + shift,
                                score=face.score,
                                model=f"{face.model}/tiles",
                            )
                        )
            if hits:
                return _merge_duplicates(hits)
        return []

    def _mesh_on_box(self, rgb: np.ndarray, face: DetectorFace) -> _Found | None:
        crop, to_photo = square_crop(rgb, face.box, CROP_CONTEXT, CROP_SIDE)
        meshes = self.mediapipe.face_mesh(crop)
        if not meshes:
            return None
        centre = np.array([CROP_SIDE / 2.0, CROP_SIDE / 2.0])
        landmarks = apply_affine(to_photo, meshes[_nearest([_extent(m) for m in meshes], centre)])
        # The mesh must describe the detector's face, not a neighbour that entered the enlarged crop.
        eyes_mid = landmarks[list(MESH_POINTS5[:2])].mean(axis=0)
        x0, y0, x1, y1 = face.box
        if not (x0 <= eyes_mid[0] <= x1 and y0 <= eyes_mid[1] <= y1):
            return None
        # ... and be the detector box's size: a face box is ~2.6 eye distances wide (template frame).
        eye_distance = float(np.linalg.norm(landmarks[MESH_POINTS5[1]] - landmarks[MESH_POINTS5[0]]))
        ratio = max(x1 - x0, y1 - y0) / max(eye_distance, 1e-6)
        if not (MESH_BOX_RATIO[0] <= ratio <= MESH_BOX_RATIO[1]):
            return None
        return _Found(
            points5=landmarks[list(MESH_POINTS5)],
            landmarks=landmarks,
            found_box=face.box,
            method="face_mesh_on_detector_box",
            n_faces=1,
        )

    # -- SCRFD -------------------------------------------------------------------------------------

    def _run_scrfd(self, rgb: np.ndarray, user_box: np.ndarray | None) -> _Found | None:
        from .scrfd import ScrfdDetector

        if self.scrfd_model is None:
            raise BadRegionError(
                "The SCRFD detector was requested but no model file was given.",
                "Give the path of antelopev2's scrfd_10g_bnkps.onnx, or use the default detector.",
            )
        if self._scrfd is None:
            self._scrfd = ScrfdDetector(self.scrfd_model)
        assert isinstance(self._scrfd, ScrfdDetector)
        scaled = downscale_for_detection(rgb, self.detection_max_side)
        faces = self._scrfd.detect(scaled.rgb)
        if not faces:
            return None
        height, width = scaled.rgb.shape[:2]
        if user_box is not None:
            box_small = user_box * scaled.scale
            faces = [f for f in faces if _overlap(f.box, box_small) > 0.0]
            if not faces:
                return None
            target = np.array([(box_small[0] + box_small[2]) / 2, (box_small[1] + box_small[3]) / 2])
        else:
            target = np.array([width / 2.0, height / 2.0])
        face = faces[_nearest([f.box for f in faces], target)]
        found = _Found(
            points5=face.points5,
            landmarks=None,
            found_box=face.box,
            method="scrfd",
            n_faces=len(faces),
            score=face.score,
            detector_model="scrfd",
        )
        return found.mapped(np.array([[1.0 / scaled.scale, 0.0, 0.0], [0.0, 1.0 / scaled.scale, 0.0]]))


def detect_face(
    image: LoadedImage | np.ndarray,
    *,
    box: Sequence[float] | np.ndarray | None = None,
    points: Sequence[Sequence[float]] | np.ndarray | None = None,
    detector: DetectorChoice = "auto",
    face_detector: FaceDetector | None = None,
) -> FaceDetection:
    """Find the face in ``image`` (see ``FaceDetector.detect``). Pass a long-lived ``face_detector`` to
    reuse its graphs; without one a temporary detector is built and closed."""
    if face_detector is not None:
        return face_detector.detect(image, box=box, points=points, detector=detector)
    if points is not None:
        rgb = image.rgb if isinstance(image, LoadedImage) else image
        return _from_given_points(points, rgb.shape[1], rgb.shape[0])
    with FaceDetector() as temporary:
        return temporary.detect(image, box=box, points=points, detector=detector)


def points5_from_detector_keypoints(keypoints: np.ndarray) -> np.ndarray:
    """ArcFace's five points from MediaPipe's detector keypoints (eyes, nose tip, mouth centre, ears).

    The detector gives one mouth point; the corners are read off the template: fit the similarity
    that maps the eyes, nose and mouth centre onto their template positions (the mouth centre is the
    midpoint of the template's corners) and send the template's corners back through its inverse.
    """
    keypoints = np.asarray(keypoints, dtype=np.float64)
    template_mouth_centre = ARCFACE_TEMPLATE_112[3:5].mean(axis=0)
    template4 = np.vstack([ARCFACE_TEMPLATE_112[:3], template_mouth_centre])
    to_template = fit_similarity(keypoints[:4], template4)
    corners = apply_affine(invert_affine(to_template), ARCFACE_TEMPLATE_112[3:5])
    return np.vstack([keypoints[:3], corners])


def square_crop(rgb: np.ndarray, box: np.ndarray, context: float, side: int) -> tuple[np.ndarray, np.ndarray]:
    """A ``side``² crop of the square of ``context`` × the box's longer side around the box centre,
    zero-padded outside the photo; returns the crop and the 2×3 affine crop → photo."""
    import cv2

    x0, y0, x1, y1 = (float(v) for v in box)
    half = context * max(x1 - x0, y1 - y0) / 2.0
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    scale = side / (2.0 * half)
    # Pixel centres: photo (cx - half, cy - half) edge maps to crop edge 0; see crops.py for the same rule.
    to_crop = np.array([[scale, 0.0, -(cx - half) * scale], [0.0, scale, -(cy - half) * scale]])
    interpolation = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
    crop = cv2.warpAffine(
        np.ascontiguousarray(rgb),
        to_crop,
        (side, side),
        flags=interpolation,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(0, 0, 0),
    )
    return crop, invert_affine(to_crop)


def _finish(found: _Found) -> FaceDetection:
    return FaceDetection(
        box=box_from_points5(found.points5),
        points5=found.points5,
        landmarks=found.landmarks,
        method=found.method,
        n_faces=found.n_faces,
        found_box=found.found_box,
        score=found.score,
        detector_model=found.detector_model,
    )


def _with_method(found: _Found, method: DetectionMethod) -> _Found:
    return _Found(
        points5=found.points5,
        landmarks=found.landmarks,
        found_box=found.found_box,
        method=method,
        n_faces=found.n_faces,
        score=found.score,
        detector_model=found.detector_model,
    )


def _from_given_points(
    points: Sequence[Sequence[float]] | np.ndarray, width: int, height: int
) -> FaceDetection:
    try:
        array = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError):
        array = np.empty(0)
    if array.shape != (5, 2) or not np.all(np.isfinite(array)):
        raise BadRegionError(
            "The face points must be five (x, y) pixel pairs.",
            "Give the left eye centre, right eye centre, nose tip, left and right mouth corners.",
        )
    eye_distance = float(np.linalg.norm(array[1] - array[0]))
    margin = 0.5 * max(width, height)
    if eye_distance < 2.0:
        raise BadRegionError(
            f"The two eye points are only {eye_distance:.1f} pixels apart.",
            "Click the two eye centres again.",
        )
    if (
        np.any(array < -margin)
        or np.any(array[:, 0] > width + margin)
        or np.any(array[:, 1] > height + margin)
    ):
        raise BadRegionError(
            f"The face points lie outside the {width}×{height} photo.",
            "Give the points in pixels of this photo (x to the right, y down, origin at the top-left).",
        )
    return FaceDetection(
        box=box_from_points5(array),
        points5=array,
        landmarks=None,
        method="points",
        n_faces=1,
        found_box=np.concatenate([array.min(axis=0), array.max(axis=0)]),
    )


def _checked_box(box: Sequence[float] | np.ndarray, width: int, height: int) -> np.ndarray:
    try:
        array = np.asarray(box, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        array = np.empty(0)
    if array.shape != (4,) or not np.all(np.isfinite(array)):
        raise BadRegionError(
            "The face box must be four numbers [x0, y0, x1, y1] in pixels.", "Draw the box again."
        )
    x0, y0, x1, y1 = array
    if x1 - x0 < 8 or y1 - y0 < 8:
        raise BadRegionError(
            f"The face box {array.tolist()} is empty or smaller than 8 pixels (x1 must exceed x0, y1 y0).",
            "Draw the box around the whole face.",
        )
    if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
        raise BadRegionError(
            f"The face box {array.tolist()} lies outside the {width}×{height} photo.",
            "Give the box in pixels of this photo (x to the right, y down, origin at the top-left).",
        )
    return array


def _extent(points: np.ndarray) -> np.ndarray:
    return np.concatenate([points.min(axis=0), points.max(axis=0)])


def _distance(box: np.ndarray, target: np.ndarray) -> float:
    return math.hypot((box[0] + box[2]) / 2.0 - target[0], (box[1] + box[3]) / 2.0 - target[1])


def _tile_sides(width: int, height: int) -> list[int]:
    """Tile sides for the tiled pass: half, then a quarter of the shorter side, never below MIN_TILE."""
    shorter = min(width, height)
    return [side for side in (shorter // 2, shorter // 4) if side >= MIN_TILE]


def _tile_origins(width: int, height: int, side: int) -> list[tuple[int, int]]:
    """Top-left corners of tiles of ``side`` overlapping by half, covering the image to its edges."""

    def starts(length: int) -> list[int]:
        if length <= side:
            return [0]
        step = side // 2
        values = list(range(0, length - side, step))
        values.append(length - side)
        return values

    return [(x, y) for y in starts(height) for x in starts(width)]


def _merge_duplicates(faces: list[DetectorFace]) -> list[DetectorFace]:
    """One hit per face: overlapping tiles and the two models find the same face more than once."""
    kept: list[DetectorFace] = []
    for face in sorted(faces, key=lambda f: -f.score):
        if all(_iou(face.box, other.box) < 0.3 for other in kept):
            kept.append(face)
    return kept


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = _overlap(a, b)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def _nearest(boxes: Sequence[np.ndarray], target: np.ndarray) -> int:
    """Index of the box whose centre is nearest ``target``."""
    distances = [math.hypot((b[0] + b[2]) / 2.0 - target[0], (b[1] + b[3]) / 2.0 - target[1]) for b in boxes]
    return int(np.argmin(distances))


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    return float(max(width, 0.0) * max(height, 0.0))
