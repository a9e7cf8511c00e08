"""Finding the faces and their five ArcFace points, offline, and the face box the official networks expect.

The MediaPipe chain (``chain.py``: face mesh, both face detectors, mesh confirmation of detector hits,
test-time variants) finds the faces; ``face_box.py`` turns each into an SCRFD-equivalent box, the box the
official 224 crop is cut around. Faces are listed nearest the image centre first; face 0 is the default.
With a ``box`` the chain runs on an enlarged crop around it and the face nearest the box centre comes
first (``face_mesh_on_box`` when the plain mesh found it there). With ``points`` no detector runs
(``points``). An SCRFD ``.onnx`` (insightface antelopev2) can replace the chain (``scrfd``; its own box is
then used as is). No face → ``NoFaceError`` saying how to mark the face by hand.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np

from ..errors import NoFaceError, WorkerError
from .chain import (
    ALL_STEPS,
    CROP_CONTEXT,
    CROP_SIDE,
    Candidate,
    DetectionMethod,
    MediaPipeChain,
    is_cut_by_frame,
    points5_from_detector_keypoints,
)
from .face_box import scrfd_box_from_mesh, scrfd_box_from_points5
from .image import LoadedImage, downscale_for_detection
from .mediapipe_faces import MediaPipeFaces
from .mesh_mirror import relabel_mirrored
from .mtcnn import Mtcnn, MtcnnUnavailableError
from .occlusion import occluded_points
from .refine_points import refine_points5
from .regions import distance, overlap, square_crop

__all__ = [
    "ALL_STEPS",
    "BadRegionError",
    "DetectionMethod",
    "FaceDetection",
    "FaceDetector",
    "detect_face",
    "points5_from_detector_keypoints",
    "square_crop",
]

DetectorChoice = Literal["auto", "mediapipe", "scrfd"]

LOG = logging.getLogger(__name__)
#: Detection methods whose five points MTCNN's O-Net refines (refine_points.py): the face mesh's. SCRFD's
#: points are the official ones; the user's and the detector keypoints' are left as they are.
REFINED_METHODS = (
    "face_mesh",
    "face_mesh_on_box",
    "face_mesh_on_detector_box",
    "face_mesh_on_variant",
    "face_mesh_on_mtcnn_box",
)

#: Longest side of the copy the detectors see (coordinates are mapped back to the photo).
DETECTION_MAX_SIDE = 1280

NO_FACE_FIX = (
    "Mark the face by hand: draw a box around it or click the five points (eye centres, nose tip, mouth "
    "corners) in the Blender Image Editor, or pass --box X0 Y0 X1 Y1 / --points on the command line. "
    "A sharper, larger or less covered view of the face also helps."
)


class BadRegionError(WorkerError):
    """A ``box``, ``points`` or ``face`` argument that cannot describe a face in this photo."""

    code = "bad_request"


@dataclass(frozen=True)
class FaceDetection:
    """A face in a photo, in the photo's pixel coordinates (x right, y down).

    ``points5`` (5, 2): left eye centre, right eye centre, nose tip, left mouth corner, right mouth corner,
    in the ArcFace template order (the image-left eye first for an upright face). ``box`` [x0, y0, x1, y1]:
    the SCRFD-equivalent face box (face_box.py), which the 224 crop is cut around. ``found_box``: the box
    the step itself saw (detector box, landmark extent, the user's box). ``landmarks`` (478, 2) when the
    face mesh found the face (on a mirrored copy: relabelled, ``mesh_mirror.py``), else None.
    ``n_faces``: faces found; ``index``: this face's place in the list (nearest the centre first).
    ``confidence``: the best face-detector score of a hit on this face (None when no detector saw it, only
    the mesh). ``variant``: the image variant that found it.
    ``cut_by_frame``: the face reaches past the photo's border. ``points_source``: where ``points5`` came
    from: "mesh" (the face mesh's), "mesh+mtcnn" (the mean of the face mesh's and MTCNN O-Net's on its
    box), else the method ("mtcnn", "detector_keypoints", "scrfd", "points"); ``onet_score``: O-Net's median
    face
    score on the box (None when it did not run). ``occluded_points``: the landmarks
    (``left_eye``, ``right_eye``, ``left_mouth_corner``, ``right_mouth_corner``) that the photo shows lying
    on an occluder (occlusion.py).
    """

    box: np.ndarray
    points5: np.ndarray
    landmarks: np.ndarray | None
    method: DetectionMethod
    n_faces: int
    found_box: np.ndarray
    score: float | None = None
    detector_model: str | None = None
    index: int = 0
    confidence: float | None = None
    variant: str | None = None
    cut_by_frame: bool = False
    occluded_points: tuple[str, ...] = ()
    points_source: str = "mesh"
    onet_score: float | None = None
    landmark_depth: np.ndarray | None = None  # (478,) the face mesh's relative depth of ``landmarks``, px

    def to_meta(self) -> dict[str, object]:
        """JSON-ready summary for the result file's ``meta_json``."""
        return {
            "box": [float(v) for v in self.box],
            "points5": [[float(x), float(y)] for x, y in self.points5],
            "method": self.method,
            "n_faces": self.n_faces,
            "face_index": self.index,
            "found_box": [float(v) for v in self.found_box],
            "score": None if self.score is None else float(self.score),
            "confidence": None if self.confidence is None else float(self.confidence),
            "detector_model": self.detector_model,
            "variant": self.variant,
            "cut_by_frame": self.cut_by_frame,
            "occluded_points": list(self.occluded_points),
            "points_source": self.points_source,
            "onet_score": None if self.onet_score is None else float(self.onet_score),
            "box_convention": "scrfd" if self.method == "scrfd" else "scrfd-equivalent",
        }


class FaceDetector:
    """Finds faces; owns the (slow to build) detector graphs, so keep one per process or thread.

    ``scrfd_model``: optional path to an SCRFD ``.onnx`` (insightface antelopev2 ``scrfd_10g_bnkps.onnx``),
    used when ``detector`` is "scrfd", and first by "auto" (the MediaPipe chain stays the fallback).
    ``mtcnn``: refine the face mesh's five points with MTCNN's O-Net (refine_points.py) when its weights
    are installed (``facenet-pytorch``, --no-deps); without them the mesh's points are used as they are.
    """

    def __init__(
        self,
        *,
        scrfd_model: str | os.PathLike[str] | None = None,
        detection_max_side: int = DETECTION_MAX_SIDE,
        mesh_confidence: float = 0.5,
        detector_confidence: float = 0.5,
        mtcnn: bool = True,
    ) -> None:
        self.mediapipe = MediaPipeFaces(mesh_confidence=mesh_confidence, detector_confidence=detector_confidence)
        self.chain = MediaPipeChain(self.mediapipe, self.mtcnn_model)
        self.detection_max_side = detection_max_side
        self.scrfd_model = Path(scrfd_model) if scrfd_model is not None else None
        self._scrfd: object | None = None
        self.use_mtcnn = mtcnn
        self._mtcnn: Mtcnn | None = None
        #: Why MTCNN is not used (weights missing or refused), once it was looked for; None otherwise.
        self.mtcnn_unavailable: str | None = None

    def close(self) -> None:
        self.mediapipe.close()
        self._scrfd = None
        self._mtcnn = None

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
        face: int | None = None,
    ) -> FaceDetection:
        """The face number ``face`` (default 0: nearest the centre) of ``detect_all``; with ``points``
        no detector runs. Raises ``NoFaceError`` when there is none, ``BadRegionError`` for a bad
        ``face`` number."""
        rgb = image.rgb if isinstance(image, LoadedImage) else image
        if points is not None:
            return _from_given_points(points, rgb.shape[1], rgb.shape[0])
        faces = self.detect_all(image, box=box, detector=detector)
        index = 0 if face is None else face
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(faces):
            listing = "; ".join(f"{f.index}: box {[round(float(v)) for v in f.box]}" for f in faces)
            raise BadRegionError(
                f"There is no face number {face!r} in this photo: {len(faces)} found ({listing}).",
                f"Choose a face number from 0 to {len(faces) - 1} (0 is the face nearest the centre).",
            )
        return faces[index]

    def detect_all(
        self,
        image: LoadedImage | np.ndarray,
        *,
        box: Sequence[float] | np.ndarray | None = None,
        detector: DetectorChoice = "auto",
    ) -> list[FaceDetection]:
        """Every face the first successful step found, nearest the image (or box) centre first."""
        rgb = image.rgb if isinstance(image, LoadedImage) else image
        height, width = rgb.shape[:2]
        user_box = None if box is None else _checked_box(box, width, height)
        if detector not in ("auto", "mediapipe", "scrfd"):
            raise ValueError(f"unknown detector {detector!r}; use 'auto', 'mediapipe' or 'scrfd'")
        found: list[Candidate] = []
        if detector == "scrfd" or (detector == "auto" and self.scrfd_model is not None):
            found = self._run_scrfd(rgb, user_box)
        if not found and detector != "scrfd":
            found = self._run_mediapipe(rgb, user_box)
        if not found:
            where = "inside the given box" if user_box is not None else "in the photo"
            raise NoFaceError(f"No face was found {where}.", NO_FACE_FIX)
        hits = None if all(c.score is not None for c in found) else self._photo_hits(rgb)
        out = []
        for i, candidate in enumerate(found):
            detection = self._refined(rgb, _finish(candidate, i, len(found), width, height, hits))
            out.append(replace(detection, occluded_points=occluded_points(rgb, detection.points5)))
        return out

    def mtcnn_model(self) -> Mtcnn | None:
        """The MTCNN cascade, loaded on first use; None (with ``mtcnn_unavailable`` saying why, logged
        once) when its weights are not installed: the face mesh's points are then used alone."""
        if not self.use_mtcnn or self.mtcnn_unavailable is not None:
            return None
        if self._mtcnn is None:
            try:
                self._mtcnn = Mtcnn()
            except (MtcnnUnavailableError, OSError, RuntimeError) as exc:
                self.mtcnn_unavailable = str(exc)
                LOG.warning("MTCNN not used: %s", exc)
                return None
        return self._mtcnn

    def _refined(self, rgb: np.ndarray, detection: FaceDetection) -> FaceDetection:
        """A face mesh detection with its five points refined by O-Net on its box (refine_points.py)."""
        if detection.method not in REFINED_METHODS:
            return detection
        model = self.mtcnn_model()
        if model is None:
            return detection
        onet = model.landmarks_in_box(rgb, detection.box)
        refined = refine_points5(detection.points5, onet)
        return replace(detection, points5=refined.points5, points_source=refined.source, onet_score=onet.score)

    def run_chain(self, rgb: np.ndarray, target: np.ndarray, steps: Sequence[str] = ALL_STEPS) -> Candidate | None:
        """The chain's nearest face to ``target`` on ``rgb`` as it is (no downscaling), or None; ``steps``
        may leave some out (the measurements in docs/preprocessing.md switch steps off)."""
        found = self.chain.run(rgb, target, steps)
        return found[0] if found else None

    def _photo_hits(self, rgb: np.ndarray) -> list[tuple[np.ndarray, float]]:
        """Both face detectors' hits on the (downscaled) photo, in photo pixels: the confidence of
        faces the mesh found alone."""
        scaled = downscale_for_detection(rgb, self.detection_max_side)
        hits = self.chain.detector_faces(scaled.rgb, tiles=False)
        return [(h.box / scaled.scale, h.score) for h in hits]

    def _run_mediapipe(self, rgb: np.ndarray, user_box: np.ndarray | None) -> list[Candidate]:
        if user_box is not None:
            crop, to_photo = square_crop(rgb, user_box, CROP_CONTEXT, CROP_SIDE)
            centre = np.array([CROP_SIDE / 2.0, CROP_SIDE / 2.0])
            found = self.chain.run(crop, centre)
            return [
                (replace(c, method="face_mesh_on_box") if c.method == "face_mesh" else c).mapped(to_photo)
                for c in found
            ]
        scaled = downscale_for_detection(rgb, self.detection_max_side)
        height, width = scaled.rgb.shape[:2]
        found = self.chain.run(scaled.rgb, np.array([width / 2.0, height / 2.0]))
        back = np.array([[1.0 / scaled.scale, 0.0, 0.0], [0.0, 1.0 / scaled.scale, 0.0]])
        return [c.mapped(back) for c in found]

    def _run_scrfd(self, rgb: np.ndarray, user_box: np.ndarray | None) -> list[Candidate]:
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
        height, width = scaled.rgb.shape[:2]
        target = np.array([width / 2.0, height / 2.0])
        if user_box is not None:
            box_small = user_box * scaled.scale
            faces = [f for f in faces if overlap(f.box, box_small) > 0.0]
            target = np.array([(box_small[0] + box_small[2]) / 2, (box_small[1] + box_small[3]) / 2])
        order = sorted(range(len(faces)), key=lambda i: distance(faces[i].box, target))
        back = np.array([[1.0 / scaled.scale, 0.0, 0.0], [0.0, 1.0 / scaled.scale, 0.0]])
        return [
            Candidate(
                points5=faces[i].points5,
                landmarks=None,
                found_box=faces[i].box,
                method="scrfd",
                score=faces[i].score,
                detector_model="scrfd",
            ).mapped(back)
            for i in order
        ]


