"""The photo's gaze: each eye's rotation from the face mesh's iris points, the fitted head pose and camera.

The refined face mesh places five points on each iris (its centre and four on its rim). An eye is a ball
turning about its joint (the model's eye joint, at the eyeball's centre); its pupil is the eyeball vertex
farthest forward at rest. The iris centre in the photo is a ray from the camera; where that ray enters the
eyeball (a sphere through the pupil about the joint) is where the pupil has turned to, and the eye's
rotation is the smallest turn from the rest pupil to there (Listing's law: no twist about the line of
sight). Both eyes then look the same way: the mean of the two eyes' directions, so a noisy iris does not
make the head squint (docs/texture.md, "Gaze").

An eye is read only when the fit trusts its landmarks, the eye is open and its iris lies inside it;
otherwise the other eye decides, and with neither the eyes stay at rest and the reason is given.
numpy only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..flame.model_data import FlameModelData
from ..result import EYE_JOINTS
from .camera import rotation_matrix

#: The refined face mesh's iris rings (centre first), one per eye.
IRIS_RINGS = (range(468, 473), range(473, 478))
#: The 68 landmarks of each eye: 36-41 the subject's right, 42-47 the subject's left.
EYE_LANDMARKS = (range(36, 42), range(42, 48))
#: An eye reads only with this many of its six landmarks trusted (weight ≥ TRUSTED).
MIN_EYE_LANDMARKS = 4
TRUSTED = 0.5
#: Eye height over width (the mean of its two lid gaps over the corner distance) below which the eye is
#: closed or nearly so: the iris is then a guess.
MIN_OPENNESS = 0.12
#: The iris centre must lie this close to the eye's outline (in eye widths, beyond its corners' hull).
IRIS_MARGIN = 0.1
#: Turns beyond these (degrees, about the head's vertical and its left-right axis) are not an eye's range:
#: the iris or the pose is off.
MAX_YAW_DEG = 40.0
MAX_PITCH_DEG = 30.0
#: The face mesh's iris habit: it places the iris nearer the eye's middle than it is, and lower. Its readings
#: are mapped to the true turn by truth = GAIN × read + OFFSET (degrees), per axis, fitted by least squares
#: on 40 DEMO renders with known gazes (yaw ±25°, pitch ±15°) seen with their true head pose and the model's
#: mean identity in place of theirs, as a photo's identity is a guess too (benchmarks/fit_gaze.py
#: --calibrate; docs/texture.md, "Gaze").
YAW_GAIN, YAW_OFFSET_DEG = 1.157, 1.22
PITCH_GAIN, PITCH_OFFSET_DEG = 0.960, 2.18
#: Eyeball vertices: skin weight on their eye joint at least this.
EYEBALL_WEIGHT = 0.5
MIN_EYEBALL_VERTICES = 10


@dataclass(frozen=True)
class Eyeball:
    """One eye of the model, in the model frame at rest."""

    joint: int  # its joint (EYE_JOINTS)
    centre: np.ndarray  # (3,) the joint: the ball's centre
    pupil: np.ndarray  # (3,) the eyeball vertex farthest forward (+z)

    @property
    def radius(self) -> float:
        return float(np.linalg.norm(self.pupil - self.centre))


@dataclass
class Gaze:
    """The eyes' rotations (``eye_pose`` (2, 3), FLAME's left_eye then right_eye) or None with the reason."""

    eye_pose: np.ndarray | None
    reason: str = ""
    eyes_read: list[str] = field(default_factory=list)  # "left" / "right": whose iris set the gaze
    direction_deg: tuple[float, float] | None = None  # (yaw, pitch) of the gaze in the head's frame
    closed: tuple[str, ...] = ()  # "left" / "right": eyes the photo shows closed (their lids, not the eyeball)

    def meta(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": "ok" if self.eye_pose is not None else "skipped", "reason": self.reason,
                               "eyes_read": list(self.eyes_read), "eyes_closed": list(self.closed)}  # fmt: skip
        if self.direction_deg is not None:
            out["yaw_deg"], out["pitch_deg"] = (round(a, 2) for a in self.direction_deg)
        return out


def eyeballs(model: FlameModelData, vertices: np.ndarray) -> list[Eyeball] | None:
    """The model's two eyes for the mesh ``vertices`` (V, 3), subject's left then right (FLAME's joint
    order), or None when the model has no eye joints or no eyeball vertices on them."""
    if model.J_regressor.shape[0] <= max(EYE_JOINTS):
        return None
    points = np.asarray(vertices, dtype=np.float64)
    return eyeballs_of(points, model.weights, model.J_regressor @ points)


def eyeball_members(model: FlameModelData) -> tuple[np.ndarray, ...]:
    """Each eye's eyeball vertex indices (skin weight on its joint at least EYEBALL_WEIGHT), FLAME's joint
    order; () when the model has no eye joints or too few vertices on one."""
    weights = np.asarray(model.weights)
    if weights.shape[1] <= max(EYE_JOINTS):
        return ()
    members = tuple(np.flatnonzero(weights[:, joint] >= EYEBALL_WEIGHT) for joint in EYE_JOINTS)
    return members if all(len(m) >= MIN_EYEBALL_VERTICES for m in members) else ()


def eyeballs_of(vertices: np.ndarray, weights: np.ndarray, joints: np.ndarray) -> list[Eyeball] | None:
    """:func:`eyeballs` from a mesh (V, 3), its skin weights (V, J) and joints (J, 3): a result file's own
    arrays (``expression_vertices[0]``, ``skin_weights``, ``joints``)."""
    if weights.shape[1] <= max(EYE_JOINTS) or len(joints) <= max(EYE_JOINTS):
        return None
    points = np.asarray(vertices, dtype=np.float64)
    out = []
    for joint in EYE_JOINTS:
        members = np.flatnonzero(np.asarray(weights)[:, joint] >= EYEBALL_WEIGHT)
        if len(members) < MIN_EYEBALL_VERTICES:
            return None
        centre = np.asarray(joints[joint], dtype=np.float64)
        pupil = points[members[np.argmax(points[members, 2] - centre[2])]]
        out.append(Eyeball(joint, centre, pupil))
    return out


def turned_eyes(model: FlameModelData, vertices: np.ndarray, eye_pose: np.ndarray) -> np.ndarray:
    """``vertices`` (V, 3) with the eyes turned by ``eye_pose`` (2, 3) about their joints, as FLAME's
    skinning turns them (each vertex by its skin weight on the eye joint; neck and global at rest)."""
    points = np.asarray(vertices, dtype=np.float64)
    out = points.copy()
    for joint, axis_angle in zip(EYE_JOINTS, np.asarray(eye_pose, dtype=np.float64), strict=True):
        members = np.flatnonzero(model.weights[:, joint] > 0)
        centre = model.J_regressor[joint] @ points
        moved = (points[members] - centre) @ (rotation_matrix(axis_angle) - np.eye(3)).T
        out[members] += model.weights[members, joint, None] * moved
    return out


def pupil_direction(iris_px: np.ndarray, eye: Eyeball, pose: np.ndarray, camera: np.ndarray) -> np.ndarray:
    """Unit direction (3,) from the eye's centre to its pupil in the head's frame, for the iris centre
    ``iris_px`` (2,) seen by ``camera`` (f, cx, cy) with the head at ``pose`` (6,). Where the ray misses
    the eyeball (an iris outside its outline), the point of the ball nearest to the ray."""
    rotation = rotation_matrix(np.asarray(pose[:3], dtype=np.float64))
    centre = rotation @ eye.centre + np.asarray(pose[3:6], dtype=np.float64)
    f, cx, cy = (float(c) for c in camera)
    ray = np.array([(float(iris_px[0]) - cx) / f, -(float(iris_px[1]) - cy) / f, -1.0])
    ray /= np.linalg.norm(ray)
    along = float(ray @ centre)
    inside = along * along - (float(centre @ centre) - eye.radius**2)
    surface = ray * (along - math.sqrt(inside)) if inside >= 0 else ray * along
    direction = surface - centre
    return rotation.T @ (direction / max(float(np.linalg.norm(direction)), 1e-12))


def rotation_between(rest: np.ndarray, turned: np.ndarray) -> np.ndarray:
    """Axis-angle (3,) of the smallest rotation taking unit vector ``rest`` to unit vector ``turned``."""
    axis = np.cross(rest, turned)
    sine = float(np.linalg.norm(axis))
    angle = math.atan2(sine, float(rest @ turned))
    return np.zeros(3) if sine < 1e-12 else axis / sine * angle


def direction_angles(direction: np.ndarray) -> tuple[float, float]:
    """(yaw, pitch) in degrees of a direction in the head's frame (+z forward, +y up, +x the subject's left)."""
    yaw = math.degrees(math.atan2(float(direction[0]), float(direction[2])))
    pitch = math.degrees(math.asin(float(np.clip(direction[1], -1.0, 1.0))))
    return yaw, pitch


def angles_direction(yaw_deg: float, pitch_deg: float) -> np.ndarray:
    """The unit direction (3,) of (yaw, pitch) in degrees: the inverse of :func:`direction_angles`."""
    yaw, pitch = math.radians(yaw_deg), math.radians(pitch_deg)
    return np.array([math.sin(yaw) * math.cos(pitch), math.sin(pitch), math.cos(yaw) * math.cos(pitch)])


#: ``_unreadable``'s answer for a closed eye.
CLOSED = "is closed"


def eye_openness(eye: np.ndarray) -> float:
    """Height over width of an eye's six landmarks (6, 2): the mean of its two lid gaps over its corners."""
    width = float(np.linalg.norm(eye[3] - eye[0]))
    gaps = float(np.linalg.norm(eye[1] - eye[5]) + np.linalg.norm(eye[2] - eye[4]))
    return gaps / max(2.0 * width, 1e-9)


