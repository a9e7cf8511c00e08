"""The texture stage's fast paths against the direct computations they replaced (same results)."""

from __future__ import annotations

import numpy as np
import pytest

from inference_server.fit.synthetic import render_case
from inference_server.flame.layer import FlameLayer
from inference_server.flame.model_data import FlameModelData
from inference_server.texture.bake import UVRaster, rasterize_uv, texel_zones
from inference_server.texture.fill import MIRROR_TOLERANCE, mirror_uv, mirror_vertices
from inference_server.texture.layout import uv_layout
from inference_server.texture.stage import TextureInputs


def _all_pairs_partner(template: np.ndarray) -> np.ndarray:
    """Every vertex against every reflection (the former O(V²) search): nearest within the tolerance."""
    v = np.asarray(template, dtype=np.float64)
    reflected = v * np.array([-1.0, 1.0, 1.0])
    partner = np.full(len(v), -1)
    for start in range(0, len(v), 1024):
        r = reflected[start : start + 1024]
        d2 = sum((r[:, None, k] - v[None, :, k]) ** 2 for k in range(3))
        nearest = d2.argmin(axis=1)
        close = d2[np.arange(len(nearest)), nearest] <= MIRROR_TOLERANCE**2
        partner[start : start + 1024] = np.where(close, nearest, -1)
    return partner


def test_mirror_partners_of_the_demo_head_match_the_all_pairs_search(head: FlameModelData) -> None:
    partner = mirror_vertices(head.v_template)
    np.testing.assert_array_equal(partner, _all_pairs_partner(head.v_template))
    assert (partner >= 0).mean() > 0.95  # the DEMO head is symmetric


def test_mirror_partners_of_scattered_points_match_the_all_pairs_search() -> None:
    """Points at the tolerance's scale: partners near cell borders, points without one, near ties."""
    rng = np.random.default_rng(0)
    points = rng.uniform(-0.02, 0.02, (3000, 3))
    twins = points[:500] * np.array([-1.0, 1.0, 1.0]) + rng.normal(0, 0.6 * MIRROR_TOLERANCE, (500, 3))
    points = np.concatenate([points, twins])
    partner = mirror_vertices(points)
    np.testing.assert_array_equal(partner, _all_pairs_partner(points))
    assert 0.1 < (partner >= 0).mean() < 0.9


def _zones_everywhere(raster: UVRaster, vertices: np.ndarray, faces: np.ndarray, landmarks: np.ndarray) -> dict:
    """The zones measured at every texel against every landmark (the former computation)."""
    position = raster.interpolate(vertices, faces)
    iod = float(np.linalg.norm(landmarks[36:42].mean(axis=0) - landmarks[42:48].mean(axis=0)))

    def near(indices: range, radius: float) -> np.ndarray:
        d = np.linalg.norm(position[:, :, None, :] - landmarks[None, None, list(indices)], axis=3)
        return d.min(axis=2) <= radius * iod

    opening = np.zeros(position.shape[:2], bool)
    for eye in (range(36, 42), range(42, 48)):
        pts = landmarks[list(eye)]
        opening |= np.linalg.norm(position - pts.mean(axis=0), axis=2) <= 0.5 * float(np.linalg.norm(pts[0] - pts[3]))
    brows = near(range(17, 27), 0.12) | near(range(36, 48), 0.12) | near(range(31, 36), 0.06)
    return {"mouth": near(range(48, 68), 0.16), "brows": brows, "eye_opening": opening}


def test_feature_zones_match_the_measurement_at_every_texel(head: FlameModelData, layer: FlameLayer) -> None:
    assert head.uv is not None and head.uv_faces is not None
    raster = rasterize_uv(head.uv, np.asarray(head.uv_faces), 256)
    faces = np.asarray(head.faces)
    case = render_case(head, layer, np.zeros((512, 512, 3), np.uint8), np.random.default_rng(2))
    zones = texel_zones(raster, case.vertices, faces, case.landmarks)
    expected = _zones_everywhere(raster, case.vertices, faces, case.landmarks)
    cov = raster.covered
    for name, mask in expected.items():
        got = getattr(zones, name)
        assert got[cov].any()
        np.testing.assert_array_equal(got[cov], mask[cov], err_msg=name)
        assert not got[~cov].any()  # outside the UV islands there is nothing to bake


def _inputs(head: FlameModelData, **changes: np.ndarray) -> TextureInputs:
    assert head.uv is not None and head.uv_faces is not None
    fields = {"vertices": head.v_template, "template": head.v_template, "faces": head.faces, "uv": head.uv,
              "uv_faces": head.uv_faces, "landmarks": np.zeros((68, 3)), "pose": np.zeros(6),
              "camera": np.array([500.0, 100.0, 100.0])} | changes  # fmt: skip
    return TextureInputs(**fields)


def test_the_kept_uv_layout_is_the_one_computed_afresh(head: FlameModelData) -> None:
    assert head.uv is not None and head.uv_faces is not None
    raster, mirror = uv_layout(_inputs(head), 128)
    fresh = rasterize_uv(head.uv, np.asarray(head.uv_faces), 128)
    np.testing.assert_array_equal(raster.triangle, fresh.triangle)
    np.testing.assert_array_equal(raster.barycentric, fresh.barycentric)
    expected = mirror_uv(fresh, np.asarray(head.faces), head.uv, np.asarray(head.uv_faces),
                         mirror_vertices(head.v_template))  # fmt: skip
    np.testing.assert_array_equal(mirror, expected)
    again = uv_layout(_inputs(head, vertices=head.v_template * 1.1), 128)  # another photo, same model
    assert again[0] is raster and again[1] is mirror
    with pytest.raises(ValueError):
        mirror[0, 0] = 0.0  # shared between photos: read-only
    shifted = uv_layout(_inputs(head, uv=head.uv * 0.5), 128)  # another model's UVs
    assert not np.array_equal(shifted[0].triangle, raster.triangle)
    assert uv_layout(_inputs(head), 64)[0].size == 64  # another size, another layout
