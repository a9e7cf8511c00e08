"""Face detection on real photos (the astronaut and Grace Hopper, public domain, from installed packages)
with synthetic occluders; the fallback chain; face choice; hand-given boxes and points; no face."""

from __future__ import annotations

from collections.abc import Iterator

import cv2
import numpy as np
import pytest

from inference_server.errors import NoFaceError
from inference_server.preprocess import detect as detect_module
from inference_server.preprocess.alignment import ARCFACE_TEMPLATE_112, template_interocular
from inference_server.preprocess.crops import arcface_crop
from inference_server.preprocess.detect import BadRegionError, FaceDetector, detect_face
from inference_server.preprocess.face_box import scrfd_box_from_mesh, scrfd_box_from_points5
from inference_server.preprocess.mediapipe_faces import MediaPipeFaces
from inference_server.preprocess.synthetic_occluders import (
    ASTRONAUT_POINTS5,
    draw_bar,
    draw_hand_over_mouth,
)


@pytest.fixture(scope="module")
def detector() -> Iterator[FaceDetector]:
    with FaceDetector() as face_detector:
        yield face_detector


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


@pytest.fixture(scope="module")
def hopper() -> np.ndarray:
    import matplotlib.cbook
    from PIL import Image

    with Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as image:
        return np.asarray(image.convert("RGB"))


def _eye_distance(points5: np.ndarray) -> float:
    return float(np.linalg.norm(points5[1] - points5[0]))


def _relative_errors(found: np.ndarray, truth: np.ndarray) -> np.ndarray:
    return np.linalg.norm(found - truth, axis=1) / _eye_distance(truth)


def test_clean_astronaut_matches_the_recorded_points(detector: FaceDetector, astronaut: np.ndarray) -> None:
    found = detector.detect(astronaut)
    assert found.method == "face_mesh" and found.n_faces == 1
    assert found.landmarks is not None and found.landmarks.shape == (478, 2)
    np.testing.assert_allclose(found.points5, ASTRONAUT_POINTS5, atol=1.5)
    # The ArcFace order: image-left eye first, nose between the eyes, mouth corners left then right.
    p = found.points5
    assert p[0, 0] < p[2, 0] < p[1, 0] and p[3, 0] < p[4, 0]
    assert p[:2, 1].max() < p[2, 1] < p[3:, 1].min()
    # The 224 crop's box is the SCRFD-equivalent box of the mesh (face_box.py), not the five-point box.
    np.testing.assert_allclose(found.box, scrfd_box_from_mesh(found.landmarks))


@pytest.mark.parametrize("occluder", ["hand_over_mouth", "bar_over_eyes"])
def test_occluded_astronaut_is_detected_and_cropped(
    detector: FaceDetector, astronaut: np.ndarray, occluder: str
) -> None:
    if occluder == "hand_over_mouth":
        photo = draw_hand_over_mouth(astronaut, ASTRONAUT_POINTS5)
    else:
        photo = draw_bar(astronaut, ASTRONAUT_POINTS5, "eyes")
    found = detector.detect(photo)
    errors = _relative_errors(found.points5, ASTRONAUT_POINTS5)
    # The landmarks under an occluder are guesses; they stay on the right face and near the truth.
    assert errors.max() < 0.3, errors
    crop = arcface_crop(photo, found.points5)
    assert crop.blob.shape == (3, 112, 112) and np.isfinite(crop.blob).all()
    assert crop.residuals.mean() / template_interocular() < 0.15


def test_warped_points_land_on_the_face_in_the_crop(detector: FaceDetector, hopper: np.ndarray) -> None:
    """After warping, the five points must land where the face is in the crop: detecting again on the
    (upscaled) ArcFace crop finds the eyes and mouth corners within 3 % of the template eye distance.
    The nose tip, a 3-D point whose image position depends on the mesh's pose estimate, moves more
    (measured 4.8 %)."""
    found = detector.detect(hopper)
    crop = arcface_crop(hopper, found.points5)
    upscaled = cv2.resize(crop.image, (448, 448), interpolation=cv2.INTER_CUBIC)
    padded = cv2.copyMakeBorder(upscaled, 112, 112, 112, 112, cv2.BORDER_CONSTANT, value=(0, 0, 0))
    again = detector.detect(padded)
    in_crop = (again.points5 - 112) / 4.0
    errors = np.linalg.norm(in_crop - crop.points, axis=1) / template_interocular()
    assert errors[[0, 1, 3, 4]].max() < 0.03, errors
    assert errors[2] < 0.06, errors


