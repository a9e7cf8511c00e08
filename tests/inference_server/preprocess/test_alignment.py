"""The similarity fit and the face box implied by five points."""

from __future__ import annotations

import numpy as np
import pytest

from inference_server.preprocess.alignment import (
    ARCFACE_TEMPLATE_112,
    TEMPLATE_FACE_BOX_112,
    alignment_residuals,
    apply_affine,
    box_from_points5,
    fit_similarity,
    invert_affine,
    template_interocular,
)


def _similarity(angle_deg: float, scale: float, shift: tuple[float, float]) -> np.ndarray:
    a = np.radians(angle_deg)
    return np.array(
        [[scale * np.cos(a), -scale * np.sin(a), shift[0]], [scale * np.sin(a), scale * np.cos(a), shift[1]]]
    )


@pytest.mark.parametrize(("angle", "scale", "shift"), [(0, 1, (0, 0)), (25, 3.7, (410, -20)), (-170, 0.4, (5, 9))])
def test_fit_recovers_an_exact_similarity(angle: float, scale: float, shift: tuple[float, float]) -> None:
    M = _similarity(angle, scale, shift)
    photo_points = apply_affine(M, ARCFACE_TEMPLATE_112)
    fitted = fit_similarity(ARCFACE_TEMPLATE_112, photo_points)
    np.testing.assert_allclose(fitted, M, atol=1e-9)
    back = fit_similarity(photo_points, ARCFACE_TEMPLATE_112)
    np.testing.assert_allclose(back, invert_affine(M), atol=1e-9)
    np.testing.assert_allclose(alignment_residuals(photo_points), 0.0, atol=1e-9)


def test_fit_is_least_squares_and_never_mirrors() -> None:
    rng = np.random.default_rng(0)
    src = ARCFACE_TEMPLATE_112 + rng.normal(0, 2.0, (5, 2))
    dst = ARCFACE_TEMPLATE_112
    M = fit_similarity(src, dst)
    best = np.sum((apply_affine(M, src) - dst) ** 2)
    # No nearby similarity (perturbing angle, scale, shift) does better: an independent check of optimality.
    a0 = np.arctan2(M[1, 0], M[0, 0])
    s0 = np.hypot(M[0, 0], M[1, 0])
    for da, ds, dx, dy in rng.normal(0, [0.01, 0.01, 0.3, 0.3], (200, 4)):
        trial = _similarity(np.degrees(a0 + da), s0 * (1 + ds), (M[0, 2] + dx, M[1, 2] + dy))
        assert np.sum((apply_affine(trial, src) - dst) ** 2) >= best - 1e-9
    mirrored = src * [-1, 1]
    assert np.linalg.det(fit_similarity(mirrored, dst)[:, :2]) > 0


def test_fit_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        fit_similarity(np.zeros((5, 2)), ARCFACE_TEMPLATE_112)
    with pytest.raises(ValueError):
        fit_similarity(np.full((5, 2), np.nan), ARCFACE_TEMPLATE_112)
    with pytest.raises(ValueError):
        fit_similarity(np.zeros((5, 3)), np.zeros((5, 3)))


def test_box_from_points_follows_the_face() -> None:
    np.testing.assert_allclose(box_from_points5(ARCFACE_TEMPLATE_112), TEMPLATE_FACE_BOX_112, atol=1e-9)
    M = _similarity(30, 2.5, (100, 50))
    box = box_from_points5(apply_affine(M, ARCFACE_TEMPLATE_112))
    x0, y0, x1, y1 = TEMPLATE_FACE_BOX_112
    centre = apply_affine(M, np.array([[(x0 + x1) / 2, (y0 + y1) / 2]]))[0]
    np.testing.assert_allclose((box[:2] + box[2:]) / 2, centre, atol=1e-9)
    np.testing.assert_allclose(box[2:] - box[:2], 2.5 * np.array([x1 - x0, y1 - y0]), atol=1e-9)
    assert template_interocular() == pytest.approx(np.hypot(73.5318 - 38.2946, 51.5014 - 51.6963))
