"""A temporally consistent path through each frame's hypotheses (dynamic programming), then smoothing.

Cost of a path k_0..k_{T-1} over the frames that have hypotheses:

    Σ_t unary_t(k_t) + smoothness · Σ_t ‖z_t(k_t) − z_prev(k_prev)‖² / gap_t

``unary_t(k)``: how badly hypothesis k fits the landmarks the frame shows, ``((error_px / eye_px) / 0.05)²``
(0.05 of the eye distance is the detector's own noise on a render, so one unit is one noise level);
a frame whose fit is not trusted (face hidden) has no unary term. ``z``: an embedding of the
hypothesis whose distances are RMS vertex distances in millimetres (:func:`vertex_metric`), so the
pairwise term is the squared change of the mesh between frames; over a gap of frames without
hypotheses (no face, unreadable) the allowed change grows with the gap (a random walk).
The minimum is found exactly by Viterbi in O(T·M²).

Frames without hypotheses are filled by linear interpolation of the chosen parameters, then every
series is smoothed with a Gaussian of ``sigma`` frames (0: none; the clip's ends point-reflected).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: The landmark error (fraction of the eye distance) that costs one unit.
UNARY_SCALE_IOD = 0.05


@dataclass
class PathResult:
    choice: np.ndarray  # (T,) int, -1 where the frame had no hypotheses
    total_cost: float
    unary_cost: float
    pairwise_cost: float


def unary_costs(errors_px: np.ndarray, eye_px: float) -> np.ndarray:
    return (np.asarray(errors_px, np.float64) / max(eye_px, 1e-9) / UNARY_SCALE_IOD) ** 2


def vertex_metric(columns: np.ndarray) -> np.ndarray:
    """(D, D) matrix L with ‖(a − b) @ L‖ = RMS vertex distance in mm between meshes of parameters a, b.

    ``columns`` (D, V, 3): each parameter's vertex displacement (metres per unit; the jaw's from its
    derivative at rest): the RMS distance of a linear model is sqrt(Δᵀ G Δ) with G = C Cᵀ / V."""
    flat = np.asarray(columns, np.float64).reshape(len(columns), -1) * 1000.0
    gram = flat @ flat.T / columns.shape[1]
    values, vectors = np.linalg.eigh(gram)
    return vectors * np.sqrt(np.clip(values, 0.0, None))


def best_path(
    unary: Sequence[np.ndarray | None], embeddings: Sequence[np.ndarray | None], smoothness: float
) -> PathResult:
    """The minimum-cost choice per frame. ``embeddings[t]`` (M_t, D) or None (frame without hypotheses);
    ``unary[t]`` (M_t,) or None (no unary term)."""
    frames = [t for t, z in enumerate(embeddings) if z is not None and len(z)]
    choice = np.full(len(embeddings), -1, dtype=np.int64)
    if not frames:
        return PathResult(choice, 0.0, 0.0, 0.0)
    costs = [_unary(unary[t], len(embeddings[t])) for t in frames]  # type: ignore[arg-type]
    total = costs[0].copy()
    back: list[np.ndarray] = []
    for i in range(1, len(frames)):
        prev, cur = embeddings[frames[i - 1]], embeddings[frames[i]]
        assert prev is not None and cur is not None
        gap = frames[i] - frames[i - 1]
        pair = smoothness * ((cur[:, None, :] - prev[None, :, :]) ** 2).sum(axis=2) / gap  # (M_cur, M_prev)
        candidates = total[None, :] + pair
        back.append(np.argmin(candidates, axis=1))
        total = candidates[np.arange(len(cur)), back[-1]] + costs[i]
    k = int(np.argmin(total))
    best = float(total[k])
    picked = [k]
    for pointers in reversed(back):
        k = int(pointers[k])
        picked.append(k)
    picked.reverse()
    choice[frames] = picked
    unary_sum = float(sum(costs[i][picked[i]] for i in range(len(frames))))
    return PathResult(choice, best, unary_sum, best - unary_sum)


def _unary(values: np.ndarray | None, m: int) -> np.ndarray:
    return np.zeros(m) if values is None else np.asarray(values, np.float64)


def fill_gaps(series: np.ndarray, known: np.ndarray) -> np.ndarray:
    """(T, D) with rows where ``known`` is False replaced by linear interpolation (constant at the ends)."""
    out = np.asarray(series, np.float64).copy()
    frames = np.flatnonzero(known)
    if len(frames) == 0:
        raise ValueError("no known frame to interpolate from")
    t = np.arange(len(out))
    for d in range(out.shape[1]):
        out[:, d] = np.interp(t, frames, out[frames, d])
    return out


def gaussian_smooth(series: np.ndarray, sigma: float) -> np.ndarray:
    """(T, D) smoothed along time by a Gaussian of ``sigma`` frames. The ends are extended by point
    reflection (x[-k] = 2 x[0] - x[k]), so a steady motion (a linear ramp) is kept as it is up to the last
    frame instead of being pulled towards the middle of the clip."""
    values = np.asarray(series, np.float64)
    if sigma <= 0 or len(values) < 2:
        return values.copy()
    last = len(values) - 1
    radius = int(np.ceil(3 * sigma))
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    kernel /= kernel.sum()
    idx = np.arange(-radius, last + radius + 1)
    before, after = idx < 0, idx > last
    source = np.clip(np.where(before, -idx, np.where(after, 2 * last - idx, idx)), 0, last)
    padded = values[source]
    padded[before] = 2 * values[0] - padded[before]
    padded[after] = 2 * values[last] - padded[after]
    out = np.empty(values.shape, np.float64)
    for i in range(len(values)):
        out[i] = kernel @ padded[i : i + 2 * radius + 1]
    return out


def continuous_rotations(axis_angles: np.ndarray) -> np.ndarray:
    """(T, 3) axis-angles with each one flipped to the equivalent vector nearest the previous (θ ↔ θ − 2π),
    so that averaging over time does not cross the ±π seam."""
    out = np.asarray(axis_angles, np.float64).copy()
    for i in range(1, len(out)):
        angle = np.linalg.norm(out[i])
        if angle < 1e-9:
            continue
        other = out[i] * (1.0 - 2.0 * np.pi / angle)
        if np.linalg.norm(other - out[i - 1]) < np.linalg.norm(out[i] - out[i - 1]):
            out[i] = other
    return out
