from __future__ import annotations

import math

import numpy as np
import pytest


@pytest.fixture
def skinning(addon):
    import importlib

    return importlib.import_module(addon.__name__ + ".skinning")


def _rotation_from_quaternion(q: np.ndarray) -> np.ndarray:
    w, x, y, z = q
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def test_axis_angle_matches_quaternion_and_known_rotation(skinning) -> None:
    rng = np.random.default_rng(1)
    for aa in rng.normal(0, 1, (20, 3)):
        q = skinning.axis_angle_to_quaternion(aa)
        assert np.isclose(np.linalg.norm(q), 1.0)
        np.testing.assert_allclose(skinning.axis_angle_to_matrix(aa), _rotation_from_quaternion(q), atol=1e-12)
    quarter_z = skinning.axis_angle_to_matrix(np.array([0, 0, math.pi / 2]))
    np.testing.assert_allclose(quarter_z @ [1, 0, 0], [0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(skinning.axis_angle_to_matrix(np.zeros(3)), np.eye(3))


def test_lbs_with_jaw_only_pose_is_the_two_transform_blend(skinning) -> None:
    rng = np.random.default_rng(2)
    joints = rng.normal(0, 0.05, (5, 3))
    parents = np.array([-1, 0, 1, 1, 1])
    weights = rng.uniform(0, 1, (50, 5))
    weights /= weights.sum(axis=1, keepdims=True)
    rest = rng.normal(0, 0.1, (50, 3))
    pose = np.zeros((5, 3))
    pose[2] = [0.3, -0.1, 0.05]
    R = skinning.axis_angle_to_matrix(pose[2])
    expected = (1 - weights[:, 2:3]) * rest + weights[:, 2:3] * ((rest - joints[2]) @ R.T + joints[2])
    np.testing.assert_allclose(skinning.lbs(rest, joints, parents, weights, pose), expected, atol=1e-12)


def test_lbs_chain_rotates_children_about_their_parent(skinning) -> None:
    joints = np.array([[0, 0, 0], [0, 1, 0], [0, 2, 0]], dtype=float)
    parents = np.array([-1, 0, 1])
    pose = np.zeros((3, 3))
    pose[1] = [0, 0, math.pi / 2]  # neck turns a quarter about z: the child joint at (0,2,0) goes to (-1,1,0)
    weights = np.array([[0, 0, 1.0]])
    posed = skinning.lbs(np.array([[0, 2, 0.0]]), joints, parents, weights, pose)
    np.testing.assert_allclose(posed, [[-1, 1, 0]], atol=1e-12)


def test_unpose_inverts_lbs(skinning) -> None:
    rng = np.random.default_rng(3)
    joints = rng.normal(0, 0.05, (5, 3))
    parents = np.array([-1, 0, 1, 1, 1])
    weights = rng.uniform(0, 1, (80, 5))
    weights[:5] = 0  # unweighted vertices stay put
    rest = rng.normal(0, 0.1, (80, 3))
    pose = rng.normal(0, 0.2, (5, 3))
    posed = skinning.lbs(rest, joints, parents, weights, pose)
    np.testing.assert_allclose(posed[:5], rest[:5])
    np.testing.assert_allclose(skinning.unpose(posed, joints, parents, weights, pose), rest, atol=1e-12)


def test_continuous_quaternions_flip_signs_so_neighbours_agree(skinning) -> None:
    """A turn through 180° about one axis: Blender's to_quaternion keeps w ≥ 0, so the sign jumps halfway."""
    angles = np.linspace(0.0, 1.6 * math.pi, 9)
    turning = np.stack([skinning.axis_angle_to_quaternion(np.array([0.0, 0.0, a])) for a in angles])
    jumping = turning * np.where(turning[:, :1] < 0, -1.0, 1.0)
    assert (np.einsum("ij,ij->i", jumping[1:], jumping[:-1]) < 0).any()  # the input has a jump to remove
    given = jumping.copy()
    smooth = skinning.continuous_quaternions(jumping)
    np.testing.assert_allclose(smooth, turning, atol=1e-15)
    np.testing.assert_array_equal(jumping, given)  # a new array: the caller's is left as it was
