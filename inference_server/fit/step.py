"""The fit stage as the pipeline calls it: decoded expressions in, display order + result entries out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..blas_threads import one_blas_thread
from ..flame.model_data import FlameModelData
from ..hypotheses import ExpressionOrder, best_fit_order
from ..preprocess.detect import FaceDetection
from ..preprocess.image import LoadedImage
from ..render import vertex_normals
from .calibration import Correspondence
from .camera import exif_focal_pixels
from .gaze import Gaze, eyeballs, fit_gaze
from .landmark_averaging import Detector, mirrored_landmarks, with_depth
from .second_network import SecondNetwork, second_network_runs
from .stage import HeadFit, fit_head, to_68, untrusted


@dataclass
class PhotoFit:
    """The fit of one photo, already in display order (apply ``order`` to the decoded expressions)."""

    order: np.ndarray  # (M,) permutation of the expressions as decoded
    order_used: str
    head_fit: HeadFit
    warnings: list[dict[str, str]] = field(default_factory=list)
    gaze: Gaze = field(default_factory=lambda: Gaze(None, "no trusted head pose"))

    def arrays(self) -> dict[str, np.ndarray | None]:
        """``head_pose``, ``camera``, ``expression_head_pose``, ``eye_pose`` for the result (None when
        untrusted, ``eye_pose`` also when the irises could not be read)."""
        fit = self.head_fit
        if not fit.trusted or fit.expression_poses is None or fit.camera is None:
            return {"head_pose": None, "camera": None, "expression_head_pose": None, "eye_pose": None}
        poses = fit.expression_poses[self.order].astype(np.float32)
        eyes = None if self.gaze.eye_pose is None else self.gaze.eye_pose.astype(np.float32)
        return {"head_pose": poses[0].copy(), "camera": fit.camera.astype(np.float32), "expression_head_pose": poses,
                "eye_pose": eyes}  # fmt: skip

    def meta(self) -> dict[str, Any]:
        fit = self.head_fit
        out: dict[str, Any] = {"fit": _reordered(fit, self.order).meta(0), "expression_order": self.order_used,
                               "gaze": self.gaze.meta()}  # fmt: skip
        if fit.trusted and fit.expression_errors is not None:
            out["expression_fit_px"] = [round(float(e), 3) for e in fit.expression_errors[self.order]]
        return out


#: ``meta.fit.reason`` of a request that asked for no fit.
SKIPPED_REASON = "skipped on request, --no-fit"


def skipped_fit(m: int, mode: ExpressionOrder) -> PhotoFit:
    """The fit of a request that asked for none: the ``m`` expressions in the order decoded ("typical" where
    the best fit was asked for), no pose, no camera, and no warning, since nothing went wrong."""
    fit = HeadFit(status="skipped", reason=SKIPPED_REASON, focal_source="none")
    return PhotoFit(np.arange(m), "typical" if mode == "best_fit" else mode, fit, [], Gaze(None, SKIPPED_REASON))


def _reordered(fit: HeadFit, order: np.ndarray) -> HeadFit:
    if fit.expression_medians is None:
        return fit
    return HeadFit(**{**fit.__dict__, "expression_medians": fit.expression_medians[order]})


def landmark_normals(vertices: np.ndarray, model: FlameModelData) -> np.ndarray:
    """(68, 3) unit normals of ``vertices`` at the model's landmark embedding."""
    assert model.lmk_faces_idx is not None and model.lmk_bary_coords is not None
    corners = np.asarray(model.faces)[model.lmk_faces_idx]
    n = np.einsum("lk,lkc->lc", model.lmk_bary_coords, vertex_normals(vertices, model.faces)[corners])
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)


