"""The texture stage on synthetic photos with a known pose, camera and texture."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from inference_server.fit.synthetic import SyntheticCase, ground_truth_texture, render_case, with_training_occluder
from inference_server.flame.layer import FlameLayer
from inference_server.flame.model_data import FlameModelData
from inference_server.texture.stage import Texture, TextureInputs, make_texture, write_texture_png

#: PSNR floor on texels taken from the photo, for an unshaded 640×480 render with the true pose: both
#: the render and the bake resample bilinearly (photo pixels ~2-3 texels wide here), and texels at
#: silhouettes and UV seams blend background or neighbouring islands; measured 28-31 dB on these cases,
#: against ~15 dB for a pose 5° off (measured with this file's cases).
MIN_PSNR_DB = 25.0


def _bake(head: FlameModelData, case: SyntheticCase) -> Texture:
    assert head.uv is not None and head.uv_faces is not None
    return make_texture(case.image, TextureInputs(case.vertices, head.v_template, head.faces, head.uv,
                                                  head.uv_faces, case.landmarks, case.pose, case.camera))  # fmt: skip


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return 10.0 * np.log10(255.0**2 / max(mse, 1e-12))


@pytest.fixture(scope="module")
def truth(head: FlameModelData) -> np.ndarray:
    return ground_truth_texture(head)


def test_visible_texels_match_the_true_texture(head: FlameModelData, layer: FlameLayer, truth: np.ndarray) -> None:
    rng = np.random.default_rng(11)
    for _ in range(2):
        case = render_case(head, layer, truth, rng, ambient=1.0)
        tex = _bake(head, case)
        seen = tex.from_photo
        assert seen.sum() > 0.2 * tex.covered.sum()
        assert _psnr(tex.image[seen], truth[seen]) >= MIN_PSNR_DB
        filled = tex.image[tex.covered & ~tex.from_photo].astype(int)
        assert (filled.sum(axis=1) > 0).all()  # every hidden texel was filled (nothing left black)
        skin = np.median(tex.image[seen].astype(int), axis=0)
        assert np.abs(np.median(filled, axis=0) - skin).max() < 40  # ... with skin-like colour


def test_a_strongly_coloured_occluder_never_reaches_the_texture(
    head: FlameModelData, layer: FlameLayer, truth: np.ndarray
) -> None:
    rng = np.random.default_rng(5)
    for region in ("mouth", "eyes"):
        case = render_case(head, layer, truth, rng, occluder=region, ambient=0.6)
        tex = _bake(head, case)
        assert tex.occluded.any()
        # Which photo pixel each texel came from, recomputed independently of the stage.
        rows, cols = np.nonzero(tex.from_photo)
        pixel = _texel_pixels(head, case, rows, cols)
        h, w = case.occluder_alpha.shape
        alpha = case.occluder_alpha[
            np.clip(pixel[:, 1].astype(int), 0, h - 1), np.clip(pixel[:, 0].astype(int), 0, w - 1)
        ]
        assert (alpha < 0.01).all(), f"{int((alpha >= 0.01).sum())} texels from occluder pixels ({region})"
        green = tex.image[tex.covered].astype(int)
        assert not ((green[:, 1] > green[:, 0] + 60) & (green[:, 1] > green[:, 2] + 60)).any()


def _texel_pixels(head: FlameModelData, case: SyntheticCase, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    from inference_server.fit.camera import project
    from inference_server.texture.bake import rasterize_uv

    assert head.uv is not None and head.uv_faces is not None
    raster = rasterize_uv(head.uv, np.asarray(head.uv_faces), 512)
    tri = raster.triangle[rows, cols]
    points = np.einsum("nk,nkc->nc", raster.barycentric[rows, cols], case.vertices[np.asarray(head.faces)[tri]])
    return project(points, case.pose, case.camera)


def test_texture_png_is_written_atomically_and_reads_back(tmp_path: Path) -> None:
    image = np.zeros((32, 32, 3), np.uint8)
    image[:16] = (200, 30, 10)  # the top rows: v near 1
    path = write_texture_png(tmp_path / "r_texture.png", image)
    back = np.asarray(Image.open(path).convert("RGB"))
    np.testing.assert_array_equal(back, image)
    assert [p.name for p in tmp_path.iterdir()] == ["r_texture.png"]  # no temporary left behind


@pytest.mark.parametrize("name", ["sunglasses", "surgical_mask", "scarf"])
def test_the_project_synthetic_occluders_stay_out(
    head: FlameModelData, layer: FlameLayer, truth: np.ndarray, name: str
) -> None:
    """The training renders' occluders (train/synthetic.py) that are not skin-coloured: the texels they
    cover are left out of the photo's contribution. (Skin-coloured hands: the test below.)"""
    rng = np.random.default_rng(sum(map(ord, name)))
    case = render_case(head, layer, truth, rng, max_yaw=20)
    case.image, alpha = with_training_occluder(case, name, rng)
    tex = _bake(head, case)
    rows, cols = np.nonzero(tex.from_photo | tex.occluded)
    pixel = _texel_pixels(head, case, rows, cols)
    h, w = alpha.shape
    a = alpha[np.clip(pixel[:, 1].astype(int), 0, h - 1), np.clip(pixel[:, 0].astype(int), 0, w - 1)]
    under = a > 0.5
    assert under.sum() > 100
    kept = tex.from_photo[rows, cols]
    assert kept[under].mean() <= 0.05, f"{100 * kept[under].mean():.1f} % of the covered texels were kept"


