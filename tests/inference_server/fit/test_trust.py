"""Fits that look fine by their residual but are wrong: profiles fitted as a smaller turn and eyes the
detector guessed onto plain skin (fit/trust.py)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from inference_server.fit import stage
from inference_server.fit.calibration import Correspondence
from inference_server.fit.camera import project, rotation_angle_deg, rotation_matrix
from inference_server.fit.synthetic import ground_truth_texture, render_case
from inference_server.fit.trust import EYES, plain_eyes, pose_doubt
from inference_server.flame.layer import FlameLayer
from inference_server.flame.model_data import FlameModelData
from inference_server.preprocess.mediapipe_faces import MediaPipeFaces

#: (seed, yaw) of renders whose detector mesh, fitted without the trust checks, gives an "ok" pose that
#: is not a correct fit (more than 5° off, the benchmark's "correct" line; measured 9.7° and 17.7° with
#: the calibration of random heads and landmark precision, 12.5° and 16.3° before); a sweep over
#: −90..90° is in docs/texture.md.
PROFILES = ((5, 60.0), (7, 65.0))


def _all_trusted() -> np.ndarray:
    return np.ones(68)


def test_a_turned_pose_needs_the_jaw_line() -> None:
    facing, open_eyes = np.ones(68), np.array([False, False])
    weights = _all_trusted()
    assert pose_doubt(weights, 50.0, open_eyes, facing) == ""
    weights[0:17] = 0.1  # the jaw line contradicted by the rest of the face
    assert "jaw" in pose_doubt(weights, 50.0, open_eyes, facing)
    assert pose_doubt(weights, 20.0, open_eyes, facing) == ""  # a small turn is fixed by the eyes and nose


def test_hidden_eyes_make_the_pose_a_guess() -> None:
    facing, weights = np.ones(68), _all_trusted()
    assert "eye" in pose_doubt(weights, 0.0, np.array([True, False]), facing)
    facing[36:42] = 0.0  # ... unless the pose itself turns that eye away
    assert pose_doubt(weights, 0.0, np.array([True, False]), facing) == ""
    weights[36:48] = 0.0
    assert "eyes are hidden" in pose_doubt(weights, 0.0, np.array([False, False]), np.ones(68))


def test_eyes_behind_an_object_the_photo_shows_leave_the_pose_to_the_rest_of_a_frontal_face() -> None:
    """Sunglasses or a bar over the eyes (fit/cover.py finds the object): the eyes are known to be hidden, so
    the nose, mouth and jaw carry the pose while the head faces the camera; turned further, they do not fix
    the turn (benchmarks/fit_trust.py's bar over the eyes: 4 of 34 such fits 13-30° off beyond 35°; with
    sunglasses at 40-50°, one lens covering its eye, 2 of 5 fits 10-12° off)."""
    weights, open_eyes, facing = _all_trusted(), np.array([False, False]), np.ones(68)
    weights[36:48] = 0.1
    assert "eyes are hidden" in pose_doubt(weights, 20.0, open_eyes, facing, eyes_covered=0)
    assert "eyes are hidden" in pose_doubt(weights, 20.0, open_eyes, facing, eyes_covered=1)
    assert pose_doubt(weights, 20.0, open_eyes, facing, eyes_covered=2) == ""
    assert pose_doubt(weights, -35.0, open_eyes, facing, eyes_covered=2) == ""
    assert "the eyes are behind" in pose_doubt(weights, -36.0, open_eyes, facing, eyes_covered=2)
    # One lens over its eye of a turned head: the other eye's landmarks are seen, the turn still is not fixed.
    weights[42:48] = 1.0
    assert pose_doubt(weights, 40.0, open_eyes, facing, eyes_covered=0) == ""
    assert "an eye is behind" in pose_doubt(weights, 40.0, open_eyes, facing, eyes_covered=1)


def test_an_eye_painted_over_with_skin_is_plain(head: FlameModelData, layer: FlameLayer) -> None:
    case = render_case(head, layer, ground_truth_texture(head), np.random.default_rng(2), max_yaw=10)
    xy = project(case.landmarks, case.pose, case.camera)
    assert not plain_eyes(case.image, xy, xy).any()
    # Paint the image-left eye (and its lashes) with the cheek's colour, as a detector's guess onto skin sees it.
    image = case.image.copy()
    eye = xy[list(EYES[0])]
    centre = eye.mean(axis=0)
    cheek = image[int(xy[1, 1] * 0.5 + xy[31, 1] * 0.5), int(xy[1, 0] * 0.3 + xy[31, 0] * 0.7)]
    cv2.fillPoly(image, [np.round(centre + 2.0 * (eye - centre)).astype(np.int32)], tuple(int(c) for c in cheek))
    assert plain_eyes(image, xy, xy).tolist() == [True, False]


@pytest.mark.parametrize(("seed", "yaw"), PROFILES)
def test_a_profile_fitted_as_a_smaller_turn_is_untrusted(
    head: FlameModelData, layer: FlameLayer, faces: MediaPipeFaces, correspondence: Correspondence, seed: int,
    yaw: float, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    case = render_case(head, layer, ground_truth_texture(head), np.random.default_rng(seed), yaw=yaw)
    found = faces.face_mesh(case.image)
    assert found

    def fit() -> stage.HeadFit:
        return stage.fit_head(case.image, None, found[0], case.landmarks[None], case.landmark_normals,
                              correspondence=correspondence)  # fmt: skip

    with monkeypatch.context() as patch:  # without the check: "ok", and wrong
        patch.setattr(stage, "pose_doubt", lambda *args: "")
        unchecked = fit()
    assert unchecked.trusted and unchecked.expression_poses is not None
    error = rotation_angle_deg(rotation_matrix(unchecked.expression_poses[0][:3]), rotation_matrix(case.pose[:3]))
    assert error > 5.0
    checked = fit()
    assert checked.status == "untrusted" and checked.camera is None and checked.expression_poses is None
    assert "profile" in checked.reason and checked.warnings[0]["code"] == "fit_untrusted"
