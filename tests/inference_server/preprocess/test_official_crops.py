"""The crops against the official preprocessing on real occluded photos (shared/fixtures/official-preprocessing).

The official ArcFace blob and 224 crop of each photo are located in the photo by feature matching
(placement.py), so placement is compared geometrically. Numbers and the per-photo table:
docs/preprocessing.md, section 5 (``benchmarks/calibrate_crops.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np
import pytest

from inference_server.preprocess.alignment import box_from_points5
from inference_server.preprocess.chain import STEPS_WITHOUT_VARIANTS
from inference_server.preprocess.detect import FaceDetection, FaceDetector
from inference_server.preprocess.face_box import scrfd_box_from_mesh
from inference_server.preprocess.image import load_image
from inference_server.preprocess.mtcnn import weights_folder
from inference_server.preprocess.official_reference import (
    OfficialCrops,
    Placement,
    find_fixtures,
    load_official_crops,
    placement,
)

FIXTURES = find_fixtures()
pytestmark = pytest.mark.skipif(
    FIXTURES is None, reason="shared/fixtures/official-preprocessing is not on this machine"
)

#: The two photos a MediaPipe-only chain misses (fixtures README).
HARD_TO_FIND = ("despair-alone-being-alone-archetype-thumb", "rope-model-exposure-hands-thumb")


@dataclass(frozen=True)
class Measured:
    official: OfficialCrops
    detection: FaceDetection
    ours: Placement
    five_point_box: Placement


@pytest.fixture(scope="module")
def officials() -> list[OfficialCrops]:
    assert FIXTURES is not None
    return load_official_crops(FIXTURES)


@pytest.fixture(scope="module")
def detector() -> Iterator[FaceDetector]:
    with FaceDetector() as face_detector:
        yield face_detector


@pytest.fixture(scope="module")
def measured(officials: list[OfficialCrops], detector: FaceDetector) -> list[Measured]:
    out = []
    for official in officials:
        detection = detector.detect(official.rgb)  # NoFaceError fails the test: every face must be found
        out.append(
            Measured(
                official,
                detection,
                placement(official, detection.points5, detection.box),
                placement(official, detection.points5, box_from_points5(detection.points5)),
            )
        )
    return out


def test_the_official_crops_are_located_where_they_were_cut(officials: list[OfficialCrops]) -> None:
    # The measuring instrument: re-cutting each photo with the located transform gives the official 224
    # crop back up to JPEG noise (the fixtures README: about 2 grey levels), which a transform off by
    # even one pixel would not.
    assert FIXTURES is not None and len(officials) == 10
    for official in officials:
        official_crop = load_image(FIXTURES / "farl" / f"{official.name}.jpg").rgb.astype(np.float64)
        recut = cv2.warpAffine(official.rgb, official.farl_transform, (224, 224), flags=cv2.INTER_LINEAR)
        # Away from the zero padding (its edge pixels blend with black).
        inside = cv2.erode((recut.sum(axis=2) > 0).astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
        assert np.abs(recut.astype(np.float64) - official_crop)[inside].mean() < 4.0, official.name
        shifted = official.farl_transform + np.array([[0.0, 0.0, 1.5], [0.0, 0.0, 0.0]])
        recut_off = cv2.warpAffine(official.rgb, shifted, (224, 224), flags=cv2.INTER_LINEAR).astype(np.float64)
        assert np.abs(recut_off - official_crop)[inside].mean() > np.abs(recut - official_crop)[inside].mean()


def test_every_face_the_official_pipeline_processed_is_found(
    measured: list[Measured], officials: list[OfficialCrops], detector: FaceDetector
) -> None:
    assert len(measured) == 10
    # The two that the chain without test-time variants misses are found now, and the right face:
    # its 224 crop overlaps the official one (centre within a quarter of the crop).
    by_name = {m.official.name: m for m in measured}
    for name in HARD_TO_FIND:
        official = next(o for o in officials if o.name == name)
        height, width = official.rgb.shape[:2]
        centre = np.array([width / 2.0, height / 2.0])
        assert detector.run_chain(official.rgb, centre, STEPS_WITHOUT_VARIANTS) is None, name
        assert by_name[name].ours.farl_px < 56.0, name


def test_224_crop_sits_where_the_official_one_does(measured: list[Measured]) -> None:
    offsets = np.array([m.ours.farl_px for m in measured])
    scales = np.array([m.ours.farl_scale for m in measured])
    plain_mesh = np.array([m.detection.method == "face_mesh" and not m.detection.cut_by_frame for m in measured])
    uncut = np.array([not m.detection.cut_by_frame for m in measured])
    # Faces the face mesh finds as they are, whole in the photo (7 of 10): within 4 px of 224 on average,
    # scale within ±7 %.
    assert plain_mesh.sum() >= 7
    assert offsets[plain_mesh].mean() < 4.0, offsets
    assert np.abs(scales[plain_mesh] - 1).max() < 0.07, scales
    # Every face not cut by the frame: scale within ±5 % on average; all ten (measured 4.1 %) too.
    assert np.abs(scales[uncut] - 1).mean() < 0.05, scales
    assert np.abs(scales - 1).mean() < 0.045, scales
    # All ten, including the face whose eyes are outside the frame and the two found only on variants
    # (measured 5.54 px; the 4 px is not reached: docs/preprocessing.md, section 5).
    assert offsets.mean() < 5.8, offsets
    # The five-point box the project used before sits over 20 px off: the new box is 3× closer.
    before = np.array([m.five_point_box.farl_px for m in measured])
    assert before.mean() > 20.0 and offsets.mean() < before.mean() / 3.0, (before, offsets)


def test_arcface_crop_is_aligned_like_the_official_one(measured: list[Measured]) -> None:
    errors = np.sort([m.ours.arcface_px for m in measured])
    # Where the eyes are visible the five points give the official alignment within ~3 px (of 112); with
    # the eyes under a hand or out of the frame the mesh and SCRFD guess differently.
    assert (errors < 3.5).sum() >= 6, errors
    assert np.median(errors) < 3.5 and errors.mean() < 7.5, errors
    if weights_folder() is not None:
        # With MTCNN's O-Net refining the points (refine_points.py): 6.20 -> 5.05 px on average; the
        # issue's 2 px is not reached (docs/preprocessing.md, section 5).
        assert errors.mean() < 5.5, errors


@pytest.mark.skipif(weights_folder() is None, reason="facenet-pytorch (MTCNN weights) not installed")
def test_mtcnn_refinement_moves_the_points_towards_the_official_ones(measured: list[Measured]) -> None:
    # The same photos with the face mesh's own points: the refinement must be what brings them closer.
    with FaceDetector(mtcnn=False) as mesh_only:
        mesh = np.array([placement(m.official, mesh_only.detect(m.official.rgb).points5, m.detection.box).arcface_px
                         for m in measured])  # fmt: skip
    refined = np.array([m.ours.arcface_px for m in measured])
    sources = [m.detection.points_source for m in measured]
    # O-Net is confident on the faces with visible eyes; where they are covered the mesh's points stay.
    assert sources.count("mesh+mtcnn") >= 5, sources
    kept = [i for i, source in enumerate(sources) if source == "mesh"]
    assert np.allclose(refined[kept], mesh[kept]), (mesh, refined)
    assert refined.mean() < mesh.mean() - 0.8, (mesh, refined)


def test_a_face_cut_by_the_frame_gets_its_box_extended_past_the_edge(measured: list[Measured]) -> None:
    # The face whose eyes are above the frame (woman-…): the mesh squeezes it into the visible part, and
    # the box extended past the top edge (face_box.FrameCutModel, fitted on synthetic cuts of the other
    # fixtures, never on this photo) sits nearer the official one and at its scale (measured 16.3 px,
    # scale 0.854 without the correction; 12.9 px, 0.947 with it).
    cut = [m for m in measured if m.detection.cut_by_frame]
    assert [m.official.name for m in cut] == ["woman-female-hand-face-thumb"]
    found = cut[0]
    assert found.detection.landmarks is not None
    squeezed = placement(found.official, found.detection.points5, scrfd_box_from_mesh(found.detection.landmarks))
    assert squeezed.farl_px > 15.0 and squeezed.farl_scale < 0.87, squeezed
    assert found.ours.farl_px < 13.5 and abs(found.ours.farl_scale - 1) < 0.06, found.ours
