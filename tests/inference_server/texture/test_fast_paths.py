"""The texture stage's fast paths against the direct computations they replaced (same results)."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import pytest

from inference_server.fit.camera import project_camera, rotation_matrix
from inference_server.fit.synthetic import render_case
from inference_server.flame.layer import FlameLayer
from inference_server.flame.model_data import FlameModelData
from inference_server.render import vertex_normals
from inference_server.texture.bake import UVRaster, covered_texels, project_texels, rasterize_uv, texel_zones
from inference_server.texture.fill import MIRROR_TOLERANCE, mirror_uv, mirror_vertices
from inference_server.texture.layout import uv_layout
from inference_server.texture.occluder import channel_max, channel_min, chromaticity, quadratic_form
from inference_server.texture.occluder import cie_lab as _lab
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
    fields: dict[str, Any] = {"vertices": head.v_template, "template": head.v_template, "faces": head.faces,
                              "uv": head.uv, "uv_faces": head.uv_faces, "landmarks": np.zeros((68, 3)),
                              "pose": np.zeros(6), "camera": np.array([500.0, 100.0, 100.0])} | changes  # fmt: skip
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


def test_covered_texel_blends_are_the_per_texel_interpolation(head: FlameModelData, layer: FlameLayer) -> None:
    """The contiguous-row blend against the raster's own (n, 3) einsum interpolation and the plain
    w0 v0 + w1 v1 + w2 v2 at every covered texel (the latter bit for bit: same products, same order)."""
    assert head.uv is not None and head.uv_faces is not None
    raster = rasterize_uv(head.uv, np.asarray(head.uv_faces), 256)
    faces = np.asarray(head.faces, dtype=np.int64)
    values = render_case(head, layer, np.zeros((64, 64, 3), np.uint8), np.random.default_rng(3)).vertices
    texels = covered_texels(raster, faces)
    got = texels.blend(values)
    cov = raster.covered
    np.testing.assert_allclose(got.T, raster.interpolate(values, faces)[cov], rtol=0, atol=1e-15)
    tri, w = faces[raster.triangle[cov]], raster.barycentric[cov]
    plain = w[:, 0, None] * values[tri[:, 0]] + w[:, 1, None] * values[tri[:, 1]] + w[:, 2, None] * values[tri[:, 2]]
    np.testing.assert_array_equal(got.T, plain)
    rows = np.arange(0, got.shape[1], 7)
    np.testing.assert_array_equal(texels.blend(values, rows), got[:, rows])
    assert covered_texels(raster, faces) is texels  # kept for the next photo
    assert covered_texels(raster, faces[:, ::-1]) is not texels  # other faces: made afresh


def test_projected_texels_match_the_per_texel_camera(head: FlameModelData, layer: FlameLayer) -> None:
    """Pixel positions and facing of project_texels against the interpolated camera-frame head."""
    assert head.uv is not None and head.uv_faces is not None
    raster = rasterize_uv(head.uv, np.asarray(head.uv_faces), 128)
    faces = np.asarray(head.faces, dtype=np.int64)
    case = render_case(head, layer, np.zeros((512, 512, 3), np.uint8), np.random.default_rng(4))
    pose, camera = np.asarray(case.pose, np.float64), np.asarray(case.camera, np.float64)
    got = project_texels(raster, case.vertices, faces, pose, camera, 512, 512)
    rotation = rotation_matrix(pose[:3])
    points = raster.interpolate(case.vertices @ rotation.T + pose[3:], faces)
    normals = raster.interpolate(vertex_normals(case.vertices, faces) @ rotation.T, faces)
    cov = raster.covered
    pix = project_camera(points[cov], *camera)
    np.testing.assert_allclose(got.pixel[cov], pix, rtol=0, atol=1e-9)
    sight = -points[cov] / np.linalg.norm(points[cov], axis=1, keepdims=True)
    cos = (normals[cov] * sight).sum(axis=1) / np.linalg.norm(normals[cov], axis=1)
    np.testing.assert_allclose(got.facing[cov], cos, rtol=0, atol=1e-12)
    assert 0.2 < got.visible[cov].mean() < 0.9 and not got.visible[~cov].any()


def test_elementwise_colour_reductions_are_numpy_s_bit_for_bit() -> None:
    rng = np.random.default_rng(5)
    floats = rng.uniform(0, 255, (5000, 3)) * rng.choice([1.0, 1e-3, 0.0], (5000, 1))
    image = rng.integers(0, 256, (37, 41, 3), dtype=np.uint8)
    for x in (floats, image, floats.reshape(50, 100, 3)):
        np.testing.assert_array_equal(channel_max(x), x.max(axis=-1))
        np.testing.assert_array_equal(channel_min(x), x.min(axis=-1))
    for x in (floats, floats.reshape(50, 100, 3)):
        total = np.maximum(x.sum(axis=-1, keepdims=True), 1.0)
        np.testing.assert_array_equal(chromaticity(x), (x / total)[..., :2])
    d = chromaticity(floats) - np.array([0.45, 0.32])
    matrix = np.linalg.inv(np.cov(d.T) + np.eye(2) * 1e-4)
    np.testing.assert_array_equal(quadratic_form(d, matrix), np.einsum("ni,ij,nj->n", d, matrix, d))
    grid = d.reshape(50, 100, 2)
    np.testing.assert_array_equal(quadratic_form(grid, matrix), np.einsum("...i,ij,...j->...", grid, matrix, grid))


def test_lab_of_a_pixel_list_is_opencv_s_per_pixel_conversion() -> None:
    rng = np.random.default_rng(6)
    for n in (1, 4095, 4096, 4097, 20000):
        x = rng.uniform(-30, 290, (n, 3))
        pixels = np.clip(x, 0, 255).astype(np.uint8)
        expected = cv2.cvtColor(pixels.reshape(-1, 1, 3), cv2.COLOR_RGB2LAB).reshape(-1, 3).astype(np.float64)
        expected[:, 0] *= 100.0 / 255.0 * 0.5
        expected[:, 1:] -= 128.0
        np.testing.assert_array_equal(_lab(x), expected)
        np.testing.assert_array_equal(_lab(pixels), expected)
