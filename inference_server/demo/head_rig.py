"""Rig of the demo head (DEMO data, not FLAME): skin weights, joint regressor, landmarks, front-face ids.

Joints follow FLAME: 0 root (neck base), 1 neck, 2 jaw (hinge in front of the ears), 3 left eye, 4 right
eye, parents [-1, 0, 1, 1, 1]. The regressor reproduces the designed joint positions exactly on the
template; the 68 landmarks use the iBUG order (jaw 0-16, brows 17-26, nose 27-35, eyes 36-47, mouth 48-67;
point 0 is on the subject's right, x < 0).
"""

from __future__ import annotations

import numpy as np

from .head_mesh import EYE_XY, JAW_JOINT, RAY_ORIGIN, HeadMesh
from .smooth import bump2, exact_sum, smoothstep, solve_small

PARENTS = np.array([-1, 0, 1, 1, 1], dtype=np.int64)
ROOT_JOINT = (0.0, -0.135, -0.02)
NECK_JOINT = (0.0, -0.07, -0.01)
N_FRONT_FACE = 1785
#: Jaw share of the rows next to the lip line inside the mouth (index: row - lip row + 2).
_LIP_ROW_JAW = (1.0, 0.85, 0.5, 0.15, 0.0)


def lower_face_fraction(mesh: HeadMesh) -> np.ndarray:
    """How much each skin vertex belongs below the lip line: 1 on the lower lip and chin, 0 above.

    Inside the mouth the split follows the grid rows of the lip slit exactly (upper lip 0, lower lip 1);
    towards the cheeks it becomes a soft ramp below the line.
    """
    o = mesh.lip_offset
    rows = np.where(o <= -2, 1.0, np.where(o >= 2, 0.0, np.asarray(_LIP_ROW_JAW)[np.clip(o + 2, 0, 4)]))
    s = mesh.vertices[:, 1] - mesh.lip_line_y
    cheeks = smoothstep(s, 0.004, -0.022)
    mm = mesh.mouth_mask
    fraction = mm * rows + (1.0 - mm) * cheeks
    fraction[mesh.n_skin :] = 0.0
    return fraction


def skin_weights(mesh: HeadMesh) -> np.ndarray:
    """(V, 5) weights: eyeballs rigid on their eye, lower face on the jaw, neck base on the root."""
    y, z = mesh.base[:, 1], mesh.base[:, 2]
    root = smoothstep(y, -0.095, -0.14)
    # The jaw carries the lower face and the underside of the chin, not the neck.
    jaw = (
        lower_face_fraction(mesh) * smoothstep(z, -0.04, -0.005) * smoothstep(y, -0.1, -0.076) * (1.0 - root)
    )
    weights = np.zeros((len(y), 5))
    weights[:, 0] = root
    weights[:, 2] = jaw
    weights[:, 1] = 1.0 - root - jaw
    left, right = mesh.eye_slices
    weights[left] = (0.0, 0.0, 0.0, 1.0, 0.0)
    weights[right] = (0.0, 0.0, 0.0, 0.0, 1.0)
    return weights


def _ring_regressor(points: np.ndarray, target: np.ndarray, band: float) -> np.ndarray:
    """Weights on the skin points of a horizontal band around ``target`` that sum to 1 and whose weighted
    mean is exactly ``target``: uniform weights plus the smallest affine correction (solved exactly)."""
    support = np.abs(points[:, 1] - target[1]) < band
    p = points[support]
    n = len(p)
    w0 = np.full(n, 1.0 / n)
    basis = [np.ones(n), p[:, 0], p[:, 1], p[:, 2]]
    gram = [[exact_sum(a * b) for b in basis] for a in basis]
    residual = [1.0 - exact_sum(w0)] + [float(target[k]) - exact_sum(w0 * p[:, k]) for k in range(3)]
    lam = solve_small(gram, residual)
    w = w0 + lam[0] * basis[0] + lam[1] * basis[1] + lam[2] * basis[2] + lam[3] * basis[3]
    out = np.zeros(len(points))
    out[support] = w
    return out


def joint_regressor(mesh: HeadMesh) -> np.ndarray:
    """(5, V) regressor; rows sum to 1 and reproduce the designed joints on the template."""
    skin = mesh.vertices[: mesh.n_skin]
    regressor = np.zeros((5, len(mesh.vertices)))
    for row, (joint, band) in enumerate(((ROOT_JOINT, 0.012), (NECK_JOINT, 0.012), (JAW_JOINT, 0.012))):
        regressor[row, : mesh.n_skin] = _ring_regressor(skin, np.asarray(joint), band)
    for row, eye in zip((3, 4), mesh.eye_slices, strict=True):
        # The two poles of the eyeball are symmetric about its centre (the ring rows are not).
        front_pole, back_pole = eye.stop - 2, eye.stop - 1
        regressor[row, front_pole] = regressor[row, back_pole] = 0.5
    return regressor


