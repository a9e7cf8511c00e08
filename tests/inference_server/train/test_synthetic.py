from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from inference_server.flame.layer import FlameLayer
from inference_server.flame.model_data import FlameModelData
from inference_server.render import Camera, project
from inference_server.train.datasets import read_index
from inference_server.train.synthetic import (
    OCCLUDERS,
    SyntheticConfig,
    SyntheticRenderer,
    occluder_alpha,
    write_synthetic_dataset,
)


def test_index_and_files_round_trip(synthetic_set: Path) -> None:
    index = json.loads((synthetic_set / "index.json").read_text())
    assert index["count"] == 16 and len(index["entries"]) == 16
    records = read_index(synthetic_set)
    for entry, record in zip(index["entries"], records, strict=True):
        assert record.image.is_file() and record.label is not None
        image = cv2.imread(str(record.image))
        assert image.shape == (128, 128, 3)
        assert record.shape is not None and record.shape.shape == (300,)
        assert record.expression is not None and record.expression.shape == (53,)
        assert 0.0 <= entry["occluded_fraction"] <= 0.6
        assert record.points5 is not None
        np.testing.assert_allclose(entry["points5"], record.points5, atol=1e-3)
        with np.load(record.label) as label:
            assert label["front_occluded"].shape == (1785,)
            if entry["occluder"] == "none":
                assert entry["occluded_fraction"] == 0 and not label["front_occluded"].any()
    assert any(e["occluder"] != "none" for e in index["entries"])


def test_several_render_processes_write_the_same_files_as_one(
    synthetic_set: Path, demo_head: FlameModelData, tmp_path: Path
) -> None:
    # The shared set: 16 renders of seed 11 by one process. Two processes, in chunks, must match it byte for byte.
    write_synthetic_dataset(tmp_path, 16, seed=11, head=demo_head, config=SyntheticConfig(size=128), workers=2)
    assert (tmp_path / "index.json").read_text() == (synthetic_set / "index.json").read_text()
    for name in ("images/000000.png", "images/000015.png"):
        assert (tmp_path / name).read_bytes() == (synthetic_set / name).read_bytes(), name
    with np.load(tmp_path / "labels/000007.npz") as mine, np.load(synthetic_set / "labels/000007.npz") as theirs:
        assert sorted(mine.files) == sorted(theirs.files)
        for key in mine.files:  # the zip container holds file times; the arrays agree to float32 rounding
            np.testing.assert_allclose(mine[key], theirs[key], rtol=1e-6, atol=1e-5, err_msg=key)
    with pytest.raises(ValueError, match="workers"):
        write_synthetic_dataset(tmp_path, 2, workers=-1)


def test_points_are_the_projected_landmarks(demo_head: FlameModelData) -> None:
    renderer = SyntheticRenderer(demo_head, SyntheticConfig(size=128))
    sample = renderer.render(np.random.default_rng(3))
    # Recompute independently: pose the head, project its landmarks with an equivalent camera.
    out = FlameLayer(demo_head).with_expression(
        torch.as_tensor(sample.shape[None], dtype=torch.float32),
        torch.as_tensor(sample.expression[None], dtype=torch.float32),
        torch.as_tensor(sample.jaw[None], dtype=torch.float32),
    )
    assert out.landmarks is not None
    lmk = out.landmarks[0].double().numpy()
    # The camera centre/extent are random; recover them from two projected points instead of re-drawing.
    rotation = Camera(yaw_deg=sample.yaw_deg, pitch_deg=sample.pitch_deg).rotation()
    view = lmk @ rotation.T
    left_eye = view[36:42].mean(axis=0)
    mouth_r = view[54]
    pixel_left, pixel_mouth = sample.points5[0], sample.points5[4]
    scale = (pixel_mouth[0] - pixel_left[0]) / (mouth_r[0] - left_eye[0])
    nose_expected = pixel_left + scale * np.array([view[30, 0] - left_eye[0], -(view[30, 1] - left_eye[1])])
    np.testing.assert_allclose(sample.points5[2], nose_expected, atol=1e-6)
    # The eye points are image-left then image-right for a face turned by at most 30°.
    assert sample.points5[0, 0] < sample.points5[1, 0]


