"""The demo head: deterministic, a closed head-shaped surface, a sane rig, smooth shape and local
expression components, landmarks in the right places, and a jaw that opens the mouth."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inference_server.demo.head import DEMO_VERSION, generate_demo_head
from inference_server.flame.layer import FlameLayer
from inference_server.flame.model_data import FlameModelData

ARRAY_FIELDS = (
    "v_template",
    "shapedirs",
    "posedirs",
    "J_regressor",
    "parents",
    "weights",
    "faces",
    "uv",
    "uv_faces",
    "lmk_faces_idx",
    "lmk_bary_coords",
    "front_face_indices",
)


def unique_edges(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    return np.unique(edges, axis=0, return_counts=True)


def landmarks(head: FlameModelData, vertices: np.ndarray | None = None) -> np.ndarray:
    v = head.v_template if vertices is None else vertices
    assert head.lmk_faces_idx is not None and head.lmk_bary_coords is not None
    corners = v[head.faces[head.lmk_faces_idx]]  # (68, 3, 3)
    return np.einsum("lk,lkc->lc", head.lmk_bary_coords, corners)


def components(faces: np.ndarray, n_vertices: int) -> np.ndarray:
    """Connected-component label per vertex (union-find, independent of the generator)."""
    parent = list(range(n_vertices))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b, c in faces.tolist():
        for u, w in ((a, b), (b, c)):
            ru, rw = find(u), find(w)
            if ru != rw:
                parent[ru] = rw
    return np.array([find(i) for i in range(n_vertices)])


def test_generation_is_byte_identical(demo_head: FlameModelData) -> None:
    again = generate_demo_head()
    for name in ARRAY_FIELDS:
        first, second = getattr(demo_head, name), getattr(again, name)
        assert first.dtype == second.dtype and first.shape == second.shape, name
        assert first.tobytes() == second.tobytes(), name


def test_marked_as_demo_in_flame_layout(demo_head: FlameModelData) -> None:
    h = demo_head
    V = h.n_vertices
    assert h.is_demo and h.version == DEMO_VERSION
    assert 4500 <= V <= 5500
    assert h.shapedirs.shape == (V, 3, 400) and (h.n_shape, h.n_expression) == (300, 100)
    assert h.posedirs.shape == (V, 3, 36) and np.isfinite(h.posedirs).all()
    assert h.J_regressor.shape == (5, V) and h.weights.shape == (V, 5)
    assert h.parents.tolist() == [-1, 0, 1, 1, 1]
    assert h.uv is not None and h.uv_faces is not None and h.uv_faces.shape == h.faces.shape
    assert h.uv.min() >= 0.0 and h.uv.max() <= 1.0 and h.uv_faces.max() < len(h.uv)
    assert h.lmk_faces_idx is not None and h.lmk_faces_idx.shape == (68,)
    size = h.v_template.max(axis=0) - h.v_template.min(axis=0)
    assert 0.13 < size[0] < 0.2 and 0.2 < size[1] < 0.32 and 0.17 < size[2] < 0.26  # metres


def test_surface_is_a_closed_outward_2_manifold(demo_head: FlameModelData) -> None:
    faces, v = demo_head.faces, demo_head.v_template
    assert len(np.unique(np.sort(faces, axis=1), axis=0)) == len(faces)
    assert (
        (faces[:, 0] != faces[:, 1]).all()
        and (faces[:, 1] != faces[:, 2]).all()
        and (faces[:, 0] != faces[:, 2]).all()
    )
    edges, counts = unique_edges(faces)
    assert (counts == 2).all(), "every edge must belong to exactly two triangles"
    # Each directed edge appears once: neighbouring triangles are consistently oriented.
    directed = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    assert len(np.unique(directed, axis=0)) == len(directed)
    assert len(np.unique(faces)) == len(v), "no unused vertices"
    labels = components(faces, len(v))
    parts = np.unique(labels)
    assert len(parts) == 3, "skin and two eyeballs"
    for part in parts:
        in_part = labels == part
        f = faces[in_part[faces[:, 0]]]
        n_edges = int(np.isin(edges, np.nonzero(in_part)[0]).all(axis=1).sum())
        assert in_part.sum() - n_edges + len(f) == 2, "each part is a sphere (Euler characteristic 2)"
        a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
        assert np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0 > 0, "normals point outwards"


def test_rig_is_normalised_and_joints_are_where_flame_has_them(demo_head: FlameModelData) -> None:
    h = demo_head
    np.testing.assert_allclose(h.weights.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(h.J_regressor.sum(axis=1), 1.0, atol=1e-12)
    assert h.weights.min() >= 0.0 and h.J_regressor.min() >= 0.0
    root, neck, jaw, left_eye, right_eye = h.J_regressor @ h.v_template
    lm = landmarks(h)
    assert root[1] < neck[1] < jaw[1] < left_eye[1]
    assert abs(root[0]) < 1e-9 and abs(neck[0]) < 1e-9 and abs(jaw[0]) < 1e-9
    assert lm[8, 1] < jaw[1] < lm[27, 1]  # hinge between chin and the top of the nose ...
    assert jaw[2] < lm[0, 2] and jaw[2] < lm[16, 2]  # ... and behind the face contour
    assert left_eye[0] > 0.02 and right_eye[0] < -0.02
    np.testing.assert_allclose(left_eye * [-1, 1, 1], right_eye, atol=1e-9)
    # Eyeballs follow their eye joint only; the jaw carries the chin but not the top of the head.
    assert ((h.weights[:, 3] == 1.0) | (h.weights[:, 3] == 0.0)).all()
    eye_vertices = h.weights[:, 3] == 1.0
    assert np.linalg.norm(h.v_template[eye_vertices] - left_eye, axis=1).std() < 1e-9
    assert h.lmk_faces_idx is not None
    chin = h.faces[h.lmk_faces_idx[8]]
    assert h.weights[chin, 2].min() > 0.9
    assert h.weights[h.v_template[:, 1] > left_eye[1], 2].max() == 0.0


def test_skin_weights_are_smooth_outside_the_lip_slit(demo_head: FlameModelData) -> None:
    h = demo_head
    edges, _ = unique_edges(h.faces)
    length = np.linalg.norm(h.v_template[edges[:, 0]] - h.v_template[edges[:, 1]], axis=1)
    gradient = np.abs(h.weights[edges[:, 0]] - h.weights[edges[:, 1]]).max(axis=1) / length
    lm = landmarks(h)
    mid = h.v_template[edges].mean(axis=1)
    away_from_mouth = (np.abs(mid[:, 1] - lm[62, 1]) > 0.012) | (np.abs(mid[:, 0]) > 0.04)
    # Weights change from 0 to 1 over more than 1.5 cm everywhere except across the lip line.
    assert gradient[away_from_mouth].max() < 1 / 0.015


def test_front_face_indices(demo_head: FlameModelData) -> None:
    h = demo_head
    ids = h.front_face_indices
    assert ids is not None and ids.dtype == np.int64 and ids.shape == (1785,)
    assert (np.diff(ids) > 0).all()
    front = h.v_template[ids]
    assert (front[:, 2] > 0).all(), "all on the front of the head"
    assert (h.weights[ids, 3] == 0).all() and (h.weights[ids, 4] == 0).all(), "no eyeball vertices"
    lm = landmarks(h)
    assert h.lmk_faces_idx is not None
    for index in (8, 19, 24, 30, 36, 45, 48, 54, 57):
        corner_ids = h.faces[h.lmk_faces_idx[index]]
        assert np.isin(corner_ids, ids).any(), f"landmark {index} lies in the face region"
    assert front[:, 1].max() > lm[19, 1] + 0.01 and front[:, 1].min() < lm[57, 1]


MIRROR = {i: 16 - i for i in range(17)}
MIRROR.update({17 + i: 26 - i for i in range(10)})
MIRROR.update({31: 35, 32: 34, 36: 45, 37: 44, 38: 43, 39: 42, 40: 47, 41: 46})
MIRROR.update({48: 54, 49: 53, 50: 52, 55: 59, 56: 58, 60: 64, 61: 63, 65: 67})
MIRROR.update({v: k for k, v in list(MIRROR.items())})


def test_landmarks_follow_the_ibug_68_layout(demo_head: FlameModelData) -> None:
    lm = landmarks(demo_head)
    assert lm.shape == (68, 3)
    assert int(np.argmax(lm[:, 2])) == 30, "the nose tip is the most forward landmark"
    eyes, mouth, brows = lm[36:48], lm[48:68], lm[17:27]
    assert eyes[:, 1].min() > lm[33, 1] > mouth[:, 1].max()
    assert brows[:, 1].min() > eyes[:, 1].max()
    assert lm[8, 1] < mouth[:, 1].min()
    assert lm[27, 1] > lm[28, 1] > lm[29, 1] > lm[30, 1]
    # Subject's right (image left, x < 0) first, as in iBUG.
    for right, left in ((0, 16), (17, 26), (36, 45), (39, 42), (48, 54), (31, 35)):
        assert lm[right, 0] < 0 < lm[left, 0]
    for i, j in MIRROR.items():
        np.testing.assert_allclose(lm[i] * [-1, 1, 1], lm[j], atol=1e-3, err_msg=f"landmarks {i}/{j}")
    assert lm[62, 1] > lm[66, 1] and lm[51, 1] > lm[62, 1] and lm[66, 1] > lm[57, 1]


def edge_gradient(head: FlameModelData, field: np.ndarray) -> float:
    """Largest change of a displacement field along an edge per metre of edge, relative to its peak."""
    edges, _ = unique_edges(head.faces)
    length = np.linalg.norm(head.v_template[edges[:, 0]] - head.v_template[edges[:, 1]], axis=1)
    change = np.linalg.norm(field[edges[:, 0]] - field[edges[:, 1]], axis=1)
    return float((change / np.maximum(length, 1e-3)).max() / np.linalg.norm(field, axis=1).max())


def test_shape_components_are_smooth_and_plausibly_sized(demo_head: FlameModelData) -> None:
    h = demo_head
    peaks = np.linalg.norm(h.shapedirs[:, :, :300], axis=1).max(axis=0)
    # Generator 2: 10.5 mm per unit, strong enough to show in a 112 px face crop (head_bases.shape_amplitude).
    assert 0.02 < 3 * peaks[0] < 0.04, "±3 on the first component moves the head by 2-4 cm"
    assert (np.diff(peaks) <= 1e-12).all(), "components get smaller with their index"
    for k in (*range(20), 57, 150, 299):
        # A single displaced vertex would change by its whole peak over one edge (≥ 250 /m here).
        assert edge_gradient(h, h.shapedirs[:, :, k]) < 160.0, f"shape component {k}"
    for k in range(4):  # the global proportion changes really move the whole head
        moved = np.linalg.norm(h.shapedirs[:, :, k], axis=1) > 0.05 * peaks[k]
        assert moved.mean() > 0.5
    # Eyeballs move rigidly with shape (no eye deformation).
    for k in (0, 11, 100):
        eye = h.weights[:, 3] == 1.0
        assert np.ptp(h.shapedirs[eye, :, k], axis=0).max() < 1e-12


MOUTH_EXPRESSIONS = (0, 1, 2, 7, 8, 9, 14, 15)
BROW_EXPRESSIONS = (3, 4, 12, 13)
EYE_EXPRESSIONS = (5, 6, 10, 11)


def test_expression_components_are_local(demo_head: FlameModelData) -> None:
    h = demo_head
    lm = landmarks(h)
    eye_level = lm[36:48, 1].min()
    nose_tip = lm[30, 1]
    moving = np.linalg.norm(h.shapedirs[:, :, 300:], axis=1) > 0  # (V, 100)
    y = h.v_template[:, 1]
    eyeballs = (h.weights[:, 3] + h.weights[:, 4]) > 0
    assert not moving[eyeballs].any(), "expressions never move the eyeballs"
    for k in MOUTH_EXPRESSIONS:
        assert moving[:, k].any() and not moving[y > eye_level, k].any(), f"mouth expression {k}"
    for k in BROW_EXPRESSIONS:
        assert moving[:, k].any() and not moving[y < nose_tip, k].any(), f"brow expression {k}"
    for k in EYE_EXPRESSIONS:
        assert moving[:, k].any() and not moving[y < nose_tip, k].any(), f"eye expression {k}"
    # Every component is confined to part of the face (no global expression).
    assert (moving.mean(axis=0) < 0.15).all()
    # One-sided components stay on their side.
    x = h.v_template[:, 0]
    assert not moving[x < 0, 10].any() and not moving[x > 0, 11].any()


@pytest.fixture(scope="module")
def layer(demo_head: FlameModelData) -> FlameLayer:
    return FlameLayer(demo_head, dtype=torch.float64)


def test_blink_covers_the_eyeballs(demo_head: FlameModelData, layer: FlameLayer) -> None:
    h = demo_head
    eye_centre = (h.J_regressor @ h.v_template)[3]
    radius = np.linalg.norm(h.v_template[h.weights[:, 3] == 1.0] - eye_centre, axis=1).mean()

    def skin_in_front_of_eyeball(vertices: np.ndarray) -> float:
        skin = vertices[(h.weights[:, 3] == 0) & (h.weights[:, 4] == 0)]
        d = skin[:, :2] - eye_centre[:2]
        r2 = (d**2).sum(axis=1)
        over = (r2 < (0.6 * radius) ** 2) & (skin[:, 2] > eye_centre[2] - radius)
        sphere_z = eye_centre[2] + np.sqrt(radius**2 - r2[over])
        return float((skin[over, 2] >= sphere_z).mean())

    expression = torch.zeros(1, 100, dtype=torch.float64)
    expression[0, 5] = 1.0
    closed = layer(expression=expression).vertices[0].numpy()
    assert skin_in_front_of_eyeball(h.v_template) < 0.5, "open at rest"
    assert skin_in_front_of_eyeball(closed) == 1.0, "closed lids cover the eyeball"


def test_jaw_opens_the_mouth(demo_head: FlameModelData, layer: FlameLayer) -> None:
    h = demo_head
    pose = torch.zeros(2, 15, dtype=torch.float64)
    pose[1, 6] = 0.3
    out = layer(pose=pose)
    assert out.landmarks is not None
    lm = out.landmarks.numpy()
    gap = lm[:, 62, 1] - lm[:, 66, 1]
    assert gap[1] - gap[0] > 0.005
    # Independent check: the lower lip turns rigidly about the jaw hinge (up to the small pose corrective).
    jaw = (h.J_regressor @ h.v_template)[2]
    c, s = np.cos(0.3), np.sin(0.3)
    rotation = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    lower_lip = landmarks(h)[66]
    np.testing.assert_allclose(lm[1, 66], rotation @ (lower_lip - jaw) + jaw, atol=0.0015)
    np.testing.assert_allclose(lm[1, 62], lm[0, 62], atol=0.0015)  # the upper lip stays
    assert lm[1, 8, 1] < lm[0, 8, 1] - 0.01, "the chin drops"
