"""Choosing and ordering hypotheses: top-K identities, expression order, per-vertex spread (numpy only)."""

from __future__ import annotations

from typing import Literal

import numpy as np

ExpressionOrder = Literal["best_fit", "typical", "diverse", "sampled"]
#: Expression orders a request may name.
EXPRESSION_ORDERS = ("best_fit", "typical", "diverse", "sampled")
#: Fit errors within this fraction of the best remaining error count as equally good for "best_fit":
#: the landmarks cannot tell such samples apart, so among them the order spreads over the hidden parts.
FIT_TIE_FRACTION = 0.05


def checked_order(value: object) -> ExpressionOrder:
    """A request's expression order, or a clear error naming the allowed ones."""
    if value not in EXPRESSION_ORDERS:
        from .errors import BadRequestError

        raise BadRequestError(f"unknown expression order {value!r}", f"Use one of {', '.join(EXPRESSION_ORDERS)}.")
    return value  # type: ignore[return-value]


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest scores, best first; ties keep sampling order (stable)."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    return order[: min(k, len(order))]


def typicality_distance(params: np.ndarray) -> np.ndarray:
    """Distance of each sample from the sample mean, each coefficient scaled by its spread.

    A diagonal Mahalanobis distance: with 100 samples of 53 coefficients a full covariance is poorly
    conditioned, and per-coefficient scaling is what makes "typical" mean "close to the consensus".
    """
    x = np.asarray(params, dtype=np.float64)
    std = x.std(axis=0)
    std = np.where(std > 1e-12, std, 1.0)
    return np.sqrt((((x - x.mean(axis=0)) / std) ** 2).sum(axis=1))


def order_expressions(
    params: np.ndarray, mode: ExpressionOrder = "typical", fit_error: np.ndarray | None = None
) -> np.ndarray:
    """Display order of M expression samples.

    ``typical``: most typical first (closest to the consensus); ``diverse``: farthest-point order starting
    from the most typical, so the first few already span the modes; ``sampled``: as drawn; ``best_fit``:
    lowest ``fit_error`` (visible-landmark error per sample) first, see :func:`best_fit_order`.
    """
    m = len(params)
    if mode == "best_fit":
        if fit_error is None:
            raise ValueError("the best_fit order needs each sample's fit error")
        return best_fit_order(params, fit_error)
    if mode == "sampled" or m <= 1:
        return np.arange(m)
    dist = typicality_distance(params)
    if mode == "typical":
        return np.argsort(dist, kind="stable")
    if mode != "diverse":
        raise ValueError(f"unknown expression order {mode!r}; use {', '.join(EXPRESSION_ORDERS)}")
    x = np.asarray(params, dtype=np.float64)
    std = np.where(x.std(axis=0) > 1e-12, x.std(axis=0), 1.0)
    z = x / std
    chosen = [int(np.argmin(dist))]
    nearest = np.linalg.norm(z - z[chosen[0]], axis=1)
    for _ in range(m - 1):
        nearest[chosen] = -1.0
        nxt = int(np.argmax(nearest))
        chosen.append(nxt)
        nearest = np.minimum(nearest, np.linalg.norm(z - z[nxt], axis=1))
    return np.asarray(chosen)


def best_fit_order(params: np.ndarray, fit_error: np.ndarray, tie: float = FIT_TIE_FRACTION) -> np.ndarray:
    """Lowest error first; samples whose errors tie (within ``tie`` of the best remaining one) come in
    farthest-point order, so where the photo shows nothing (a covered mouth) the first few samples still
    span what is hidden instead of repeating one guess."""
    x = np.asarray(params, dtype=np.float64)
    error = np.asarray(fit_error, dtype=np.float64)
    if len(error) != len(x):
        raise ValueError(f"{len(x)} samples but {len(error)} fit errors")
    m = len(x)
    if m <= 1:
        return np.arange(m)
    error = np.where(np.isfinite(error), error, np.inf)
    std = x.std(axis=0)
    z = x / np.where(std > 1e-12, std, 1.0)
    chosen: list[int] = []
    remaining = np.ones(m, bool)
    nearest = np.full(m, np.inf)
    for _ in range(m):
        best = float(error[remaining].min())
        ties = remaining & (error <= best + tie * abs(best) + 1e-12)
        candidates = np.nonzero(ties)[0]
        pick = (
            int(candidates[np.argmin(error[candidates])])
            if not chosen
            else int(candidates[np.argmax(nearest[candidates])])
        )
        chosen.append(pick)
        remaining[pick] = False
        nearest = np.minimum(nearest, np.linalg.norm(z - z[pick], axis=1))
    return np.asarray(chosen)


def per_vertex_spread(vertices: np.ndarray) -> np.ndarray:
    """Per-vertex standard deviation across samples (N, V, 3) → (V,), in the input's units.

    Defined as the root-mean-square distance of the samples from their mean position, i.e. the square
    root of the summed x/y/z variances: a scalar a heat map can show directly.
    """
    v = np.asarray(vertices, dtype=np.float64)
    if v.shape[0] < 2:
        return np.zeros(v.shape[1], dtype=np.float32)
    return np.sqrt(v.var(axis=0).sum(axis=-1)).astype(np.float32)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = np.exp(z - z.max())
    return z / z.sum()