def test_residual_to_the_template_on_a_neutral_face(detector: FaceDetector, hopper: np.ndarray) -> None:
    """A similarity cannot map five points exactly. On a neutral face (Grace Hopper) the face mesh's eyes
    land within 3 % of the eye distance of the template; the nose and mouth within 6 % (measured 2-5 %)."""
    with FaceDetector(mtcnn=False) as mesh_only:
        crop = arcface_crop(hopper, mesh_only.detect(hopper).points5)
    relative = crop.residuals / template_interocular()
    assert relative[:2].max() < 0.03, relative
    assert relative.max() < 0.06, relative
    # The mean of the mesh's and MTCNN O-Net's points (refine_points.py) is a little less self-consistent
    # (measured eyes 3.3-3.6 %, nose and mouth 5.3-5.6 %): two landmark conventions averaged.
    shipped = detector.detect(hopper)
    relative = arcface_crop(hopper, shipped.points5).residuals / template_interocular()
    assert relative[:2].max() < 0.04 and relative.max() < 0.06, (shipped.points_source, relative)


def test_large_photo_coordinates_stay_in_original_pixels(detector: FaceDetector, astronaut: np.ndarray) -> None:
    big = cv2.resize(astronaut, (2048, 2048), interpolation=cv2.INTER_CUBIC)  # detected on a 1280 copy
    found = detector.detect(big)
    truth = (ASTRONAUT_POINTS5 + 0.5) * 4 - 0.5
    assert _relative_errors(found.points5, truth).max() < 0.06


def test_the_face_mesh_depth_comes_with_the_detection_in_photo_pixels(
    detector: FaceDetector, astronaut: np.ndarray
) -> None:
    """The fit's depth residual (fit/pose_batch.py) takes the detection's own face mesh depth. On the photo
    as it is, it is the face mesh's z of that run (× the width); on a 4× copy, detected on a 1280 working
    copy, it is mapped back to the photo's pixels like x and y, so it is ~4× the small photo's (the
    network sees nearly the same picture; measured slope 4.0)."""
    small = detector.detect(astronaut)
    assert small.landmarks is not None and small.landmark_depth is not None
    assert small.landmark_depth.shape == (478,)
    own = MediaPipeFaces().face_mesh(astronaut, depth=True)[0]
    np.testing.assert_allclose(small.landmark_depth, own[:, 2], atol=1e-6)
    np.testing.assert_allclose(small.landmarks, own[:, :2], atol=1e-6)
    big = detector.detect(cv2.resize(astronaut, (2048, 2048), interpolation=cv2.INTER_CUBIC))
    assert big.landmark_depth is not None
    a, b = small.landmark_depth - small.landmark_depth.mean(), big.landmark_depth - big.landmark_depth.mean()
    assert 3.6 < float(a @ b / (a @ a)) < 4.4


