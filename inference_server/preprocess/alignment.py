"""The ArcFace five-point template and the least-squares similarity fit that aligns faces to it.

Points are (x, y) pixel coordinates. A 2×3 affine ``M`` maps a point ``p`` to ``M[:, :2] @ p + M[:, 2]``,
the convention of ``cv2.warpAffine``.
"""

from __future__ import annotations

import numpy as np

#: The standard 112×112 ArcFace template, in the order: left eye centre, right eye centre, nose tip,
#: left mouth corner, right mouth corner (left/right as seen in an upright photo, i.e. image-left first).
ARCFACE_TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)

#: Size of the ArcFace crop in pixels (square).
ARCFACE_SIZE = 112

#: The face box the detectors report, expressed in the ArcFace template frame: [x0, y0, x1, y1].
#: Measured as the mean MediaPipe full-range detector box of 50 real faces (LFW subset, astronaut,
#: Grace Hopper) mapped through their face-mesh five-point alignment (docs/preprocessing.md). It gives
#: every fallback step, and user-clicked points, one consistent box for the FaRL crop. SCRFD's boxes
#: (the official detector) may differ by a few percent; not measured (no SCRFD weights here).
TEMPLATE_FACE_BOX_112 = np.array([11.9, 22.9, 99.9, 117.0], dtype=np.float64)


def fit_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping ``src`` onto ``dst``.

    Umeyama's closed form (1991), with the reflection guard so the result is never a mirror. Returns
    the 2×3 matrix. ``src`` and ``dst`` are (N, 2) with N ≥ 2 distinct points.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or src.shape[0] < 2:
        raise ValueError(f"fit_similarity needs two (N, 2) arrays with N >= 2, got {src.shape} and {dst.shape}")
    if not (np.all(np.isfinite(src)) and np.all(np.isfinite(dst))):
        raise ValueError("fit_similarity got non-finite points")
    src_mean = src.mean(axis=0)
    dst_mean = dst.mean(axis=0)
    src_c = src - src_mean
    dst_c = dst - dst_mean
    src_var = float((src_c**2).sum() / len(src))
    if src_var <= 1e-12:
        raise ValueError("fit_similarity got coincident source points")
    cov = dst_c.T @ src_c / len(src)
    U, S, Vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        d[1] = -1.0
    R = U @ np.diag(d) @ Vt
    scale = float((S * d).sum() / src_var)
    M = np.empty((2, 3), dtype=np.float64)
    M[:, :2] = scale * R
    M[:, 2] = dst_mean - scale * R @ src_mean
    return M


def apply_affine(M: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map (N, 2) points through a 2×3 affine."""
    points = np.asarray(points, dtype=np.float64)
    return points @ M[:, :2].T + M[:, 2]


def invert_affine(M: np.ndarray) -> np.ndarray:
    """The inverse of an invertible 2×3 affine, as a 2×3 affine."""
    A = M[:, :2]
    A_inv = np.linalg.inv(A)
    out = np.empty((2, 3), dtype=np.float64)
    out[:, :2] = A_inv
    out[:, 2] = -A_inv @ M[:, 2]
    return out


def box_from_points5(points5: np.ndarray) -> np.ndarray:
    """The face box [x0, y0, x1, y1] implied by five ArcFace points, in the points' pixel space.

    The template face box's centre is mapped into the photo and its width and height are scaled by the
    similarity's scale; the box stays axis-aligned and keeps the upright face's size when the face is
    rolled, as a detector run on the upright face would report it.
    """
    to_template = fit_similarity(points5, ARCFACE_TEMPLATE_112)
    to_photo = invert_affine(to_template)
    scale = float(np.sqrt(abs(np.linalg.det(to_photo[:, :2]))))
    x0, y0, x1, y1 = TEMPLATE_FACE_BOX_112
    centre = apply_affine(to_photo, np.array([[(x0 + x1) / 2.0, (y0 + y1) / 2.0]]))[0]
    half = np.array([(x1 - x0) / 2.0, (y1 - y0) / 2.0]) * scale
    return np.concatenate([centre - half, centre + half])


def alignment_residuals(points5: np.ndarray, template: np.ndarray = ARCFACE_TEMPLATE_112) -> np.ndarray:
    """Per-point distance (template pixels) between the warped points and the template after the fit."""
    M = fit_similarity(points5, template)
    return np.linalg.norm(apply_affine(M, points5) - template, axis=1)


def template_interocular() -> float:
    """Distance between the two template eye centres, in 112-crop pixels (≈ 35.24)."""
    return float(np.linalg.norm(ARCFACE_TEMPLATE_112[1] - ARCFACE_TEMPLATE_112[0]))