@one_blas_thread()  # hundreds of tiny LAPACK solves: threads only add waits (blas_threads.py)
def fit_photo(
    image: LoadedImage,
    detection: FaceDetection,
    model: FlameModelData,
    expression_vertices: np.ndarray,
    expression_landmarks: np.ndarray | None,
    params: np.ndarray,
    mode: ExpressionOrder,
    correspondence: Correspondence | None = None,
    detect: Detector | None = None,
    second_network: SecondNetwork | None = None,
    threads: int = 1,
) -> PhotoFit:
    """Fit the camera and a pose per expression (given in the order they were decoded, the most typical
    first), then choose the display order: ``mode`` "best_fit" sorts by the visible-landmark error;
    any other mode keeps the order given. ``correspondence``: the detector-to-68 matrix and precision measured on this
    model (:func:`.calibration.calibrate_correspondence`); ``detect``: the face mesh, run once more on the
    mirrored photo for a second observation of the landmarks (:mod:`.landmark_averaging`; None: the
    detection's run alone); a detector that gives depth ((478, 3) points) keeps it on the mirrored run's
    points, the direct run's comes with the detection (``landmark_depth``; else from one more run on the
    photo, :func:`.landmark_averaging.with_depth`), and the pose solves weigh it (:mod:`.pose_batch`);
    ``second_network``: where the photo shows an occluder next to the landmarks (an occluder blob, or the
    detection's ``occluded_points``: a hand, a mask), that network's runs on the photo and its mirror are
    fitted too (:mod:`.second_network`; only with ``detect``); ``threads``: the expressions' poses are
    solved on up to that many threads (the caller's CPU threads: the networks are idle meanwhile).
    Never raises for a photo the fit cannot use: it says why."""
    m = len(expression_vertices)
    keep = np.arange(m)
    if expression_landmarks is None or model.lmk_faces_idx is None or len(model.lmk_faces_idx) != 68:
        fit = untrusted("the head model has no 68-point landmark embedding")
    else:
        normals = landmark_normals(np.asarray(expression_vertices[0], dtype=np.float64), model)
        focal = exif_focal_pixels(image.path, image.width, image.height)
        mirrored, mesh = None, detection.landmarks
        if detect is not None and mesh is not None:
            to68 = lambda points: to_68(points, correspondence)  # noqa: E731
            depth = detection.landmark_depth
            # The detection's own run gave the depth (preprocess/chain.py); else one more run gives it.
            if depth is not None and len(depth) == len(mesh):
                mesh = np.column_stack([mesh, depth])
            else:
                mesh = with_depth(image.rgb, mesh, detect, to68)
            mirrored = mirrored_landmarks(image.rgb, to68(mesh), detect, to68)
        occluded_runs = None
        if detect is not None and second_network is not None:
            occluded_runs = lambda direct: second_network_runs(image.rgb, direct, second_network)  # noqa: E731
        fit = fit_head(image.rgb, focal, mesh, np.asarray(expression_landmarks, np.float64), normals,
                       correspondence=correspondence, mirrored=mirrored, occluded_runs=occluded_runs,
                       occluder_seen=bool(detection.occluded_points), threads=threads)  # fmt: skip
    warnings = list(fit.warnings)
    if mode != "best_fit":
        photo_fit = PhotoFit(keep, mode, fit, warnings)
    elif not fit.trusted or fit.expression_errors is None:
        message = "Expressions are in typical order: the fit to the photo is not trusted."
        warnings.append({"code": "best_fit_unavailable", "message": message})
        photo_fit = PhotoFit(keep, "typical", fit, warnings)
    else:
        photo_fit = PhotoFit(best_fit_order(params, fit.expression_errors), "best_fit", fit, warnings)
    photo_fit.gaze = _gaze(photo_fit, detection, model, expression_vertices, expression_landmarks)
    return photo_fit


def _gaze(
    photo_fit: PhotoFit, detection: FaceDetection, model: FlameModelData, expression_vertices: np.ndarray,
    expression_landmarks: np.ndarray | None,
) -> Gaze:  # fmt: skip
    """The gaze for the display-first expression's pose (the one the result's head_pose is)."""
    fit = photo_fit.head_fit
    if not fit.trusted or fit.expression_poses is None or fit.camera is None or fit.landmarks is None:
        return Gaze(None, "no trusted head pose")
    if fit.weights is None or expression_landmarks is None:
        return Gaze(None, "no landmarks to read the eyes by")
    first = int(photo_fit.order[0])
    eyes = eyeballs(model, np.asarray(expression_vertices[first], dtype=np.float64))
    return fit_gaze(detection.landmarks, fit.landmarks, fit.weights, eyes,
                    np.asarray(expression_landmarks[first], dtype=np.float64), fit.expression_poses[first],
                    fit.camera)  # fmt: skip
