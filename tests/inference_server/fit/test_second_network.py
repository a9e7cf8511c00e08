"""The second face mesh network on occluded faces (fit/second_network.py): its runs land on the face in the
photo's labels, they are asked for only when the photo shows an occluder, and the pose solves weigh them
run by run (fit/pose_batch.py)."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest

from inference_server.fit.calibration import Correspondence
from inference_server.fit.camera import Intrinsics, project
from inference_server.fit.pose import eye_distance
from inference_server.fit.pose_batch import fit_poses
from inference_server.fit.second_network import SecondNetwork, second_network_runs
from inference_server.fit.stage import fit_head, to_68
from inference_server.fit.synthetic import SyntheticCase, ground_truth_texture, render_case
from inference_server.flame.layer import FlameLayer
from inference_server.flame.model_data import FlameModelData
from inference_server.preprocess.mediapipe_faces import MediaPipeFaces


@pytest.fixture(scope="module")
def bar_case(head: FlameModelData, layer: FlameLayer) -> SyntheticCase:
    return render_case(head, layer, ground_truth_texture(head), np.random.default_rng(11), occluder="mouth")


@pytest.fixture(scope="module")
def clean_case(head: FlameModelData, layer: FlameLayer) -> SyntheticCase:
    return render_case(head, layer, ground_truth_texture(head), np.random.default_rng(12))


class Asked:
    """Counts the fit's requests for the second network's runs, and answers them."""

    def __init__(self, rgb: np.ndarray, network: SecondNetwork) -> None:
        self.rgb, self.network, self.calls = rgb, network, 0

    def __call__(self, direct: np.ndarray) -> np.ndarray | None:
        self.calls += 1
        return second_network_runs(self.rgb, direct, self.network)


def _network(faces: MediaPipeFaces, correspondence: Correspondence | None) -> SecondNetwork:
    return SecondNetwork(partial(faces.plain_face_mesh, depth=True), lambda: correspondence)


def test_the_plain_network_gives_468_points_with_depth(faces: MediaPipeFaces, bar_case: SyntheticCase) -> None:
    found = faces.plain_face_mesh(bar_case.image, depth=True)
    assert found and found[0].shape == (468, 3)
    assert faces.plain_face_mesh(bar_case.image)[0].shape == (468, 2)


def test_both_runs_land_on_the_face_in_the_photos_labels(
    faces: MediaPipeFaces, plain_correspondence: Correspondence, correspondence: Correspondence,
    clean_case: SyntheticCase,
) -> None:  # fmt: skip
    """On a clean render the second network's direct and mirrored 68 land near the true projection, each
    landmark near its own (a mirrored run left in the mirror's labels would put the right eye on the left)."""
    direct = to_68(faces.face_mesh(clean_case.image, depth=True)[0], correspondence)
    runs = second_network_runs(clean_case.image, direct, _network(faces, plain_correspondence))
    assert runs is not None and runs.shape == (136, 3)
    truth = project(clean_case.landmarks, clean_case.pose, clean_case.camera)
    iod = eye_distance(truth)
    for run in (runs[:68], runs[68:]):
        miss = np.linalg.norm(run[:, :2] - truth, axis=1) / iod
        # The first network's runs miss this render by 0.056 / 0.058 median (the detector's scatter).
        assert np.median(miss) < 0.08, np.median(miss)
        assert miss[36:48].max() < 0.2  # the eyes, where a label swap would be a whole eye distance off
    assert np.isfinite(runs[:, 2]).all()


def test_no_correspondence_or_no_face_gives_no_runs(
    faces: MediaPipeFaces, plain_correspondence: Correspondence, clean_case: SyntheticCase
) -> None:
    direct = np.zeros((68, 2))
    assert second_network_runs(clean_case.image, direct, _network(faces, None)) is None
    blank = np.full_like(clean_case.image, 128)
    assert second_network_runs(blank, direct, _network(faces, plain_correspondence)) is None
    # A face far from the first network's landmarks is another face: not used.
    far = np.full((68, 2), 5000.0) + np.arange(68)[:, None]
    assert second_network_runs(clean_case.image, far, _network(faces, plain_correspondence)) is None


def test_asked_only_when_the_photo_shows_an_occluder(
    faces: MediaPipeFaces, correspondence: Correspondence, plain_correspondence: Correspondence,
    bar_case: SyntheticCase, clean_case: SyntheticCase,
) -> None:  # fmt: skip
    network = _network(faces, plain_correspondence)
    fits = {}
    for name, case in (("clean", clean_case), ("bar", bar_case)):
        asked = Asked(case.image, network)
        mesh = faces.face_mesh(case.image, depth=True)[0]
        fits[name] = fit_head(case.image, None, mesh, case.landmarks[None], case.landmark_normals,
                              correspondence=correspondence, occluded_runs=asked)  # fmt: skip
        assert fits[name].trusted, fits[name].reason
        assert asked.calls == (name == "bar")
    assert (fits["clean"].detector_runs, fits["clean"].second_network) == (1, False)
    assert (fits["bar"].detector_runs, fits["bar"].second_network) == (3, True)  # direct + the second's two
    assert fits["bar"].meta(0)["second_network"] is True


def _problem(seed: int = 0) -> tuple[np.ndarray, np.ndarray, Intrinsics, np.ndarray]:
    """A face-sized point set, a posed projection of it with noise, the intrinsics and the true pose."""
    rng = np.random.default_rng(seed)
    model = rng.normal(0.0, 0.04, (68, 3))
    intr = Intrinsics(1000.0, 320.0, 240.0, "estimated")
    pose = np.array([0.1, -0.2, 0.05, 0.01, -0.02, -0.6])
    image = project(model, pose, np.array([intr.focal, intr.cx, intr.cy])) + rng.normal(0.0, 1.0, (68, 2))
    return model, image, intr, pose


def test_a_run_at_precision_zero_changes_nothing() -> None:
    """The precision is applied run by run: a second run of wild points at precision 0 leaves the fit as
    without it, and at the first run's precision it moves the pose."""
    model, image, intr, _ = _problem()
    wild = image + np.random.default_rng(1).normal(0.0, 25.0, image.shape)
    ones = np.ones(68)
    alone = fit_poses(model[None], image, ones, intr, fit_focal=False)[0]
    ignored = fit_poses(model[None], image, ones, intr, fit_focal=False, second=wild,
                        precision=np.concatenate([ones, np.zeros(68)]))[0]  # fmt: skip
    counted = fit_poses(model[None], image, ones, intr, fit_focal=False, second=wild, precision=ones)[0]
    np.testing.assert_allclose(ignored.pose, alone.pose, atol=1e-7)
    assert np.abs(counted.pose - alone.pose).max() > 1e-4


def test_several_runs_stack_and_partial_runs_are_refused() -> None:
    """Two further runs identical to the first fit as the first alone (the same minimum); points that are
    not whole runs of 68 are a caller's error."""
    model, image, intr, pose = _problem(2)
    alone = fit_poses(model[None], image, np.ones(68), intr, fit_focal=False)[0]
    tripled = fit_poses(model[None], image, np.ones(68), intr, fit_focal=False, second=np.vstack([image, image]))[0]
    np.testing.assert_allclose(tripled.pose, alone.pose, atol=1e-5)
    np.testing.assert_allclose(alone.pose, pose, atol=0.05)
    with pytest.raises(ValueError, match="whole runs"):
        fit_poses(model[None], image, np.ones(68), intr, fit_focal=False, second=image[:60])
