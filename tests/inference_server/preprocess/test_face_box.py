"""The SCRFD-equivalent box model: geometry it must respect and a fit that recovers known parameters."""

from __future__ import annotations

import numpy as np
import pytest

from inference_server.preprocess.alignment import ARCFACE_TEMPLATE_112, apply_affine
from inference_server.preprocess.face_box import (
    DEFAULT_BOX_MODEL,
    DEFAULT_FRAME_CUT,
    FACE_OVAL,
    NOSE_BRIDGE,
    SCRFD_TEMPLATE_BOX_112,
    BoxModel,
    CutSample,
    EdgeCorrection,
    FrameCutModel,
    crossed_edges,
    fit_box_model,
    fit_frame_cut_model,
    fit_template_box,
    oval_geometry,
    scrfd_box_from_mesh,
    scrfd_box_from_points5,
)


def _mesh(
    rng: np.random.Generator, centre: tuple[float, float], radius: float, bridge: tuple[float, float]
) -> np.ndarray:
    """A stand-in mesh: the oval landmarks on an ellipse, the bridge where asked, the rest inside."""
    mesh = np.tile(np.asarray(centre, float), (478, 1)) + rng.normal(0, radius * 0.2, (478, 2))
    angles = np.linspace(0, 2 * np.pi, len(FACE_OVAL), endpoint=False)
    mesh[list(FACE_OVAL)] = np.stack(
        [centre[0] + 0.8 * radius * np.cos(angles), centre[1] + radius * np.sin(angles)], axis=1
    )
    mesh[NOSE_BRIDGE] = bridge
    return mesh


def test_box_follows_the_oval_and_the_bridge() -> None:
    rng = np.random.default_rng(0)
    mesh = _mesh(rng, (200.0, 150.0), 100.0, (230.0, 120.0))
    geometry = oval_geometry(mesh)
    np.testing.assert_allclose(geometry.centre, (200.0, 150.0), atol=1e-9)
    assert geometry.size == pytest.approx((160.0 + 200.0) / 2.0)
    model = BoxModel(pull_x=0.5, pull_y=0.25, shift_y=0.1, size=1.2)
    box = scrfd_box_from_mesh(mesh, model)
    np.testing.assert_allclose((box[:2] + box[2:]) / 2, (200 + 0.5 * 30, 150 - 0.25 * 30 + 0.1 * 180), atol=1e-9)
    np.testing.assert_allclose(box[2:] - box[:2], (1.2 * 180, 1.2 * 180), atol=1e-9)


def test_box_moves_and_scales_with_the_face() -> None:
    rng = np.random.default_rng(1)
    mesh = _mesh(rng, (200.0, 150.0), 100.0, (215.0, 125.0))
    moved = mesh * 1.7 + np.array([40.0, -25.0])
    np.testing.assert_allclose(scrfd_box_from_mesh(moved), scrfd_box_from_mesh(mesh) * 1.7 + [40, -25, 40, -25])
    # The oval is symmetric and the bridge on the midline: a mirrored mesh (indices swapped) gives the
    # mirrored box, so a face found in the mirror image keeps its box.
    mirrored = mesh * np.array([-1.0, 1.0]) + np.array([400.0, 0.0])
    box, box_m = scrfd_box_from_mesh(mesh), scrfd_box_from_mesh(mirrored)
    np.testing.assert_allclose([400 - box_m[2], box_m[1], 400 - box_m[0], box_m[3]], box, atol=1e-9)


def test_fit_recovers_the_parameters_that_made_the_boxes() -> None:
    rng = np.random.default_rng(2)
    truth = BoxModel(pull_x=0.2, pull_y=0.45, shift_y=0.02, size=1.1)
    meshes, centres, sides = [], [], []
    for _ in range(12):
        centre = rng.uniform(100, 400, 2)
        radius = rng.uniform(40, 150)
        mesh = _mesh(rng, tuple(centre), radius, tuple(centre + rng.normal(0, 0.3 * radius, 2)))
        box = scrfd_box_from_mesh(mesh, truth)
        meshes.append(mesh)
        centres.append((box[:2] + box[2:]) / 2)
        sides.append(float(box[2] - box[0]))
    fitted = fit_box_model(meshes, centres, sides)
    np.testing.assert_allclose(
        [fitted.pull_x, fitted.pull_y, fitted.shift_y, fitted.size], [0.2, 0.45, 0.02, 1.1], atol=1e-9
    )
    with pytest.raises(ValueError):
        fit_box_model(meshes[:1], centres[:1], sides[:1])


