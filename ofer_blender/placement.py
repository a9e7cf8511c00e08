"""Where the head and the photo's camera go in Blender (numpy only, no bpy).

Frames (docs/result-file.md): the model frame is FLAME's (x = the subject's left, y up, +z out of the
face); ``head_pose`` takes it to an OpenGL camera frame (looking down −z, +y up), and ``camera`` holds the
focal length and principal point in photo pixels (origin top-left, v down).

Choice: the head always stands on the grid facing −Y, with or without a photo, and the *camera* is placed
by the inverse head pose. So the head, its rig and its exports never inherit the photo's tilt, an import
with a camera and one without give the same head in the same place, and the rig's root bone stays free
for the artist. A camera matrix C with C · (R p + t) = H p for every model point p (H: the rig object's
matrix) sees the head exactly as the photo's camera saw it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .skinning import axis_angle_to_matrix

SENSOR_WIDTH_MM = 36.0  # Blender's default full-frame width; any width gives the same picture
CLIP_START_M = 0.01
CLIP_END_M = 100.0


def rig_matrix(lift: float) -> np.ndarray:
    """4×4 matrix of the rig object: FLAME's y-up turned z-up (+90° about X), lifted by ``lift`` metres."""
    m = np.eye(4)
    m[:3, :3] = [[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]]
    m[2, 3] = lift
    return m


def grid_lift(vertices: np.ndarray) -> float:
    """How far to raise the head so its lowest point (FLAME's smallest y) rests on the grid (z = 0)."""
    return float(-np.asarray(vertices, dtype=np.float64)[:, 1].min())


def pose_matrix(head_pose: np.ndarray) -> np.ndarray:
    """4×4 [R(aa) | t] of a (6,) head pose: model frame → camera frame."""
    pose = np.asarray(head_pose, dtype=np.float64).reshape(6)
    m = np.eye(4)
    m[:3, :3] = axis_angle_to_matrix(pose[:3])
    m[:3, 3] = pose[3:]
    return m


def camera_world_matrix(head_pose: np.ndarray, rig: np.ndarray) -> np.ndarray:
    """The camera object's world matrix that reproduces ``head_pose`` for a head whose rig matrix is ``rig``."""
    return rig @ np.linalg.inv(pose_matrix(head_pose))


def matrix_to_location_quaternion(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Location (3,) and unit quaternion (w, x, y, z) of a rigid 4×4 matrix."""
    r = np.asarray(matrix, dtype=np.float64)[:3, :3]
    # Shepperd's method: take the largest of the four squared components for stability
    diag = np.array([r[0, 0] + r[1, 1] + r[2, 2], r[0, 0], r[1, 1], r[2, 2]])
    i = int(np.argmax(diag))
    if i == 0:
        w = np.sqrt(1.0 + diag[0]) / 2
        q = [w, (r[2, 1] - r[1, 2]) / (4 * w), (r[0, 2] - r[2, 0]) / (4 * w), (r[1, 0] - r[0, 1]) / (4 * w)]
    elif i == 1:
        x = np.sqrt(1.0 + r[0, 0] - r[1, 1] - r[2, 2]) / 2
        q = [(r[2, 1] - r[1, 2]) / (4 * x), x, (r[0, 1] + r[1, 0]) / (4 * x), (r[0, 2] + r[2, 0]) / (4 * x)]
    elif i == 2:
        y = np.sqrt(1.0 - r[0, 0] + r[1, 1] - r[2, 2]) / 2
        q = [(r[0, 2] - r[2, 0]) / (4 * y), (r[0, 1] + r[1, 0]) / (4 * y), y, (r[1, 2] + r[2, 1]) / (4 * y)]
    else:
        z = np.sqrt(1.0 - r[0, 0] - r[1, 1] + r[2, 2]) / 2
        q = [(r[1, 0] - r[0, 1]) / (4 * z), (r[0, 2] + r[2, 0]) / (4 * z), (r[1, 2] + r[2, 1]) / (4 * z), z]
    quat = np.asarray(q)
    quat /= np.linalg.norm(quat)
    return np.asarray(matrix, dtype=np.float64)[:3, 3].copy(), quat


@dataclass(frozen=True)
class CameraIntrinsics:
    """A Blender camera that reproduces the photo's pinhole (sensor fit horizontal, square pixels)."""

    width: int  # render resolution = the photo's size, pixels
    height: int
    lens_mm: float
    sensor_width_mm: float
    shift_x: float  # fractions of the image width (Blender measures both shifts in the fitted dimension)
    shift_y: float


def intrinsics(camera: np.ndarray, width: int, height: int) -> CameraIntrinsics:
    """Blender lens and shift for focal length f and principal point (cx, cy) in pixels of a W×H photo.

    With the horizontal sensor fit the viewplane spans W pixels of f·36/W mm focal length, and a shift
    moves the optical axis from the centre: the axis lands on pixel (W/2 − shift_x·W, H/2 + shift_y·W)
    counted from the top-left, which must be (cx, cy).
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"the photo's size must be positive, got {width}×{height}")
    f, cx, cy = (float(c) for c in np.asarray(camera, dtype=np.float64).reshape(3))
    if not f > 0:
        raise ValueError(f"the camera's focal length must be positive, got {f}")
    return CameraIntrinsics(
        width=int(width),
        height=int(height),
        lens_mm=f * SENSOR_WIDTH_MM / width,
        sensor_width_mm=SENSOR_WIDTH_MM,
        shift_x=(width / 2 - cx) / width,
        shift_y=(cy - height / 2) / width,
    )


def expression_poses(head_pose: np.ndarray, expression_head_pose: np.ndarray | None, n_expressions: int) -> np.ndarray:
    """(M + 1, 6) pose per Expression value: 0 (neutral) uses ``head_pose``, m uses row m − 1 when given."""
    poses = np.tile(np.asarray(head_pose, dtype=np.float64).reshape(1, 6), (n_expressions + 1, 1))
    if expression_head_pose is not None:
        poses[1:] = np.asarray(expression_head_pose, dtype=np.float64).reshape(n_expressions, 6)
    return poses
