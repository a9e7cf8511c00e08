"""The DEMO head (ICT Face Model Light in the FLAME layout): loaded like a user's FLAME, a forward pass that
matches an independent numpy computation, a jaw that opens the mouth without tearing, eyes that turn
about their centres, landmarks and the front-face region where a face has them."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from inference_server.demo.head import DEMO_VERSION, generate_demo_head
from inference_server.demo.packaged_head import LICENSE_FILE, MODEL_FILE, PACKAGE_DIR, PROVENANCE_FILE
from inference_server.flame.layer import FlameLayer
from inference_server.flame.loading import load_flame_model
from inference_server.flame.model_data import FlameModelData

N_IDENTITY, N_EXPRESSION_MODES = 50, 43


def landmarks(head: FlameModelData, vertices: np.ndarray | None = None) -> np.ndarray:
    v = head.v_template if vertices is None else vertices
    assert head.lmk_faces_idx is not None and head.lmk_bary_coords is not None
    return np.einsum("lk,lkc->lc", head.lmk_bary_coords, v[head.faces[head.lmk_faces_idx]])


def eyeball(head: FlameModelData, joint: int) -> np.ndarray:
    return np.nonzero(head.weights[:, joint] == 1.0)[0]


def sphere_fit(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre and per-point radius of the least-squares sphere (written here, not taken from the converter)."""
    a = np.column_stack([2 * points, np.ones(len(points))])
    solution = np.linalg.lstsq(a, (points**2).sum(axis=1), rcond=None)[0]
    return solution[:3], np.linalg.norm(points - solution[:3], axis=1)


def test_package_is_small_licensed_and_loads_like_a_users_flame(demo_head: FlameModelData) -> None:
    path = PACKAGE_DIR / MODEL_FILE
    assert path.stat().st_size <= 10_000_000
    notice = (PACKAGE_DIR / LICENSE_FILE).read_text(encoding="utf-8")
    assert "MIT License" in notice and "USC Institute for Creative Technologies" in notice
    provenance = json.loads((PACKAGE_DIR / PROVENANCE_FILE).read_text(encoding="utf-8"))
    assert len(provenance["source_commit"]) == 40 and provenance["identity_modes"] == N_IDENTITY
    plain = load_flame_model(path)  # the user's loader, nothing DEMO-specific
    h = demo_head
    assert plain.is_demo and h.is_demo and h.version == DEMO_VERSION
    np.testing.assert_array_equal(plain.shapedirs, h.shapedirs)
    V = h.n_vertices
    assert V == 16434 and h.faces.shape == (32716, 3)
    assert h.shapedirs.shape == (V, 3, 400) and (h.n_shape, h.n_expression) == (300, 100)
    assert h.posedirs.shape == (V, 3, 36) and h.J_regressor.shape == (5, V) and h.weights.shape == (V, 5)
    assert h.parents.tolist() == [-1, 0, 1, 1, 1]
    assert h.uv is not None and h.uv_faces is not None and h.uv_faces.shape == h.faces.shape
    assert h.uv.min() >= 0.0 and h.uv.max() <= 1.0, "one UV atlas"
    size = np.ptp(h.v_template, axis=0)
    assert 0.2 < size[0] < 0.3 and 0.3 < size[1] < 0.4 and 0.2 < size[2] < 0.25  # metres, head + shoulders
    colors = h.extra["vertex_colors"]
    assert colors.shape == (V, 3) and colors.min() >= 0 and colors.max() <= 1