@pytest.mark.parametrize("name", sorted(OCCLUDERS))
def test_occluder_alpha_matches_the_drawing(name: str) -> None:
    points5 = np.array([[50.0, 55.0], [78.0, 55.0], [64.0, 70.0], [53.0, 84.0], [75.0, 84.0]])
    rgb = np.random.default_rng(0).integers(0, 256, (128, 128, 3)).astype(np.uint8)
    alpha = occluder_alpha(OCCLUDERS[name], (128, 128), points5, seed=5)
    drawn = OCCLUDERS[name](rgb, points5, np.random.default_rng(5))
    solid = alpha > 0.99
    untouched = alpha < 0.01
    assert solid.sum() > 50, "every occluder covers part of the face"
    # Where alpha is 0 the photo is unchanged; where it is 1 the photo no longer shows through: drawing the
    # same occluder over a different photo gives the same pixels there.
    assert np.abs(drawn[untouched].astype(int) - rgb[untouched].astype(int)).max() <= 2
    other = OCCLUDERS[name](255 - rgb, points5, np.random.default_rng(5))
    assert np.abs(other[solid].astype(int) - drawn[solid].astype(int)).max() <= 3  # alpha > 0.99: < 2.6 levels


def test_occluded_vertices_lie_under_the_occluder(demo_head: FlameModelData) -> None:
    renderer = SyntheticRenderer(demo_head, SyntheticConfig(size=128, no_occluder_probability=0.0))
    found = 0
    for seed in range(6):
        sample = renderer.render(np.random.default_rng(seed))
        if sample.occluder == "none" or not sample.front_occluded.any():
            continue
        found += 1
        assert 0 < sample.occluded_fraction <= 0.6
        # Recompute the front vertices' pixels with the recorded camera and read the occluder's coverage.
        xy, _ = project(sample.vertices[renderer.front], sample.camera, 128, 128)
        cols, rows = xy[:, 0].astype(int).clip(0, 127), xy[:, 1].astype(int).clip(0, 127)
        np.testing.assert_array_equal(sample.front_occluded, sample.alpha[rows, cols] > 0.5)
        # The image shows the occluder there, not the head: it differs from the unoccluded face colours.
        assert 0.0 < sample.front_occluded.mean() < 0.9
        covered = sample.alpha > 0.99
        face = np.zeros_like(covered)
        face[rows, cols] = True
        assert (covered & face).sum() > 0
    assert found >= 3


def test_projection_helper_is_consistent() -> None:
    vertices = np.array([[0.0, 0.0, 0.0], [0.1, 0.0, 0.0], [0.0, 0.1, 0.0]])
    xy, _ = project(vertices, Camera(center=(0.0, 0.0, 0.0), extent=0.2), 100, 100)
    np.testing.assert_allclose(xy, [[50, 50], [100, 50], [50, 0]])


def test_components_the_head_lacks_are_drawn_as_zero(demo_head: FlameModelData) -> None:
    # The DEMO head has 50 ICT identity modes and 43 expression modes: the other coefficients move no
    # vertex, so no network should be asked to guess them from a picture.
    renderer = SyntheticRenderer(demo_head)
    draws = [renderer.draw_parameters(np.random.default_rng(i)) for i in range(200)]
    shapes = np.array([d["shape"] for d in draws])
    expressions = np.array([d["expression"] for d in draws])
    assert (shapes[:, 50:] == 0).all() and (expressions[:, 43:] == 0).all()
    assert 0.85 < shapes[:, :50].std() < 1.15, "the ICT identity statistics: every mode at 1σ"
    assert 0.5 < expressions[:, :43].std() < 0.7
