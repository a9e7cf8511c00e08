"""Choosing and ordering hypotheses: top-K identities, expression order, per-vertex spread (numpy only)."""

from __future__ import annotations

from typing import Literal

import numpy as np

ExpressionOrder = Literal["typical", "diverse", "sampled"]


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


def order_expressions(params: np.ndarray, mode: ExpressionOrder = "typical") -> np.ndarray:
    """Display order of M expression samples.

    ``typical``: most typical first (closest to the consensus); ``diverse``: farthest-point order starting
    from the most typical, so the first few already span the modes; ``sampled``: as drawn.
    """
    m = len(params)
    if mode == "sampled" or m <= 1:
        return np.arange(m)
    dist = typicality_distance(params)
    if mode == "typical":
        return np.argsort(dist, kind="stable")
    if mode != "diverse":
        raise ValueError(f"unknown expression order {mode!r}; use typical, diverse or sampled")
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