def test_five_point_box_maps_the_template_box_back() -> None:
    angle = np.radians(25)
    to_photo = np.array([[2 * np.cos(angle), -2 * np.sin(angle), 300], [2 * np.sin(angle), 2 * np.cos(angle), 100]])
    points = apply_affine(to_photo, ARCFACE_TEMPLATE_112)
    box = scrfd_box_from_points5(points)
    centre = apply_affine(to_photo, ((SCRFD_TEMPLATE_BOX_112[:2] + SCRFD_TEMPLATE_BOX_112[2:]) / 2)[None])[0]
    np.testing.assert_allclose((box[:2] + box[2:]) / 2, centre, atol=1e-9)
    np.testing.assert_allclose(
        box[2:] - box[:2], 2 * (SCRFD_TEMPLATE_BOX_112[2] - SCRFD_TEMPLATE_BOX_112[0]), atol=1e-9
    )
    # fit_template_box inverts it: the box seen through the alignment is the template box.
    fitted = fit_template_box([np.linalg.inv(np.vstack([to_photo, [0, 0, 1]]))[:2]], [centre], [box[2] - box[0]])
    np.testing.assert_allclose(fitted, SCRFD_TEMPLATE_BOX_112, atol=1e-9)


def test_calibrated_constants_are_sane() -> None:
    # A box about 1.1 face-oval sizes, pulled part of the way towards the eyes (docs/preprocessing.md).
    assert 0.0 < DEFAULT_BOX_MODEL.pull_x < 0.5 and 0.2 < DEFAULT_BOX_MODEL.pull_y < 0.8
    assert 1.0 < DEFAULT_BOX_MODEL.size < 1.2
    with pytest.raises(ValueError):
        oval_geometry(np.zeros((5, 2)))


def test_crop_box_convention_follows_the_weights() -> None:
    from inference_server.preprocess.alignment import box_from_points5
    from inference_server.preprocess.face_box import crop_box

    points = ARCFACE_TEMPLATE_112 * 1.5 + 20
    scrfd = np.array([1.0, 2.0, 150.0, 160.0])
    np.testing.assert_allclose(crop_box(scrfd, points, "scrfd"), scrfd)
    np.testing.assert_allclose(crop_box(scrfd, points, "five_point"), box_from_points5(points))
    with pytest.raises(ValueError, match="convention"):
        crop_box(scrfd, points, "mtcnn")


CUT_MODEL = FrameCutModel(top=EdgeCorrection(reach=0.3, grow=0.5, shift=0.25), side=EdgeCorrection(1.0, 0.1, 0.05))


def test_a_face_cut_deeper_than_the_fitted_cuts_is_not_extrapolated() -> None:
    # Bridge 0.4 S above the top edge: shortfall 0.7, capped at the model's limit of 0.35.
    mesh = _mesh(np.random.default_rng(7), (200.0, 20.0), 100.0, (200.0, -72.0))
    capped = FrameCutModel(top=EdgeCorrection(0.3, 0.5, 0.25, limit=0.35), side=CUT_MODEL.side)
    plain = scrfd_box_from_mesh(mesh)
    cut = scrfd_box_from_mesh(mesh, frame=(400, 300), cut_model=capped)
    np.testing.assert_allclose(cut[2] - cut[0], (plain[2] - plain[0]) * np.exp(0.5 * 0.35))
    np.testing.assert_allclose((cut[:2] + cut[2:]) / 2, (plain[:2] + plain[2:]) / 2 - [0.0, 0.25 * 0.35 * 180])


def test_a_face_inside_the_frame_keeps_its_box() -> None:
    mesh = _mesh(np.random.default_rng(3), (200.0, 150.0), 60.0, (205.0, 120.0))
    assert crossed_edges(mesh, 400, 300) == {}
    np.testing.assert_allclose(scrfd_box_from_mesh(mesh, frame=(400, 300)), scrfd_box_from_mesh(mesh))


