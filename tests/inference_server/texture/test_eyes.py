"""The eyeballs' hidden texels are painted as an eye, not filled with skin (texture/eyes.py)."""

from __future__ import annotations

import dataclasses

import numpy as np

from inference_server.fit.gaze import eyeball_members
from inference_server.fit.synthetic import ground_truth_texture, render_case, with_training_occluder
from inference_server.flame.layer import FlameLayer
from inference_server.flame.model_data import FlameModelData
from inference_server.texture.bake import rasterize_uv
from inference_server.texture.eyes import IRIS_RADIUS_M, EyeTexels, eye_texels, fitted_sphere
from inference_server.texture.stage import Texture, TextureInputs, make_texture


def test_the_fitted_sphere_is_the_sphere_the_points_lie_on() -> None:
    rng = np.random.default_rng(3)
    directions = rng.normal(size=(200, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    centre, radius = fitted_sphere(np.array([0.03, 0.04, 0.08]) + 0.012 * directions)
    np.testing.assert_allclose(centre, [0.03, 0.04, 0.08], atol=1e-9)
    assert abs(radius - 0.012) < 1e-9


def _inputs(head: FlameModelData, case: object, with_eyes: bool) -> TextureInputs:
    assert head.uv is not None and head.uv_faces is not None
    inputs = TextureInputs(case.vertices, head.v_template, head.faces, head.uv, head.uv_faces,  # type: ignore[attr-defined]
                           case.landmarks, case.pose, case.camera)  # type: ignore[attr-defined]  # fmt: skip
    return dataclasses.replace(inputs, eye_members=eyeball_members(head) if with_eyes else ())


def _eyes(head: FlameModelData) -> list[EyeTexels]:
    assert head.uv is not None and head.uv_faces is not None
    raster = rasterize_uv(head.uv, np.asarray(head.uv_faces), 512)
    eyes = [eye_texels(raster, head.v_template, head.faces, head.uv, head.uv_faces, m) for m in eyeball_members(head)]
    assert len(eyes) == 2 and all(eye is not None for eye in eyes)
    return [eye for eye in eyes if eye is not None]


def _band(texture: Texture, eye: EyeTexels, low: float, high: float, painted_only: bool = True) -> np.ndarray:
    """Colours of the eye's texels whose angle from its forward axis is in [low, high) radians."""
    assert texture.eyes_painted is not None
    keep = (eye.angle >= low) & (eye.angle < high)
    if painted_only:
        keep &= texture.eyes_painted[eye.rows, eye.cols]
    return texture.image[eye.rows[keep], eye.cols[keep]].astype(np.float64)


def test_eyes_behind_sunglasses_get_an_iris_and_a_sclera_not_skin(head: FlameModelData, layer: FlameLayer) -> None:
    rng = np.random.default_rng(41)
    case = render_case(head, layer, ground_truth_texture(head), rng, max_yaw=15)
    case.image, _ = with_training_occluder(case, "sunglasses", rng)
    before = make_texture(case.image, _inputs(head, case, with_eyes=False))
    after = make_texture(case.image, _inputs(head, case, with_eyes=True))
    skin = np.median(after.image[after.from_photo].astype(np.float64), axis=0)
    iris_rad = float(np.arcsin(IRIS_RADIUS_M / _eyes(head)[0].radius))
    for eye in _eyes(head):
        on_eye = np.zeros(after.covered.shape, bool)
        on_eye[eye.rows, eye.cols] = True
        assert after.eyes_painted is not None and not (after.eyes_painted & after.from_photo).any()
        front = eye.angle < iris_rad  # the iris: what an open eye shows of the ball
        was_skin = np.abs(before.image[eye.rows[front], eye.cols[front]] - skin).max(axis=1) < 40
        assert was_skin.mean() > 0.5  # the skin fill made the iris skin-coloured
        assert after.eyes_painted[eye.rows[front], eye.cols[front]].mean() > 0.95  # nothing of it was seen
        pupil = _band(after, eye, 0.0, 0.05)
        iris = _band(after, eye, 0.15, iris_rad - 0.1)
        sclera = _band(after, eye, iris_rad + 0.1, np.pi)
        assert pupil.max(axis=1).max() < 40
        assert np.median(iris.sum(axis=1)) < 0.6 * np.median(sclera.sum(axis=1))
        assert np.abs(np.median(sclera, axis=0) - skin).max() > 20  # the sclera is not the skin either


def test_seen_eyes_keep_the_photo_and_lend_their_colours_to_the_hidden_texels(
    head: FlameModelData, layer: FlameLayer
) -> None:
    """A clean, unshaded frontal render: the lids hide most of each ball (all of it but the iris, here). The
    painted texels take the colours the photo shows (the true texture's: brown iris, off-white sclera), not
    the defaults."""
    truth = ground_truth_texture(head)
    case = render_case(head, layer, truth, np.random.default_rng(2), max_yaw=10, ambient=1.0)
    texture = make_texture(case.image, _inputs(head, case, with_eyes=True))
    assert texture.eyes_painted is not None and not (texture.eyes_painted & texture.from_photo).any()
    for eye in _eyes(head):
        iris_rad = float(np.arcsin(IRIS_RADIUS_M / eye.radius))
        for low, high in ((0.15, iris_rad - 0.1), (iris_rad + 0.1, np.pi)):
            painted = _band(texture, eye, low, high)
            keep = (eye.angle >= low) & (eye.angle < high)
            true = np.median(truth[eye.rows[keep], eye.cols[keep]].astype(np.float64), axis=0)
            assert len(painted) > (0 if high < iris_rad else 1000)
            assert np.abs(np.median(painted, axis=0) - true).max() < 35, (low, np.median(painted, axis=0), true)


def test_an_eye_the_photo_shows_closed_takes_nothing_from_the_photo(head: FlameModelData, layer: FlameLayer) -> None:
    """With the eye closed in the photo (fit/gaze.py says so) what lies over the model's open eyeball is the
    photo's lids: none of it is baked onto the ball, which takes the open eye's texels (mirrored) or is painted."""
    case = render_case(head, layer, ground_truth_texture(head), np.random.default_rng(2), max_yaw=10, ambient=1.0)
    inputs = _inputs(head, case, with_eyes=True)
    open_eyes = make_texture(case.image, inputs)
    left_closed = make_texture(case.image, dataclasses.replace(inputs, eyes_closed=(True, False)))
    closed_eye, open_eye = _eyes(head)
    assert open_eyes.from_photo[closed_eye.rows, closed_eye.cols].sum() > 100  # the render shows this eye
    assert not left_closed.from_photo[closed_eye.rows, closed_eye.cols].any()
    assert left_closed.eyes_painted is not None
    given = left_closed.eyes_painted | left_closed.mirrored
    assert given[closed_eye.rows, closed_eye.cols].all()
    np.testing.assert_array_equal(left_closed.from_photo[open_eye.rows, open_eye.cols],
                                  open_eyes.from_photo[open_eye.rows, open_eye.cols])  # fmt: skip
