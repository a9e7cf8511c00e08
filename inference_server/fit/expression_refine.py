"""The display-first expression refined to the photo's visible eye and mouth landmarks (opt-in, beyond OFER).

ExpGen's samples are draws: where the photo's lids are closed or its lips pressed and no sample does the
same, even the best-fitting one misses. Refining that sample by Gauss-Newton on the trusted landmarks of the
eyes and mouth (iBUG 36-67), with a prior that holds every coefficient near the sample's value, follows what
the photo shows and keeps the sample where it shows nothing (a weight under ``TRUSTED_WEIGHT`` counts as
not seen). The head pose and camera stay as the fit found them. The brows stay out: the detector's brow
points follow another convention than the model's (refined on them, the brows moved away from the truth,
``benchmarks/fit_expression_refine.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .camera import project
from .pose import eye_distance
from .stage import SCORE_CAP_IOD, TRUSTED_WEIGHT

#: iBUG points the refinement follows: the eyes and the mouth.
REFINED_POINTS = np.arange(36, 68)
#: Prior weight (px² per unit coefficient²): a 1σ move of an expression coefficient costs as much as a
#: landmark off by 2 px. Measured on DEMO renders, λ 1-16 (docs/texture.md, "The expression refined").
PRIOR = 4.0
#: The jaw's axis-angle in radians per prior unit (its samples spread about 0.1 rad).
JAW_SIGMA = 0.1
ITERATIONS = 4
#: Finite-difference step, in prior units.
PROBE = 1e-3

LandmarkDecoder = Callable[[np.ndarray], np.ndarray]  # (N, 53) expression + jaw -> (N, 68, 3) model frame


@dataclass
class RefinedExpression:
    params: np.ndarray  # (53,) the 50 expression coefficients then the jaw's axis-angle
    landmarks: np.ndarray  # (68, 3) model frame
    error_px: float  # capped weighted RMS over the trusted landmarks, the fit's pose (as expression_fit_px)
    source: int  # the expression (display order) it was refined from


def refine_expression(
    decode: LandmarkDecoder, start: np.ndarray, pose: np.ndarray, camera: np.ndarray, observed: np.ndarray,
    weights: np.ndarray, source: int = 0, prior: float = PRIOR,
) -> RefinedExpression:  # fmt: skip
    """Refine ``start`` (53,) to the photo's landmarks ``observed`` (68, 2) seen with ``weights`` (68,) under
    the fit's ``pose`` (6,) and ``camera`` (3,). ``decode`` maps parameters to landmarks; the expression
    part is linear in them, the jaw is linearised at every iteration."""
    p0 = np.asarray(start, dtype=np.float64)
    if p0.shape != (53,):
        raise ValueError(f"expected 50 expression coefficients and 3 jaw angles, got shape {p0.shape}")
    scale = np.r_[np.ones(50), np.full(3, JAW_SIGMA)]
    seen = np.asarray(weights, dtype=np.float64)[REFINED_POINTS]
    root = np.sqrt(np.where(seen >= TRUSTED_WEIGHT, seen, 0.0))[:, None]
    target = np.asarray(observed, dtype=np.float64)[REFINED_POINTS]
    p = p0.copy()
    if root.any():
        for _ in range(ITERATIONS):
            probes = np.vstack([p, p + np.diag(PROBE * scale)])
            xy = np.stack([project(lm[REFINED_POINTS], pose, camera) for lm in decode(probes)])
            residual = (root * (xy[0] - target)).reshape(-1)
            jacobian = (root[None] * (xy[1:] - xy[0]) / PROBE).reshape(53, -1).T
            lhs = jacobian.T @ jacobian + prior * np.eye(53)
            rhs = -(jacobian.T @ residual + prior * (p - p0) / scale)
            p = p + scale * np.linalg.solve(lhs, rhs)
    landmarks = np.asarray(decode(p[None])[0], dtype=np.float64)
    return RefinedExpression(p, landmarks, fit_error(landmarks, pose, camera, observed, weights), source)


def fit_error(landmarks: np.ndarray, pose: np.ndarray, camera: np.ndarray, observed: np.ndarray,
              weights: np.ndarray) -> float:  # fmt: skip
    """The fit's expression score (fit/stage.py ``score_expressions``) at a given pose."""
    observed = np.asarray(observed, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    r = np.linalg.norm(project(landmarks, pose, camera) - observed[:, :2], axis=1)
    r = np.minimum(r, SCORE_CAP_IOD * eye_distance(observed[:, :2]))
    return math.sqrt(float((w * r**2).sum() / max(float(w.sum()), 1e-12)))
