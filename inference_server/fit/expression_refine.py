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

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..flame.model_data import FlameModelData
from .camera import project, rotation_matrix
from .pose import eye_distance
from .stage import SCORE_CAP_IOD, TRUSTED_WEIGHT, capped_rms

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
EXPRESSIONS = 50
JAW_JOINT = 2  # FLAME's joints: global, neck, jaw, left eye, right eye

LandmarkDecoder = Callable[[np.ndarray], np.ndarray]  # (N, 53) expression + jaw -> (N, 68, 3) model frame


@dataclass
class RefinedExpression:
    params: np.ndarray  # (53,) the 50 expression coefficients then the jaw's axis-angle
    landmarks: np.ndarray  # (68, 3) model frame
    error_px: float  # capped weighted RMS over the trusted landmarks, the fit's pose (as expression_fit_px)


def landmark_expression_basis(model: FlameModelData, jaw: np.ndarray) -> np.ndarray:
    """(68, 3, 50) model-frame landmark motion per unit expression coefficient with the jaw at ``jaw``
    (axis-angle): the expression directions at the landmark embedding, turned by the jaw as far as each
    vertex is skinned to it (the joints' small drift with the expression is left out: the refined
    expression is decoded in full afterwards)."""
    assert model.lmk_faces_idx is not None and model.lmk_bary_coords is not None
    corners = np.asarray(model.faces)[np.asarray(model.lmk_faces_idx)]  # (68, 3)
    n = min(EXPRESSIONS, model.n_expression)
    directions = np.zeros((*corners.shape, 3, EXPRESSIONS))
    directions[..., :n] = np.asarray(model.shapedirs)[corners][..., model.n_shape : model.n_shape + n]
    turn = rotation_matrix(np.asarray(jaw, dtype=np.float64))
    w = np.asarray(model.weights)[corners][..., JAW_JOINT][..., None, None]  # (68, 3, 1, 1)
    blend = w * turn + (1.0 - w) * np.eye(3)  # (68, 3, 3, 3): each corner's skinning at this jaw
    moved = np.einsum("lcij,lcjk->lcik", blend, directions)
    return np.einsum("lc,lcik->lik", np.asarray(model.lmk_bary_coords, dtype=np.float64), moved)


def refine_expression(
    decode: LandmarkDecoder, start: np.ndarray, pose: np.ndarray, camera: np.ndarray, observed: np.ndarray,
    weights: np.ndarray, prior: float = PRIOR, expression_basis: np.ndarray | None = None,
) -> RefinedExpression:  # fmt: skip
    """Refine ``start`` (53,) to the photo's landmarks ``observed`` (68, 2) seen with ``weights`` (68,) under
    the fit's ``pose`` (6,) and ``camera`` (3,). ``decode`` maps parameters to landmarks; it is called twice:
    the sample with its probes (all 53, or only the jaw's 3 when ``expression_basis``, (68, 3, 50) from
    :func:`landmark_expression_basis`, gives the expression's), then the result."""
    p0 = np.asarray(start, dtype=np.float64)
    if p0.shape != (53,):
        raise ValueError(f"expected 50 expression coefficients and 3 jaw angles, got shape {p0.shape}")
    scale = np.r_[np.ones(EXPRESSIONS), np.full(3, JAW_SIGMA)]
    seen = np.asarray(weights, dtype=np.float64)[REFINED_POINTS]
    root = np.sqrt(np.where(seen >= TRUSTED_WEIGHT, seen, 0.0))[:, None]
    target = np.asarray(observed, dtype=np.float64)[REFINED_POINTS]
    p = p0.copy()
    if root.any():
        # The landmarks are linear in the expression coefficients and nearly so in the jaw's small angles:
        # one decode of the sample and its probes, then the iterations re-linearise only the projection.
        probed = np.arange(EXPRESSIONS if expression_basis is not None else 0, 53)
        steps = np.zeros((len(probed), 53))
        steps[np.arange(len(probed)), probed] = PROBE * scale[probed]
        probes = decode(np.vstack([p0, p0 + steps]))[:, REFINED_POINTS].astype(np.float64)
        base = probes[0]
        model_jacobian = np.zeros((53, len(REFINED_POINTS), 3))  # per prior unit
        model_jacobian[probed] = (probes[1:] - base) / PROBE
        if expression_basis is not None:
            model_jacobian[:EXPRESSIONS] = np.moveaxis(expression_basis[REFINED_POINTS], 2, 0)
        for _ in range(ITERATIONS):
            z = (p - p0) / scale
            points = base + np.tensordot(z, model_jacobian, axes=1)
            xy = project(points, pose, camera)
            moved = project((points + PROBE * model_jacobian).reshape(-1, 3), pose, camera).reshape(53, -1, 2)
            residual = (root * (xy - target)).reshape(-1)
            jacobian = (root[None] * (moved - xy) / PROBE).reshape(53, -1).T
            lhs = jacobian.T @ jacobian + prior * np.eye(53)
            rhs = -(jacobian.T @ residual + prior * z)
            p = p + scale * np.linalg.solve(lhs, rhs)
    landmarks = np.asarray(decode(p[None])[0], dtype=np.float64)
    return RefinedExpression(p, landmarks, fit_error(landmarks, pose, camera, observed, weights))


def fit_error(landmarks: np.ndarray, pose: np.ndarray, camera: np.ndarray, observed: np.ndarray,
              weights: np.ndarray) -> float:  # fmt: skip
    """The fit's expression score (fit/stage.py ``score_expressions``) at a given pose."""
    observed = np.asarray(observed, dtype=np.float64)
    r = np.linalg.norm(project(landmarks, pose, camera) - observed[:, :2], axis=1)
    return capped_rms(r, np.asarray(weights, dtype=np.float64), SCORE_CAP_IOD * eye_distance(observed[:, :2]))
