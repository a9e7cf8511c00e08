"""Landmarks on an occluder, from what the photo shows around them (occlusion.py)."""

from __future__ import annotations

from collections.abc import Iterator

import matplotlib.cbook
import numpy as np
import pytest
from skimage import data

from inference_server.preprocess.detect import FaceDetector
from inference_server.preprocess.image import load_image
from inference_server.preprocess.input_checks import input_warnings
from inference_server.preprocess.occlusion import occluded_points, point_evidence
from inference_server.preprocess.official_reference import find_fixtures
from inference_server.preprocess.synthetic_occluders import OCCLUDERS

EYES = {"left_eye", "right_eye"}
MOUTH = {"left_mouth_corner", "right_mouth_corner"}
#: Which landmarks each synthetic occluder covers.
COVERED = {
    "none": set(),
    "hand_over_mouth": MOUTH,
    "bar_over_eyes": EYES,
    "bar_over_mouth": MOUTH,
    "surgical_mask": MOUTH,
    "sunglasses": EYES,
    "sunglasses_and_hand": EYES | MOUTH,
}
FIXTURES = find_fixtures()


@pytest.fixture(scope="module")
def detector() -> Iterator[FaceDetector]:
    with FaceDetector() as face_detector:
        yield face_detector


@pytest.fixture(scope="module")
def faces(detector: FaceDetector) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    hopper = load_image(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).rgb
    photos = {"astronaut": data.astronaut(), "grace_hopper": hopper}
    # The points found on the clean photo: where the face's features really are, under any occluder.
    return {name: (rgb, detector.detect(rgb).points5) for name, rgb in photos.items()}


@pytest.mark.parametrize("occluder", sorted(COVERED))
def test_every_covered_landmark_is_flagged_on_both_real_faces(
    faces: dict[str, tuple[np.ndarray, np.ndarray]], occluder: str
) -> None:
    for name, (rgb, points5) in faces.items():
        flagged = set(occluded_points(OCCLUDERS[occluder](rgb, points5), points5))
        assert COVERED[occluder] <= flagged, (name, occluder, flagged)
        if occluder == "none":
            assert flagged == set(), (name, flagged)
        # Uncovered eyes stay unflagged (a mouth corner next to dark sunglasses may lose its features).
        assert not (flagged & EYES - COVERED[occluder]), (name, occluder, flagged)


def test_the_verdict_says_what_kind_of_occluder(faces: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    rgb, points5 = faces["astronaut"]
    by_name = {e.name: e for e in point_evidence(OCCLUDERS["hand_over_mouth"](rgb, points5), points5)}
    # A skin-coloured hand: skin without the lips' features.
    assert by_name["left_mouth_corner"].occluder == "featureless_skin"
    assert by_name["left_mouth_corner"].feature < 0.03 < by_name["left_eye"].feature
    by_name = {e.name: e for e in point_evidence(OCCLUDERS["sunglasses"](rgb, points5), points5)}
    assert by_name["right_eye"].occluder == "not_skin" and by_name["right_eye"].skin < 0.2


def test_points_outside_the_photo_are_not_tested_as_skin(faces: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    rgb, points5 = faces["astronaut"]
    top = int(points5[:2, 1].max()) + 2  # the top edge just below both eyes
    cut = rgb[top:]
    shifted = points5 - np.array([0.0, top])
    verdicts = {e.name: e.occluder for e in point_evidence(cut, shifted)}
    assert verdicts["left_eye"] == verdicts["right_eye"] == "outside_frame"
    assert verdicts["left_mouth_corner"] is None


def test_the_result_warns_when_landmarks_fell_on_a_hand(
    faces: dict[str, tuple[np.ndarray, np.ndarray]], detector: FaceDetector
) -> None:
    rgb, points5 = faces["astronaut"]
    covered = detector.detect(OCCLUDERS["hand_over_mouth"](rgb, points5))
    assert set(covered.occluded_points) == MOUTH
    assert covered.to_meta()["occluded_points"] == list(covered.occluded_points)
    warning = next(w for w in input_warnings(covered) if w["code"] == "landmarks_on_occluder")
    assert "left mouth corner" in warning["message"] and "right mouth corner" in warning["message"]
    clean = detector.detect(rgb)
    assert clean.occluded_points == ()
    assert all(w["code"] != "landmarks_on_occluder" for w in input_warnings(clean))


@pytest.mark.skipif(FIXTURES is None, reason="shared/fixtures/official-preprocessing is not on this machine")
def test_real_occluders_on_the_official_fixtures(detector: FaceDetector) -> None:
    assert FIXTURES is not None

    def flagged(name: str) -> set[str]:
        return set(detector.detect(load_image(FIXTURES / "images" / f"{name}.jpg")).occluded_points)

    # A hand over the right half of the face; a cigarette in the right mouth corner; a clean face with
    # closed eyes.
    assert {"right_eye", "right_mouth_corner"} <= flagged("despair-alone-being-alone-archetype-thumb")
    assert "right_mouth_corner" in flagged("smoke-young-human-model-thumb")
    assert flagged("pretty-woman-girl-eyes-thumb") == set()


def test_a_blurred_face_raises_no_false_alarm_but_colour_still_tells(
    faces: dict[str, tuple[np.ndarray, np.ndarray]],
) -> None:
    import cv2

    for name, (rgb, points5) in faces.items():
        sigma = 0.1 * float(np.linalg.norm(points5[1] - points5[0]))
        # Blur flattens lips and lids as much as a hand would: "featureless" is not judged then…
        assert face_sharpness_of(rgb, points5) > 0.17 > face_sharpness_of(cv2.GaussianBlur(rgb, (0, 0), sigma), points5)
        assert occluded_points(cv2.GaussianBlur(rgb, (0, 0), sigma), points5) == (), name
        # …but a dark bar over the eyes is no skin colour however blurred.
        barred = cv2.GaussianBlur(OCCLUDERS["bar_over_eyes"](rgb, points5), (0, 0), sigma)
        assert set(occluded_points(barred, points5)) >= EYES, name


def face_sharpness_of(rgb: np.ndarray, points5: np.ndarray) -> float:
    from inference_server.preprocess.occlusion import _aligned_lab, face_sharpness

    return face_sharpness(_aligned_lab(rgb, points5)[0])
