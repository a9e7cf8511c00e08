"""The identity stage: one photo is exactly OFER's single-photo recipe; several photos pool and cross-score."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inference_server.assets_config import resolve_assets
from inference_server.diffusion import sample
from inference_server.errors import CancelledError
from inference_server.flame.layer import FlameLayer
from inference_server.identity_consensus import CONSENSUS_WEIGHT, RULE_IDRANK_ONLY
from inference_server.identity_stage import (
    IdentityConditions,
    RankedIdentities,
    photo_seed,
    sample_and_rank_identities,
)
from inference_server.model_bundle import ModelBundle
from inference_server.pipeline import Reconstructor

CPU = torch.device("cpu")
SETTINGS = dict(sampler="ddim", steps=6, eta=1.0, device=CPU)


@pytest.fixture(scope="module")
def models() -> tuple[ModelBundle, FlameLayer]:
    rec = Reconstructor(resolve_assets({}), device="cpu")
    bundle = rec.bundle(CPU)
    return bundle, rec.flame_layer(bundle, CPU)


def _conditions(n_photos: int, seed: int = 0) -> IdentityConditions:
    g = torch.Generator().manual_seed(seed)
    idgen = torch.nn.functional.normalize(torch.randn(n_photos, 512, generator=g), dim=1)
    return IdentityConditions(idgen=idgen, idrank=torch.randn(n_photos, 1024, generator=g))


def _run(models: tuple[ModelBundle, FlameLayer], cond: IdentityConditions, n: int, **kw: object) -> RankedIdentities:
    events: list[tuple[str, int, int]] = []
    out = sample_and_rank_identities(
        models[0], models[1], cond, n_per_photo=n, top_k=kw.pop("top_k", 4), seed=kw.pop("seed", 5),  # type: ignore[arg-type]
        progress=lambda s, d, t, m: events.append((s, d, t)), should_cancel=kw.pop("cancel", lambda: False),  # type: ignore[arg-type]
        fold_rank=kw.pop("fold_rank", True),  # type: ignore[arg-type]
        **SETTINGS,  # type: ignore[arg-type]
    )  # fmt: skip
    out.events = events  # type: ignore[attr-defined]
    return out


def test_one_photo_is_exactly_the_single_photo_recipe(models: tuple[ModelBundle, FlameLayer]) -> None:
    bundle, flame = models
    cond = _conditions(1)
    got = _run(models, cond, 10, fold_rank=False)  # the recipe's vertex path (the fold: test_rank_fold.py)
    # The single-photo recipe written out: IdGen with the seed, FLAME neutral, IdRank, softmax over N.
    with torch.no_grad():
        shapes = sample(bundle.idgen_denoiser, cond.idgen, 10, bundle.idgen_denoiser.feature_dim,
                        sampler="ddim", steps=6, eta=1.0, seed=5, device=CPU)  # fmt: skip
        neutral = flame.neutral(shapes).vertices
        logits = bundle.score_shapes(neutral[:, torch.as_tensor(bundle.front_indices)] * 1000.0, cond.idrank)
    expected = torch.softmax(logits.double(), dim=0).numpy()
    assert torch.equal(got.shapes, shapes)
    assert torch.equal(got.neutral, neutral)
    np.testing.assert_array_equal(got.probabilities, expected)
    np.testing.assert_array_equal(got.keep, np.argsort(-expected, kind="stable")[:4])
    np.testing.assert_allclose(np.exp(got.per_photo_log_probabilities[0]), expected, rtol=1e-12)
    assert got.source_photo.tolist() == [0] * 10
    assert got.consensus_log_density is None and got.consensus_weight == 0.0  # nothing to agree with


def test_several_photos_pool_samples_and_every_photo_scores_every_sample(
    models: tuple[ModelBundle, FlameLayer],
) -> None:
    bundle, flame = models
    cond = _conditions(3, seed=1)
    got = _run(models, cond, 6, top_k=5, fold_rank=False)  # scored as written out below (vertex path)
    assert got.shapes.shape == (18, bundle.idgen_denoiser.feature_dim)
    assert got.source_photo.tolist() == [0] * 6 + [1] * 6 + [2] * 6
    # Photo p's block is IdGen's own draw for photo p with its own, distinct seed.
    seeds = {photo_seed(5, p) for p in range(3)}
    assert len(seeds) == 3 and photo_seed(5, 0) == 5
    for p in range(3):
        with torch.no_grad():
            alone = sample(bundle.idgen_denoiser, cond.idgen[p : p + 1], 6, bundle.idgen_denoiser.feature_dim,
                           sampler="ddim", steps=6, eta=1.0, seed=photo_seed(5, p), device=CPU)  # fmt: skip
        torch.testing.assert_close(got.shapes[6 * p : 6 * p + 6], alone, rtol=0, atol=0)
    # Every photo scored all 18 samples: recompute each photo's log-softmax independently (numpy).
    with torch.no_grad():
        front = flame.neutral(got.shapes).vertices[:, torch.as_tensor(bundle.front_indices)] * 1000.0
        logits = np.stack([bundle.score_shapes(front, cond.idrank[p : p + 1]).double().numpy() for p in range(3)])
    top = logits.max(1, keepdims=True)
    log_p = logits - top - np.log(np.exp(logits - top).sum(1, keepdims=True))
    np.testing.assert_allclose(got.per_photo_log_probabilities, log_p, atol=1e-9)
    # Plus each photo's leave-one-out Gaussian KDE over its own 6 draws, written out sample by sample.
    points = front.reshape(18, -1).double().numpy()
    density = np.empty((3, 18))
    for p in range(3):
        centred = points[6 * p : 6 * p + 6] - points[6 * p : 6 * p + 6].mean(axis=0)
        eig = np.clip(np.linalg.eigvalsh(centred @ centred.T / 5), 0, None)  # the covariance's nonzero spectrum
        dim = eig.sum() ** 2 / (eig**2).sum()
        h_sq = eig.sum() / dim * 6 ** (-2 / (dim + 4))
        for i in range(18):
            others = [j for j in range(6 * p, 6 * p + 6) if j != i]
            kernels = [np.exp(-np.sum((points[i] - points[j]) ** 2) / (2 * h_sq)) for j in others]
            density[p, i] = np.log(np.mean(kernels))
    assert got.consensus_log_density is not None
    np.testing.assert_allclose(got.consensus_log_density, density, rtol=1e-6, atol=1e-6)
    assert got.consensus_weight == CONSENSUS_WEIGHT > 0
    total = logits.sum(axis=0) + CONSENSUS_WEIGHT * density.sum(axis=0)
    pooled = np.exp(total - total.max())
    np.testing.assert_allclose(got.probabilities, pooled / pooled.sum(), rtol=1e-6, atol=1e-12)
    assert got.keep.tolist() == np.argsort(-total, kind="stable")[:5].tolist()
    np.testing.assert_allclose(got.kept_photo_scores(), np.exp(log_p[:, got.keep]).T, rtol=1e-9)


def test_progress_counts_every_photo_and_cancel_stops(models: tuple[ModelBundle, FlameLayer]) -> None:
    got = _run(models, _conditions(2), 3)
    sampling = [(d, t) for s, d, t in got.events if s == "sample_shapes"]  # type: ignore[attr-defined]
    assert len(sampling) == 12 and sampling[-1] == (12, 12)
    assert [e for e in got.events if e[0] == "rank"] == [("rank", 0, 1), ("rank", 1, 1)]  # type: ignore[attr-defined]
    # 3 draws a photo (a clip's frames) leave no cloud to estimate a density from: IdRank's pooling alone.
    assert got.consensus_log_density is None and got.rule == RULE_IDRANK_ONLY
    total = got.per_photo_log_probabilities.sum(axis=0)
    np.testing.assert_allclose(got.probabilities, np.exp(total - total.max()) / np.exp(total - total.max()).sum())
    calls = iter(range(1000))
    with pytest.raises(CancelledError):
        _run(models, _conditions(2), 3, cancel=lambda: next(calls) >= 8)


def test_conditions_need_one_row_per_photo() -> None:
    with pytest.raises(ValueError, match="one row per photo"):
        IdentityConditions(idgen=torch.zeros(2, 512), idrank=torch.zeros(3, 1024))
