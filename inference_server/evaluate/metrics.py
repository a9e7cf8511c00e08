"""Multi-hypothesis metrics on N samples with a known ground truth (the paper's ablation quantities).

Vertex error of one sample = mean over the front-face vertices of the Euclidean distance to the ground
truth (mm, no alignment: IdGen predicts shape coefficients in the model's own frame).

* **ranked**  – the error of the sample IdRank puts first;
* **average** – the mean of the N samples' errors (the expected error of a randomly picked sample);
* **oracle**  – the smallest of the N errors (best of N).

Diversity: the per-vertex spread (root-mean-square distance of the samples from their mean, mm; see
:func:`inference_server.hypotheses.per_vertex_spread`) averaged over the occluded and over the visible
front-face vertices of each image. Also after a similarity alignment of every sample to the samples' mean
(:func:`similarity_aligned`): a photo fixes no absolute size (the face crops are scaled to the face), so
the spread of overall size and placement is the same everywhere and says nothing about occlusion; NoW
removes it the same way before it measures.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def vertex_errors_mm(samples_mm: np.ndarray, truth_mm: np.ndarray) -> np.ndarray:
    """(N, V, 3) samples and (V, 3) truth → (N,) mean per-vertex Euclidean distance."""
    samples_mm = np.asarray(samples_mm, dtype=np.float64)
    truth_mm = np.asarray(truth_mm, dtype=np.float64)
    if samples_mm.ndim != 3 or samples_mm.shape[1:] != truth_mm.shape:
        raise ValueError(f"samples {samples_mm.shape} do not match the ground truth {truth_mm.shape}")
    return np.asarray(np.linalg.norm(samples_mm - truth_mm[None], axis=2).mean(axis=1))


@dataclass(frozen=True)
class HypothesisErrors:
    ranked: float
    average: float
    oracle: float


def hypothesis_errors(errors_mm: np.ndarray, scores: np.ndarray) -> HypothesisErrors:
    """Ranked / average / oracle error of one image from the N sample errors and the N rank scores."""
    errors_mm = np.asarray(errors_mm, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    if errors_mm.shape != scores.shape or errors_mm.ndim != 1 or len(errors_mm) == 0:
        raise ValueError(f"need N errors and N scores, got {errors_mm.shape} and {scores.shape}")
    return HypothesisErrors(
        ranked=float(errors_mm[int(np.argmax(scores))]),
        average=float(errors_mm.mean()),
        oracle=float(errors_mm.min()),
    )


@dataclass(frozen=True)
class RegionSpread:
    occluded: float  # mean spread over the occluded front vertices (nan when none)
    visible: float  # mean spread over the visible front vertices (nan when none)


def region_spread(spread: np.ndarray, occluded: np.ndarray, visible: np.ndarray) -> RegionSpread:
    """Mean per-vertex spread in the two regions (masks over the same vertices as ``spread``)."""
    spread = np.asarray(spread, dtype=np.float64)
    occluded, visible = np.asarray(occluded, bool), np.asarray(visible, bool)
    if not (spread.shape == occluded.shape == visible.shape):
        raise ValueError("spread and the region masks must have the same length")
    return RegionSpread(
        occluded=float(spread[occluded].mean()) if occluded.any() else float("nan"),
        visible=float(spread[visible].mean()) if visible.any() else float("nan"),
    )


def similarity_aligned(samples: np.ndarray) -> np.ndarray:
    """(N, V, 3) samples, each moved by the scale, rotation and translation that best fit it to their mean."""
    from .now import fit_similarity_3d

    samples = np.asarray(samples, dtype=np.float64)
    if samples.ndim != 3 or samples.shape[2] != 3:
        raise ValueError(f"expected samples of shape (N, V, 3), got {samples.shape}")
    mean = samples.mean(axis=0)
    return np.stack([fit_similarity_3d(sample, mean).apply(sample) for sample in samples])
