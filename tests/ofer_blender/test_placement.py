"""The camera and head placement maths (no bpy), against a pinhole written out here."""

from __future__ import annotations

import importlib
import math

import numpy as np
import pytest


@pytest.fixture
def placement(addon):
    return importlib.import_module(addon.__name__ + ".placement")


def _rot(aa) -> np.ndarray:
    aa = np.asarray(aa, dtype=np.float64)
    angle = float(np.linalg.norm(aa))
    x, y, z = aa / angle
    K = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
    return np.eye(3) + math.sin(angle) * K + (1 - math.cos(angle)) * K @ K


def _blender_pixel(point_cam, lens, sensor, shift_x, shift_y, width, height):
    """Blender's viewplane for a horizontal sensor fit: the image spans sensor mm across ``width`` pixels
    at ``lens`` mm, shifted by shift·width pixels; pixels from the top-left, v down."""
    x, y, z = point_cam
    px_per_mm = width / sensor
    u = width / 2 - shift_x * width + lens * px_per_mm * x / -z
    v_up = height / 2 - shift_y * width + lens * px_per_mm * y / -z  # from the bottom
    return u, height - v_up


def test_intrinsics_reproduce_the_contract_projection(placement) -> None:
    f, cx, cy, width, height = 812.0, 300.5, 410.25, 640, 960  # portrait, off-centre principal point
    lens = placement.intrinsics(np.array([f, cx, cy]), width, height)
    for point in ([0.0, 0.0, -1.0], [0.1, -0.05, -0.7], [-0.2, 0.15, -2.0]):
        X, Y, Z = point
        expected = (cx + f * X / -Z, cy - f * Y / -Z)
        got = _blender_pixel(point, lens.lens_mm, lens.sensor_width_mm, lens.shift_x, lens.shift_y, width, height)
        assert got == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("bad", [(0.0, 10.0, 10.0), (-5.0, 1.0, 1.0)])
def test_intrinsics_refuse_a_non_positive_focal_length(placement, bad) -> None:
    with pytest.raises(ValueError, match="focal length"):
        placement.intrinsics(np.array(bad), 100, 100)


def test_camera_matrix_sees_model_points_in_the_pose_frame(placement) -> None:
    pose = np.array([0.2, -0.4, 0.1, 0.01, -0.02, -0.55])
    rig = placement.rig_matrix(0.17)
    camera = placement.camera_world_matrix(pose, rig)
    rng = np.random.default_rng(0)
    points = rng.normal(0, 0.1, (20, 3))
    world = points @ rig[:3, :3].T + rig[:3, 3]
    in_camera = (world - camera[:3, 3]) @ camera[:3, :3]  # camera⁻¹ for a rigid matrix
    np.testing.assert_allclose(in_camera, points @ _rot(pose[:3]).T + pose[3:], atol=1e-12)
    # the rig turns FLAME's y-up, +z-forward head upright, facing −Y, lifted by 0.17 m
    np.testing.assert_allclose(rig[:3, :3] @ [0, 1, 0], [0, 0, 1], atol=1e-12)
    np.testing.assert_allclose(rig[:3, :3] @ [0, 0, 1], [0, -1, 0], atol=1e-12)


def test_quaternion_round_trip_in_every_branch(placement) -> None:
    for aa in ([0.1, 0.2, 0.3], [3.0, 0.1, 0.0], [0.0, 3.1, 0.2], [0.1, 0.0, -3.1]):
        m = np.eye(4)
        m[:3, :3] = _rot(aa)
        m[:3, 3] = [1.0, 2.0, 3.0]
        location, (w, x, y, z) = placement.matrix_to_location_quaternion(m)
        back = np.array(
            [
                [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
            ]
        )
        np.testing.assert_allclose(back, m[:3, :3], atol=1e-12)
        np.testing.assert_allclose(location, [1.0, 2.0, 3.0])


def test_grid_lift_and_expression_poses(placement) -> None:
    assert placement.grid_lift(np.array([[0.0, -0.16, 0.0], [0.0, 0.12, 0.0]])) == pytest.approx(0.16)
    head = np.arange(6.0)
    per = np.arange(12.0).reshape(2, 6) + 100
    poses = placement.expression_poses(head, per, 2)
    np.testing.assert_array_equal(poses, np.vstack([head, per]))
    np.testing.assert_array_equal(placement.expression_poses(head, None, 2), np.tile(head, (3, 1)))