def _hand_case(
    head: FlameModelData, layer: FlameLayer, truth: np.ndarray, seed: int
) -> tuple[SyntheticCase, np.ndarray]:
    rng = np.random.default_rng(seed)
    case = render_case(head, layer, truth, rng, max_yaw=20)
    case.image, alpha = with_training_occluder(case, "hand_over_mouth", rng)
    return case, alpha


def _hand_shares(head: FlameModelData, case: SyntheticCase, alpha: np.ndarray) -> tuple[float, float]:
    """(share of the hand-covered texels left out, hand share of the texels taken from the photo)."""
    tex = _bake(head, case)
    rows, cols = np.nonzero(tex.from_photo | tex.occluded)
    pixel = _texel_pixels(head, case, rows, cols)
    h, w = alpha.shape
    under = alpha[np.clip(pixel[:, 1].astype(int), 0, h - 1), np.clip(pixel[:, 0].astype(int), 0, w - 1)] > 0.5
    kept = tex.from_photo[rows, cols]
    return 1.0 - float(kept[under].mean()), float((under & kept).sum() / kept.sum())


@pytest.mark.parametrize("seed", [21])
def test_a_skin_coloured_hand_over_the_mouth_stays_out(
    head: FlameModelData, layer: FlameLayer, truth: np.ndarray, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hand is skin to the colour model; the mouth it hides (no lip colour where the lips are) gives
    it away, and its own colour delimits it (texture/skin_cover.py)."""
    from inference_server.texture import bake

    case, alpha = _hand_case(head, layer, truth, seed)
    with monkeypatch.context() as patch:  # the colour model alone: the hand is baked in
        patch.setattr(bake, "skin_coloured_cover", lambda rgb, *args, **kw: np.zeros(rgb.shape[:2], bool))
        left_out_before, leak_before = _hand_shares(head, case, alpha)
    left_out, leak = _hand_shares(head, case, alpha)
    assert left_out_before < 0.1 and leak_before > 0.15
    assert left_out >= 0.6 and leak <= 0.5 * leak_before


def test_a_clean_face_has_no_skin_coloured_cover(
    head: FlameModelData, layer: FlameLayer, truth: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every feature shows on a clean render: the hand test masks nothing (no false seed)."""
    from inference_server.texture import bake

    masks: list[np.ndarray] = []

    def spy(*args: Any, **kw: Any) -> np.ndarray:
        mask = bake_cover(*args, **kw)
        masks.append(mask)
        return mask

    bake_cover = bake.skin_coloured_cover
    monkeypatch.setattr(bake, "skin_coloured_cover", spy)
    for seed in (31, 32):
        _bake(head, render_case(head, layer, truth, np.random.default_rng(seed), max_yaw=40))
    assert len(masks) == 2 and not any(m.any() for m in masks)
