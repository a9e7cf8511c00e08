"""The fit stage end to end: MediaPipe on synthetic perspective renders of the DEMO head, and the
cases where the fit must say it cannot be trusted."""

from __future__ import annotations

import dataclasses
from functools import partial

import numpy as np
import pytest

from inference_server.fit import stage
from inference_server.fit.calibration import Correspondence
from inference_server.fit.camera import project, rotation_angle_deg, rotation_matrix
from inference_server.fit.landmark_averaging import mirrored_landmarks
from inference_server.fit.landmarks68 import GROUPS, correspondence_matrix, landmarks68_from_mesh
from inference_server.fit.pose import eye_distance
from inference_server.fit.second_network import SecondNetwork, second_network_runs
from inference_server.fit.stage import fit_head, to_68
from inference_server.fit.synthetic import SyntheticCase, ground_truth_texture, render_case, with_training_occluder
from inference_server.flame.layer import FlameLayer
from inference_server.flame.model_data import FlameModelData
from inference_server.preprocess.mediapipe_faces import MediaPipeFaces


def test_correspondence_rows_are_convex_combinations() -> None:
    w = correspondence_matrix()
    np.testing.assert_allclose(w.sum(axis=1), 1.0)
    assert (w >= 0).all() and (w > 0).sum(axis=1).max() <= 4


def test_without_dense_landmarks_the_fit_is_untrusted_and_says_why(head: FlameModelData) -> None:
    rgb = np.full((240, 320, 3), 128, np.uint8)
    fit = fit_head(rgb, None, None, np.zeros((3, 68, 3)), np.zeros((68, 3)))
    assert fit.status == "untrusted" and fit.camera is None and fit.expression_poses is None
    assert "dense landmarks" in fit.reason and fit.warnings[0]["code"] == "fit_untrusted"
    assert fit.meta(0)["status"] == "untrusted"


def _fitted(
    case: SyntheticCase, faces: MediaPipeFaces, correspondence: Correspondence, second: SecondNetwork | None
) -> tuple[stage.HeadFit, float, float] | None:
    """The fit of one render as the worker fits a photo — with the face mesh's run on the mirrored photo
    beside the direct one (fit/landmark_averaging.py), both runs' relative depth in the pose solves
    (fit/pose_batch.py) and, where the photo shows an occluder, the ``second`` network's runs
    (fit/second_network.py) — with its rotation error (°) and median reprojection of the visible landmarks
    (eye distances, against the true projection; both nan for an untrusted fit); None: no face found."""
    found = faces.face_mesh(case.image, depth=True)
    if not found:  # the detector's business, measured in docs/preprocessing.md
        return None
    to68 = lambda points: to_68(points, correspondence)  # noqa: E731
    detect = lambda rgb: faces.face_mesh(rgb, depth=True)  # noqa: E731
    mirrored = mirrored_landmarks(case.image, to68(found[0]), detect, to68)
    runs = None if second is None else partial(second_network_runs, case.image, network=second)
    fit = fit_head(case.image, None, found[0], case.landmarks[None], case.landmark_normals,
                   correspondence=correspondence, mirrored=mirrored, occluded_runs=runs)  # fmt: skip
    if not fit.trusted:
        return fit, float("nan"), float("nan")
    assert fit.expression_poses is not None and fit.camera is not None
    pose = fit.expression_poses[0]
    rotation = rotation_angle_deg(rotation_matrix(pose[:3]), rotation_matrix(case.pose[:3]))
    truth = project(case.landmarks, case.pose, case.camera)
    back = project(case.landmarks, pose, fit.camera)
    seen = fit.weights is not None and fit.weights >= 0.5
    return fit, rotation, float(np.median(np.linalg.norm(back - truth, axis=1)[seen]) / eye_distance(truth))


