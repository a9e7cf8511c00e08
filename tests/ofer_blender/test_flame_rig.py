"""The numpy half of FLAME controls: the jaw pivot offset and the Shape-key basis (no bpy)."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

PARENTS = np.array([-1, 0, 1, 1, 1])


@pytest.fixture
def rig(addon):
    return importlib.import_module(addon.__name__ + ".flame_rig")


@pytest.fixture
def skinning(addon):
    return importlib.import_module(addon.__name__ + ".skinning")


def _case(seed: int = 0):
    rng = np.random.default_rng(seed)
    V = 300
    rest = rng.normal(0, 0.05, (V, 3))
    weights = rng.dirichlet(np.full(5, 0.4), size=V)
    weights[:20] = 0.0  # vertices no bone moves (Blender leaves them where they are)
    joints = rng.normal(0, 0.05, (5, 3))
    moved = joints + rng.normal(0, 0.003, (5, 3))  # FLAME's joints after the expression is added
    pose = np.zeros((5, 3))
    pose[2] = [0.3, -0.05, 0.08]
    return rest, weights, joints, moved, pose


def test_the_offset_makes_the_fixed_rig_turn_the_jaw_about_flames_joint(rig, skinning) -> None:
    rest, weights, joints, moved, pose = _case()
    posed = skinning.lbs(rest, moved, PARENTS, weights, pose)  # FLAME: joints regressed with the expression
    plain = skinning.lbs(rest, joints, PARENTS, weights, pose)
    assert np.abs(plain - posed).max() > 1e-4  # the pitfall: about the rig's joints the jaw lands elsewhere
    offset = rig.jaw_offset(rest, posed, joints, PARENTS, weights, pose)
    # only the jaw turns, its parent (the neck) not: FLAME's skinning about moved joints is R(v - J) + J_world,
    # with J_world(jaw) = moved jaw (neck unrotated), i.e. the fixed rig plus (I - R)(J(ψ) - J0)
    R = skinning.axis_angle_to_matrix(pose[2])
    np.testing.assert_allclose(offset, (np.eye(3) - R) @ (moved[2] - joints[2]), atol=1e-12)
    mine = rig.skin_with_offset(rest, joints, PARENTS, weights, pose, offset)
    np.testing.assert_allclose(mine, posed, atol=1e-12)
    back = rig.unpose_with_offset(posed, joints, PARENTS, weights, pose, offset)
    np.testing.assert_allclose(back, rest, atol=1e-12)


def test_pose_feature_is_flames_flattened_rotation_minus_identity(rig, skinning) -> None:
    pose = np.zeros((5, 3))
    pose[2] = [0.2, 0.0, 0.0]
    feature = rig.pose_feature(pose)
    assert feature.shape == (36,)
    assert np.all(feature[:9] == 0) and np.all(feature[18:] == 0)
    c, s = np.cos(0.2), np.sin(0.2)
    np.testing.assert_allclose(feature[9:18], [0, 0, 0, 0, c - 1, -s, 0, s, c - 1], atol=1e-15)


def test_shape_keys_and_basis_rebuild_the_identity_even_beyond_the_slider_limit(rig) -> None:
    rng = np.random.default_rng(2)
    directions = rng.normal(0, 1e-3, (6, 50, 3))
    template = rng.normal(0, 0.05, (50, 3))
    params = np.array([0.5, -12.0, 3.0, 14.0, 0.0, -1.0, 2.5, 0.7])  # 8 coefficients, 6 keys, two beyond ±10
    full = np.concatenate([directions, rng.normal(0, 1e-3, (2, 50, 3))])
    identity = template + np.einsum("k,kvc->vc", params, full)
    controls = rig.shape_controls(identity, params, directions)
    assert controls.values.tolist() == [0.5, -10.0, 3.0, 10.0, 0.0, -1.0]
    rebuilt = controls.basis + np.einsum("k,kvc->vc", controls.values, directions)
    np.testing.assert_allclose(rebuilt, identity, atol=1e-15)
    assert rig.shape_key_names("Exp", 3) == ["Exp1", "Exp2", "Exp3"]
