"""The mirrored photo's detector run as a second observation of the fit's landmarks
(fit/landmark_averaging.py, pose_batch.fit_poses' ``second``)."""

from __future__ import annotations

import numpy as np
import torch

from inference_server.fit.calibration import Correspondence
from inference_server.fit.camera import Intrinsics, project
from inference_server.fit.landmark_averaging import MIRROR, mirror_pairs, mirrored_landmarks, unmirror
from inference_server.fit.pose import eye_distance
from inference_server.fit.pose_batch import fit_poses
from inference_server.fit.stage import to_68
from inference_server.fit.synthetic import ground_truth_texture, render_case
from inference_server.flame.layer import FlameLayer
from inference_server.flame.model_data import FlameModelData
from inference_server.preprocess.mediapipe_faces import MediaPipeFaces


def test_the_mirror_pairing_is_an_involution_that_maps_the_head_onto_itself(layer: FlameLayer) -> None:
    """The pairing is derived from the iBUG layout alone; the DEMO head's own 68-point embedding on its
    mean face (left-right symmetric) is an independent check: reflected (x → −x) and relabelled, every
    landmark lands on its own position."""
    table = mirror_pairs()
    assert sorted(table.tolist()) == list(range(68)) and (table[table] == np.arange(68)).all()
    assert set(np.flatnonzero(table == np.arange(68))) == {8, 27, 28, 29, 30, 33, 51, 57, 62, 66}
    with torch.no_grad():
        out = layer.neutral(torch.zeros(1, 32, dtype=torch.float64))
    assert out.landmarks is not None
    lmk = out.landmarks[0].double().numpy()
    reflected = lmk[MIRROR] * np.array([-1.0, 1.0, 1.0])
    iod = float(np.linalg.norm(lmk[36:42].mean(axis=0) - lmk[42:48].mean(axis=0)))
    assert np.linalg.norm(reflected - lmk, axis=1).max() < 0.01 * iod


def test_unmirror_keeps_a_pixel_centre_on_its_pixel() -> None:
    """MediaPipe's normalised coordinates span the image edges, so pixel i's centre is at i + ½; the same
    pixel in the mirrored photo is W − 1 − i, centre W − i − ½, and x → W − x maps it back exactly."""
    width = 640
    for i in (0, 17, 639):
        centre_in_mirror = np.array([[width - 1 - i + 0.5, 3.5]])
        np.testing.assert_allclose(unmirror(centre_in_mirror, width), [[i + 0.5, 3.5]])


def test_the_mirrored_run_lands_on_the_direct_one_on_a_clean_render(
    head: FlameModelData, layer: FlameLayer, faces: MediaPipeFaces, correspondence: Correspondence
) -> None:
    """On a clean render both runs see the same face: relabelled and mapped back, the mirrored run's
    landmarks lie on the direct run's within the detector's scatter (0.025-0.07 eye distances per landmark,
    docs/texture.md) and as near the truth as the direct run; not relabelled, they would be far off."""
    case = render_case(head, layer, ground_truth_texture(head), np.random.default_rng(11), max_yaw=20)
    found = faces.face_mesh(case.image)
    assert found

    def to68(points: np.ndarray) -> np.ndarray:
        return to_68(points, correspondence)

    direct = to68(found[0])
    mirrored = mirrored_landmarks(case.image, direct, faces.face_mesh, to68)
    assert mirrored is not None
    iod = eye_distance(direct)
    truth = project(case.landmarks, case.pose, case.camera)

    def miss(points: np.ndarray) -> float:
        return float(np.median(np.linalg.norm(points - truth, axis=1)))

    # Measured on this render: the runs 0.038 eye distances apart (median); direct 0.040, mirrored 0.036
    # from the truth.
    assert np.median(np.linalg.norm(mirrored - direct, axis=1)) < 0.06 * iod
    assert miss(mirrored) < 1.5 * miss(direct)
    assert miss(mirrored[MIRROR]) > 3 * miss(mirrored)  # not relabelled: the photo's right eye read as its left


def test_the_mirrored_run_of_another_face_is_not_used() -> None:
    """Of the faces the mirrored run finds, the one on the direct face is taken; none near it: None.
    (Detector runs of 68 points here, read as they are.)"""
    rng = np.random.default_rng(0)
    width = 300
    rgb = np.zeros((200, width, 3), np.uint8)
    direct = rng.uniform(100, 160, (68, 2))
    direct[36:42] -= [20.0, 0.0]  # eyes 40 px apart
    direct[42:48] += [20.0, 0.0]

    def to68(points: np.ndarray) -> np.ndarray:
        return points

    # The same face as the mirrored photo's run reports it: mirrored coordinates, mirrored labels.
    same = unmirror(direct[MIRROR], width) + rng.normal(0, 0.5, (68, 2))
    far = same + np.array([-120.0, 0.0])
    chosen = mirrored_landmarks(rgb, direct, lambda image: [far, same], to68)
    assert chosen is not None
    np.testing.assert_allclose(chosen, unmirror(same, width)[MIRROR])
    assert np.abs(chosen - direct).max() < 3.0
    assert mirrored_landmarks(rgb, direct, lambda image: [far], to68) is None
    assert mirrored_landmarks(rgb, direct, lambda image: [], to68) is None


def test_a_second_observation_equal_to_the_first_changes_nothing(layer: FlameLayer) -> None:
    """Fitted twice over with the same weights, the same points give the same pose (every term doubles)."""
    rng = np.random.default_rng(5)
    with torch.no_grad():
        out = layer.with_expression(torch.as_tensor(rng.normal(0, 1, (1, 32))), torch.zeros(1, 50))
    assert out.landmarks is not None
    lmk = out.landmarks[0].double().numpy()
    pose = np.array([0.1, 0.3, 0.05, 0.01, -0.02, -0.6])
    camera = np.array([900.0, 320.0, 240.0])
    seen = project(lmk, pose, camera) + rng.normal(0, 1.0, (68, 2))
    weights = rng.uniform(0.3, 1.0, 68)
    intr = Intrinsics(900.0, 320.0, 240.0, "exif")
    alone = fit_poses(lmk[None], seen, weights, intr, fit_focal=False)[0]
    twice = fit_poses(lmk[None], seen, weights, intr, fit_focal=False, second=seen)[0]
    np.testing.assert_allclose(twice.pose, alone.pose, atol=1e-6)
    np.testing.assert_allclose(twice.residuals, alone.residuals, atol=1e-4)
    assert twice.residuals.shape == (68,)
    # A second run that moves the points shifts the pose halfway (by about the mean of the two runs).
    moved = seen + np.array([4.0, 0.0])
    shifted = fit_poses(lmk[None], moved, weights, intr, fit_focal=False)[0]
    both = fit_poses(lmk[None], seen, weights, intr, fit_focal=False, second=moved)[0]
    np.testing.assert_allclose(both.pose[3], 0.5 * (alone.pose[3] + shifted.pose[3]), rtol=0.05)
