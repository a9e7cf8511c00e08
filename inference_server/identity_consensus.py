"""Where several photos' IdGen draws agree: each pooled sample's density under every photo's sample cloud.

The identity posterior given all P photos is ∝ Π_p p(shape | photo_p) / p(shape)^(P−1). IdGen's N samples of
photo p are draws from its estimate of p(shape | photo_p), so a kernel density estimate over that cloud says
how plausible a pooled sample is for photo p *according to photo p's generator* — independent evidence from
IdRank's score, and the one that still works when a ranker hardly looks at the photo (the DEMO one).

The kernel is a Gaussian on the front-face vertices in mm (the space the identity error is measured in, and
one where the shape model's unused coefficients do not count). Each photo's bandwidth comes from its own
cloud by Scott's rule, h² = (tr Σ_p / d) · N^(−2/(d+4)), with d the cloud's effective dimension (the
participation ratio of Σ_p's eigenvalues, (Σλ)² / Σλ²) — the vertices of a linear shape model span far
fewer directions than their count. A sample is left out of its own cloud (leave-one-out), so a sample does
not vote for itself.

The prior term p(shape)^(P−1) is deliberately left out: on the tuning triples (seed 1, 30 triples, README)
dividing by the DEMO's N(0, I) prior moved the choice towards unlikely shapes and raised the error
(4.83 against 4.42 mm at weight 1); a finite-bandwidth KDE already over-spreads each cloud, which
the division by the prior would amplify.
"""

from __future__ import annotations

import numpy as np

#: The fewest samples per photo that give a cloud a spread to estimate (leave-one-out leaves N − 1).
MIN_SAMPLES_PER_PHOTO = 4

#: Weight of the summed log-densities against the summed IdRank logits (chosen on seed-1 triples, README).
CONSENSUS_WEIGHT = 1.0

RULE = (
    "softmax over all pooled samples of Σ_p [IdRank logit_p + w · log KDE_p], KDE_p a Gaussian kernel density"
    " of photo p's own IdGen samples (front-face vertices, Scott bandwidth from the cloud's effective dimension,"
    " leave-one-out)"
)
RULE_IDRANK_ONLY = "softmax of the sum of every photo's IdRank log-softmax over all pooled samples"


def _bandwidth_sq(cloud: np.ndarray) -> float:
    """Scott's rule for an isotropic kernel on ``cloud`` (N, D), with the cloud's effective dimension."""
    n = cloud.shape[0]
    centred = cloud - cloud.mean(axis=0)
    eig = np.linalg.svd(centred, compute_uv=False) ** 2 / (n - 1)
    total = float(eig.sum())
    if total <= 0.0:
        raise ValueError("a photo's IdGen samples are all identical: no spread to estimate a density from")
    dim = total**2 / float((eig**2).sum())
    return total / dim * n ** (-2.0 / (dim + 4.0))


def cloud_log_densities(points: np.ndarray, n_photos: int) -> np.ndarray:
    """(P, P·N) float64: log KDE of every pooled sample under every photo's cloud (leave-one-out for its own).

    ``points`` (P·N, D): the pooled samples flattened, photo p's N samples at rows [p·N, (p+1)·N).
    The kernel's normaliser (2π h_p²)^(−d/2) is dropped: it is a constant per photo, so it changes no ranking.
    """
    total, _ = points.shape
    n = total // n_photos
    if n * n_photos != total or n < MIN_SAMPLES_PER_PHOTO:
        raise ValueError(f"need ≥ {MIN_SAMPLES_PER_PHOTO} samples per photo for a density, got {total} / {n_photos}")
    x = points.astype(np.float64)
    sq = np.einsum("ij,ij->i", x, x)
    dist_sq = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (x @ x.T), 0.0)  # (P·N, P·N)
    out = np.empty((n_photos, total))
    for p in range(n_photos):
        cols = slice(p * n, (p + 1) * n)
        log_k = -dist_sq[:, cols] / (2.0 * _bandwidth_sq(x[cols]))
        own = np.arange(p * n, (p + 1) * n)
        log_k[own, own - p * n] = -np.inf  # leave-one-out: a sample is not evidence for itself
        count = np.full(total, float(n))
        count[own] = n - 1.0
        peak = log_k.max(axis=1, keepdims=True)
        out[p] = (peak[:, 0] + np.log(np.exp(log_k - peak).sum(axis=1))) - np.log(count)
    return out
