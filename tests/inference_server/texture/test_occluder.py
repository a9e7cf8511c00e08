"""Occluder evidence from colour (texture/occluder.py): objects of the skin's own hue, more saturated, that
chromaticity calls skin — on constructed colours, on DEMO renders and on a real photo (the fixture egg)."""

from __future__ import annotations

import colorsys
import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from inference_server.fit.synthetic import ground_truth_texture, render_case, with_saturated_disc
from inference_server.flame.layer import FlameLayer
from inference_server.flame.model_data import FlameModelData
from inference_server.preprocess.official_reference import find_fixtures
from inference_server.texture import bake
from inference_server.texture.occluder import (
    LIP_RADIUS,
    SKIN_RADIUS,
    FeatureZones,
    fit_hue_model,
    fit_skin_model,
    occluded,
    off_skin_hue,
)
from inference_server.texture.stage import Texture, TextureInputs, make_texture
from tests.inference_server.texture.test_hands_in_texture import _from_inside, _polygon_mask

HERE = Path(__file__).resolve().parent
FIXTURES = find_fixtures()


SKIN_RGB = (205, 158, 138)


def _skin_population(n: int = 4000) -> np.ndarray:
    """Skin of one face under varied light: hue ± 0.015, saturation 70-130 % (paler and rosier parts),
    brightness 55-100 % of SKIN_RGB's, plus a little noise."""
    rng = np.random.default_rng(0)
    h, s, v = colorsys.rgb_to_hsv(*(np.asarray(SKIN_RGB, np.float64) / 255.0))
    hues = (h + rng.normal(0, 0.015, n)) % 1.0
    sats = np.minimum(1.0, s * rng.uniform(0.7, 1.3, n))
    values = v * rng.uniform(0.55, 1.0, n)
    rgb = np.array([colorsys.hsv_to_rgb(*hsv) for hsv in zip(hues, sats, values, strict=True)]) * 255.0
    return np.clip(rgb + rng.normal(0, 3.0, (n, 3)), 0, 255).astype(np.uint8)


def _more_saturated(rgb: np.ndarray, factor: float) -> np.ndarray:
    """The colour with the same hue and value and ``factor`` times the saturation (HSV, colorsys)."""
    h, s, v = colorsys.rgb_to_hsv(*(np.asarray(rgb, np.float64) / 255.0))
    return np.round(np.array(colorsys.hsv_to_rgb(h, min(1.0, s * factor), v)) * 255.0).astype(np.uint8)


def _zones(n: int, mouth: bool = False, brows: bool = False) -> FeatureZones:
    return FeatureZones(mouth=np.full(n, mouth), brows=np.full(n, brows), eye_opening=np.zeros(n, bool))


def test_a_saturated_colour_of_skin_hue_is_an_object_though_chromaticity_takes_it_for_lips() -> None:
    skin_pixels = _skin_population()
    skin = fit_skin_model(skin_pixels)
    hue = fit_hue_model(skin_pixels, skin)
    egg = _more_saturated(np.asarray(SKIN_RGB), 1.8)[None]
    lips = np.array([[190, 96, 104]], np.uint8)  # redder than the skin, not yellower
    brow = np.array([[120, 86, 64]], np.uint8)
    # Chromaticity: off the skin colour, but redder than skin, so in the mouth zone it passes as lips ...
    assert SKIN_RADIUS < skin.distance(egg.astype(np.float64))[0] < LIP_RADIUS
    assert not occluded(egg, skin, _zones(1, mouth=True))[0]
    assert not occluded(lips, skin, _zones(1, mouth=True))[0]
    for in_mouth in (False, True):  # ... in a*b* it moved toward yellow, not red: an object anywhere
        assert off_skin_hue(egg, skin, hue, _zones(1, mouth=in_mouth))[0]
    assert off_skin_hue(lips, skin, hue, _zones(1))[0]  # lip colour away from the mouth is not skin
    assert not off_skin_hue(lips, skin, hue, _zones(1, mouth=True))[0]  # in the mouth zone it is lips
    assert not off_skin_hue(brow, skin, hue, _zones(1, brows=True))[0]  # brows are judged by chromaticity
    assert off_skin_hue(skin_pixels, skin, hue, _zones(len(skin_pixels))).mean() < 0.01


