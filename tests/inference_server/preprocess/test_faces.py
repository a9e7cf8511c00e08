"""Several faces and faces cut by the frame, on photos made from the official-preprocessing fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from inference_server.preprocess.detect import BadRegionError, FaceDetector
from inference_server.preprocess.image import load_image
from inference_server.preprocess.input_checks import input_warnings
from inference_server.preprocess.official_reference import find_fixtures

FIXTURES = find_fixtures()
pytestmark = pytest.mark.skipif(
    FIXTURES is None, reason="shared/fixtures/official-preprocessing is not on this machine"
)
LEFT, RIGHT = "model-fashion-beauty-black-thumb", "smoke-young-human-model-thumb"


def fixture_photo(name: str) -> np.ndarray:
    assert FIXTURES is not None
    return load_image(FIXTURES / "images" / f"{name}.jpg").rgb


def two_faces_photo() -> tuple[np.ndarray, int]:
    """Two portraits side by side (300 px high each); returns the photo and the right one's x offset."""
    left, right = fixture_photo(LEFT), fixture_photo(RIGHT)
    return np.ascontiguousarray(np.concatenate([left, right], axis=1)), left.shape[1]


@pytest.fixture(scope="module")
def detector() -> Iterator[FaceDetector]:
    with FaceDetector() as face_detector:
        yield face_detector


def test_two_faces_are_listed_nearest_the_centre_first_and_either_can_be_chosen(detector: FaceDetector) -> None:
    photo, offset = two_faces_photo()
    alone_left = detector.detect(fixture_photo(LEFT)).box
    alone_right = detector.detect(fixture_photo(RIGHT)).box + np.array([offset, 0, offset, 0])
    faces = detector.detect_all(photo)
    assert [f.index for f in faces] == [0, 1] and all(f.n_faces == 2 for f in faces)
    centre = np.array([photo.shape[1] / 2, photo.shape[0] / 2])
    distances = [np.linalg.norm((f.box[:2] + f.box[2:]) / 2 - centre) for f in faces]
    assert distances[0] < distances[1]
    # Each listed face is the same face, with the same box, as in its own photo.
    by_side = sorted(faces, key=lambda f: f.box[0])
    side = alone_left[2] - alone_left[0]
    np.testing.assert_allclose(by_side[0].box, alone_left, atol=0.05 * side)
    np.testing.assert_allclose(by_side[1].box, alone_right, atol=0.05 * side)
    # face=N chooses; the default is face 0; a face number that does not exist is a clear error.
    assert detector.detect(photo).index == 0
    np.testing.assert_allclose(detector.detect(photo, face=1).box, faces[1].box)
    with pytest.raises(BadRegionError, match="no face number 2") as info:
        detector.detect(photo, face=2)
    assert "0 to 1" in info.value.fix
    codes = [w["code"] for w in input_warnings(faces[0])]
    assert codes[0] == "several_faces" and "--face" in input_warnings(faces[0])[0]["message"]


def test_a_face_cut_by_the_frame_keeps_its_box_and_says_so(detector: FaceDetector) -> None:
    whole = fixture_photo(LEFT)
    uncut = detector.detect(whole)
    cut_at = 30  # the left edge of the face is outside the photo
    found = detector.detect(np.ascontiguousarray(whole[:, cut_at:]))
    box = found.box + np.array([cut_at, 0, cut_at, 0])
    side = uncut.box[2] - uncut.box[0]
    assert found.cut_by_frame and found.box[0] < 0  # the box reaches past the border, as SCRFD's would
    assert "cut_by_frame" in [w["code"] for w in input_warnings(found)]
    # The face mesh extrapolates the outline past the border: the box stays where the uncut face's is.
    np.testing.assert_allclose(box, uncut.box, atol=0.05 * side)


def test_the_whole_face_in_the_photo_is_not_called_cut(detector: FaceDetector) -> None:
    found = detector.detect(fixture_photo(RIGHT))
    assert not found.cut_by_frame and "cut_by_frame" not in [w["code"] for w in input_warnings(found)]
