"""The torch FLAME layer against an independent numpy re-computation (per sample, per joint, 4x4 matrices,
rotations by the matrix exponential of the skew matrix), plus padding, broadcasting and batch behaviour."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import scipy.linalg
import torch

from inference_server.flame.layer import FlameInputError, FlameLayer, batch_rodrigues
from inference_server.flame.model_data import FlameModelData


def _skew_np(v: np.ndarray) -> np.ndarray:
    return np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])


def _homogeneous(rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, :3] = rotation
    matrix[:3, 3] = translation
    return matrix


def reference_flame(
    model: FlameModelData,
    shape: np.ndarray,
    expression: np.ndarray,
    pose: np.ndarray,
    translation: np.ndarray,
) -> dict[str, np.ndarray]:
    """One sample, straight from the FLAME definition: regress joints from the shaped mesh itself."""
    betas = np.zeros(model.shapedirs.shape[2])
    betas[: shape.shape[0]] = shape
    betas[model.n_shape : model.n_shape + expression.shape[0]] = expression
    v_shaped = model.v_template + np.tensordot(model.shapedirs, betas, axes=([2], [0]))
    rest_joints = model.J_regressor @ v_shaped
    n_joints = model.parents.shape[0]
    rotations = [scipy.linalg.expm(_skew_np(pose[3 * j : 3 * j + 3])) for j in range(n_joints)]
    feature = np.concatenate([(rotations[j] - np.eye(3)).ravel() for j in range(1, n_joints)])
    v_posed = v_shaped + np.tensordot(model.posedirs, feature, axes=([2], [0]))
    world: list[np.ndarray] = []
    for j in range(n_joints):
        parent = int(model.parents[j])
        offset = rest_joints[j] - (rest_joints[parent] if parent >= 0 else 0.0)
        local = _homogeneous(rotations[j], offset)
        world.append(local if parent < 0 else world[parent] @ local)
    skinning = [world[j] @ _homogeneous(np.eye(3), -rest_joints[j]) for j in range(n_joints)]
    homogeneous_vertices = np.concatenate([v_posed, np.ones((v_posed.shape[0], 1))], axis=1)
    vertices = np.zeros_like(v_posed)
    for j in range(n_joints):
        vertices += model.weights[:, j : j + 1] * (homogeneous_vertices @ skinning[j].T)[:, :3]
    vertices += translation
    result = {
        "vertices": vertices,
        "joints": np.stack([w[:3, 3] for w in world]) + translation,
        "rest_joints": rest_joints,
    }
    if model.lmk_faces_idx is not None and model.lmk_bary_coords is not None:
        landmarks = np.zeros((model.lmk_faces_idx.shape[0], 3))
        for index, (face, bary) in enumerate(zip(model.lmk_faces_idx, model.lmk_bary_coords, strict=True)):
            for corner in range(3):
                landmarks[index] += bary[corner] * vertices[model.faces[face, corner]]
        result["landmarks"] = landmarks
    return result


def random_inputs(rng: np.random.Generator, batch: int, n_shape: int, n_expression: int) -> dict[str, np.ndarray]:
    pose = 0.3 * rng.normal(size=(batch, 15))
    pose[0, 3:6] = 0.0  # an exact zero rotation exercises the small-angle path
    pose[-1, 9:12] = 1e-9
    return {
        "shape": 2.0 * rng.normal(size=(batch, n_shape)),
        "expression": 2.0 * rng.normal(size=(batch, n_expression)),
        "pose": pose,
        "translation": 0.05 * rng.normal(size=(batch, 3)),
    }


def assert_matches_reference(model: FlameModelData, inputs: dict[str, np.ndarray], tolerance: float) -> None:
    layer = FlameLayer(model, dtype=torch.float64)
    output = layer(**{name: torch.from_numpy(value) for name, value in inputs.items()})
    for row in range(inputs["shape"].shape[0]):
        expected = reference_flame(
            model, *(inputs[name][row] for name in ("shape", "expression", "pose", "translation"))
        )
        np.testing.assert_allclose(output.vertices[row].numpy(), expected["vertices"], rtol=0, atol=tolerance)
        np.testing.assert_allclose(output.joints[row].numpy(), expected["joints"], rtol=0, atol=tolerance)
        np.testing.assert_allclose(output.rest_joints[row].numpy(), expected["rest_joints"], rtol=0, atol=tolerance)
        if "landmarks" in expected:
            assert output.landmarks is not None
            np.testing.assert_allclose(output.landmarks[row].numpy(), expected["landmarks"], rtol=0, atol=tolerance)
    # The comparison is meaningful: posing and skinning move vertices far more than the tolerance.
    assert np.abs(output.vertices.numpy() - model.v_template).max() > 1e3 * tolerance


def test_forward_matches_independent_numpy_reference(make_flame_model: Callable[..., FlameModelData]) -> None:
    model = make_flame_model(seed=1)
    inputs = random_inputs(np.random.default_rng(2), batch=4, n_shape=300, n_expression=100)
    assert_matches_reference(model, inputs, tolerance=1e-6)


def test_forward_matches_reference_with_deca_sized_coefficients(
    make_flame_model: Callable[..., FlameModelData],
) -> None:
    model = make_flame_model(seed=3)
    inputs = random_inputs(np.random.default_rng(4), batch=2, n_shape=100, n_expression=50)
    assert_matches_reference(model, inputs, tolerance=1e-6)


def test_forward_matches_reference_on_the_demo_head(demo_head: FlameModelData) -> None:
    model = demo_head
    inputs = random_inputs(np.random.default_rng(5), batch=2, n_shape=model.n_shape, n_expression=model.n_expression)
    inputs["shape"] *= 0.5
    assert_matches_reference(model, inputs, tolerance=1e-6)


def test_batch_rodrigues_matches_matrix_exponential() -> None:
    rng = np.random.default_rng(6)
    vectors = np.concatenate([rng.normal(size=(20, 3)), [[0.0, 0.0, 0.0], [1e-12, 0.0, -1e-12], [np.pi, 0, 0]]])
    vectors[:5] *= 1e-4  # small angles
    matrices = batch_rodrigues(torch.from_numpy(vectors)).numpy()
    for vector, matrix in zip(vectors, matrices, strict=True):
        np.testing.assert_allclose(matrix, scipy.linalg.expm(_skew_np(vector)), rtol=0, atol=1e-12)


def test_gradients_are_finite_at_zero_pose(make_flame_model: Callable[..., FlameModelData]) -> None:
    layer = FlameLayer(make_flame_model(seed=7), dtype=torch.float64)
    pose = torch.zeros(2, 15, dtype=torch.float64, requires_grad=True)
    shape = torch.zeros(2, 10, dtype=torch.float64, requires_grad=True)
    layer(shape=shape, pose=pose).vertices.square().sum().backward()
    assert pose.grad is not None and torch.isfinite(pose.grad).all() and pose.grad.abs().sum() > 0
    assert shape.grad is not None and torch.isfinite(shape.grad).all()


def test_short_coefficients_are_zero_padded(make_flame_model: Callable[..., FlameModelData]) -> None:
    layer = FlameLayer(make_flame_model(seed=8), dtype=torch.float64)
    rng = np.random.default_rng(9)
    shape = torch.from_numpy(rng.normal(size=(3, 100)))
    expression = torch.from_numpy(rng.normal(size=(3, 50)))
    short = layer(shape=shape, expression=expression)
    explicit = layer(
        shape=torch.cat([shape, torch.zeros(3, 200, dtype=torch.float64)], dim=1),
        expression=torch.cat([expression, torch.zeros(3, 50, dtype=torch.float64)], dim=1),
    )
    # Equal up to summation order (the layer skips the zero columns instead of multiplying them).
    torch.testing.assert_close(short.vertices, explicit.vertices, rtol=0, atol=1e-14)
    assert short.landmarks is not None and explicit.landmarks is not None
    torch.testing.assert_close(short.landmarks, explicit.landmarks, rtol=0, atol=1e-14)
    torch.testing.assert_close(short.rest_joints, explicit.rest_joints, rtol=0, atol=1e-14)


@pytest.mark.parametrize(
    ("name", "width"), [("shape", 301), ("expression", 101), ("pose", 12), ("pose", 18), ("translation", 2)]
)
def test_wrong_coefficient_counts_are_refused(
    make_flame_model: Callable[..., FlameModelData], name: str, width: int
) -> None:
    layer = FlameLayer(make_flame_model(seed=10))
    with pytest.raises(FlameInputError, match=name):
        layer(**{name: torch.zeros(2, width)})


def test_batch_of_one_and_row_independence(make_flame_model: Callable[..., FlameModelData]) -> None:
    model = make_flame_model(seed=11)
    layer = FlameLayer(model, dtype=torch.float64)
    inputs = {k: torch.from_numpy(v) for k, v in random_inputs(np.random.default_rng(12), 5, 300, 100).items()}
    batched = layer(**inputs)
    assert batched.vertices.shape == (5, model.n_vertices, 3)
    assert batched.landmarks is not None and batched.landmarks.shape == (5, 68, 3)
    for row in range(5):
        single = layer(**{k: v[row : row + 1] for k, v in inputs.items()})
        assert single.vertices.shape == (1, model.n_vertices, 3)
        torch.testing.assert_close(single.vertices[0], batched.vertices[row], rtol=0, atol=1e-12)
        torch.testing.assert_close(single.joints[0], batched.joints[row], rtol=0, atol=1e-12)
    # Changing one row leaves the others untouched.
    changed = {k: v.clone() for k, v in inputs.items()}
    changed["shape"][2] += 1.0
    changed["pose"][2] += 0.2
    other = layer(**changed)
    keep = [0, 1, 3, 4]
    torch.testing.assert_close(other.vertices[keep], batched.vertices[keep], rtol=0, atol=1e-12)
    assert (other.vertices[2] - batched.vertices[2]).abs().max() > 1e-4


def test_single_identity_broadcasts_over_expressions(make_flame_model: Callable[..., FlameModelData]) -> None:
    layer = FlameLayer(make_flame_model(seed=13), dtype=torch.float64)
    rng = np.random.default_rng(14)
    shape = torch.from_numpy(rng.normal(size=(1, 300)))
    expression = torch.from_numpy(rng.normal(size=(4, 50)))
    jaw = torch.from_numpy(0.2 * rng.normal(size=(4, 3)))
    broadcast = layer.with_expression(shape, expression, jaw)
    pose = torch.zeros(4, 15, dtype=torch.float64)
    pose[:, 6:9] = jaw
    explicit = layer(shape=shape.expand(4, -1), expression=expression, pose=pose)
    torch.testing.assert_close(broadcast.vertices, explicit.vertices, rtol=0, atol=1e-12)
    with pytest.raises(FlameInputError, match="batch sizes"):
        layer(shape=torch.zeros(2, 300), expression=torch.zeros(3, 50))


def test_neutral_equals_shape_only_and_ignores_nothing(
    make_flame_model: Callable[..., FlameModelData],
) -> None:
    model = make_flame_model(seed=15)
    layer = FlameLayer(model, dtype=torch.float64)
    shape = torch.from_numpy(np.random.default_rng(16).normal(size=(2, 300)))
    neutral = layer.neutral(shape)
    expected = model.v_template + np.einsum("vck,bk->bvc", model.shapedirs[:, :, :300], shape.numpy())
    # Zero pose: the skinning is the identity and no pose corrective applies.
    np.testing.assert_allclose(neutral.vertices.numpy(), expected, rtol=0, atol=1e-12)
    zero = layer()
    np.testing.assert_allclose(zero.vertices[0].numpy(), model.v_template, rtol=0, atol=1e-12)


def test_float32_default_agrees_with_float64(make_flame_model: Callable[..., FlameModelData]) -> None:
    model = make_flame_model(seed=17)
    inputs = {k: torch.from_numpy(v) for k, v in random_inputs(np.random.default_rng(18), 3, 300, 100).items()}
    single = FlameLayer(model)
    assert single.v_template.dtype == torch.float32
    out32 = single(**inputs)
    assert out32.vertices.dtype == torch.float32
    out64 = FlameLayer(model, dtype=torch.float64)(**inputs)
    np.testing.assert_allclose(out32.vertices.double().numpy(), out64.vertices.numpy(), rtol=0, atol=1e-5)


def test_model_without_landmarks_returns_none(make_flame_model: Callable[..., FlameModelData]) -> None:
    layer = FlameLayer(make_flame_model(seed=19, extras=False))
    assert layer(shape=torch.zeros(1, 300)).landmarks is None


@pytest.mark.parametrize("case", ["neutral", "jaw", "neck"])
def test_sparse_skinning_matches_reference_when_few_joints_move(demo_head: FlameModelData, case: str) -> None:
    """Only the joints that move (the jaw for an expression, none for a neutral head) are skinned; the rest of
    the mesh comes from the weight sum. Same vertices as the per-joint numpy definition."""
    rng = np.random.default_rng(11)
    inputs = random_inputs(rng, batch=3, n_shape=demo_head.n_shape, n_expression=demo_head.n_expression)
    inputs["shape"] *= 0.5
    inputs["translation"][:] = 0.0
    moving = {"neutral": [], "jaw": [6, 7, 8], "neck": [3, 4, 5]}[case]
    keep = np.zeros(15, dtype=bool)
    keep[moving] = True
    inputs["pose"] = np.where(keep, inputs["pose"], 0.0)
    layer = FlameLayer(demo_head, dtype=torch.float64)
    expected_moving = {"neutral": [], "jaw": [2], "neck": [1, 2, 3, 4]}[case]  # children follow the neck
    assert layer._moving_joints(torch.from_numpy(inputs["pose"])) == expected_moving
    if case == "neutral":
        inputs["expression"][:] = 0.0
    assert_matches_reference(demo_head, inputs, tolerance=1e-6)


def test_gradients_reach_every_joint_at_zero_pose(make_flame_model: Callable[..., FlameModelData]) -> None:
    """At zero pose no joint moves, but d(vertices)/d(pose) is not zero: with autograd on, every joint is skinned."""
    layer = FlameLayer(make_flame_model(seed=12), dtype=torch.float64)
    pose = torch.zeros(1, 15, dtype=torch.float64, requires_grad=True)
    layer(shape=torch.ones(1, 10, dtype=torch.float64), pose=pose).vertices[..., 0].sum().backward()
    assert pose.grad is not None
    per_joint = pose.grad.reshape(5, 3).abs().sum(dim=1)
    assert bool((per_joint > 0).all()), per_joint