def detect_face(
    image: LoadedImage | np.ndarray,
    *,
    box: Sequence[float] | np.ndarray | None = None,
    points: Sequence[Sequence[float]] | np.ndarray | None = None,
    detector: DetectorChoice = "auto",
    face_detector: FaceDetector | None = None,
    face: int | None = None,
) -> FaceDetection:
    """Find the face in ``image`` (see ``FaceDetector.detect``). Pass a long-lived ``face_detector`` to
    reuse its graphs; without one a temporary detector is built and closed."""
    if face_detector is not None:
        return face_detector.detect(image, box=box, points=points, detector=detector, face=face)
    if points is not None:
        rgb = image.rgb if isinstance(image, LoadedImage) else image
        return _from_given_points(points, rgb.shape[1], rgb.shape[0])
    with FaceDetector() as temporary:
        return temporary.detect(image, box=box, points=points, detector=detector, face=face)


def _own_labels(points: np.ndarray | None, mirrored: bool) -> np.ndarray | None:
    """Face mesh points (or their depths) under the photo's labels."""
    return relabel_mirrored(points) if mirrored and points is not None else points


def _finish(
    found: Candidate,
    index: int,
    n_faces: int,
    width: int,
    height: int,
    hits: list[tuple[np.ndarray, float]] | None,
) -> FaceDetection:
    if found.method == "scrfd":
        box = found.found_box
    elif found.landmarks is not None:
        # A face cut by the frame gets its box extended past the edges it crosses (face_box.py).
        box = scrfd_box_from_mesh(found.landmarks, frame=(width, height))
    else:
        box = scrfd_box_from_points5(found.points5)
    confidence = found.score
    if confidence is None and hits:
        # A detector hit on this face: its centre inside the face box.
        scores = [s for b, s in hits if box[0] <= (b[0] + b[2]) / 2 <= box[2] and box[1] <= (b[1] + b[3]) / 2 <= box[3]]
        confidence = max(scores) if scores else None
    cut = (
        is_cut_by_frame(found.landmarks, width, height)
        if found.landmarks is not None
        else bool(box[0] < 0 or box[1] < 0 or box[2] > width or box[3] > height)
    )
    return FaceDetection(
        points_source="mesh" if found.method in REFINED_METHODS else found.method,
        box=box,
        points5=found.points5,
        # A mirrored mesh's indices name the other side of the face: relabelled (mesh_mirror.py).
        landmarks=_own_labels(found.landmarks, found.mirrored),
        landmark_depth=None if found.landmarks is None else _own_labels(found.depth, found.mirrored),
        method=found.method,
        n_faces=n_faces,
        found_box=found.found_box,
        score=found.score,
        detector_model=found.detector_model,
        index=index,
        confidence=None if confidence is None else float(confidence),
        variant=found.variant,
        cut_by_frame=cut,
    )


def _from_given_points(points: Sequence[Sequence[float]] | np.ndarray, width: int, height: int) -> FaceDetection:
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
    if np.any(array < -margin) or np.any(array[:, 0] > width + margin) or np.any(array[:, 1] > height + margin):
        raise BadRegionError(
            f"The face points lie outside the {width}×{height} photo.",
            "Give the points in pixels of this photo (x to the right, y down, origin at the top-left).",
        )
    return FaceDetection(
        box=scrfd_box_from_points5(array),
        points5=array,
        landmarks=None,
        method="points",
        n_faces=1,
        found_box=np.concatenate([array.min(axis=0), array.max(axis=0)]),
        points_source="points",
    )


def _checked_box(box: Sequence[float] | np.ndarray, width: int, height: int) -> np.ndarray:
    try:
        array = np.asarray(box, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        array = np.empty(0)
    if array.shape != (4,) or not np.all(np.isfinite(array)):
        raise BadRegionError("The face box must be four numbers [x0, y0, x1, y1] in pixels.", "Draw the box again.")
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
