"""Identity: IdGen samples from one or several photos of one person, ranked by every photo's IdRank.

One photo is OFER's own recipe: N shape samples from IdGen conditioned on the photo's ArcFace, each
scored by IdRank (conditioned on the same photo), softmax over the N samples. Several photos of one
person pool the evidence:

- IdGen draws N samples from every photo (photo p with seed ``seed + p * PHOTO_SEED_STRIDE``, so photo 0
  keeps the single-photo seed and every photo's draw is distinct and reproducible);
- every one of the P·N pooled samples is scored by every photo's IdRank, a log-softmax over all pooled
  samples per photo (``per_photo_log_probabilities``, (P, P·N));
- the pooled ranking adds, per photo, IdRank's logit and ``CONSENSUS_WEIGHT`` × the sample's log-density
  under that photo's own IdGen cloud (``identity_consensus``: where the views' generators agree), sums over
  photos and takes a softmax: a sample ranks high only when it is plausible for every view (a product of
  experts, the posterior Π_p p(shape | photo_p) up to the prior), so one photo's occluder or odd pose cannot
  carry a sample that the other photos contradict.

Per-photo log-normalisers are constants over the samples, so summing log-softmaxes or logits ranks alike.
With P = 1 there is nothing to agree with: the ranking is the single-photo softmax, bit for bit (no density
term). With fewer than ``MIN_SAMPLES_PER_PHOTO`` samples per photo (a long clip's frames, each with one or
two draws) a cloud has no spread to estimate, and the ranking is IdRank's alone; ``rule`` says which.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .diffusion import sample
from .errors import CancelledError
from .flame.layer import FlameLayer
from .hypotheses import top_k as top_k_indices
from .identity_consensus import CONSENSUS_WEIGHT, MIN_SAMPLES_PER_PHOTO, RULE, RULE_IDRANK_ONLY, cloud_log_densities
from .model_bundle import ModelBundle

#: ``progress(stage, done, total, message)`` with stage ``"sample_shapes"`` then ``"rank"`` (the pipeline's own).
ProgressFn = Callable[[str, int, int, str], None]
CancelFn = Callable[[], bool]

#: Seed offset between the photos' IdGen draws (a prime, far from the expression seed ``seed + 1``).
PHOTO_SEED_STRIDE = 7919


@dataclass
class IdentityConditions:
    """The photos' identity conditions, one row per photo (computed once per photo)."""

    idgen: torch.Tensor  # (P, 512) normalised ArcFace of IdGen's encoder
    idrank: torch.Tensor  # (P, 1024) [FaRL ‖ ArcFace] of IdRank's encoders

    def __post_init__(self) -> None:
        if self.idgen.dim() != 2 or self.idrank.dim() != 2 or self.idgen.shape[0] != self.idrank.shape[0]:
            raise ValueError(
                f"conditions need one row per photo: idgen {tuple(self.idgen.shape)}, idrank {tuple(self.idrank.shape)}"
            )
        if self.idgen.shape[0] < 1:
            raise ValueError("conditions need at least one photo")

    @property
    def n_photos(self) -> int:
        return int(self.idgen.shape[0])


@dataclass
class RankedIdentities:
    """The pooled identity samples and their ranking."""

    shapes: torch.Tensor  # (P·N, S) shape coefficients, photo 0's N samples first
    neutral: torch.Tensor  # (P·N, V, 3) neutral meshes in metres
    probabilities: np.ndarray  # (P·N,) float64 pooled probabilities (sum to 1)
    per_photo_log_probabilities: np.ndarray  # (P, P·N) float64: log-softmax of photo p's IdRank over all samples
    source_photo: np.ndarray  # (P·N,) int: which photo's IdGen draw each sample is
    keep: np.ndarray  # (top_k,) int: indices of the best samples, best first
    # (P, P·N) float64 log-density of each sample under each photo's IdGen cloud, None when not used
    consensus_log_density: np.ndarray | None = None
    consensus_weight: float = 0.0
    rule: str = RULE_IDRANK_ONLY

    @property
    def n_photos(self) -> int:
        return int(self.per_photo_log_probabilities.shape[0])

    def kept_photo_scores(self) -> np.ndarray:
        """(top_k, P) float64: each photo's own probability of each kept sample (over all pooled samples)."""
        return np.exp(self.per_photo_log_probabilities[:, self.keep]).T


