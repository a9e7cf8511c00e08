"""The rig of the converted ICT head: joints, joint regressor, skin weights, jaw pose corrective.

FLAME's five joints (root, neck, jaw, left eye, right eye; parents [-1, 0, 1, 1, 1]) are placed from the
geometry: the jaw at the pivot about which ICT's ``jawOpen`` rotates the lower teeth (a rigid rotation of
25.3° about the x axis), the eyes at the centres of the eyeball spheres, the neck and root at the centres
of neck rings. Every regressor row holds non-negative weights summing to one that reproduce its joint on
the template, so a new identity carries its joints along.

The jaw's skin weights come from ``jawOpen`` itself: with linear blend skinning a vertex of jaw weight w
moves by w (R (v - j) + j - v), so w is the least-squares ratio of the sculpted displacement to that of a
full rotation. What the rotation cannot explain (lips sliding, cheeks stretching) becomes the jaw's pose
corrective, scaled so the jaw at ICT's angle reproduces ``jawOpen`` exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PARENTS = np.array([-1, 0, 1, 1, 1], dtype=np.int64)
#: Pose-feature column of the jaw's (R - I)[2, 1] and [1, 2] (joints 1..4, 9 entries each, row-major).
_JAW_FEATURE_21 = 9 + 2 * 3 + 1
_JAW_FEATURE_12 = 9 + 1 * 3 + 2


@dataclass(frozen=True)
class JawFit:
    pivot: np.ndarray  # (3,) the point the lower teeth rotate about
    axis: np.ndarray  # (3,) unit rotation axis
    angle: float  # radians, jawOpen's rotation of the lower teeth
    residual: float  # largest distance of a lower-teeth vertex from the rigid fit (same units as input)


def rotation_matrix(axis: np.ndarray, angle: float) -> np.ndarray:
    axis = np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)


def fit_rigid_rotation(before: np.ndarray, after: np.ndarray) -> JawFit:
    """Kabsch fit of ``after ≈ R before + t``, then the point on the rotation axis nearest the origin's
    x = 0 plane (the pivot is only defined up to a shift along the axis)."""
    pc, qc = before.mean(axis=0), after.mean(axis=0)
    u, _, vt = np.linalg.svd((before - pc).T @ (after - qc))
    d = np.sign(np.linalg.det(vt.T @ u.T))
    r = vt.T @ np.diag([1.0, 1.0, d]) @ u.T
    t = qc - r @ pc
    angle = float(np.arccos(np.clip((np.trace(r) - 1) / 2, -1, 1)))
    axis = np.array([r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]])
    axis /= np.linalg.norm(axis)
    # (I - R) c = t has a line of solutions along the axis: take the one with the smallest norm.
    pivot, *_ = np.linalg.lstsq(np.eye(3) - r, t, rcond=None)
    residual = float(np.linalg.norm(before @ r.T + t - after, axis=1).max())
    return JawFit(pivot=pivot, axis=axis, angle=angle, residual=residual)


def nonnegative_regressor(points: np.ndarray, target: np.ndarray, iterations: int = 100) -> np.ndarray:
    """Weights w ≥ 0 with Σ w = 1 and Σ w p = target, as close to uniform as the constraints allow.

    Active set: the smallest correction of uniform weights that meets the four linear constraints, with
    vertices whose weight went negative dropped and the problem solved again on the rest.
    """
    n = len(points)
    support = np.ones(n, dtype=bool)
    w = np.full(n, 1.0 / n)
    for _ in range(iterations):
        p = points[support]
        a = np.concatenate([np.ones((1, len(p))), p.T])  # (4, n)
        b = np.concatenate([[1.0], target])
        w0 = np.full(len(p), 1.0 / len(p))
        lam = np.linalg.lstsq(a @ a.T, b - a @ w0, rcond=None)[0]
        ws = w0 + a.T @ lam
        w = np.zeros(n)
        w[support] = ws
        if ws.min() >= 0:
            break
        support[np.nonzero(support)[0][ws < 0]] = False
    else:
        raise ValueError("no non-negative regressor found: the target lies outside the points' hull")
    if np.abs(w @ points - target).max() > 1e-9 * max(1.0, float(np.abs(target).max())):
        raise ValueError("the regressor does not reproduce its target")
    return w


def ring_centre(vertices: np.ndarray, candidates: np.ndarray, height: float, band: float) -> np.ndarray:
    """Uniform weights over the candidate vertices within ``band`` of ``height`` (y): a neck ring."""
    on_ring = candidates[np.abs(vertices[candidates, 1] - height) < band]
    if len(on_ring) < 8:
        raise ValueError(f"no neck ring at height {height}")
    w = np.zeros(len(vertices))
    w[on_ring] = 1.0 / len(on_ring)
    return w


def sphere_centre(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares sphere through ``points``: |p|² = 2 c·p + (r² - |c|²) is linear in c."""
    a = np.concatenate([2 * points, np.ones((len(points), 1))], axis=1)
    b = (points**2).sum(axis=1)
    solution = np.linalg.lstsq(a, b, rcond=None)[0]
    centre = solution[:3]
    return centre, float(np.sqrt(solution[3] + centre @ centre))


def jaw_weights(
    neutral: np.ndarray, jaw_open: np.ndarray, jaw: np.ndarray, fit: JawFit, movable: np.ndarray
) -> np.ndarray:
    """Per-vertex jaw weight in [0, 1]: least-squares ratio of the sculpted to the full-rotation motion.

    ``movable`` marks the vertices that may follow the jaw at all (lower face, chin, lower mouth). The
    ratio is damped where the rotation moves a vertex by less than a millimetre-scale ``floor`` (near the
    pivot, where it would be ill-conditioned).
    """
    r = rotation_matrix(fit.axis, fit.angle)
    rotated = (neutral - jaw) @ r.T + jaw - neutral
    sculpted = jaw_open - neutral
    floor = 0.002 * np.abs(neutral).max()
    ratio = (rotated * sculpted).sum(axis=1) / ((rotated**2).sum(axis=1) + floor**2)
    return np.where(movable, np.clip(ratio, 0.0, 1.0), 0.0)


def jaw_corrective(
    neutral: np.ndarray, jaw_open: np.ndarray, jaw: np.ndarray, fit: JawFit, weight: np.ndarray
) -> np.ndarray:
    """(V, 3, 36) posedirs: only the jaw's rotation about x, scaled to give ``jawOpen`` exactly at its angle.

    FLAME adds the corrective p before skinning, so a vertex ends at v + p + w (R - I)(v + p - j); solving
    (I + w (R - I)) p = d - w (R - I)(v - j) per vertex makes that ``jaw_open``. The feature is
    ((R - I)[2, 1] - (R - I)[1, 2]) / 2 = sin θ · axis_x, which is zero for jaw turns about y and z.
    """
    r = rotation_matrix(fit.axis, fit.angle)
    rest = (neutral - jaw) @ (r - np.eye(3)).T
    target = jaw_open - neutral - weight[:, None] * rest
    system = np.eye(3)[None] + weight[:, None, None] * (r - np.eye(3))[None]
    corrective = np.linalg.solve(system, target[:, :, None])[:, :, 0]
    feature = np.sin(fit.angle) * fit.axis[0]
    posedirs = np.zeros((len(neutral), 3, 36))
    posedirs[:, :, _JAW_FEATURE_21] = corrective / (2 * feature)
    posedirs[:, :, _JAW_FEATURE_12] = -corrective / (2 * feature)
    return posedirs


def smoothstep(x: np.ndarray, edge0: float, edge1: float) -> np.ndarray:
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3 - 2 * t)