def test_identity_and_expression_bases(demo_head: FlameModelData) -> None:
    h = demo_head
    moves = np.abs(h.shapedirs).max(axis=(0, 1)) > 0
    assert moves[:N_IDENTITY].all() and not moves[N_IDENTITY:300].any(), "50 ICT modes, zero-padded to 300"
    assert moves[300 : 300 + N_EXPRESSION_MODES].all() and not moves[300 + N_EXPRESSION_MODES :].any()
    face = np.arange(9409)
    rms = np.sqrt((h.shapedirs[face, :, :N_IDENTITY] ** 2).sum(axis=1).mean(axis=0))
    assert 0.002 < rms[0] < 0.006, "1σ of the first identity mode moves the face by millimetres"
    assert rms[:10].mean() > 2 * rms[40:].mean(), "earlier modes carry more of the variance"
    # Expression modes are orthogonal, ordered by standard deviation, and never move the eyeballs.
    modes = h.shapedirs[:, :, 300 : 300 + N_EXPRESSION_MODES].reshape(-1, N_EXPRESSION_MODES)
    gram = modes.T @ modes
    off = gram - np.diag(np.diag(gram))
    assert np.abs(off).max() < 1e-3 * np.diag(gram).max()
    assert (np.diff(np.diag(gram)) <= 1e-6 * np.diag(gram).max()).all()
    eyes = (h.weights[:, 3] + h.weights[:, 4]) > 0
    assert np.abs(h.shapedirs[eyes, :, 300:]).max() == 0.0


def test_arkit_smile_through_the_mode_matrix_lifts_its_own_mouth_corner(demo_head: FlameModelData) -> None:
    h = demo_head
    names = h.extra["arkit_names"]
    matrix = h.extra["arkit_to_expression"]  # (modes, ARKit shapes)
    layer = FlameLayer(h, dtype=torch.float64)
    expression = np.zeros((1, 100))
    expression[0, : matrix.shape[0]] = matrix[:, names.index("mouthSmile_L")]
    with torch.no_grad():
        out = layer(expression=torch.from_numpy(expression))
    moved = landmarks(h, out.vertices[0].numpy()) - landmarks(h)
    left, right = moved[54], moved[48]  # iBUG 54 is the subject's left mouth corner (x > 0)
    assert left[1] > 0.003 and left[0] > 0.001, "the left corner goes up and out"
    assert np.linalg.norm(right) < 0.3 * np.linalg.norm(left)


