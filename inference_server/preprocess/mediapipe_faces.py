"""MediaPipe's bundled face detector and face mesh, wrapped to return numpy arrays in pixels.

Only the models inside the ``mediapipe==0.10.21`` wheel are used (the legacy ``solutions`` API), so
nothing is downloaded. The graphs are slow to build, so one ``MediaPipeFaces`` object keeps them for
the life of the process; it is not thread-safe (MediaPipe graphs are not), use one per thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import MissingAssetError

MEDIAPIPE_FIX = (
    "Install it into the worker's environment without its optional extras: "
    "`pip install --no-deps mediapipe==0.10.21` (the managed environment does this)."
)


def _mediapipe() -> Any:
    """MediaPipe is installed with --no-deps (its metadata pulls jax and a second OpenCV it never uses)."""
    try:
        import mediapipe as mp
    except ImportError as exc:
        raise MissingAssetError(
            f"The face detector needs MediaPipe, which is not importable ({exc})", MEDIAPIPE_FIX
        ) from exc
    return mp


#: Number of face mesh landmarks with the iris refinement, and of the plain network's (no irises).
N_MESH_LANDMARKS = 478
N_PLAIN_MESH_LANDMARKS = 468
#: Face mesh indices of the five ArcFace points, in the template order (the subject's right eye first,
#: which is the image-left eye of an upright photo). The nose tip index 4 was chosen by measurement
#: against the ArcFace template (docs/preprocessing.md): index 1 sits 11 % of the eye distance lower.
MESH_IRIS_RIGHT = 468
MESH_IRIS_LEFT = 473
MESH_NOSE_TIP = 4
MESH_MOUTH_RIGHT = 61
MESH_MOUTH_LEFT = 291
MESH_POINTS5 = (MESH_IRIS_RIGHT, MESH_IRIS_LEFT, MESH_NOSE_TIP, MESH_MOUTH_RIGHT, MESH_MOUTH_LEFT)

#: The face detector's model names by ``model_selection``.
DETECTOR_MODELS = {"short": 0, "full": 1}


@dataclass(frozen=True)
class DetectorFace:
    """One face detector hit: box [x0, y0, x1, y1], six keypoints (eyes, nose, mouth, ears), score."""

    box: np.ndarray
    keypoints: np.ndarray
    score: float
    model: str


class MediaPipeFaces:
    """Owns the MediaPipe graphs (built on first use) and runs them on RGB uint8 arrays."""

    def __init__(
        self,
        *,
        max_faces: int = 5,
        mesh_confidence: float = 0.5,
        detector_confidence: float = 0.5,
    ) -> None:
        self.max_faces = max_faces
        self.mesh_confidence = mesh_confidence
        self.detector_confidence = detector_confidence
        self._mesh: Any = None
        self._plain_mesh: Any = None
        self._detectors: dict[str, Any] = {}

    def face_mesh(self, rgb: np.ndarray, *, depth: bool = False) -> list[np.ndarray]:
        """All faces the face mesh finds: a list of (478, 2) landmark arrays in pixels of ``rgb``; with
        ``depth``, (478, 3): the third column is the mesh's relative depth in pixels (MediaPipe's ``z``
        shares x's normalised scale, so it is multiplied by the width; smaller is nearer the camera)."""
        if self._mesh is None:
            self._mesh = self._mesh_graph(refine=True)
        return _mesh_points(self._mesh, rgb, depth, N_MESH_LANDMARKS)

    def plain_face_mesh(self, rgb: np.ndarray, *, depth: bool = False) -> list[np.ndarray]:
        """:meth:`face_mesh` by the wheel's other landmark network, the one without the attention
        refinement of eyes and lips (``face_landmark.tflite``): (468, 2) or (468, 3) points, no irises.
        A second opinion with its own habits (fit/second_network.py)."""
        if self._plain_mesh is None:
            self._plain_mesh = self._mesh_graph(refine=False)
        return _mesh_points(self._plain_mesh, rgb, depth, N_PLAIN_MESH_LANDMARKS)

    def _mesh_graph(self, *, refine: bool) -> Any:
        mp = _mediapipe()
        return mp.solutions.face_mesh.FaceMesh(
            static_image_mode=True,
            max_num_faces=self.max_faces,
            refine_landmarks=refine,
            min_detection_confidence=self.mesh_confidence,
        )

    def face_detector(self, rgb: np.ndarray, model: str) -> list[DetectorFace]:
        """All faces the face detector (``model`` "short" or "full" range) finds in ``rgb``."""
        if model not in DETECTOR_MODELS:
            raise ValueError(f"unknown MediaPipe detector model {model!r}; use one of {list(DETECTOR_MODELS)}")
        detector = self._detectors.get(model)
        if detector is None:
            mp = _mediapipe()

            detector = mp.solutions.face_detection.FaceDetection(
                model_selection=DETECTOR_MODELS[model], min_detection_confidence=self.detector_confidence
            )
            self._detectors[model] = detector
        height, width = rgb.shape[:2]
        result = detector.process(_contiguous_rgb(rgb))
        faces = []
        for detection in result.detections or ():
            location = detection.location_data
            rel = location.relative_bounding_box
            box = np.array(
                [
                    rel.xmin * width,
                    rel.ymin * height,
                    (rel.xmin + rel.width) * width,
                    (rel.ymin + rel.height) * height,
                ]
            )
            keypoints = np.array([(kp.x * width, kp.y * height) for kp in location.relative_keypoints])
            if keypoints.shape != (6, 2) or not (np.all(np.isfinite(box)) and np.all(np.isfinite(keypoints))):
                continue
            faces.append(DetectorFace(box=box, keypoints=keypoints, score=float(detection.score[0]), model=model))
        return faces

    def close(self) -> None:
        """Free the graphs (they are rebuilt on the next call)."""
        for graph in [self._mesh, self._plain_mesh, *self._detectors.values()]:
            if graph is not None:
                graph.close()
        self._mesh = self._plain_mesh = None
        self._detectors = {}


def _contiguous_rgb(rgb: np.ndarray) -> np.ndarray:
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {rgb.dtype} {rgb.shape}")
    return np.ascontiguousarray(rgb)


def _mesh_points(graph: Any, rgb: np.ndarray, depth: bool, n_points: int) -> list[np.ndarray]:
    """Every face a face mesh ``graph`` finds in ``rgb``: (n_points, 2 or 3) arrays in its pixels."""
    height, width = rgb.shape[:2]
    result = graph.process(_contiguous_rgb(rgb))
    faces = []
    for face in result.multi_face_landmarks or ():
        points = np.array([(lm.x * width, lm.y * height, lm.z * width) for lm in face.landmark], dtype=np.float64)
        if not depth:
            points = points[:, :2]
        if points.shape == (n_points, 3 if depth else 2) and np.all(np.isfinite(points)):
            faces.append(points)
    return faces
