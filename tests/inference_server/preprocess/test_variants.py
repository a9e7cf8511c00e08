"""Test-time image variants: each one's transform back to the original pixels is exact."""

from __future__ import annotations

import numpy as np
import pytest

from inference_server.preprocess.alignment import apply_affine
from inference_server.preprocess.variants import DEFAULT_VARIANTS, clahe, iter_variants, make_variant


def _dot_image() -> tuple[np.ndarray, np.ndarray]:
    rgb = np.zeros((120, 200, 3), np.uint8)
    rgb[30:33, 150:153] = 255  # a bright 3x3 dot centred on (151, 31)
    return rgb, np.array([151.0, 31.0])


@pytest.mark.parametrize("name", [*DEFAULT_VARIANTS, "rotate+60"])
def test_a_dot_found_in_the_variant_maps_back_to_where_it_was(name: str) -> None:
    rgb, dot = _dot_image()
    variant = make_variant(rgb, name)
    brightness = variant.rgb.astype(float).sum(axis=2)
    ys, xs = np.nonzero(brightness > 0.5 * brightness.max())
    weights = brightness[ys, xs]
    seen = np.array([(xs * weights).sum() / weights.sum(), (ys * weights).sum() / weights.sum()])
    np.testing.assert_allclose(apply_affine(variant.to_original, seen[None])[0], dot, atol=0.6)
    assert variant.mirrored == name.endswith("flip")


def test_rotations_keep_every_pixel_and_variants_are_lazy() -> None:
    rgb = np.full((100, 300, 3), 200, np.uint8)
    rotated = make_variant(rgb, "rotate+45")
    corners = np.array([[0, 0], [299, 0], [0, 99], [299, 99]], float)
    back = np.linalg.inv(np.vstack([rotated.to_original, [0, 0, 1]]))[:2]
    inside = apply_affine(back, corners)
    h, w = rotated.rgb.shape[:2]
    assert (inside >= -1).all() and (inside[:, 0] <= w).all() and (inside[:, 1] <= h).all()
    names = [v.name for v in iter_variants(rgb, ("flip", "clahe"))]
    assert names == ["flip", "clahe"]
    with pytest.raises(ValueError, match="unknown image variant"):
        make_variant(rgb, "sepia")


def test_clahe_raises_local_contrast_of_a_dark_photo_and_keeps_its_size() -> None:
    rng = np.random.default_rng(0)
    dark = (rng.random((64, 64, 3)) * 40).astype(np.uint8)
    out = clahe(dark)
    assert out.shape == dark.shape and out.dtype == np.uint8
    assert out.astype(float).std() > 1.5 * dark.astype(float).std()