def _pose_errors(
    head: FlameModelData, layer: FlameLayer, faces: MediaPipeFaces, correspondence: Correspondence, seed: int,
    occluder: str | None = None, second: SecondNetwork | None = None,
) -> tuple[list[float], list[float], int]:  # fmt: skip
    """Rotation errors and reprojections (:func:`_fitted`) of the fits on 10 renders drawn from ``seed``,
    every one trusted, and how many fits used the second network's runs."""
    texture = ground_truth_texture(head)
    rng = np.random.default_rng(seed)
    rotation, reprojection, with_second = [], [], 0
    for _ in range(10):
        fitted = _fitted(render_case(head, layer, texture, rng, occluder=occluder), faces, correspondence, second)
        if fitted is None:
            continue
        fit, error, miss = fitted
        assert fit.trusted, fit.reason
        with_second += fit.second_network
        rotation.append(error)
        reprojection.append(miss)
    assert len(rotation) >= 8
    return rotation, reprojection, with_second


@pytest.fixture(scope="module")
def second(faces: MediaPipeFaces, plain_correspondence: Correspondence) -> SecondNetwork:
    return SecondNetwork(partial(faces.plain_face_mesh, depth=True), lambda: plain_correspondence)


def test_pose_from_the_detector_on_synthetic_renders(
    head: FlameModelData, layer: FlameLayer, faces: MediaPipeFaces, correspondence: Correspondence,
    second: SecondNetwork,
) -> None:  # fmt: skip
    """Through the real detector on the DEMO head, with the correspondence and landmark precision measured
    on the model (renders disjoint from these: fit/calibration.py draws its own heads from a fixed seed).
    Measured on these 10 renders: median rotation error 1.99°, reprojection of the visible landmarks
    1.38 % of the eye distance against the true projection (1.98°, 1.44 % without the face mesh's depth;
    2.90°, 1.33 % with the direct detector run alone; mean-head calibration without precision: 2.95°,
    1.43 %). Issue 17 asks for ≤ 3° and ≤ 2 %; MediaPipe's points on this stand-in head scatter by 2.5-7 %
    of the eye distance from render to render, so the margin is that of the median."""
    rotation, reprojection, with_second = _pose_errors(head, layer, faces, correspondence, seed=3, second=second)
    assert with_second == 0  # no occluder: the second network is never asked
    assert np.median(rotation) <= 3.0, rotation
    assert np.median(reprojection) <= 0.02, reprojection


def test_pose_with_a_bar_over_the_mouth(
    head: FlameModelData, layer: FlameLayer, faces: MediaPipeFaces, correspondence: Correspondence,
    second: SecondNetwork,
) -> None:  # fmt: skip
    """The same with a strongly coloured bar over the mouth. Measured on these 10 renders: 2.87°, 1.67 %
    with the second face mesh network's runs fitted too (every render shows the bar; fit/second_network.py,
    docs/texture.md "A second network under an occluder"); 3.03°, 1.91 % without them, with both runs'
    relative depth in the solves (fit/pose_batch.py); 3.18°, 1.93 % without the depth, with the mirrored
    photo's detector run fitted beside the direct one (fit/landmark_averaging.py); 3.26°, 1.96 % without
    that either; 3.88°, 2.42 % without the down-weighting of the landmarks next to the occluder the photo
    shows (fit/cover.py). The detector's whole mesh bends around the bar (nostrils drawn 5-8 % of the eye
    distance too high, the chin far more, docs/texture.md). Issue 17's bounds, 3° and 2 %."""
    rotation, reprojection, with_second = _pose_errors(head, layer, faces, correspondence, seed=5,
                                                       occluder="mouth", second=second)  # fmt: skip
    assert with_second == len(rotation)
    assert np.median(rotation) <= 3.0, rotation
    assert np.median(reprojection) <= 0.02, reprojection


