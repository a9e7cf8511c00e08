"""The software rasteriser: coverage of a known triangle, depth order, shading, colours, tiling, PNGs."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from inference_server.demo.head import generate_demo_head
from inference_server.render import (
    MIN_CAPTION_SCALE,
    Camera,
    RenderError,
    depth_buffer,
    fitted_caption,
    grid,
    rasterize,
    render_mesh,
    write_png,
)

BACKGROUND = (255, 255, 255)


def inside_by_hand(corners: list[tuple[float, float]], width: int, height: int) -> np.ndarray:
    """Pixels whose centre lies inside the triangle, by same-sign cross products in plain Python."""
    mask = np.zeros((height, width), dtype=bool)
    for row in range(height):
        for col in range(width):
            px, py = col + 0.5, row + 0.5
            signs = []
            for (ax, ay), (bx, by) in zip(corners, corners[1:] + corners[:1], strict=True):
                signs.append((bx - ax) * (py - ay) - (by - ay) * (px - ax))
            mask[row, col] = all(s > 0 for s in signs) or all(s < 0 for s in signs)
    return mask


def test_rasterize_covers_exactly_the_pixels_inside_a_triangle() -> None:
    corners = [(2.3, 1.7), (17.6, 3.2), (6.1, 14.8)]
    result = rasterize(np.array(corners), np.zeros(3), np.array([[0, 1, 2]]), 20, 16)
    expected = inside_by_hand(corners, 20, 16)
    assert expected.sum() > 50
    np.testing.assert_array_equal(result.triangle == 0, expected)
    covered = result.barycentric[expected]
    np.testing.assert_allclose(covered.sum(axis=1), 1.0)
    assert covered.min() >= 0.0


def test_render_mesh_maps_world_to_pixels_through_the_camera() -> None:
    # 2 m across 20 pixels with the camera centred on the origin: pixel = 10 + 10·x, row = 10 - 10·y.
    vertices = np.array([[-0.63, -0.52, 0.0], [0.81, -0.33, 0.0], [-0.12, 0.77, 0.0]])
    image = render_mesh(
        vertices,
        np.array([[0, 1, 2]]),
        width=20,
        height=20,
        camera=Camera(center=(0, 0, 0), extent=2.0),
        background=BACKGROUND,
    )
    pixels = [(10 + 10 * x, 10 - 10 * y) for x, y, _ in vertices]
    expected = inside_by_hand(pixels, 20, 20)
    np.testing.assert_array_equal((image != 255).any(axis=2), expected)


def two_squares(near_first: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    square = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=float)
    far = np.column_stack([square * 0.5 - 0.2, np.full(4, -0.5)])
    near = np.column_stack([square * 0.5 + 0.2, np.full(4, 0.5)])
    quads = np.array([[0, 1, 2], [0, 2, 3]])
    red, blue = np.array([1.0, 0.0, 0.0]), np.array([0.0, 0.0, 1.0])
    parts = [(near, blue), (far, red)] if near_first else [(far, red), (near, blue)]
    vertices = np.concatenate([p[0] for p in parts])
    faces = np.concatenate([quads, quads + 4])
    colors = np.concatenate([np.tile(p[1], (4, 1)) for p in parts])
    return vertices, faces, colors


@pytest.mark.parametrize("near_first", [True, False])
def test_depth_test_keeps_the_nearer_triangle(near_first: bool) -> None:
    vertices, faces, colors = two_squares(near_first)
    camera = Camera(center=(0, 0, 0), extent=2.0)
    image = render_mesh(vertices, faces, width=40, height=40, camera=camera, colors=colors, ambient=1.0)
    overlap = image[18:22, 18:22].reshape(-1, 3)  # world (-0.1..0.1) is covered by both squares
    assert (overlap[:, 2] == 255).all() and (overlap[:, 0] == 0).all(), "the nearer (blue) square wins"
    only_far = image[30, 10]  # world (-0.5, -0.5): only the far square
    assert tuple(only_far) == (255, 0, 0)


def test_lambert_shading_is_brightest_facing_the_light() -> None:
    # A finely tessellated hemisphere facing the viewer, lit from the front.
    u, v = np.meshgrid(np.linspace(-1.4, 1.4, 40), np.linspace(-1.4, 1.4, 40))
    z = np.sqrt(np.clip(2.0 - u**2 - v**2, 0.0, None))
    vertices = np.column_stack([u.ravel(), v.ravel(), z.ravel()])
    idx = np.arange(1600).reshape(40, 40)
    faces = np.concatenate(
        [
            np.column_stack([idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, 1:].ravel()]),
            np.column_stack([idx[:-1, :-1].ravel(), idx[1:, 1:].ravel(), idx[1:, :-1].ravel()]),
        ]
    )
    image = render_mesh(vertices, faces, width=64, height=64, light_dir=(0, 0, 1), ambient=0.2)
    grey = image[..., 0].astype(float)
    assert grey[32, 32] > grey[32, 12] + 30, "the centre faces the light, the rim does not"
    assert (image[..., 0] == image[..., 1]).all(), "no colours given: grey"


def test_renders_the_16k_vertex_demo_head() -> None:
    head = generate_demo_head()
    colors = head.extra["vertex_colors"]
    camera = Camera(center=(0.0, 0.0, 0.03), extent=0.32)
    image = render_mesh(head.v_template, head.faces, width=128, height=128, camera=camera, colors=colors)
    assert image.shape == (128, 128, 3) and image.dtype == np.uint8
    assert 0.2 < (image != 255).any(axis=2).mean() < 0.9


def test_bad_input_is_refused_clearly() -> None:
    faces = np.array([[0, 1, 2]])
    with pytest.raises(RenderError, match="vertices"):
        render_mesh(np.zeros((3, 2)), faces)
    with pytest.raises(RenderError, match="index"):
        render_mesh(np.zeros((3, 3)), np.array([[0, 1, 5]]))
    with pytest.raises(RenderError, match="colors"):
        render_mesh(np.eye(3), faces, colors=np.zeros((2, 3)))
    with pytest.raises(RenderError, match="NaN"):
        render_mesh(np.full((3, 3), np.nan), faces)


def test_grid_tiles_images_with_captions_and_png_keeps_rgb_order(tmp_path: Path) -> None:
    red = np.zeros((10, 12, 3), np.uint8)
    red[..., 0] = 255
    blue = np.zeros((8, 12, 3), np.uint8)
    blue[..., 2] = 255
    sheet = grid([red, blue, red], ["a", "b", "c"], columns=2, label_height=20)
    assert sheet.shape == (2 * (10 + 20), 2 * 12, 3)
    assert tuple(sheet[25, 5]) == (255, 0, 0) and tuple(sheet[25, 17]) == (0, 0, 255)
    assert (sheet[:20, :12] != 255).any(), "caption drawn above the first image"
    path = tmp_path / "sheet.png"
    write_png(path, sheet)
    back = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(back, sheet)


@pytest.mark.parametrize("caption", ["photo (face_mesh_on_detector_box on flip, 0.74)", "x" * 200])
def test_a_long_caption_stays_over_its_own_tile(caption: str) -> None:
    """The contact sheet's photo caption ("photo (face_mesh_on_detector_box, 0.74)") ran over the next
    tile's caption: a caption is made smaller, then shortened, to its tile's width."""
    tiles = [np.full((60, 256, 3), 200, np.uint8)] * 2
    sheet = grid(tiles, [caption, ""], columns=2)
    band = sheet[:30]
    inked = np.nonzero((band < 128).any(axis=(0, 2)))[0]
    assert inked.size and inked.max() < 256 - 3, "the caption reaches into the second tile"
    text, scale = fitted_caption(caption, 0.5, 256 - 12)
    assert scale >= 0.5 * MIN_CAPTION_SCALE
    assert text == caption or (text.endswith("...") and caption.startswith(text[:-3]))
    assert fitted_caption("ID 01", 0.5, 244) == ("ID 01", 0.5), "a short caption keeps its size"


def test_depth_buffer_is_the_nearest_fragment_at_every_pixel() -> None:
    """depth_buffer against the brute-force z-buffer: every triangle's centre-inside pixels (the hand test
    above) with its interpolated depth, nearest kept — on the DEMO head, its back half included."""
    head = generate_demo_head()
    rng = np.random.default_rng(0)
    xy = (head.v_template[:, :2] - head.v_template[:, :2].min(axis=0)) * 600 + 1.3
    z = head.v_template[:, 2] + rng.normal(0, 1e-3, len(xy))
    width, height = int(xy[:, 0].max()) + 3, int(xy[:, 1].max()) + 3
    got = depth_buffer(xy, z, head.faces, width, height)
    np.testing.assert_array_equal(got, rasterize(xy, z, head.faces, width, height).depth)
    expected = np.full((height, width), -np.inf)
    for face in rng.choice(len(head.faces), 300, replace=False):  # a sample of triangles, by plain arithmetic
        (ax, ay), (bx, by), (cx, cy) = xy[head.faces[face]]
        area = (bx - ax) * (cy - ay) - (by - ay) * (cx - ax)
        for row in range(max(0, int(min(ay, by, cy)) - 1), min(height, int(max(ay, by, cy)) + 2)):
            for col in range(max(0, int(min(ax, bx, cx)) - 1), min(width, int(max(ax, bx, cx)) + 2)):
                px, py = col + 0.5, row + 0.5
                l0 = ((bx - px) * (cy - py) - (by - py) * (cx - px)) / area
                l1 = ((cx - px) * (ay - py) - (cy - py) * (ax - px)) / area
                if min(l0, l1, 1.0 - l0 - l1) >= 0:
                    depth = float(np.dot([l0, l1, 1.0 - l0 - l1], z[head.faces[face]]))
                    expected[row, col] = max(expected[row, col], depth)
    hit = np.isfinite(expected)
    assert hit.sum() > 100
    assert (got[hit] >= expected[hit] - 1e-12).all()  # the nearest fragment is at least as near as any of them
    assert np.isinf(depth_buffer(xy + 1e4, z, head.faces, 20, 20)).all()  # nothing on screen: all empty