def photo_seed(seed: int, photo: int) -> int:
    """The IdGen seed of photo ``photo`` (photo 0 keeps ``seed``), wrapped into the generator's range."""
    return (seed + photo * PHOTO_SEED_STRIDE) % (2**63)


def sample_and_rank_identities(
    bundle: ModelBundle,
    flame: FlameLayer,
    conditions: IdentityConditions,
    *,
    n_per_photo: int,
    top_k: int,
    sampler: str,
    steps: int,
    eta: float,
    seed: int,
    device: torch.device,
    progress: ProgressFn,
    should_cancel: CancelFn,
    fold_rank: bool = True,
) -> RankedIdentities:
    """Draw ``n_per_photo`` shapes from every photo, score all of them with every photo, keep the best ``top_k``.

    ``progress("sample_shapes", done, total, sampler)`` counts network evaluations over all photos' draws;
    ``progress("rank", 0 | 1, 1, message)`` brackets the ranking (a caller timing stages switches its clock
    on the stage name). ``should_cancel`` is checked before every network evaluation. ``fold_rank`` scores the
    samples from their shape coefficients where the bundle can (``ModelBundle.folded_rank``); False keeps the
    vertex path (the official recipe written out; benchmarks' A/B).
    """
    n_photos = conditions.n_photos
    draws: list[torch.Tensor] = []

    def photo_progress(photo: int) -> Callable[[int, int], None]:
        def report(done: int, total: int) -> None:
            progress("sample_shapes", photo * total + done, n_photos * total, sampler)

        return report

    with torch.no_grad():
        for p in range(n_photos):
            draw = sample(
                bundle.idgen_denoiser, conditions.idgen[p : p + 1], n_per_photo, bundle.idgen_denoiser.feature_dim,
                sampler=sampler, steps=steps, eta=eta, seed=photo_seed(seed, p), device=device,
                progress=photo_progress(p), should_cancel=should_cancel,
            )  # fmt: skip
            draws.append(draw)
        if should_cancel():
            raise CancelledError()
        progress("rank", 0, 1, f"{n_photos} photo(s)" if n_photos > 1 else "")
        shapes = torch.cat(draws) if n_photos > 1 else draws[0]
        # Every sample's mesh goes in the result (the per-vertex spread reads them all).
        neutral = flame.neutral(shapes.to(device=device, dtype=flame.dtype)).vertices  # (P·N, V, 3) metres
        front_index = torch.as_tensor(bundle.front_indices, device=device)
        folded = bundle.folded_rank(flame) if fold_rank else None
        if folded is not None:  # IdRank straight from the coefficients (rank_fold): same scores, less work
            scores = [bundle.score_coefficients(folded, shapes, conditions.idrank[p : p + 1]) for p in range(n_photos)]
        else:
            front = neutral[:, front_index] * 1000.0
            scores = [bundle.score_shapes(front, conditions.idrank[p : p + 1]) for p in range(n_photos)]
        logits = torch.stack(scores)
    logits64 = logits.double()  # (P, P·N)
    per_photo = torch.log_softmax(logits64, dim=1).cpu().numpy()
    # softmax(Σ_p log_softmax_p) == softmax(Σ_p logits_p): the per-photo normalisers are constants.
    summed = logits64.sum(dim=0)
    density, weight, rule = None, 0.0, RULE_IDRANK_ONLY
    if n_photos > 1 and n_per_photo >= MIN_SAMPLES_PER_PHOTO:
        front_mm = (neutral[:, front_index] * 1000.0).double()
        density = cloud_log_densities(front_mm.reshape(front_mm.shape[0], -1).cpu().numpy(), n_photos)
        weight, rule = CONSENSUS_WEIGHT, RULE
        summed = summed + weight * torch.from_numpy(density.sum(axis=0)).to(summed.device)
    pooled = torch.softmax(summed, dim=0).cpu().numpy()
    keep = top_k_indices(pooled, top_k)
    progress("rank", 1, 1, f"best p={pooled[keep[0]]:.3f}")
    return RankedIdentities(
        shapes=shapes,
        neutral=neutral,
        probabilities=pooled,
        per_photo_log_probabilities=per_photo,
        source_photo=np.repeat(np.arange(n_photos), n_per_photo),
        keep=keep,
        consensus_log_density=density,
        consensus_weight=weight,
        rule=rule,
    )