def test_pose_with_a_skin_coloured_hand_over_the_mouth(
    head: FlameModelData, layer: FlameLayer, faces: MediaPipeFaces, correspondence: Correspondence,
    second: SecondNetwork,
) -> None:  # fmt: skip
    """The training renders' skin-coloured hand over mouth, nose and chin (seeds 30000-30009, the first of
    benchmarks/fit_skin_cover.py's set). The colour blobs do not see it; the lips it hides do
    (fit/cover.py's skin-coloured mask). Measured on these 10 renders: 9 trusted, median 3.3°, reprojection
    1.4 %; without the skin-coloured mask 10 trusted, 6.2°, 5.7 % (the detector's mouth drawn on the
    fingers, fitted as if seen). On the 40 renders of the set: 3.24°, 1.65 % (before: 6.06°, 5.40 %)."""
    texture = ground_truth_texture(head)
    rotation, reprojection = [], []
    for i in range(10):
        rng = np.random.default_rng(30000 + i)
        case = render_case(head, layer, texture, rng)
        case = dataclasses.replace(case, image=with_training_occluder(case, "hand_over_mouth", rng)[0])
        fitted = _fitted(case, faces, correspondence, second)
        if fitted is not None and fitted[0].trusted:
            assert fitted[0].second_network  # the hand's cover asks for the second network
            rotation.append(fitted[1])
            reprojection.append(fitted[2])
    assert len(rotation) >= 8
    assert np.median(rotation) <= 3.6, rotation
    assert np.median(reprojection) <= 0.02, reprojection


def test_pose_with_sunglasses(
    head: FlameModelData, layer: FlameLayer, faces: MediaPipeFaces, correspondence: Correspondence,
    second: SecondNetwork,
) -> None:  # fmt: skip
    """The training renders' sunglasses (seeds 30000-30009, the first of benchmarks/fit_sunglasses.py's set).
    The detector draws the eyes and brows about 0.2 eye distances down onto the lenses; taken for eyes, they
    pulled the head off the face. Found as an object (fit/cover.py's DARK_COVER), the pose rests on the nose,
    mouth and jaw (fit/trust.py's COVERED_EYES_POSE). Measured on these 10 renders: 10 trusted, median 4.28°,
    reprojection 2.48 % (before: 10 trusted, 5.20°, 4.78 %). Issue 17's 3° and 2 % are not met here yet."""
    texture = ground_truth_texture(head)
    rotation, reprojection = [], []
    for i in range(10):
        rng = np.random.default_rng(30000 + i)
        case = render_case(head, layer, texture, rng)
        case = dataclasses.replace(case, image=with_training_occluder(case, "sunglasses", rng)[0])
        fitted = _fitted(case, faces, correspondence, second)
        if fitted is not None and fitted[0].trusted:
            assert fitted[0].second_network  # the lenses ask for the second network
            rotation.append(fitted[1])
            reprojection.append(fitted[2])
    assert len(rotation) >= 9
    assert np.median(rotation) <= 4.8, rotation
    assert np.median(reprojection) <= 0.03, reprojection


