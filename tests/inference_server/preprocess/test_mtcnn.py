"""The MTCNN cascade (mtcnn.py) on real photos, its NMS on hand-made boxes, the weight checks, the
five-point refinement rule (refine_points.py) and the fallback when the weights are not installed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from inference_server.preprocess import mtcnn as mtcnn_module
from inference_server.preprocess.alignment import ARCFACE_TEMPLATE_112, apply_affine, invert_affine
from inference_server.preprocess.detect import FaceDetector
from inference_server.preprocess.image import load_image
from inference_server.preprocess.mtcnn import (
    BoxLandmarks,
    Mtcnn,
    MtcnnUnavailableError,
    load_state,
    nms,
    weights_folder,
)
from inference_server.preprocess.official_reference import find_fixtures, load_official_crops
from inference_server.preprocess.refine_points import MIN_ONET_SCORE, refine_points5

SAMPLE = Path(__file__).resolve().parents[3] / "inference_server" / "assets" / "sample_occluded_face.jpg"
needs_weights = pytest.mark.skipif(weights_folder() is None, reason="facenet-pytorch (MTCNN weights) not installed")


@pytest.fixture(scope="module")
def model() -> Mtcnn:
    if weights_folder() is None:
        pytest.skip("facenet-pytorch (MTCNN weights) not installed")
    return Mtcnn()


@pytest.fixture(scope="module")
def mesh_detector() -> Iterator[FaceDetector]:
    with FaceDetector(mtcnn=False) as detector:
        yield detector


def test_nms_keeps_the_best_of_each_overlapping_group() -> None:
    boxes = np.array(
        [
            [0, 0, 10, 10],  # A, score 0.9
            [1, 1, 11, 11],  # overlaps A (IoU 81/119 = 0.68): dropped at 0.5
            [20, 20, 30, 30],  # alone
            [2, 2, 6, 6],  # inside A: IoU 16/100, kept by "union", dropped by "min" (overlap 16/16)
        ],
        dtype=np.float64,
    )
    scores = np.array([0.9, 0.95, 0.5, 0.8])
    # B (0.95) is the best and suppresses A; the nested box survives IoU but not overlap-over-minimum.
    assert nms(boxes, scores, 0.5).tolist() == [1, 3, 2]
    assert nms(boxes, scores, 0.5, mode="min").tolist() == [1, 2]
    # At a threshold above their IoU, A and B both stay.
    assert nms(boxes, scores, 0.7).tolist() == [1, 0, 3, 2]
    assert nms(np.empty((0, 4)), np.empty(0), 0.5).tolist() == []
    with pytest.raises(ValueError):
        nms(boxes, scores, 0.5, mode="max")


@needs_weights
def test_weights_are_checked_tensor_by_tensor(tmp_path: Path) -> None:
    import torch

    folder = weights_folder()
    assert folder is not None
    state = torch.load(folder / "onet.pt", weights_only=True)
    state["dense6_3.weight"] = torch.zeros(8, 256)  # four landmarks instead of five
    torch.save(state, tmp_path / "onet.pt")
    with pytest.raises(MtcnnUnavailableError, match="dense6_3"):
        load_state(tmp_path / "onet.pt", "onet")
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "pnet.pt")
    with pytest.raises(MtcnnUnavailableError):
        load_state(tmp_path / "pnet.pt", "pnet")


@needs_weights
def test_finds_the_sample_face_where_the_face_mesh_does(model: Mtcnn, mesh_detector: FaceDetector) -> None:
    rgb = load_image(SAMPLE).rgb
    mesh = mesh_detector.detect(rgb)
    faces = model.detect(rgb)
    assert faces and faces[0].score > 0.95
    best = faces[0]
    eyes = mesh.points5[:2].mean(axis=0)
    assert best.box[0] < eyes[0] < best.box[2] and best.box[1] < eyes[1] < best.box[3]
    eye_distance = float(np.linalg.norm(mesh.points5[1] - mesh.points5[0]))
    # Two independent landmark models on the same face: within a fifth of the eye distance per point.
    assert np.linalg.norm(best.points5 - mesh.points5, axis=1).max() < 0.2 * eye_distance
    # The image-left eye first (ArcFace order), mouth corners below the eyes.
    assert best.points5[0, 0] < best.points5[1, 0] and best.points5[3:, 1].min() > best.points5[:2, 1].max()


@needs_weights
def test_no_face_on_flat_and_noise_images(model: Mtcnn) -> None:
    assert model.detect(np.full((240, 320, 3), 128, np.uint8)) == []
    noise = np.random.default_rng(3).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    assert all(face.score < 0.9 for face in model.detect(noise))
    # O-Net on a box of flat grey does not take it for a face.
    assert model.landmarks_in_box(np.full((240, 320, 3), 128, np.uint8), np.array([100.0, 60, 200, 160])).score < 0.5


@needs_weights
def test_official_fixtures_points_near_the_official_alignment(model: Mtcnn) -> None:
    fixtures = find_fixtures()
    if fixtures is None:
        pytest.skip("shared/fixtures/official-preprocessing is not on this machine")
    found = 0
    for official in load_official_crops(fixtures):
        # SCRFD's points as the official ArcFace transform sees them: the template sent back to the photo.
        reference = apply_affine(invert_affine(official.arcface_transform), ARCFACE_TEMPLATE_112)
        eye_distance = float(np.linalg.norm(reference[1] - reference[0]))
        faces = [f for f in model.detect(official.rgb) if f.score >= 0.9]
        near = [f for f in faces if np.linalg.norm(f.points5 - reference, axis=1).mean() < eye_distance]
        if not near:
            continue
        found += 1
        error = np.linalg.norm(near[0].points5 - reference, axis=1).mean() / eye_distance
        assert error < 0.3, (official.name, error)
    # These are occluded photos: MTCNN alone finds six of the ten (the face mesh chain finds all ten).
    assert found >= 5


@needs_weights
def test_onet_on_a_given_box_gives_the_face_points(model: Mtcnn, mesh_detector: FaceDetector) -> None:
    rgb = load_image(SAMPLE).rgb
    mesh = mesh_detector.detect(rgb)
    refined = model.landmarks_in_box(rgb, mesh.box)
    assert refined.score > MIN_ONET_SCORE and refined.spread < 0.05
    eye_distance = float(np.linalg.norm(mesh.points5[1] - mesh.points5[0]))
    assert np.linalg.norm(refined.points5 - mesh.points5, axis=1).max() < 0.2 * eye_distance
    # Moving the box moves the patch, not the face: the points stay (within 5 % of the eye distance).
    shifted = model.landmarks_in_box(rgb, mesh.box + np.array([6.0, -4.0, 6.0, -4.0]))
    assert np.linalg.norm(shifted.points5 - refined.points5, axis=1).max() < 0.05 * eye_distance


def test_refinement_rule() -> None:
    mesh = np.array([[10.0, 10], [30, 10], [20, 20], [12, 30], [28, 30]])
    onet = BoxLandmarks(points5=mesh + 2.0, score=0.99, spread=0.01)
    mean = refine_points5(mesh, onet)
    assert mean.source == "mesh+mtcnn" and np.allclose(mean.points5, mesh + 1.0)
    unsure = BoxLandmarks(points5=mesh + 2.0, score=MIN_ONET_SCORE - 0.01, spread=0.01)
    kept = refine_points5(mesh, unsure)
    assert kept.source == "mesh" and np.allclose(kept.points5, mesh)
    assert refine_points5(mesh, None).source == "mesh"


def test_missing_weights_fall_back_to_the_face_mesh(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mtcnn_module.importlib.util, "find_spec", lambda name: None)
    assert weights_folder() is None
    with pytest.raises(MtcnnUnavailableError, match="pip install --no-deps facenet-pytorch"):
        Mtcnn()
    rgb = load_image(SAMPLE).rgb
    with FaceDetector() as detector:
        detection = detector.detect(rgb)
        assert detection.points_source == "mesh" and detection.onet_score is None
        assert detector.mtcnn_unavailable is not None and "facenet-pytorch" in detector.mtcnn_unavailable
        assert detection.to_meta()["points_source"] == "mesh"


@needs_weights
def test_the_detector_refines_a_confident_mesh_face(mesh_detector: FaceDetector) -> None:
    rgb = load_image(SAMPLE).rgb
    with FaceDetector() as detector:
        refined = detector.detect(rgb)
    plain = mesh_detector.detect(rgb)
    assert refined.method == plain.method == "face_mesh"
    assert refined.points_source == "mesh+mtcnn" and refined.onet_score is not None and refined.onet_score > 0.95
    # The box (from the mesh) is unchanged; the points moved, by less than a fifth of the eye distance.
    assert np.allclose(refined.box, plain.box)
    moved = np.linalg.norm(refined.points5 - plain.points5, axis=1)
    assert 0.0 < moved.max() < 0.2 * np.linalg.norm(plain.points5[1] - plain.points5[0])