def _mirror(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    return [(-x, y) for x, y in points]


def landmark_targets(mouth_y: float) -> dict[int, tuple[float, float]]:
    """Front-view (x, y) of the 68 landmarks that sit on the skin surface (inner lips are grid vertices)."""
    ex, ey = -EYE_XY[0][0], EYE_XY[0][1]
    m = mouth_y
    jaw_right = [
        (-0.066, 0.018),
        (-0.065, 0.003),
        (-0.063, -0.012),
        (-0.059, -0.028),
        (-0.053, -0.043),
        (-0.045, -0.056),
        (-0.034, -0.067),
        (-0.019, -0.076),
    ]
    brow_right = [(-0.053, 0.043), (-0.045, 0.050), (-0.035, 0.054), (-0.024, 0.054), (-0.013, 0.050)]
    eye_right = [
        (ex - 0.0125, ey),
        (ex - 0.004, ey + 0.0055),
        (ex + 0.005, ey + 0.0055),
        (ex + 0.0125, ey),
        (ex + 0.005, ey - 0.0055),
        (ex - 0.004, ey - 0.0055),
    ]
    targets: list[tuple[float, float]] = []
    targets += [*jaw_right, (0.0, -0.08), *_mirror(jaw_right[::-1])]
    targets += brow_right + _mirror(brow_right[::-1])
    targets += [(0.0, 0.030), (0.0, 0.017), (0.0, 0.004), (0.0, -0.010)]
    targets += [(-0.012, -0.020), (-0.006, -0.022), (0.0, -0.023), (0.006, -0.022), (0.012, -0.020)]
    targets += eye_right
    # Left eye: inner corner, upper lid inner→outer, outer corner, lower lid outer→inner.
    mirrored = _mirror(eye_right)
    targets += [mirrored[3], mirrored[2], mirrored[1], mirrored[0], mirrored[5], mirrored[4]]
    upper_right = [(-0.026, m), (-0.016, m + 0.006), (-0.006, m + 0.0095)]
    lower_right = [(-0.016, m - 0.0085), (-0.007, m - 0.0115)]
    targets += [*upper_right, (0.0, m + 0.009), *_mirror(upper_right[::-1])]
    targets += [*_mirror(lower_right), (0.0, m - 0.012), *lower_right[::-1]]
    return dict(enumerate(targets))


#: Inner-lip landmarks as (index, grid row offset from the lip line, x): they sit on the slit's edges.
_INNER_LIP = (
    (60, 0, -0.019),
    (61, 2, -0.008),
    (62, 2, 0.0),
    (63, 2, 0.008),
    (64, 0, 0.019),
    (65, -2, 0.008),
    (66, -2, 0.0),
    (67, -2, -0.008),
)


def _cast_outermost(
    origin: np.ndarray, direction: np.ndarray, tri: np.ndarray
) -> tuple[int, np.ndarray, np.ndarray]:
    """Outermost hit of a ray with triangles (Möller–Trumbore): triangle id, barycentrics, point."""
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
    e1, e2 = b - a, c - a
    pv = np.cross(direction, e2)
    det = (e1 * pv).sum(axis=1)
    ok = np.abs(det) > 1e-18
    inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
    tv = origin - a
    u = (tv * pv).sum(axis=1) * inv
    qv = np.cross(tv, e1)
    v = (qv * direction).sum(axis=1) * inv
    t = (e2 * qv).sum(axis=1) * inv
    hit = ok & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 0)
    if not hit.any():
        raise RuntimeError("landmark ray missed the demo head")
    best = int(np.nonzero(hit)[0][np.argmax(t[hit])])
    bary = np.array([1.0 - u[best] - v[best], u[best], v[best]])
    return best, bary, origin + t[best] * direction


def landmark_embedding(mesh: HeadMesh) -> tuple[np.ndarray, np.ndarray]:
    """(68,) triangle ids and (68, 3) barycentric weights of the landmarks on the template."""
    faces = mesh.faces
    # Every landmark is on the front half: skip the back of the head and the eyeballs.
    skin_faces = np.nonzero(
        (faces < mesh.n_skin).all(axis=1) & (mesh.vertices[faces, 2] > -0.03).all(axis=1)
    )[0]
    tri = mesh.vertices[faces[skin_faces]]
    face_idx = np.zeros(68, dtype=np.int64)
    bary = np.zeros((68, 3))
    for index, (x, y) in landmark_targets(mesh.mouth_y).items():
        depth = 0.09
        for _ in range(4):  # re-aim until the hit has the wanted x, y
            target = np.array([x, y, depth])
            direction = (target - RAY_ORIGIN) / np.sqrt(exact_sum((target - RAY_ORIGIN) ** 2))
            hit_face, hit_bary, point = _cast_outermost(RAY_ORIGIN, direction, tri)
            depth = float(point[2])
        face_idx[index] = skin_faces[hit_face]
        bary[index] = hit_bary
    o = mesh.lip_offset
    for index, row_offset, x in _INNER_LIP:
        candidates = np.nonzero((o == row_offset) & (mesh.base[:, 2] > 0.0))[0]
        vertex = int(candidates[np.argmin(np.abs(mesh.vertices[candidates, 0] - x))])
        owner = int(np.nonzero((faces == vertex).any(axis=1))[0][0])
        face_idx[index] = owner
        bary[index] = (faces[owner] == vertex).astype(np.float64)
    return face_idx, bary


def front_face_indices(mesh: HeadMesh) -> np.ndarray:
    """The 1785 skin vertices nearest the middle of the face (forehead to chin, cheek to cheek), sorted."""
    p = mesh.vertices[: mesh.n_skin]
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    score = (x / 0.072) * (x / 0.072) + ((y - 0.002) / 0.086) * ((y - 0.002) / 0.086)
    score = np.where((z > 0.0) & (y > -0.09), score, np.inf)
    order = np.lexsort((np.arange(len(score)), score))
    chosen = order[:N_FRONT_FACE]
    if not np.isfinite(score[chosen]).all():
        raise RuntimeError("the demo head has too few front vertices for the front-face list")
    return np.sort(chosen).astype(np.int64)


def eye_region_weights(mesh: HeadMesh) -> list[np.ndarray]:
    """Per eye, weights of the skin vertices around its socket (used to move eyeballs with the skin)."""
    out = []
    for centre in mesh.eye_centres:
        w = bump2(mesh.base[:, 0] - centre[0], mesh.base[:, 1] - centre[1], 0.025, 0.018)
        w = w * smoothstep(mesh.base[:, 2], 0.015, 0.055)
        w[mesh.n_skin :] = 0.0
        out.append(w)
    return out
