"""The fit stage: head pose and pinhole camera from the photo's landmarks, and how well each expression
agrees with what is visible (numpy + OpenCV; no torch).

Inputs are the detector's dense landmarks (MediaPipe's 478, mapped to iBUG's 68 by
:mod:`.landmarks68`), the photo (for the colour evidence of occluders and for EXIF), and the model's 68
landmarks on every expression mesh. A landmark is trusted by (a) its group's prior, (b) the photo's
evidence that it is not covered (:mod:`..texture.occluder`) and not next to an occluder the detector bends
its mesh around (:mod:`.cover`), (c) facing the camera once a first pose is
known, and (d) the robust loss. When the result cannot be trusted the stage says why and gives no pose.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..texture.occluder import FeatureZones, SkinModel, SkinModelError, face_skin, occluded
from .calibration import Correspondence
from .camera import Intrinsics, default_intrinsics, rotation_matrix, to_camera
from .cover import cover_weights, eyes_covered
from .landmarks68 import GROUPS, N_LANDMARKS, group_weights, landmarks68_from_mesh
from .pose import PoseFit, eye_distance
from .pose_batch import fit_poses, stacked_runs
from .second_network import SECOND_NETWORK_MAX_YAW_DEG, SECOND_NETWORK_WEIGHT
from .trust import plain_eyes, pose_doubt

#: The detector's scatter at the eyes in eye distances (fit calibration on the DEMO head, docs/texture.md).
EYE_SCATTER_IOD = 0.025
#: Scatter in pixels that every landmark shares whatever the face size. Not calibrated: chosen between 1 and 3
#: on the clip test (tests/.../test_sequence_run.py: 7.9°, 6.9°, 6.4°) and test_stage's renders (all pass).
SHARED_SCATTER_PX = 2.0
#: Fewer trusted landmarks than this and the pose is not reported. A hand over mouth and nose leaves eyes and
#: brows (<= 22, some next to the hand): at 20 the bundled sample photo (17) and 3 of 40 hand renders went
#: without a pose; at 16 and 14 benchmarks/fit_trust.py's sweeps kept no more wrong fits (hand: 4 -> 2 of
#: 49, the group consensus can leave out more groups), clean and bar unchanged (docs/texture.md).
MIN_TRUSTED_LANDMARKS = 14
#: A landmark counts as trusted (visible) at or above this weight.
TRUSTED_WEIGHT = 0.5
#: Median reprojection error of the trusted landmarks above this fraction of the eye distance: the head
#: and the photo disagree too much for the camera to be right.
MAX_MEDIAN_ERROR_IOD = 0.12
#: With the mirrored run, the fit of both runs starts from the pose of the direct run's (already solved for
#: the trust check) instead of searching the yaw again from START_YAWS (docs/texture.md, "Stop 31, the fit
#: of both runs seeded from the direct run's").
SEED_FROM_DIRECT = True
#: Beyond this yaw (degrees) one half of the face is hidden and the 2D landmarks are guesses.
MAX_YAW_DEG = 55.0
#: Radius (fraction of the eye distance) of the disk around a landmark whose pixels are tested for cover.
PATCH_RADIUS_IOD = 0.08
#: A group whose median miss under the pose of the other groups exceeds this many eye distances is a
#: guess, not a measurement; its weights are multiplied by DISTRUSTED_GROUP.
CONSENSUS_IOD = 0.2
DISTRUSTED_GROUP = 0.1
#: A residual is capped at this many eye distances when scoring an expression, so one landmark that
#: follows another convention (jaw contour) cannot outvote the rest.
SCORE_CAP_IOD = 0.15


@dataclass
class HeadFit:
    """What the fit found. Poses and errors are per expression in the order the expressions were given."""

    status: str  # "ok" | "untrusted" | "skipped" (the request asked for no fit: ``step.skipped_fit``)
    reason: str
    focal_source: str
    camera: np.ndarray | None = None  # (3,) f, cx, cy
    expression_poses: np.ndarray | None = None  # (M, 6)
    expression_errors: np.ndarray | None = None  # (M,) pixels: capped weighted RMS, visible landmarks
    expression_medians: np.ndarray | None = None  # (M,) pixels: median residual, visible landmarks
    reference: int = 0  # the expression whose pose fixed the camera
    landmarks: np.ndarray | None = None  # (68, 2) the photo's landmarks
    weights: np.ndarray | None = None  # (68,) trust of each landmark
    reprojection_px: float | None = None
    warnings: list[dict[str, str]] = field(default_factory=list)
    detector_runs: int = 1  # detector runs the poses were fitted to (direct, mirrored, the second network's)
    second_network: bool = False  # the second network's runs among them (fit/second_network.py)

    @property
    def trusted(self) -> bool:
        return self.status == "ok"

    def meta(self, display_first: int) -> dict[str, Any]:
        """meta["fit"] of the result; ``display_first`` is the expression shown first."""
        used = 0 if self.weights is None else int((self.weights >= TRUSTED_WEIGHT).sum())
        error = self.reprojection_px
        if self.expression_medians is not None:
            error = float(self.expression_medians[display_first])
        return {
            "status": self.status,
            "reason": self.reason,
            "focal_source": self.focal_source,
            "n_landmarks_used": used,
            "reprojection_px": None if error is None else round(float(error), 3),
            "detector_runs": self.detector_runs,
            "second_network": self.second_network,
        }


def untrusted(reason: str, focal_source: str = "estimated", **kwargs: Any) -> HeadFit:
    fit = HeadFit(status="untrusted", reason=reason, focal_source=focal_source, **kwargs)
    fit.warnings.append({"code": "fit_untrusted", "message": f"No camera or head pose: {reason}."})
    return fit


def landmark_visibility(
    rgb: np.ndarray, mesh_points: np.ndarray, landmarks: np.ndarray, skin: SkinModel | None = None
) -> np.ndarray:
    """(68,) in [0, 1]: the share of each landmark's neighbourhood that the photo shows as face.

    The skin colour is learnt inside the detected face outline (unless ``skin`` is given); around each
    landmark, pixels that are neither skin nor the feature expected there (lips at the mouth; dark or
    colourless at eyes and brows) count as cover.
    """
    height, width = rgb.shape[:2]
    if skin is None:
        skin = face_skin(rgb, mesh_points)
    radius = max(2, round(PATCH_RADIUS_IOD * eye_distance(landmarks)))
    offsets = np.stack(list(np.mgrid[-radius : radius + 1, -radius : radius + 1]), axis=-1).reshape(-1, 2)
    offsets = offsets[(offsets**2).sum(axis=1) <= radius**2]
    # Every landmark's disk at once: (68, m) pixels, one colour test for all of them.
    xy = np.round(landmarks).astype(np.int64)[:, None, :] + offsets[None, :, ::-1]
    inside = (xy[..., 0] >= 0) & (xy[..., 0] < width) & (xy[..., 1] >= 0) & (xy[..., 1] < height)
    pixels = rgb[np.clip(xy[..., 1], 0, height - 1), np.clip(xy[..., 0], 0, width - 1)]
    group = np.empty(N_LANDMARKS, dtype=object)
    for name, indices in GROUPS.items():
        group[list(indices)] = name
    shape = inside.shape
    zones = FeatureZones(
        mouth=np.broadcast_to((group == "mouth")[:, None], shape),
        brows=np.broadcast_to(np.isin(group, ["eyes", "brows"])[:, None], shape),
        eye_opening=np.zeros(shape, bool),
    )
    covered = occluded(pixels, skin, zones) & inside
    n_inside = inside.sum(axis=1)
    share = covered.sum(axis=1) / np.maximum(n_inside, 1)
    # Outside the photo: not visible.
    return np.where(n_inside > 0, (1.0 - share) * (n_inside / inside.shape[1]), 0.0)


def _facing(pose: np.ndarray, points: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """(68,) in [0, 1]: 1 for a landmark whose surface faces the camera, 0 past grazing."""
    cam = to_camera(points, pose)
    turned = normals @ rotation_matrix(pose[:3]).T
    view = -cam / np.maximum(np.linalg.norm(cam, axis=1, keepdims=True), 1e-12)
    return np.clip((turned * view).sum(axis=1) / 0.25, 0.0, 1.0)


def group_consensus(
    points: np.ndarray, image: np.ndarray, weights: np.ndarray, intr: Intrinsics, start: np.ndarray,
    precision: np.ndarray | None = None, second: np.ndarray | None = None,
) -> np.ndarray:  # fmt: skip
    """Distrust a landmark group the rest of the face contradicts.

    A detector guesses hidden features onto visible skin (a covered mouth drawn under the nose), where
    colour cannot tell. The head's geometry can: posed by the other groups alone, the guessed group lands
    far from where it was drawn. Each group is left out in turn (when enough trusted points remain) and
    weighted down when its median miss exceeds CONSENSUS_IOD eye distances.
    """
    out = weights.copy()
    limit = CONSENSUS_IOD * eye_distance(image[:, :2])
    tested: list[tuple[np.ndarray, np.ndarray]] = []
    for indices in GROUPS.values():
        members = np.zeros(N_LANDMARKS, bool)
        members[list(indices)] = True
        own = members & (weights >= TRUSTED_WEIGHT)
        others = np.where(members, 0.0, weights)
        if own.sum() < 3 or int((others >= TRUSTED_WEIGHT).sum()) < MIN_TRUSTED_LANDMARKS:
            continue
        tested.append((members, others))
    if not tested:
        return out
    # Every left-out fit at once (one batched solve; each as fit_pose would give it).
    fits = fit_poses(np.broadcast_to(points, (len(tested), *points.shape)), image,
                     np.stack([others for _, others in tested]), intr, fit_focal=False, starts=start,
                     precision=precision, second=second)  # fmt: skip
    for (members, _), fit in zip(tested, fits, strict=True):
        own = members & (weights >= TRUSTED_WEIGHT)
        if float(np.median(fit.residuals[own])) > limit:
            out[members] *= DISTRUSTED_GROUP
    return out


def yaw_deg(pose: np.ndarray) -> float:
    """Yaw of the head (rotation about the camera's vertical) of a pose, in degrees."""
    forward = rotation_matrix(pose[:3]) @ np.array([0.0, 0.0, 1.0])
    return math.degrees(math.atan2(forward[0], forward[2]))


def capped_rms(residuals: np.ndarray, weights: np.ndarray, cap: float) -> float:
    """An expression's score: the weighted RMS of its landmark residuals (pixels), each capped at ``cap``."""
    r = np.minimum(residuals, cap)
    return math.sqrt(float((weights * r**2).sum() / max(float(weights.sum()), 1e-12)))


def score_expressions(
    expression_landmarks: np.ndarray, image: np.ndarray, weights: np.ndarray, intr: Intrinsics, start: np.ndarray,
    precision: np.ndarray | None = None, second: np.ndarray | None = None, threads: int = 1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Per expression: its own pose (camera fixed), the capped weighted RMS error over the trusted
    landmarks (pixels), and the median residual over them; the expressions shared out over up to
    ``threads`` threads (:func:`.pose_batch.fit_poses`)."""
    cap = SCORE_CAP_IOD * eye_distance(image[:, :2])
    trusted = weights >= TRUSTED_WEIGHT
    poses, errors, medians = [], [], []
    # All expressions in one batched solve (each as fit_pose would fit it alone, to rounding).
    for fit in fit_poses(
        expression_landmarks,
        image,
        weights,
        intr,
        fit_focal=False,
        starts=start,
        precision=precision,
        second=second,
        threads=threads,
    ):
        poses.append(fit.pose)
        errors.append(capped_rms(fit.residuals, weights, cap))
        medians.append(float(np.median(fit.residuals[trusted])) if trusted.any() else float("nan"))
    return np.stack(poses), np.asarray(errors), np.asarray(medians)


def scatter_precision(precision: np.ndarray, eye_distance_px: float) -> np.ndarray:
    """The calibration's precision, for a face of this size in pixels. It was measured where the detector's
    scatter grows with the face (renders ~100 px between the eyes); on a small face a pixel or so of
    scatter that every landmark shares takes over and the landmarks become about equally precise (a clip
    of 320 x 240 frames fitted with the calibrated precision as it is turned up to 9° off, against 5° before
    the precision; with this model 6.9°). At the renders' own size the floor 0.3 becomes 0.41; several hundred
    px between the eyes keep the calibrated weights."""
    eyes = (EYE_SCATTER_IOD * eye_distance_px) ** 2
    shared = SHARED_SCATTER_PX**2
    return (eyes + shared) / (eyes / np.asarray(precision, dtype=np.float64) + shared)


def fit_head(
    rgb: np.ndarray,
    focal_px: float | None,
    mesh_points: np.ndarray | None,
    expression_landmarks: np.ndarray,
    reference_normals: np.ndarray,
    reference: int = 0,
    correspondence: Correspondence | None = None,
    mirrored: np.ndarray | None = None,
    occluded_runs: Callable[[np.ndarray], np.ndarray | None] | None = None,
    occluder_seen: bool = False,
    threads: int = 1,
) -> HeadFit:
    """Fit the camera and a pose per expression. ``focal_px``: the focal length when known (EXIF), else
    it is estimated; ``mesh_points`` (478, 2): the detector's dense landmarks
    (None when the face was found without them); ``expression_landmarks`` (M, 68, 3) model frame;
    ``reference_normals`` (68, 3) surface normals at the landmarks of expression ``reference``;
    ``correspondence``: the detector-to-68 matrix and landmark precision measured on this model
    (:mod:`.calibration`), else the semantic table with equal precision; ``mirrored`` (68, 2): the
    landmarks of the detector's run on the mirrored photo, in the photo's pixels and labels
    (:mod:`.landmark_averaging`), fitted beside the direct ones in every pose solve; ``occluded_runs``:
    asked with the direct run's 68 landmarks only when the photo shows an occluder next to them (an
    occluder blob, :mod:`.cover`, or ``occluder_seen``: the detection's own evidence, a hand or a mask on
    its five points, :mod:`..preprocess.occlusion`) and the direct run's fit turns the head at most
    SECOND_NETWORK_MAX_YAW_DEG, the second network's runs ((k × 68, C), :mod:`.second_network`), fitted
    beside both at SECOND_NETWORK_WEIGHT; ``threads``: the expressions' poses are solved on up to that
    many threads.

    With ``mirrored``, the trust is still decided on the direct run: the fit of the reference expression
    without it must be trusted too, else that untrusted fit is returned (near a profile the second run
    let two turned heads through 10-16° off, ``benchmarks/fit_trust.py``); and when the fit with it is
    untrusted where the direct run's alone is not, the direct run's fit is returned."""
    found = _evidence(rgb, focal_px, mesh_points, expression_landmarks, correspondence)
    if isinstance(found, HeadFit):
        return found
    asks = found.occluded or occluder_seen
    if mirrored is None and (occluded_runs is None or not asks):
        return _solve(found, expression_landmarks, reference_normals, reference, None, threads=threads)
    # The photo's evidence is the same with and without the other runs: only the solves are repeated.
    alone = _solve(found, expression_landmarks[reference : reference + 1], reference_normals, 0, None)
    if not alone.trusted or alone.expression_poses is None:
        return alone
    extra = None
    if occluded_runs is not None and asks and abs(yaw_deg(alone.expression_poses[0])) <= SECOND_NETWORK_MAX_YAW_DEG:
        extra = occluded_runs(found.image if found.depth is None else np.column_stack([found.image, found.depth]))
    others, precision = _other_runs(found, mirrored, extra)
    if others is None:
        return _solve(found, expression_landmarks, reference_normals, reference, None, threads=threads)
    # The two runs' fit starts where the direct run's ended (pose and focal), not from the yaw search again.
    start = None
    if SEED_FROM_DIRECT and alone.expression_poses is not None and alone.camera is not None:
        start = alone.expression_poses[0]
        if found.intr.source != "exif":  # the focal is fitted: its log-ratio to the guess as the 7th parameter
            start = np.append(start, np.log(alone.camera[0] / found.intr.focal))
    both = _solve(found, expression_landmarks, reference_normals, reference, others, start, precision, threads)
    if not both.trusted:
        return _solve(found, expression_landmarks, reference_normals, reference, None, threads=threads)
    both.detector_runs, both.second_network = 1 + len(others) // N_LANDMARKS, extra is not None
    return both


def _other_runs(
    found: _Evidence, mirrored: np.ndarray | None, extra: np.ndarray | None
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The runs fitted beside the direct one, stacked ((k × 68, C) or None), and the precision of every run's
    points (None: the evidence's own, shared by all runs): the second network's at SECOND_NETWORK_WEIGHT."""
    if extra is None:
        return mirrored, found.precision
    base = np.ones(N_LANDMARKS) if found.precision is None else found.precision
    first_network = 1 if mirrored is None else 2  # the direct run, and the mirrored one when there is one
    precision = np.concatenate([base] * first_network + [SECOND_NETWORK_WEIGHT * base] * (len(extra) // N_LANDMARKS))
    return stacked_runs([extra] if mirrored is None else [mirrored, extra]), precision


@dataclass
class _Evidence:
    """What the photo says before any pose: the camera guess, the 68 landmarks and their trust."""

    intr: Intrinsics
    image: np.ndarray  # (68, 2)
    depth: np.ndarray | None  # (68,) the detector's relative depth in pixels, when it gives one
    precision: np.ndarray | None
    weights: np.ndarray  # (68,) group prior × visibility
    plain: np.ndarray  # plain_eyes' answer (fit/trust.py)
    occluded: bool = False  # an occluder the photo shows lies next to some landmark (fit/cover.py)
    eyes_covered: int = 0  # how many eyes lie on or next to an occluder the photo shows (fit/cover.py)


def _evidence(
    rgb: np.ndarray, focal_px: float | None, mesh_points: np.ndarray | None, expression_landmarks: np.ndarray,
    correspondence: Correspondence | None,
) -> _Evidence | HeadFit:  # fmt: skip
    """The photo's evidence for :func:`fit_head`, or the untrusted fit when it already says no."""
    height, width = rgb.shape[:2]
    intr = default_intrinsics(width, height)
    source = "exif" if focal_px is not None else "estimated"
    if focal_px is not None:
        intr = Intrinsics(focal_px, intr.cx, intr.cy, "exif")
    if mesh_points is None:
        return untrusted("the face was found without dense landmarks (five points only)", source)
    if expression_landmarks.ndim != 3 or expression_landmarks.shape[1:] != (N_LANDMARKS, 3):
        return untrusted("the head model has no 68-point landmark embedding", source)
    calibrated = correspondence is not None and correspondence.matrix.shape[1] == len(mesh_points)
    observed = to_68(mesh_points, correspondence)
    image, depth = observed[:, :2], (observed[:, 2] if observed.shape[1] > 2 else None)
    precision = None
    if correspondence is not None and calibrated:
        precision = scatter_precision(correspondence.precision, eye_distance(image))
    points = np.asarray(mesh_points, dtype=np.float64)[:, :2]
    try:
        skin = face_skin(rgb, points)
        # The landmark's own neighbourhood, then its distance to an occluder the photo shows (fit/cover.py).
        cover = cover_weights(rgb, points, image, skin)
        visibility = landmark_visibility(rgb, points, image, skin) * cover
        plain = plain_eyes(rgb, points, image, skin)
    except SkinModelError as exc:
        return untrusted(f"the face region shows no usable skin ({exc})", source, landmarks=image)
    weights = group_weights() * visibility
    if int((weights >= TRUSTED_WEIGHT).sum()) < MIN_TRUSTED_LANDMARKS:
        return untrusted(_too_few(weights), source, landmarks=image, weights=weights)
    return _Evidence(intr, image, depth, precision, weights, plain, bool((cover < 1.0).any()), eyes_covered(cover))


def _solve(
    found: _Evidence, expression_landmarks: np.ndarray, reference_normals: np.ndarray, reference: int,
    mirrored: np.ndarray | None, start: np.ndarray | None = None, precision: np.ndarray | None = None,
    threads: int = 1,
) -> HeadFit:  # fmt: skip
    """The camera and poses from the photo's evidence, with or without the other runs (``mirrored``: the
    mirrored run's and the second network's, stacked), trusted or not by its own checks alone; ``start``:
    the pose (6,), or pose and focal log-ratio (7,) when the focal is fitted, to start from instead of the
    yaw search; ``precision``: every run's (:func:`_other_runs`), else the evidence's."""
    intr, image, plain = found.intr, found.image, found.plain
    precision = found.precision if precision is None else precision
    # The solves see the depth beside the 2D points (pose_batch); everything else reads the 2D points.
    seen = image if found.depth is None else np.column_stack([image, found.depth])
    source, fit_focal = intr.source, intr.source != "exif"
    first: PoseFit = fit_poses(expression_landmarks[reference][None], seen, found.weights, intr, starts=start,
                               fit_focal=fit_focal, precision=precision, second=mirrored)[0]  # fmt: skip
    weights = found.weights * _facing(first.pose, expression_landmarks[reference], reference_normals)
    weights = group_consensus(expression_landmarks[reference], seen, weights,
                              Intrinsics(first.focal, intr.cx, intr.cy, source), first.pose, precision,
                              mirrored)  # fmt: skip
    if int((weights >= TRUSTED_WEIGHT).sum()) < MIN_TRUSTED_LANDMARKS:
        return untrusted(_too_few(weights), source, landmarks=image, weights=weights)
    ref = fit_poses(expression_landmarks[reference][None], seen, weights, intr, fit_focal=fit_focal,
                    starts=first.pose, precision=precision, second=mirrored)[0]  # fmt: skip
    intr = Intrinsics(ref.focal, intr.cx, intr.cy, source)
    yaw = yaw_deg(ref.pose)
    trusted = weights >= TRUSTED_WEIGHT
    median = float(np.median(ref.residuals[trusted]))
    details: dict[str, Any] = {"landmarks": image, "weights": weights, "reprojection_px": median}
    if abs(yaw) > MAX_YAW_DEG:
        return untrusted(f"the head is turned {abs(yaw):.0f}° (a profile; at most {MAX_YAW_DEG:.0f}°)", source,
                         **details)  # fmt: skip
    facing = _facing(ref.pose, expression_landmarks[reference], reference_normals)
    doubt = pose_doubt(weights, yaw, plain, facing, yaw_deg(first.pose), found.eyes_covered)
    if doubt:
        return untrusted(doubt, source, **details)
    if median > MAX_MEDIAN_ERROR_IOD * eye_distance(image):
        return untrusted(f"the landmarks disagree with the head by {median:.1f} px (median)", source, **details)
    poses, errors, medians = score_expressions(expression_landmarks, seen, weights, intr, ref.pose, precision,
                                               mirrored, threads)  # fmt: skip
    return HeadFit(
        status="ok", reason="", focal_source=source, camera=np.array([intr.focal, intr.cx, intr.cy]),
        expression_poses=poses, expression_errors=errors, expression_medians=medians, reference=reference,
        **details,
    )  # fmt: skip


def to_68(mesh_points: np.ndarray, correspondence: Correspondence | None) -> np.ndarray:
    """(68, 2) the landmarks of the detector's (478, 2) points: the calibrated map when it fits them; from
    (478, 3) points with the mesh's relative depth, (68, 3) (both maps are affine: depth maps like x and y)."""
    points = np.asarray(mesh_points, dtype=np.float64)
    if correspondence is not None and correspondence.matrix.shape[1] == len(points):
        return correspondence.matrix @ points
    return landmarks68_from_mesh(points)


def _too_few(weights: np.ndarray) -> str:
    n = int((weights >= TRUSTED_WEIGHT).sum())
    return f"only {n} of 68 landmarks are visible and trusted (at least {MIN_TRUSTED_LANDMARKS} needed)"
