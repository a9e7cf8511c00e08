"""``evaluate multiview``: synthetic triples of one person, pooled against single-photo identities (DEMO)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inference_server.assets_config import resolve_assets
from inference_server.evaluate.multiview import MultiviewSettings, render_views, run_multiview, view_conditions
from inference_server.flame.layer import FlameLayer
from inference_server.identity_stage import IdentityConditions, sample_and_rank_identities
from inference_server.model_bundle import ModelBundle
from inference_server.pipeline import Reconstructor
from inference_server.train.synthetic import SyntheticConfig, SyntheticRenderer

CPU = torch.device("cpu")
TINY = dict(triples=2, n_per_photo=4, steps=4, size=128)


@pytest.fixture(scope="module")
def models() -> tuple[ModelBundle, FlameLayer]:
    rec = Reconstructor(resolve_assets({}), device="cpu")
    bundle = rec.bundle(CPU)
    return bundle, rec.flame_layer(bundle, CPU)


def test_views_share_the_identity_and_differ_in_pose_expression_and_occluder(
    models: tuple[ModelBundle, FlameLayer],
) -> None:
    bundle, flame = models
    renderer = SyntheticRenderer(bundle.flame, SyntheticConfig(size=96))
    shape, views = render_views(renderer, np.random.default_rng(4), 3)
    for view in views:
        np.testing.assert_array_equal(view.shape, shape)
        posed = flame.with_expression(torch.as_tensor(shape[None]), torch.as_tensor(view.expression[None]),
                                      torch.as_tensor(view.jaw[None])).vertices[0].double().numpy()  # fmt: skip
        np.testing.assert_allclose(view.vertices, posed, atol=1e-6)  # the render shows this identity
    assert len({v.occluder for v in views}) == 3 and "none" not in {v.occluder for v in views}
    assert len({round(v.yaw_deg, 3) for v in views}) == 3
    assert not np.allclose(views[0].expression, views[1].expression)
    assert not np.array_equal(views[0].image, views[1].image)


def test_one_view_pooled_is_the_single_photo_choice(models: tuple[ModelBundle, FlameLayer]) -> None:
    result = run_multiview(*models, MultiviewSettings(views=1, **(TINY | {"triples": 1})))  # type: ignore[arg-type]
    for row in result.per_triple:
        assert row["pooled"] == row["single"][0]
    assert result.pooled_mm == result.single_mean_mm


def test_single_errors_are_single_photo_reconstructions_and_pooled_is_reported(
    models: tuple[ModelBundle, FlameLayer],
) -> None:
    bundle, flame = models
    settings = MultiviewSettings(**TINY)  # type: ignore[arg-type]
    result = run_multiview(bundle, flame, settings)
    assert result.triples == 2 and result.views == 3
    for row in result.per_triple:
        assert min(row["pooled"], *row["single"]) >= row["oracle"]
        assert 0 <= row["pooled_from_view"] < 3
    # Triple 1 again, view by view, as three single-photo identity stages with the recorded seeds.
    renderer = SyntheticRenderer(bundle.flame, SyntheticConfig(size=settings.size))
    shape, views = render_views(renderer, np.random.default_rng([settings.seed, 1]), 3)
    truth = flame.neutral(torch.as_tensor(shape[None])).vertices[0, torch.as_tensor(bundle.front_indices)]
    conditions = view_conditions(bundle, views, settings.channel_order, CPU)
    row = result.per_triple[1]
    for p in range(3):
        alone = sample_and_rank_identities(
            bundle, flame, IdentityConditions(conditions.idgen[p : p + 1], conditions.idrank[p : p + 1]),
            n_per_photo=4, top_k=1, sampler="ddim", steps=4, eta=1.0, seed=row["seeds"][p], device=CPU,
            progress=lambda *a: None, should_cancel=lambda: False,
        )  # fmt: skip
        chosen = alone.neutral[alone.keep[0], torch.as_tensor(bundle.front_indices)]
        error = np.linalg.norm((chosen - truth).double().numpy() * 1000.0, axis=1).mean()
        assert row["single"][p] == pytest.approx(error, rel=1e-6)
    singles = np.array([r["single"] for r in result.per_triple])
    pooled = np.array([r["pooled"] for r in result.per_triple])
    assert result.single_mean_mm == pytest.approx(singles.mean())
    assert result.single_best_view_mm == pytest.approx(singles.min(axis=1).mean())
    assert result.pooled_mm == pytest.approx(pooled.mean())
    assert result.pooled_better == int(np.sum(pooled < singles.mean(axis=1)))
    assert f"| {result.pooled_mm:.3f} |" in result.table().splitlines()[2]  # the pooled row comes first


def test_acceptance_pooled_identity_beats_the_mean_single_photo(models: tuple[ModelBundle, FlameLayer]) -> None:
    """Issue 18: on synthetic triples the pooled identity error is below the mean of the single-photo errors.

    12 triples, 32 samples a view, 25 DDIM steps, 128 px (about 20 s). With "demo-weights/6" these measure
    4.06 against 4.33 mm (ratio 0.94); smaller settings (12 samples, 8 steps, 96 px) leave IdGen's clouds too
    coarse for any pooling rule to show (ratio 0.98 with or without the density term), and the README's 30
    triples at full settings give 4.66 against 4.73 mm (seed 0) and 4.29 against 4.99 mm (seed 1).
    """
    bundle, flame = models
    renderer = SyntheticRenderer(bundle.flame, SyntheticConfig(size=128))
    front = torch.as_tensor(bundle.front_indices)
    n, pooled, singles = 32, [], []
    for t in range(12):
        shape, views = render_views(renderer, np.random.default_rng([11, t]), 3)
        truth = flame.neutral(torch.as_tensor(shape[None])).vertices[0, front].double().numpy() * 1000.0
        got = sample_and_rank_identities(
            bundle, flame, view_conditions(bundle, views, "BGR", CPU), n_per_photo=n, top_k=1, sampler="ddim",
            steps=25, eta=1.0, seed=11 + 1000 * t, device=CPU, progress=lambda *a: None, should_cancel=lambda: False,
        )  # fmt: skip
        errors = np.linalg.norm(got.neutral[:, front].double().numpy() * 1000.0 - truth, axis=-1).mean(axis=1)
        log_p = got.per_photo_log_probabilities
        # A single photo's choice: its own IdRank's best of its own n draws (what a one-photo run returns).
        singles.append(np.mean([errors[p * n + int(np.argmax(log_p[p, p * n : (p + 1) * n]))] for p in range(3)]))
        pooled.append(errors[got.keep[0]])
    assert np.mean(pooled) < np.mean(singles), (pooled, singles)
