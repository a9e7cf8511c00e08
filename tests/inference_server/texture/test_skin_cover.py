"""Skin-coloured occluders are seeded by a covered feature, never by closed lids (texture/skin_cover.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inference_server.fit.camera import project
from inference_server.fit.gaze import eyeball_members
from inference_server.fit.synthetic import closed_eyes_expression, ground_truth_texture, render_case
from inference_server.flame.layer import FlameLayer
from inference_server.flame.model_data import FlameModelData
from inference_server.preprocess.official_reference import find_fixtures
from inference_server.texture import stage
from inference_server.texture.occluder import FeatureZones, fit_skin_model
from inference_server.texture.skin_cover import covered_features
from inference_server.texture.stage import TextureInputs, closed_eyes_x, make_texture

SKIN = (205.0, 150.0, 120.0)


def _two_plain_eyes() -> tuple[np.ndarray, np.ndarray, FeatureZones, np.ndarray]:
    """Colours (1, 200, 3) of a face whose two eye zones (texels 0-39 at x 100, 40-79 at x 200) show skin only,
    with a lip-coloured mouth zone (80-119); the rest plain skin."""
    colors = np.tile(np.array(SKIN), (1, 200, 1))
    colors[0, 80:120] = (170.0, 60.0, 70.0)
    eyes = np.zeros((1, 200), bool)
    eyes[0, :80] = True
    mouth = np.zeros((1, 200), bool)
    mouth[0, 80:120] = True
    x = np.where(np.arange(200) < 40, 100.0, 200.0)[None]
    return colors, np.ones((1, 200), bool), FeatureZones(mouth=mouth, brows=np.zeros_like(eyes), eye_opening=eyes), x


def test_a_plain_eye_zone_seeds_unless_the_eye_is_read_closed() -> None:
    colors, seen, zones, x = _two_plain_eyes()
    rng = np.random.default_rng(0)
    skin = fit_skin_model(np.asarray(SKIN) + rng.normal(0, 3, (500, 3)))
    assert covered_features(colors, seen, zones, skin, x)[0, :80].all()  # both eyes look covered
    one_closed = covered_features(colors, seen, zones, skin, x, closed_eyes_x=(101.0,))
    assert not one_closed[0, :40].any() and one_closed[0, 40:80].all()
    assert not covered_features(colors, seen, zones, skin, x, closed_eyes_x=(99.0, 203.0)).any()


def _closed_eyes_case(
    head: FlameModelData, layer: FlameLayer, closed: tuple[bool, ...], shut: bool = True
) -> tuple[np.ndarray, TextureInputs]:
    """A DEMO render with both eyes closed (seed 802: the lids seed a "hand" over the eye and the cheek when
    nothing says the eyes are closed), with its true pose; ``closed`` what the fit read; ``shut`` False: the
    same render with the eyes as drawn (open)."""
    extra = closed_eyes_expression(head) if shut else None
    case = render_case(head, layer, ground_truth_texture(head), np.random.default_rng(802), max_yaw=20,
                       add_expression=extra)  # fmt: skip
    assert head.uv is not None and head.uv_faces is not None
    inputs = TextureInputs(case.vertices, head.v_template, head.faces, head.uv, head.uv_faces, case.landmarks,
                           case.pose, case.camera, eyeball_members(head), closed)  # fmt: skip
    return case.image, inputs


def test_closed_eyes_are_the_x_of_the_closed_eyeballs(head: FlameModelData, layer: FlameLayer) -> None:
    _, inputs = _closed_eyes_case(head, layer, (True, False))
    (x,) = closed_eyes_x(inputs)
    # eyeball_members' first is FLAME's left eye: landmarks 42-47 (the subject's left)
    eye = project(inputs.landmarks[42:48], inputs.pose, inputs.camera).mean(axis=0)
    iod = float(np.linalg.norm(eye - project(inputs.landmarks[36:42], inputs.pose, inputs.camera).mean(axis=0)))
    assert abs(x - eye[0]) < 0.15 * iod
    assert closed_eyes_x(dataclasses.replace(inputs, eyes_closed=(False, False))) == ()


def test_a_face_with_closed_eyes_keeps_its_skin_in_the_texture(
    head: FlameModelData, layer: FlameLayer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the fit's reading that both eyes are closed, the texture leaves out no more than the same face
    with open eyes does; read as open, the lids seed a skin-coloured occluder that takes the skin around them."""
    image, inputs = _closed_eyes_case(head, layer, (True, True))
    closed = make_texture(image, inputs)
    open_eyes = make_texture(*_closed_eyes_case(head, layer, (), shut=False))
    assert closed.occluded.mean() <= open_eyes.occluded.mean() + 0.005
    monkeypatch.setattr(stage, "closed_eyes_x", lambda head: ())
    as_open = make_texture(image, inputs)
    assert as_open.occluded.mean() > closed.occluded.mean() + 0.05
    assert closed.from_photo.mean() > as_open.from_photo.mean() + 0.05


@pytest.mark.skipif(find_fixtures() is None, reason="shared/fixtures/official-preprocessing is not on this machine")
def test_a_photo_with_closed_eyes_tells_the_texture_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole reconstruction of the fixture ``model-fashion`` (both eyes closed): the fit's reading reaches
    the skin-coloured cover as the two eyes' photo x, one on each side of the face, so neither eye seeds."""
    from inference_server.assets_config import resolve_assets
    from inference_server.pipeline import Reconstructor
    from inference_server.protocol import ReconstructArgs
    from inference_server.texture import bake

    fixtures = find_fixtures()
    assert fixtures is not None
    calls: list[tuple[float, ...]] = []
    real = bake.skin_coloured_cover

    def spy(*args: Any, **kw: Any) -> np.ndarray:
        calls.append(tuple(kw.get("closed_eyes_x", ())))
        return real(*args, **kw)

    monkeypatch.setattr(bake, "skin_coloured_cover", spy)
    photo = fixtures / "images" / "model-fashion-beauty-black-thumb.jpg"
    args = ReconstructArgs(image=str(photo), output=str(tmp_path / "r.npz"), n_shapes=12, n_expressions=8, top_k=4,
                           sampler="ddim", steps=8, seed=3)  # fmt: skip
    out = Reconstructor(resolve_assets({}), device="cpu").run(args, lambda *a, **k: None, lambda: False)
    assert sorted(out.result.meta["gaze"]["eyes_closed"]) == ["left", "right"]
    assert len(calls) == 1 and len(calls[0]) == 2
    eyes = np.asarray(out.result.meta["detection"]["points5"])[:2, 0]
    assert min(calls[0]) < float(eyes.mean()) < max(calls[0])