def test_both_runs_fitted_from_the_direct_fit_land_where_the_yaw_search_does(
    head: FlameModelData, layer: FlameLayer, faces: MediaPipeFaces, correspondence: Correspondence,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """stage.SEED_FROM_DIRECT: the fit of both detector runs starts from the direct run's pose and focal
    instead of searching the yaw again (on the sample photo 319 → 271 ms per fit; the fit sets' medians are
    the same to two decimals, benchmarks/fit_seeded.py)."""
    case = render_case(head, layer, ground_truth_texture(head), np.random.default_rng(7), occluder="mouth")
    found = faces.face_mesh(case.image, depth=True)
    assert found
    to68 = lambda points: to_68(points, correspondence)  # noqa: E731
    mirrored = mirrored_landmarks(case.image, to68(found[0]), lambda rgb: faces.face_mesh(rgb, depth=True), to68)
    fits = {}
    for on in (False, True):
        monkeypatch.setattr(stage, "SEED_FROM_DIRECT", on)
        fits[on] = fit_head(case.image, None, found[0], case.landmarks[None], case.landmark_normals,
                            correspondence=correspondence, mirrored=mirrored)  # fmt: skip
    seeded, searched = fits[True], fits[False]
    assert seeded.trusted and searched.trusted
    assert seeded.camera is not None and searched.camera is not None
    assert seeded.expression_poses is not None and searched.expression_poses is not None
    np.testing.assert_allclose(seeded.expression_poses, searched.expression_poses, atol=1e-3)
    np.testing.assert_allclose(seeded.camera, searched.camera, rtol=1e-3)


def test_a_covered_mouth_is_down_weighted_from_photo_evidence(
    head: FlameModelData, layer: FlameLayer, faces: MediaPipeFaces
) -> None:
    texture = ground_truth_texture(head)
    case = render_case(head, layer, texture, np.random.default_rng(4), occluder="mouth", max_yaw=10)
    found = faces.face_mesh(case.image)
    assert found
    fit = fit_head(case.image, None, found[0], case.landmarks[None], case.landmark_normals)
    assert fit.weights is not None
    mouth, eyes = list(GROUPS["mouth"]), list(GROUPS["eyes"])
    # Which landmarks the bar really covers, from the occluder's own alpha.
    xy = np.round(landmarks68_from_mesh(found[0])).astype(int)
    h, w = case.occluder_alpha.shape
    covered = case.occluder_alpha[xy[:, 1].clip(0, h - 1), xy[:, 0].clip(0, w - 1)] > 0.5
    # MediaPipe may guess the covered mouth onto visible skin above the bar (it does on this render):
    # only landmarks it put on the occluder can be caught by the photo's evidence, and they all are.
    assert covered.sum() >= 5
    assert fit.weights[covered].max() < 0.5
    assert fit.weights[mouth].mean() < fit.weights[eyes].mean()
    assert fit.weights[eyes].min() >= 0.5


def test_a_face_cut_by_the_frame_is_untrusted(
    head: FlameModelData, layer: FlameLayer, faces: MediaPipeFaces, correspondence: Correspondence
) -> None:
    case = render_case(head, layer, ground_truth_texture(head), np.random.default_rng(8), max_yaw=5)
    found = faces.face_mesh(case.image)
    assert found
    points = found[0].copy()
    # Keep only the image right of the image-right eye's centre: most of the face is outside the photo.
    cut = int(points[473, 0])
    photo = np.ascontiguousarray(case.image[:, cut:])
    points[:, 0] -= cut
    fit = fit_head(photo, None, points, case.landmarks[None], case.landmark_normals, correspondence=correspondence)
    assert fit.status == "untrusted" and fit.camera is None
    assert "landmarks are visible" in fit.reason


def test_a_turned_head_beyond_the_limit_is_untrusted(
    head: FlameModelData, layer: FlameLayer, faces: MediaPipeFaces, correspondence: Correspondence
) -> None:
    case = render_case(head, layer, ground_truth_texture(head), np.random.default_rng(3), max_yaw=80)
    assert abs(np.degrees(case.pose[1])) > 65  # this seed turns the head ~73°
    found = faces.face_mesh(case.image)
    assert found
    fit = fit_head(
        case.image, None, found[0], case.landmarks[None], case.landmark_normals, correspondence=correspondence
    )
    assert fit.status == "untrusted" and fit.expression_poses is None
    # Measured on the ICT DEMO head: the first solve turns it 61°, the precision-weighted one 41° (the
    # detector's mesh of a profile collapses): the trust checks (fit/trust.py, test_trust.py) say so.
    assert any(text in fit.reason for text in ("profile", "landmarks are visible", "two poses"))


def test_the_calibrated_precision_fades_on_small_faces() -> None:
    """On a face ~100 px between the eyes the calibrated weights hold; on a 20 px face the shared pixel
    scatter dominates and every landmark weighs about the same; the eyes stay at 1 at any size."""
    from inference_server.fit.stage import scatter_precision

    calibrated = np.array([1.0, 0.5, 0.3])
    large, small = scatter_precision(calibrated, 400.0), scatter_precision(calibrated, 20.0)
    np.testing.assert_allclose(large, calibrated, atol=0.02)
    np.testing.assert_allclose(small[0], 1.0)
    assert small[2] > 0.8 and small[1] > small[2]
    mid = scatter_precision(calibrated, 100.0)
    assert (small[1:] > mid[1:]).all() and (mid[1:] > large[1:]).all()
