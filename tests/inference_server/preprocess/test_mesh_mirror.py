"""Face mesh points found on a mirror image, relabelled (preprocess/mesh_mirror.py): the shipped table is the
mesh's own mirror symmetry, a relabelled mirror run lands on the direct run, and a real photo whose face is
found only in the mirror keeps its dense landmarks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inference_server.demo.head import generate_demo_head
from inference_server.fit.synthetic import ground_truth_texture, render_case
from inference_server.flame.layer import FlameLayer
from inference_server.preprocess.chain import MIRRORED_POINTS5
from inference_server.preprocess.detect import FaceDetector
from inference_server.preprocess.image import load_image
from inference_server.preprocess.mediapipe_faces import (
    MESH_IRIS_LEFT,
    MESH_IRIS_RIGHT,
    MESH_MOUTH_LEFT,
    MESH_MOUTH_RIGHT,
    MESH_POINTS5,
    MediaPipeFaces,
)
from inference_server.preprocess.mesh_mirror import mesh_mirror, relabel_mirrored
from inference_server.preprocess.official_reference import find_fixtures

FIXTURES = find_fixtures()


def _edges(connections: object) -> set[frozenset[int]]:
    return {frozenset((int(a), int(b))) for a, b in connections}  # type: ignore[attr-defined]


def test_the_table_maps_the_mesh_triangulation_onto_itself() -> None:
    """MediaPipe's own triangulation (in the wheel) is mirror symmetric: every edge's mirror is an edge, except
    where a quad is split along one diagonal on one side and the other on the other; the five ArcFace points
    swap as the detection chain swaps them."""
    from mediapipe.python.solutions import face_mesh_connections

    table = mesh_mirror()
    assert (table[table] == np.arange(478)).all()
    np.testing.assert_array_equal(table[list(MESH_POINTS5)], MIRRORED_POINTS5)
    edges = _edges(face_mesh_connections.FACEMESH_TESSELATION)
    neighbours: dict[int, set[int]] = {}
    for a, b in (tuple(e) for e in edges):
        neighbours.setdefault(a, set()).add(b)
        neighbours.setdefault(b, set()).add(a)
    unmatched = [tuple(e) for e in edges if frozenset(int(table[i]) for i in e) not in edges]
    assert len(unmatched) <= 8, unmatched
    for a, b in unmatched:  # the quad's other diagonal is the edge on the mirror side
        c, d = sorted(neighbours[a] & neighbours[b])
        assert frozenset((int(table[c]), int(table[d]))) in edges, (a, b)
    irises = _edges(face_mesh_connections.FACEMESH_IRISES)
    assert {frozenset(int(table[i]) for i in e) for e in irises} == irises


def test_a_mirror_run_relabelled_lands_on_the_direct_run() -> None:
    faces = MediaPipeFaces()
    head = generate_demo_head()
    layer, texture = FlameLayer(head, dtype=torch.float64), ground_truth_texture(head)
    for seed in (7, 8, 9):
        case = render_case(head, layer, texture, np.random.default_rng(seed), max_yaw=25.0)
        direct = np.asarray(faces.face_mesh(case.image)[0], np.float64)[:, :2]
        found = np.asarray(faces.face_mesh(np.ascontiguousarray(case.image[:, ::-1]))[0], np.float64)[:, :2]
        found[:, 0] = case.image.shape[1] - found[:, 0]
        iod = float(np.linalg.norm(direct[MESH_IRIS_RIGHT] - direct[MESH_IRIS_LEFT]))
        as_found = np.median(np.linalg.norm(found - direct, axis=1)) / iod
        relabelled = np.median(np.linalg.norm(relabel_mirrored(found) - direct, axis=1)) / iod
        assert relabelled <= 0.05 and as_found >= 0.2, (seed, relabelled, as_found)
        plain = relabel_mirrored(found[:468])
        np.testing.assert_array_equal(plain, relabel_mirrored(found)[:468])


def test_only_face_mesh_points_are_relabelled() -> None:
    with pytest.raises(ValueError, match="478 or 468"):
        relabel_mirrored(np.zeros((68, 2)))


@pytest.mark.skipif(FIXTURES is None, reason="shared/fixtures/official-preprocessing is not on this machine")
def test_a_face_found_only_in_the_mirror_keeps_its_dense_landmarks() -> None:
    """The face behind hair and tied hands is found by the face mesh on the mirrored crop of a detector box
    (docs/preprocessing.md); its 478 points now come with it, under the photo's labels: the subject's right
    eye and mouth corner on the image's left, the five points where the mesh's own are."""
    assert FIXTURES is not None
    with FaceDetector() as detector:
        found = detector.detect(load_image(FIXTURES / "images" / "rope-model-exposure-hands-thumb.jpg"))
    assert found.variant == "flip"
    assert found.landmarks is not None and found.landmarks.shape == (478, 2)
    assert found.landmark_depth is not None and found.landmark_depth.shape == (478,)
    mesh = found.landmarks
    assert mesh[MESH_IRIS_RIGHT, 0] < mesh[MESH_IRIS_LEFT, 0] and mesh[MESH_MOUTH_RIGHT, 0] < mesh[MESH_MOUTH_LEFT, 0]
    iod = float(np.linalg.norm(mesh[MESH_IRIS_RIGHT] - mesh[MESH_IRIS_LEFT]))
    assert np.linalg.norm(mesh[list(MESH_POINTS5)] - found.points5, axis=1).max() <= 0.1 * iod
