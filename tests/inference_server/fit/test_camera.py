"""The contract's camera: projection directions, axis-angle round trip, focal length from EXIF."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image

from inference_server.fit.camera import (
    FILM_DIAGONAL_MM,
    axis_angle,
    exif_focal_pixels,
    project,
    rotation_matrix,
)


def test_frontal_face_projects_subject_left_to_image_right_and_up_to_image_top() -> None:
    pose = np.array([0.0, 0.0, 0.0, 0.0, 0.0, -0.6])  # frontal, 0.6 m in front of the camera
    camera = np.array([1000.0, 320.0, 240.0])
    pts = np.array([[0.0, 0.0, 0.0], [0.03, 0.0, 0.0], [0.0, 0.03, 0.0], [0.0, 0.0, 0.1]])
    uv = project(pts, pose, camera)
    np.testing.assert_allclose(uv[0], [320.0, 240.0])
    assert uv[1, 0] - 320.0 == 50.0 and uv[1, 1] == 240.0  # f X / -Z = 1000 * 0.03 / 0.6
    assert uv[2, 1] == 190.0  # +y is up: smaller v
    np.testing.assert_allclose(uv[3], [320.0, 240.0])  # the nose comes towards the camera on the axis


def test_axis_angle_round_trips_through_the_matrix() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        aa = rng.normal(size=3)
        aa *= rng.uniform(0, math.pi - 1e-3) / np.linalg.norm(aa)
        np.testing.assert_allclose(axis_angle(rotation_matrix(aa)), aa, atol=1e-7)
        r = rotation_matrix(aa)
        np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)


def test_focal_from_exif_35mm_equivalent(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    image = Image.new("RGB", (400, 300), (120, 100, 90))
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0xA405] = 50  # FocalLengthIn35mmFilm = 50 mm
    image.save(path, exif=exif)
    f = exif_focal_pixels(path, 400, 300)
    assert f is not None
    assert abs(f - 50.0 * 500.0 / FILM_DIAGONAL_MM) < 1e-6  # the diagonal is 500 px


def test_no_exif_means_no_focal(tmp_path: Path) -> None:
    path = tmp_path / "plain.png"
    Image.new("RGB", (64, 48)).save(path)
    assert exif_focal_pixels(path, 64, 48) is None
    assert exif_focal_pixels(tmp_path / "missing.jpg", 64, 48) is None