def _inputs(head: FlameModelData, case: Any) -> TextureInputs:
    assert head.uv is not None and head.uv_faces is not None
    return TextureInputs(case.vertices, head.v_template, head.faces, head.uv, head.uv_faces, case.landmarks,
                         case.pose, case.camera)  # fmt: skip


def _chromaticity_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bake, "_off_skin_hue", lambda colors, skin, zones: np.zeros(len(colors), bool))


def test_a_disc_of_the_face_s_hue_over_the_mouth_stays_out(
    head: FlameModelData, layer: FlameLayer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An egg-like disc (the face's hue, twice its saturation) held to the lips of DEMO renders: without the
    a*b* test much of it is baked in as lips and skin, with it next to nothing (measured on seeds 700-709:
    0-61 % of the disc's texels taken before, at most 0.7 % after)."""
    truth = ground_truth_texture(head)
    for seed in (701, 702):
        rng = np.random.default_rng(seed)
        case = render_case(head, layer, truth, rng, max_yaw=20)
        image, region = with_saturated_disc(case, rng)
        inputs = _inputs(head, case)
        leaked, under = _from_inside(make_texture(image, inputs), inputs, region)
        with monkeypatch.context() as patch:
            _chromaticity_only(patch)
            leaked_before, _ = _from_inside(make_texture(image, inputs), inputs, region)
        assert under > 1000, seed
        assert leaked_before > 0.3 * under, (seed, leaked_before, under)
        assert leaked <= 0.02 * under, (seed, leaked, under)


@pytest.mark.skipif(FIXTURES is None, reason="shared/fixtures/official-preprocessing is not on this machine")
def test_the_egg_held_to_the_lips_of_a_real_photo_stays_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole reconstruction of the fixture photo ``girl-crafty``; the texels the texture took from the
    photo are projected back (independently of the stage) into the egg annotated by hand."""
    from inference_server.assets_config import resolve_assets
    from inference_server.pipeline import Reconstructor
    from inference_server.protocol import ReconstructArgs
    from inference_server.texture import stage

    assert FIXTURES is not None
    note = json.loads((HERE / "girl_egg_annotation.json").read_text())
    captured: list[tuple[np.ndarray, TextureInputs, Texture]] = []
    real = stage.make_texture

    def spy(rgb: np.ndarray, head: TextureInputs, *args: Any, **kw: Any) -> Texture:
        texture = real(rgb, head, *args, **kw)
        captured.append((rgb, head, texture))
        return texture

    monkeypatch.setattr(stage, "make_texture", spy)
    args = ReconstructArgs(image=str(FIXTURES / "images" / note["image"]), output=str(tmp_path / "r.npz"),
                           n_shapes=12, n_expressions=8, top_k=4, sampler="ddim", steps=8, seed=3)  # fmt: skip
    Reconstructor(resolve_assets({}), device="cpu").run(args, lambda *a, **k: None, lambda: False)
    assert len(captured) == 1
    rgb, head, texture = captured[0]
    egg = _polygon_mask(np.asarray(note["polygon"], np.float64), *rgb.shape[:2])
    assert cv2.countNonZero(egg.astype(np.uint8)) > 500
    leaked, under = _from_inside(texture, head, egg)
    _chromaticity_only(monkeypatch)
    leaked_before, _ = _from_inside(make_texture(rgb, head), head, egg)
    assert under > 300
    assert leaked_before > 0.15 * under, (leaked_before, under)  # chromaticity alone bakes the egg in (24 %)
    assert leaked <= 0.02 * under, f"{leaked} of {under} texels under the egg were taken from the photo"
