"""FLAME controls in the result: the bases rebuild what the torch layer computes (before skinning)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from inference_server.flame.layer import FlameLayer
from inference_server.flame.model_data import FlameModelData
from inference_server.flame_controls import DEFAULT_SHAPES, attach_requested_bases, control_bases
from ofer_blender import skinning


def test_bases_and_linear_algebra_rebuild_the_layer(make_flame_model: Callable[..., FlameModelData]) -> None:
    model = make_flame_model(seed=4)
    layer = FlameLayer(model, dtype=torch.float64)
    bases = control_bases(model, n_expression=50, n_shapes=40)
    assert bases.shape_basis.shape == (40, model.n_vertices, 3)
    assert bases.expression_basis.shape == (50, model.n_vertices, 3)
    assert bases.pose_basis.shape == (36, model.n_vertices, 3)
    rng = np.random.default_rng(1)
    beta, psi, jaw = rng.normal(size=40), rng.normal(size=50), np.array([0.25, -0.05, 0.02])
    out = layer.with_expression(torch.as_tensor(beta[None]), torch.as_tensor(psi[None]), torch.as_tensor(jaw[None]))
    # the add-on's recipe: rest mesh from the bases, pose feature of the jaw, skinning about the layer's joints
    pose = np.zeros((5, 3))
    pose[2] = jaw
    feature = (skinning.axis_angle_to_matrix(pose[1:]) - np.eye(3)).reshape(-1)
    rest = (
        model.v_template
        + np.einsum("k,kvc->vc", beta, bases.shape_basis)
        + np.einsum("e,evc->vc", psi, bases.expression_basis)
        + np.einsum("p,pvc->vc", feature, bases.pose_basis)
    )
    joints = out.rest_joints[0].numpy()
    mine = skinning.lbs(rest, joints, model.parents, model.weights, pose)
    assert np.abs(mine - out.vertices[0].numpy()).max() < 1e-5  # float32 bases


def test_shape_count_is_capped_by_the_model(make_flame_model: Callable[..., FlameModelData]) -> None:
    model = make_flame_model(n_shape=20, n_expression=60)
    assert control_bases(model, 50, n_shapes=DEFAULT_SHAPES).shape_basis.shape[0] == 20
    with pytest.raises(ValueError, match="60 expression directions"):
        control_bases(model, 80)


def test_attached_only_when_asked(make_flame_model: Callable[..., FlameModelData]) -> None:
    from types import SimpleNamespace

    model = make_flame_model(n_shape=120)

    def result() -> SimpleNamespace:
        return SimpleNamespace(
            expression_params=np.zeros((2, 50)), shape_basis=None, expression_basis=None, pose_basis=None
        )

    plain = result()
    attach_requested_bases(plain, {}, model)  # type: ignore[arg-type]
    assert plain.shape_basis is None and plain.expression_basis is None and plain.pose_basis is None
    asked = result()
    attach_requested_bases(asked, {"flame_controls": True, "flame_controls_shapes": 7}, model)  # type: ignore[arg-type]
    assert asked.shape_basis.shape[0] == 7 and asked.expression_basis.shape[0] == 50
    assert asked.pose_basis.shape[0] == 36
