"""The summary lines ``ofer-worker reconstruct`` prints: angles read back from a known rotation, identities
in the add-on's wording, and a missing fit said as such."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from inference_server.fit.camera import axis_angle, euler_rotation
from inference_server.result_summary import fit_line, gaze_line, identity_line, pose_angles_deg, texture_line


@pytest.mark.parametrize("angles", [(10.0, -25.0, 5.0), (-12.0, 40.0, -8.0), (0.0, 0.0, 0.0), (3.0, 70.0, 1.0)])
def test_pose_angles_invert_the_euler_rotation(angles: tuple[float, float, float]) -> None:
    rotation = euler_rotation(np.radians(angles))
    np.testing.assert_allclose(pose_angles_deg(axis_angle(rotation)), angles, atol=1e-9)


def test_identities_read_by_rank_and_relative_score() -> None:
    line = identity_line(np.array([0.0142, 0.0135, 0.0121, 0.0120, 0.0101]), 100)
    assert line.startswith("5 kept of 100: ID 01 (p=0.0142), ID 02 (95.1% of ID 01), ID 03 (85.2% of ID 01)")
    assert line.endswith(", …") and "ID 05" not in line
    assert identity_line(np.zeros(0), 8) == "none kept of 8"


def test_the_fit_line_gives_pose_distance_and_focal() -> None:
    pose = np.concatenate([axis_angle(euler_rotation(np.radians([5.0, -20.0, 2.0]))), [0.0, 0.0, -1.5]])
    fit: dict[str, Any] = {"status": "ok", "focal_source": "exif", "n_landmarks_used": 57, "reprojection_px": 2.108}
    meta = {"fit": fit, "image": {"width": 640, "height": 480}}
    line = fit_line(meta, pose, np.array([960.0, 320.0, 240.0]))
    assert line.startswith("pitch +5.0°, yaw -20.0°, roll +2.0°")
    assert "1.50 m away" in line and "focal 960 px = 1.50 × the longer side (exif)" in line
    assert "57 landmarks, median miss 2.1 px" in line and "second network" not in line
    occluded = fit_line(
        {**meta, "fit": {**fit, "detector_runs": 4, "second_network": True}}, pose, np.array([960.0, 320.0, 240.0])
    )
    assert occluded.endswith("median miss 2.1 px over 4 detector runs (an occluder: the second network's too)")


def test_no_fit_says_why_and_what_the_import_does() -> None:
    meta = {"fit": {"status": "untrusted", "reason": "the head is turned 73° (a profile; at most 60°)"}}
    line = fit_line(meta, None, None)
    assert line.startswith("none (the head is turned 73°") and "upright at the origin" in line


def test_texture_line() -> None:
    stats = {"from_photo": 0.1253, "mirrored": 0.0609, "occluded": 0.2661}
    meta: dict[str, Any] = {"texture": "result_texture.png", "texture_stats": stats}
    assert texture_line(meta) == ("result_texture.png (13% from the photo, 6% mirrored, 27% seen covered, filled; "
                                  "of the head's texels)")  # fmt: skip
    stats["eyes_painted"] = 0.0312
    assert texture_line(meta) == ("result_texture.png (13% from the photo, 6% mirrored, 27% seen covered, filled, "
                                  "3% eyeballs painted as eyes; of the head's texels)")  # fmt: skip
    assert texture_line({}) is None


def test_gaze_line_says_where_the_eyes_look_or_why_not() -> None:
    read = {"gaze": {"status": "ok", "yaw_deg": -17.3, "pitch_deg": 4.0, "eyes_read": ["left", "right"], "reason": ""}}
    assert gaze_line(read) == "17° to the subject's right, 4° up of the head's forward (from the left and right irises)"
    one = {"gaze": {"status": "ok", "yaw_deg": 3.0, "pitch_deg": -2.5, "eyes_read": ["left"], "reason": "..."}}
    assert gaze_line(one) == "3° to the subject's left, 2° down of the head's forward (from the left iris)"
    closed = {
        "gaze": {
            "status": "skipped",
            "reason": "the right eye is closed; the left eye is closed: the eyes are left at rest",
        }
    }
    assert gaze_line(closed) == "at rest (the right eye is closed; the left eye is closed: the eyes are left at rest)"
    assert gaze_line({}) is None