def _in_large_photo(face: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The face photo pasted into a 1600×1200 photo of a coffee cup; returns it and the offset."""
    from skimage import data

    canvas = cv2.resize(data.coffee(), (1600, 1200), interpolation=cv2.INTER_LINEAR)
    offset = np.array([900, 150])
    canvas[offset[1] : offset[1] + face.shape[0], offset[0] : offset[0] + face.shape[1]] = face
    return canvas, offset.astype(float)


def test_fallback_recovers_a_face_the_mesh_misses(detector: FaceDetector, astronaut: np.ndarray) -> None:
    photo, offset = _in_large_photo(draw_hand_over_mouth(astronaut, ASTRONAUT_POINTS5))
    centre = np.array([800.0, 600.0])
    assert detector.run_chain(photo, centre, steps=("face_mesh",)) is None  # the mesh alone misses it
    found = detector.detect(photo)
    assert found.method == "face_mesh_on_detector_box"
    assert found.landmarks is not None and found.score is not None
    assert _relative_errors(found.points5, ASTRONAUT_POINTS5 + offset).max() < 0.3


def test_detector_keypoints_give_the_five_points(detector: FaceDetector, astronaut: np.ndarray) -> None:
    found = detector.run_chain(astronaut, np.array([256.0, 256.0]), steps=("detector", "detector_keypoints"))
    assert found is not None and found.method == "detector_keypoints" and found.landmarks is None
    errors = _relative_errors(found.points5, ASTRONAUT_POINTS5)
    assert errors[:3].max() < 0.15 and errors.max() < 0.35, errors


def test_two_faces_nearest_the_centre_wins_unless_a_box_is_given(detector: FaceDetector, astronaut: np.ndarray) -> None:
    face = astronaut[20:280, 110:340]  # the head and shoulders
    canvas = np.full((400, 1000, 3), 235, np.uint8)
    left, right = np.array([60.0, 70.0]), np.array([520.0, 70.0])
    for x, y in (left, right):
        canvas[int(y) : int(y) + face.shape[0], int(x) : int(x) + face.shape[1]] = face
    shift = np.array([110.0, 20.0])
    right_truth = ASTRONAUT_POINTS5 - shift + right  # centre 500: the right face (~635) is nearer than ~175
    left_truth = ASTRONAUT_POINTS5 - shift + left
    found = detector.detect(canvas)
    assert found.n_faces == 2
    assert _relative_errors(found.points5, right_truth).max() < 0.1
    box = np.concatenate([left_truth.min(axis=0) - 40, left_truth.max(axis=0) + 40])
    chosen = detector.detect(canvas, box=box)
    assert chosen.method == "face_mesh_on_box"
    assert _relative_errors(chosen.points5, left_truth).max() < 0.1


def test_points_given_means_no_detector_runs(monkeypatch: pytest.MonkeyPatch, astronaut: np.ndarray) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a detector ran although the points were given")

    monkeypatch.setattr(MediaPipeFaces, "face_mesh", refuse)
    monkeypatch.setattr(MediaPipeFaces, "face_detector", refuse)
    points = ASTRONAUT_POINTS5.tolist()
    for found in (detect_face(astronaut, points=points), FaceDetector().detect(astronaut, points=points)):
        assert found.method == "points" and found.landmarks is None
        np.testing.assert_array_equal(found.points5, ASTRONAUT_POINTS5)
        np.testing.assert_allclose(found.box, scrfd_box_from_points5(ASTRONAUT_POINTS5))


@pytest.mark.parametrize(
    "photo",
    [
        np.full((480, 640, 3), 128, np.uint8),
        np.random.default_rng(1).integers(0, 255, (480, 640, 3), dtype=np.uint8),
    ],
    ids=["flat_grey", "noise"],
)
def test_no_face_says_how_to_mark_it(detector: FaceDetector, photo: np.ndarray) -> None:
    with pytest.raises(NoFaceError) as info:
        detector.detect(photo)
    assert info.value.code == "no_face"
    assert "box" in info.value.fix and "five points" in info.value.fix


def test_bad_boxes_and_points_are_refused(detector: FaceDetector, astronaut: np.ndarray) -> None:
    for box in ([10, 10, 5, 50], [0, 0, 3, 3], [600, 600, 700, 700], [1, 2, 3], [0, 0, float("nan"), 9]):
        with pytest.raises(BadRegionError):
            detector.detect(astronaut, box=box)
    for points in ([[1, 2]] * 5, [[1, 2, 3]] * 5, ASTRONAUT_POINTS5 + 5000, "abc"):
        with pytest.raises(BadRegionError):
            detector.detect(astronaut, points=points)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        detector.detect(astronaut, detector="dlib")  # type: ignore[arg-type]


def test_scrfd_without_a_model_is_a_clear_error(astronaut: np.ndarray) -> None:
    with pytest.raises(BadRegionError, match="SCRFD"):
        FaceDetector().detect(astronaut, detector="scrfd")


def test_template_order_constant() -> None:
    assert ARCFACE_TEMPLATE_112[0, 0] < ARCFACE_TEMPLATE_112[1, 0]
    assert detect_module.ALL_STEPS[0] == "face_mesh"
