"""What ``ofer-worker reconstruct`` prints about a result beyond the files: the kept identities in the
add-on's wording, the head's fit on the photo and the texture (numpy only).

IdRank's softmax over 100 samples is flat, so absolute scores all read alike (0.014, 0.013, 0.013 …); the
ranks and each identity's score relative to the first are what tell them apart, as in Blender's key names
and the contact sheet's labels.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .contact_sheet import identity_label
from .fit.camera import rotation_matrix

#: Identities named in the summary line (the rest are in the result and the contact sheet).
SHOWN_IDENTITIES = 4


def pose_angles_deg(axis_angle: np.ndarray) -> tuple[float, float, float]:
    """(pitch, yaw, roll) in degrees of a head rotation, the inverse of :func:`.fit.camera.euler_rotation`
    (R = Rx(pitch) Ry(yaw) Rz(roll): rotations about the camera's x, y and z axes)."""
    r = rotation_matrix(np.asarray(axis_angle, dtype=np.float64))
    yaw = math.asin(max(-1.0, min(1.0, float(r[0, 2]))))
    roll = math.atan2(-float(r[0, 1]), float(r[0, 0]))
    pitch = math.atan2(-float(r[1, 2]), float(r[2, 2]))
    return math.degrees(pitch), math.degrees(yaw), math.degrees(roll)


def identity_line(scores: np.ndarray, n_shapes: int) -> str:
    """``10 kept of 100: ID 01 (p=0.0142), ID 02 (94.9% of ID 01), …``."""
    scores = np.asarray(scores, dtype=np.float64)
    if len(scores) == 0:
        return f"none kept of {n_shapes}"
    best = float(scores[0])
    shown = [f"ID 01 (p={best:.3g})"]
    shown += [identity_label(i + 1, float(s), best) for i, s in enumerate(scores[1:SHOWN_IDENTITIES], start=1)]
    more = ", …" if len(scores) > SHOWN_IDENTITIES else ""
    return f"{len(scores)} kept of {n_shapes}: " + ", ".join(shown) + more


def fit_line(meta: dict[str, Any], head_pose: np.ndarray | None, camera: np.ndarray | None) -> str:
    """The head's pose and camera on the photo, or why there is none."""
    fit = meta.get("fit") or {}
    if head_pose is None or camera is None or fit.get("status") != "ok":
        reason = fit.get("reason") or "no fit was made"
        return f"none ({reason}); the head is imported upright at the origin"
    pitch, yaw, roll = pose_angles_deg(np.asarray(head_pose[:3]))
    image = meta.get("image") or {}
    width, height = int(image.get("width") or 0), int(image.get("height") or 0)
    focal = float(camera[0])
    relative = f" = {focal / max(width, height):.2f} × the longer side" if width and height else ""
    distance = float(np.linalg.norm(np.asarray(head_pose[3:6], dtype=np.float64)))
    used, miss = fit.get("n_landmarks_used"), fit.get("reprojection_px")
    landmarks = f"; {used} landmarks, median miss {miss:.1f} px" if used is not None and miss is not None else ""
    if fit.get("second_network"):
        landmarks += f" over {fit.get('detector_runs', 3)} detector runs (an occluder: the second network's too)"
    return (
        f"pitch {pitch:+.1f}°, yaw {yaw:+.1f}°, roll {roll:+.1f}° (about the camera's x, y, z), "
        f"{distance:.2f} m away; focal {focal:.0f} px{relative} ({fit.get('focal_source', 'estimated')})"
        f"{landmarks}"
    )


def gaze_line(meta: dict[str, Any]) -> str | None:
    """Where the eyes look (in the head's frame), or why they stay at rest; None for a result without the entry."""
    gaze = meta.get("gaze")
    if not isinstance(gaze, dict):
        return None
    if gaze.get("status") != "ok":
        return f"at rest ({gaze.get('reason') or 'not read'})"
    yaw, pitch = float(gaze.get("yaw_deg", 0.0)), float(gaze.get("pitch_deg", 0.0))
    sideways = f"{abs(yaw):.0f}° to the subject's {'left' if yaw >= 0 else 'right'}"
    upwards = f"{abs(pitch):.0f}° {'up' if pitch >= 0 else 'down'}"
    read = " and ".join(gaze.get("eyes_read") or [])
    return f"{sideways}, {upwards} of the head's forward (from the {read} iris{'es' if ' and ' in read else ''})"


def texture_line(meta: dict[str, Any]) -> str | None:
    """Where the texture's texels came from (shares of all the head's texels: the back of the head and the
    texels the photo shows covered are filled), or None without a texture."""
    name = meta.get("texture")
    if not name:
        return None
    stats = meta.get("texture_stats") or {}
    parts = [f"{100 * float(stats[k]):.0f}% {label}" for k, label in
             (("from_photo", "from the photo"), ("mirrored", "mirrored"), ("occluded", "seen covered, filled"),
              ("eyes_painted", "eyeballs painted as eyes"))
             if k in stats]  # fmt: skip
    return name + (f" ({', '.join(parts)}; of the head's texels)" if parts else "")
