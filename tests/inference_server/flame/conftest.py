"""A small random model in the FLAME layout, built by the tests themselves (no FLAME data in the repo)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from inference_server.flame.model_data import FlameModelData

FLAME_PARENTS = np.array([-1, 0, 1, 1, 1], dtype=np.int64)  # root, neck, jaw, left eye, right eye


def random_flame_model(
    seed: int = 0,
    n_vertices: int = 200,
    n_faces: int = 320,
    n_shape: int = 300,
    n_expression: int = 100,
    extras: bool = True,
) -> FlameModelData:
    rng = np.random.default_rng(seed)
    n_joints = FLAME_PARENTS.shape[0]
    directions = rng.normal(size=(n_vertices, 3))
    v_template = 0.1 * directions / np.linalg.norm(directions, axis=1, keepdims=True)  # a 10 cm sphere
    # Each joint is a convex combination of a handful of vertices, like FLAME's sparse regressor.
    J_regressor = np.zeros((n_joints, n_vertices))
    for joint in range(n_joints):
        chosen = rng.choice(n_vertices, size=8, replace=False)
        J_regressor[joint, chosen] = rng.dirichlet(np.ones(8))
    weights = rng.dirichlet(np.full(n_joints, 0.5), size=n_vertices)
    faces = np.stack([rng.choice(n_vertices, size=3, replace=False) for _ in range(n_faces)])
    model = FlameModelData(
        v_template=v_template,
        shapedirs=1e-3 * rng.normal(size=(n_vertices, 3, n_shape + n_expression)),
        posedirs=1e-2 * rng.normal(size=(n_vertices, 3, 9 * (n_joints - 1))),
        J_regressor=J_regressor,
        parents=FLAME_PARENTS.copy(),
        weights=weights,
        faces=faces.astype(np.int64),
        n_shape=n_shape,
        n_expression=n_expression,
    )
    if extras:
        model.lmk_faces_idx = rng.integers(0, n_faces, size=68).astype(np.int64)
        model.lmk_bary_coords = rng.dirichlet(np.ones(3), size=68)
        model.uv = rng.random((n_vertices + 10, 2))
        model.uv_faces = rng.integers(0, n_vertices + 10, size=(n_faces, 3)).astype(np.int64)
        model.front_face_indices = np.sort(rng.choice(n_vertices, size=60, replace=False)).astype(np.int64)
    return model


@pytest.fixture
def make_flame_model() -> Callable[..., FlameModelData]:
    return random_flame_model


@pytest.fixture(scope="session")
def demo_head() -> FlameModelData:
    """The generated DEMO head (inference_server.demo.head), built once per test session."""
    from inference_server.demo.head import generate_demo_head

    return generate_demo_head()