def numpy_flame(h: FlameModelData, shape: np.ndarray, expression: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """FLAME by its definition, in numpy with OpenCV's Rodrigues: blend shapes, pose correctives from the
    joints' (R - I), joints from the shaped mesh, forward kinematics, linear blend skinning."""
    coefficients = np.concatenate([shape, expression])
    v_shaped = h.v_template + h.shapedirs[:, :, : len(coefficients)] @ coefficients
    joints = h.J_regressor @ v_shaped
    rotations = [cv2.Rodrigues(pose[3 * j : 3 * j + 3].reshape(3, 1))[0] for j in range(5)]
    features = np.concatenate([(r - np.eye(3)).ravel() for r in rotations[1:]])
    v_posed = v_shaped + h.posedirs @ features
    world: list[np.ndarray] = []
    for j, r in enumerate(rotations):
        local = np.eye(4)
        local[:3, :3] = r
        local[:3, 3] = joints[j] - (joints[h.parents[j]] if j else 0)
        world.append(local if j == 0 else world[h.parents[j]] @ local)
    skinning = np.stack(world)
    for j in range(5):  # move each joint's rest position to the origin before its transform
        skinning[j, :3, 3] -= world[j][:3, :3] @ joints[j]
    blended = np.einsum("vj,jab->vab", h.weights, skinning)
    return np.einsum("vab,vb->va", blended[:, :3, :3], v_posed) + blended[:, :3, 3]


def test_forward_pass_equals_an_independent_numpy_flame(demo_head: FlameModelData) -> None:
    h = demo_head
    rng = np.random.default_rng(3)
    layer = FlameLayer(h, dtype=torch.float64)
    for _ in range(2):
        shape, expression = rng.normal(0, 1, 300), rng.normal(0, 0.7, 100)
        pose = rng.normal(0, 0.15, 15)
        pose[6] = 0.3  # jaw open: the pose corrective is used
        with torch.no_grad():
            out = layer(
                shape=torch.from_numpy(shape[None]),
                expression=torch.from_numpy(expression[None]),
                pose=torch.from_numpy(pose[None]),
            )
        np.testing.assert_allclose(out.vertices[0].numpy(), numpy_flame(h, shape, expression, pose), atol=1e-9)


def test_rig_weights_and_joints(demo_head: FlameModelData) -> None:
    h = demo_head
    np.testing.assert_allclose(h.weights.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(h.J_regressor.sum(axis=1), 1.0, atol=1e-5)
    assert h.weights.min() >= 0.0 and h.J_regressor.min() >= 0.0
    root, neck, jaw, left_eye, right_eye = h.J_regressor @ h.v_template
    lm = landmarks(h)
    assert root[1] < neck[1] < lm[8, 1] < jaw[1] < lm[27, 1]
    assert jaw[2] < lm[0, 2] and jaw[2] < lm[16, 2], "the hinge lies behind the face contour"
    assert max(abs(root[0]), abs(neck[0]), abs(jaw[0])) < 1e-4
    assert left_eye[0] > 0.02 and right_eye[0] < -0.02
    assert h.weights[h.faces[h.lmk_faces_idx[8]], 2].min() > 0.8, "the chin follows the jaw"  # type: ignore[index]
    assert h.weights[h.v_template[:, 1] > lm[30, 1], 2].max() == 0.0, "nothing above the nose tip does"


def test_eyes_turn_about_their_centres(demo_head: FlameModelData) -> None:
    h = demo_head
    layer = FlameLayer(h, dtype=torch.float64)
    joints = h.J_regressor @ h.v_template
    for joint in (3, 4):
        ids = eyeball(h, joint)
        assert len(ids) == 1570
        sclera = ids[:770]
        centre, radius = sphere_fit(h.v_template[sclera])
        assert np.linalg.norm(centre - joints[joint]) < 3e-4, "the eye joint is the eyeball's centre"
        assert 0.014 < radius.mean() < 0.017 and radius.std() < 1e-3  # a sphere with a corneal bulge
        pose = np.zeros((1, 15))
        pose[0, 3 * joint + 1] = 0.4  # look sideways
        with torch.no_grad():
            out = layer(pose=torch.from_numpy(pose))
        turned = out.vertices[0].numpy()[ids]
        before = np.linalg.norm(h.v_template[ids] - joints[joint], axis=1)
        np.testing.assert_allclose(np.linalg.norm(turned - joints[joint], axis=1), before, atol=1e-9)
        gaze = h.v_template[ids].mean(axis=0) - joints[joint]
        new_gaze = turned.mean(axis=0) - joints[joint]
        cosine = gaze @ new_gaze / np.linalg.norm(gaze) / np.linalg.norm(new_gaze)
        assert np.degrees(np.arccos(cosine)) == pytest.approx(np.degrees(0.4), abs=1.0)


def test_jaw_opens_the_mouth_without_tearing_or_flipping(demo_head: FlameModelData) -> None:
    h = demo_head
    layer = FlameLayer(h, dtype=torch.float64)
    pose = np.zeros((1, 15))
    pose[0, 6] = 0.35
    with torch.no_grad():
        opened = layer(pose=torch.from_numpy(pose)).vertices[0].numpy()
    lm_closed, lm_open = landmarks(h), landmarks(h, opened)
    gap = lambda lm: lm[62, 1] - lm[66, 1]  # noqa: E731 inner lips
    assert gap(lm_open) - gap(lm_closed) > 0.012, "the lips part by more than a centimetre"
    assert lm_closed[8, 1] - lm_open[8, 1] > 0.015, "the chin drops"
    skin = h.faces[(h.weights[h.faces, 3] + h.weights[h.faces, 4]).max(axis=1) == 0]
    edges = np.concatenate([skin[:, [0, 1]], skin[:, [1, 2]], skin[:, [2, 0]]])
    before = np.linalg.norm(h.v_template[edges[:, 0]] - h.v_template[edges[:, 1]], axis=1)
    after = np.linalg.norm(opened[edges[:, 0]] - opened[edges[:, 1]], axis=1)
    # The lip corners are modelled with sub-millimetre edges that open like a fold, hence the 1 mm slack;
    # a torn mouth would stretch edges by centimetres.
    assert (after / (before + 0.001)).max() < 2.0, "no edge is torn"
    assert (after / before).min() > 0.3, "no edge collapses"

    def normals(v: np.ndarray) -> np.ndarray:
        return np.cross(v[skin[:, 1]] - v[skin[:, 0]], v[skin[:, 2]] - v[skin[:, 0]])

    area = 0.5 * np.linalg.norm(normals(h.v_template), axis=1)
    flipped = np.einsum("ij,ij->i", normals(h.v_template), normals(opened)) < 0
    # ICT's own jawOpen folds 32 sub-millimetre triangles in the lip corners (≤ 0.11 mm² each); nothing
    # else may turn inside out.
    corners = lm_closed[[48, 54]]
    distance = np.linalg.norm(h.v_template[skin[flipped, 0]][:, None] - corners[None], axis=2).min(axis=1)
    assert (distance < 0.004).all(), "inside-out triangles only in the lip-corner fold"
    assert area[flipped].sum() < 3e-6 and area[flipped].max() < 2e-7


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
    for right, left in ((0, 16), (17, 26), (36, 45), (39, 42), (48, 54), (31, 35)):
        assert lm[right, 0] < 0 < lm[left, 0], "subject's right (x < 0) first, as in iBUG"
    for i, j in MIRROR.items():
        np.testing.assert_allclose(lm[i] * [-1, 1, 1], lm[j], atol=2e-3, err_msg=f"landmarks {i}/{j}")


def test_front_face_indices_cover_the_face_evenly(demo_head: FlameModelData) -> None:
    h = demo_head
    ids = h.front_face_indices
    assert ids is not None and ids.dtype == np.int64 and ids.shape == (1785,)
    assert (np.diff(ids) > 0).all() and ids.max() < 6706, "inside ICT's narrow face area"
    assert (h.weights[ids, 3] == 0).all() and (h.weights[ids, 4] == 0).all(), "no eyeball vertices"
    front = h.v_template[ids]
    lm = landmarks(h)
    assert front[:, 1].max() > lm[19, 1] + 0.01 and front[:, 1].min() < lm[8, 1] + 0.01
    assert front[:, 0].min() < lm[0, 0] + 0.01 and front[:, 0].max() > lm[16, 0] - 0.01
    gaps = np.sort(np.linalg.norm(front[:, None] - front[None], axis=2), axis=1)[:, 1]
    assert gaps.max() < 3 * np.median(gaps), "spread evenly, no clumps or holes"


def test_every_call_gives_the_same_head() -> None:
    a, b = generate_demo_head(), generate_demo_head()
    for name in ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "faces"):
        assert getattr(a, name).tobytes() == getattr(b, name).tobytes(), name


def test_one_uv_atlas_where_skin_and_eyeballs_do_not_overlap(demo_head: FlameModelData) -> None:
    # ICT gives every material its own unit tiles; a texture projected into one map needs disjoint charts.
    h = demo_head
    assert h.uv is not None and h.uv_faces is not None
    corner_uv = h.uv[h.uv_faces]  # (F, 3, 2)
    charts = {
        "skin": (h.weights[h.faces, 3] + h.weights[h.faces, 4]).max(axis=1) == 0,
        "left eye": h.weights[h.faces[:, 0], 3] == 1,
        "right eye": h.weights[h.faces[:, 0], 4] == 1,
    }
    boxes = {name: (corner_uv[rows].reshape(-1, 2).min(axis=0), corner_uv[rows].reshape(-1, 2).max(axis=0))
             for name, rows in charts.items()}  # fmt: skip
    names = list(boxes)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            (lo_a, hi_a), (lo_b, hi_b) = boxes[a], boxes[b]
            assert (hi_a <= lo_b).any() or (hi_b <= lo_a).any(), f"{a} and {b} share texels"