def test_a_face_cut_at_the_top_grows_upwards_by_the_bridges_shortfall() -> None:
    # Oval from y = 30 - 100 = -70 to 130 (past the top edge), S = (160 + 200) / 2 = 180, bridge at y = 9:
    # 0.05 S from the edge, 0.25 S short of the model's reach.
    mesh = _mesh(np.random.default_rng(4), (200.0, 30.0), 100.0, (200.0, 9.0))
    mesh[:468, 1] = np.clip(mesh[:468, 1], -70.0, 130.0)
    assert crossed_edges(mesh, 400, 300) == pytest.approx({"top": 9.0 / 180.0})
    plain = scrfd_box_from_mesh(mesh)
    cut = scrfd_box_from_mesh(mesh, frame=(400, 300), cut_model=CUT_MODEL)
    shortfall = 0.3 - 0.05
    np.testing.assert_allclose(cut[2] - cut[0], (plain[2] - plain[0]) * np.exp(0.5 * shortfall))
    np.testing.assert_allclose((cut[:2] + cut[2:]) / 2, (plain[:2] + plain[2:]) / 2 - [0.0, 0.25 * shortfall * 180])
    # The same face cut at the bottom by the same amount: not corrected (no gain measured there).
    flipped = mesh * [1.0, -1.0] + [0.0, 300.0]
    assert set(crossed_edges(flipped, 400, 300)) == {"bottom"}
    np.testing.assert_allclose(scrfd_box_from_mesh(flipped, frame=(400, 300), cut_model=CUT_MODEL),
                               scrfd_box_from_mesh(flipped))  # fmt: skip


def test_left_and_right_cuts_are_mirror_images() -> None:
    mesh = _mesh(np.random.default_rng(5), (40.0, 150.0), 70.0, (45.0, 120.0))
    mirrored = mesh * [-1.0, 1.0] + [400.0, 0.0]
    assert set(crossed_edges(mesh, 400, 300)) == {"left"} and set(crossed_edges(mirrored, 400, 300)) == {"right"}
    box = scrfd_box_from_mesh(mesh, frame=(400, 300))
    box_m = scrfd_box_from_mesh(mirrored, frame=(400, 300))
    np.testing.assert_allclose([400 - box_m[2], box_m[1], 400 - box_m[0], box_m[3]], box, atol=1e-9)
    # It moved towards the edge it crosses (left) and grew.
    plain = scrfd_box_from_mesh(mesh)
    assert box[0] + box[2] < plain[0] + plain[2] and box[2] - box[0] > plain[2] - plain[0]


def test_frame_cut_fit_recovers_the_parameters_that_made_the_boxes() -> None:
    rng = np.random.default_rng(6)
    samples = []
    for _ in range(40):
        # Every face crosses its edge; the nose bridge lies from outside the photo to well inside.
        radius, depth, along = rng.uniform(50, 90), rng.uniform(-0.3, 0.6), rng.uniform(150, 250)
        edge = rng.choice(["top", "left", "right"])
        if edge == "top":
            centre, bridge = (along, depth * radius + 0.3 * radius), (along, depth * radius)
        else:
            x = depth * radius if edge == "left" else 400 - depth * radius
            centre, bridge = (x, along), (x, along - 0.3 * radius)
        mesh = _mesh(rng, centre, radius, bridge)
        box = scrfd_box_from_mesh(mesh, frame=(400, 400), cut_model=CUT_MODEL)
        samples.append(CutSample(mesh, (400, 400), (box[:2] + box[2:]) / 2, float(box[2] - box[0])))
    assert all(crossed_edges(s.landmarks, 400, 400) for s in samples)
    fitted = fit_frame_cut_model(samples)
    for got, want in ((fitted.top, CUT_MODEL.top), (fitted.side, CUT_MODEL.side)):
        assert got.reach == pytest.approx(want.reach, abs=1e-9)
        assert got.grow == pytest.approx(want.grow, abs=1e-6) and got.shift == pytest.approx(want.shift, abs=1e-6)
        assert 0.0 < got.limit < np.inf  # the deepest cut it saw


def test_shipped_frame_cut_model_grows_the_box_towards_the_edge() -> None:
    for correction in (DEFAULT_FRAME_CUT.top, DEFAULT_FRAME_CUT.side):
        assert correction.reach > 0 and correction.grow > 0 and correction.shift > 0
