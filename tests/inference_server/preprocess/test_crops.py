"""The ArcFace and FaRL crops: geometry, channel order and normalisation against independent numbers."""

from __future__ import annotations

import numpy as np
import pytest

from inference_server.preprocess.alignment import ARCFACE_TEMPLATE_112, apply_affine, invert_affine
from inference_server.preprocess.crops import (
    CLIP_MEAN,
    CLIP_STD,
    arcface_crop,
    clip_normalise,
    farl_crop,
    farl_transform,
)


def test_channel_order_of_the_arcface_blob() -> None:
    red = np.zeros((300, 300, 3), np.uint8)
    red[..., 0] = 255
    points = ARCFACE_TEMPLATE_112 * 2 + 40
    bgr = arcface_crop(red, points)  # the default is B,G,R
    assert bgr.channel_order == "BGR" and bgr.blob.shape == (3, 112, 112) and bgr.blob.dtype == np.float32
    np.testing.assert_allclose(bgr.blob[2, 56, 56], 1.0)
    np.testing.assert_allclose(bgr.blob[0, 56, 56], -1.0)
    rgb = arcface_crop(red, points, channel_order="RGB")
    np.testing.assert_allclose(rgb.blob[0, 56, 56], 1.0)
    np.testing.assert_allclose(rgb.blob[2, 56, 56], -1.0)
    with pytest.raises(ValueError):
        arcface_crop(red, points, channel_order="BRG")  # type: ignore[arg-type]


def test_arcface_crop_warps_points_to_the_template() -> None:
    # A smooth photo: OpenCV interpolates with 1/32-pixel fixed-point weights, exact enough on smooth data.
    ys, xs = np.mgrid[:400, :500]
    photo = np.stack(
        [
            127 + 100 * np.sin(xs / 17) * np.cos(ys / 23),
            127 + 90 * np.cos(xs / 11),
            127 + 80 * np.sin(ys / 13),
        ],
        axis=-1,
    ).astype(np.uint8)
    a = np.radians(20)
    to_photo = np.array([[1.8 * np.cos(a), -1.8 * np.sin(a), 210], [1.8 * np.sin(a), 1.8 * np.cos(a), 90]])
    points = apply_affine(to_photo, ARCFACE_TEMPLATE_112)
    crop = arcface_crop(photo, points)
    np.testing.assert_allclose(crop.transform, invert_affine(to_photo), atol=1e-9)
    np.testing.assert_allclose(crop.points, ARCFACE_TEMPLATE_112, atol=1e-9)
    np.testing.assert_allclose(crop.residuals, 0, atol=1e-9)
    # Pixel (u, v) of the crop samples the photo at to_photo(u, v): check a few by bilinear interpolation.
    for u, v in [(10, 10), (56, 70), (100, 33)]:
        x, y = apply_affine(to_photo, np.array([[u, v]], float))[0]
        x0, y0 = int(np.floor(x)), int(np.floor(y))
        fx, fy = x - x0, y - y0
        p = photo.astype(float)
        expected = (
            p[y0, x0] * (1 - fx) * (1 - fy)
            + p[y0, x0 + 1] * fx * (1 - fy)
            + p[y0 + 1, x0] * (1 - fx) * fy
            + p[y0 + 1, x0 + 1] * fx * fy
        )
        assert np.abs(crop.image[v, u] - expected).max() <= 1.5
    np.testing.assert_allclose(crop.blob[0], (crop.image[:, :, 2] - 127.5) / 127.5, atol=1e-6)


def test_arcface_crop_pads_with_zeros() -> None:
    photo = np.full((200, 200, 3), 200, np.uint8)
    # The face runs off the bottom-right corner.
    crop = arcface_crop(photo, ARCFACE_TEMPLATE_112 + np.array([150.0, 150.0]))
    assert crop.image[111, 111].tolist() == [0, 0, 0]
    assert crop.image[0, 0].tolist() == [200, 200, 200]


def test_farl_crop_geometry() -> None:
    box = np.array([100.0, 60.0, 200.0, 180.0])  # 100 wide, 120 high
    transform, side = farl_transform(box)
    assert side == int(1.6 * (100 + 120) / 2)  # 176
    centre = apply_affine(transform, np.array([[150.0, 120.0]]))[0]
    np.testing.assert_allclose(centre, [111.5, 111.5], atol=1e-9)
    corners = np.array(
        [[150 - side / 2, 120 - side / 2], [150 - side / 2, 120 + side / 2], [150 + side / 2, 120 - side / 2]]
    )
    np.testing.assert_allclose(apply_affine(transform, corners), [[0, 0], [0, 223], [223, 0]], atol=1e-9)
    assert transform[0, 1] == 0 and transform[1, 0] == 0

    ys, xs = np.mgrid[:300, :300]
    photo = np.stack([xs % 256, ys % 256, np.full_like(xs, 77)], axis=-1).astype(np.uint8)
    crop = farl_crop(photo, box)
    assert crop.image.shape == (224, 224, 3) and crop.side == side
    # Inside the photo the crop pixel (u, v) shows the photo at the inverse transform (x and y ramps).
    back = invert_affine(crop.transform)
    x, y = apply_affine(back, np.array([[120.0, 40.0]]))[0]
    assert abs(int(crop.image[40, 120, 0]) - x) <= 1 and abs(int(crop.image[40, 120, 1]) - y) <= 1
    # The square reaches y = 120 - 88 = 32 ≥ 0, x = 62 ≥ 0: no padding; a box near the edge pads with zeros.
    edge = farl_crop(photo, np.array([0.0, 0.0, 50.0, 50.0]))
    assert edge.image[0, 0].tolist() == [0, 0, 0]


def test_clip_normalisation_numbers() -> None:
    image = np.zeros((224, 224, 3), np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = 255, 128, 0
    tensor = clip_normalise(image)
    assert tensor.shape == (3, 224, 224) and tensor.dtype == np.float32
    expected = [
        (1.0 - 0.48145466) / 0.26862954,
        (128 / 255 - 0.4578275) / 0.26130258,
        (0 - 0.40821073) / 0.27577711,
    ]
    np.testing.assert_allclose(tensor[:, 7, 9], expected, rtol=1e-6)
    np.testing.assert_allclose(CLIP_MEAN, [0.48145466, 0.4578275, 0.40821073])
    np.testing.assert_allclose(CLIP_STD, [0.26862954, 0.26130258, 0.27577711])
    crop = farl_crop(np.full((100, 100, 3), 255, np.uint8), np.array([40.0, 40.0, 60.0, 60.0]))
    np.testing.assert_allclose(crop.tensor[:, 112, 112], (1.0 - CLIP_MEAN) / CLIP_STD, rtol=1e-6)
    with pytest.raises(ValueError):
        farl_crop(np.zeros((100, 100, 3), np.uint8), np.array([50.0, 50.0, 40.0, 60.0]))