def _unreadable(eye: np.ndarray, weights: np.ndarray, iris: np.ndarray) -> str:
    """Why this eye's iris cannot be read, or "": ``eye`` its six landmarks (6, 2) and their ``weights``,
    ``iris`` the iris centre (2,)."""
    import cv2

    if int((weights >= TRUSTED).sum()) < MIN_EYE_LANDMARKS:
        return "is hidden or not trusted"
    if eye_openness(eye) < MIN_OPENNESS:
        return CLOSED
    width = float(np.linalg.norm(eye[3] - eye[0]))
    outline = np.asarray(eye, dtype=np.float32).reshape(-1, 1, 2)
    if cv2.pointPolygonTest(outline, (float(iris[0]), float(iris[1])), True) < -IRIS_MARGIN * width:
        return "has its iris outside its outline"
    return ""


def fit_gaze(
    mesh_points: np.ndarray | None, landmarks: np.ndarray, weights: np.ndarray, eyes: list[Eyeball] | None,
    model_landmarks: np.ndarray, pose: np.ndarray, camera: np.ndarray,
) -> Gaze:  # fmt: skip
    """The gaze of a fitted photo. ``mesh_points`` (478, 2+): the refined face mesh's points in the photo
    (irises at IRIS_RINGS); ``landmarks`` (68, 2) and ``weights`` (68,): the fit's landmarks and their
    trust; ``eyes`` from :func:`eyeballs` for the fitted expression's mesh, ``model_landmarks`` (68, 3) its
    landmarks (to tell which eye is which); ``pose`` (6,) and ``camera`` (3,): the fit. Both eyes look
    along the mean of the eyes read (each along its own read 8.1° off on DEMO renders against 6.3°)."""
    if mesh_points is None or len(mesh_points) < IRIS_RINGS[1].stop:
        return Gaze(None, "the face mesh gave no iris points")
    if eyes is None:
        return Gaze(None, "the head model has no eyeballs on eye joints")
    points = np.asarray(mesh_points, dtype=np.float64)[:, :2]
    irises = [points[list(ring)].mean(axis=0) for ring in IRIS_RINGS]
    directions: dict[int, np.ndarray] = {}
    refused: list[str] = []
    closed: list[str] = []
    for group in EYE_LANDMARKS:
        eye = landmarks[list(group)]
        # Which model eye and which iris ring: the nearest to this eye's landmarks (models and mirrored
        # detections label sides differently).
        ball = min(eyes, key=lambda b: float(np.linalg.norm(b.centre - model_landmarks[list(group)].mean(axis=0))))
        iris = min(irises, key=lambda p: float(np.linalg.norm(p - eye.mean(axis=0))))
        name = "left" if ball.joint == EYE_JOINTS[0] else "right"
        why = _unreadable(eye, weights[list(group)], iris)
        if why:
            refused.append(f"the {name} eye {why}")
            closed += [name] if why == CLOSED else []
            continue
        directions[ball.joint] = pupil_direction(iris, ball, pose, camera)
    if not directions:
        return Gaze(None, "; ".join(refused) + ": the eyes are left at rest", closed=tuple(closed))
    mean = np.mean(list(directions.values()), axis=0)
    read_yaw, read_pitch = direction_angles(mean / np.linalg.norm(mean))
    yaw, pitch = YAW_GAIN * read_yaw + YAW_OFFSET_DEG, PITCH_GAIN * read_pitch + PITCH_OFFSET_DEG
    mean = angles_direction(yaw, pitch)
    if abs(yaw) > MAX_YAW_DEG or abs(pitch) > MAX_PITCH_DEG:
        return Gaze(None, f"the irises say the eyes turn {yaw:.0f}° sideways and {pitch:.0f}° up, beyond an eye's "
                          "range: the eyes are left at rest", closed=tuple(closed))  # fmt: skip
    pose_out = np.stack([rotation_between((ball.pupil - ball.centre) / ball.radius, mean) for ball in eyes])
    read = ["left" if joint == EYE_JOINTS[0] else "right" for joint in sorted(directions)]
    return Gaze(pose_out, "; ".join(refused), read, (yaw, pitch), tuple(closed))
