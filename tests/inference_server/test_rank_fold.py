"""IdRank folded through FLAME's shape basis scores identity samples as the vertex path does.

The vertex path (the official recipe: neutral meshes → front-face vertices in mm → IdRank) is the reference.
Tolerance: the two differ only by float32 rounding (the vertex path rounds 16k-vertex meshes, then a
10,710-wide product; the fold a 300-wide one): measured ≤ 6e-5 on first-layer outputs of magnitude ~100 and
≤ 11 float32 steps of the largest logit + 1.1e-5; the tests allow 16 steps + 3e-5. In float64 the two agree
to 1e-9: the fold is exact algebra, not an approximation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
import torch

from inference_server import rank_fold
from inference_server.assets_config import resolve_assets
from inference_server.flame.layer import FlameLayer
from inference_server.identity_stage import IdentityConditions, sample_and_rank_identities
from inference_server.model_bundle import ModelBundle
from inference_server.nets.idrank import IdRank, RankLayer, build_rank_input
from inference_server.pipeline import Reconstructor
from inference_server.protocol import ReconstructArgs
from inference_server.rank_fold import cached_fold, fold_first_layer, fold_key

CPU = torch.device("cpu")
SAMPLE = Path(__file__).resolve().parents[2] / "inference_server" / "assets" / "sample_occluded_face.jpg"
ULPS = 16
ATOL = 3e-5  # the first layer's rounding carried through the network (measured ≤ 1.1e-5 at N = 1)


@pytest.fixture(scope="module")
def reconstructor() -> Reconstructor:
    return Reconstructor(resolve_assets({}), device="cpu")


@pytest.fixture(scope="module")
def models(reconstructor: Reconstructor) -> tuple[ModelBundle, FlameLayer]:
    bundle = reconstructor.bundle(CPU)
    return bundle, reconstructor.flame_layer(bundle, CPU)


def _front_mm(flame: FlameLayer, bundle: ModelBundle, shapes: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return flame.neutral(shapes.to(flame.dtype)).vertices[:, torch.as_tensor(bundle.front_indices)] * 1000.0


def _assert_same_ranking(reference: torch.Tensor, folded: torch.Tensor, *, exact_order: bool) -> None:
    """Scores within ``ULPS`` float32 steps of the largest logit + ``ATOL`` (measured: ≤ 11 steps), and the same order —
    exactly where the logits are spread (official size), and up to swaps of scores closer than that rounding
    where they are not (the DEMO ranker puts 100 samples within ~80 float32 steps of each other)."""
    tolerance = ULPS * torch.finfo(torch.float32).eps * float(reference.abs().max()) + ATOL
    assert float((folded - reference).abs().max()) <= tolerance
    order = torch.argsort(reference, descending=True, stable=True)
    if exact_order:
        assert torch.equal(torch.argsort(folded, descending=True, stable=True), order)
        return
    along = folded[order]  # the folded scores in the reference's order only rise between near-ties
    assert bool(torch.all(along[1:] <= along[:-1] + 2 * tolerance))
    ranked = reference[order]
    if len(ranked) > 1 and float(ranked[0] - ranked[1]) > 2 * tolerance:
        assert int(torch.argmax(folded)) == int(order[0])


@pytest.mark.parametrize("n", [1, 2, 100])
def test_demo_weights_fold_scores_like_the_vertex_path(models: tuple[ModelBundle, FlameLayer], n: int) -> None:
    bundle, flame = models
    folded = bundle.folded_rank(flame)
    assert folded is not None and folded.n_shape == flame.n_shape
    g = torch.Generator().manual_seed(n)
    shapes = torch.randn(n, bundle.idgen_denoiser.feature_dim, generator=g)
    for _photo in range(3):  # several photos' contexts
        context = torch.randn(1, 1024, generator=g)
        with torch.no_grad():
            reference = bundle.score_shapes(_front_mm(flame, bundle, shapes), context)
            got = bundle.score_coefficients(folded, shapes, context)
        assert got.shape == (n,)
        _assert_same_ranking(reference, got, exact_order=False)


def test_official_size_random_idrank_on_the_demo_head(models: tuple[ModelBundle, FlameLayer]) -> None:
    bundle, flame = models
    torch.manual_seed(0)
    net = IdRank().eval()
    # Spread the logits as trained weights do (random ones bunch them within 1e-3): scale the last layer.
    with torch.no_grad():
        cast(RankLayer, net.ranklayers[-1]).mlp.weight.mul_(100.0)
    folded = fold_first_layer(net, flame, bundle.front_indices)
    g = torch.Generator().manual_seed(1)
    for n in (1, 2, 100):
        shapes = torch.randn(n, flame.n_shape, generator=g) * 1.5
        x = build_rank_input(_front_mm(flame, bundle, shapes))
        with torch.no_grad():
            hidden = folded(shapes)
            torch.testing.assert_close(hidden, net.first_linear(x), rtol=1e-5, atol=2e-4)
            for _ in range(2):
                context = torch.randn(1, 1024, generator=g)
                reference = net(x, context.expand(n, -1))
                _assert_same_ranking(reference, net.forward_from_first_linear(hidden, context), exact_order=True)


def test_float64_fold_is_exact_algebra(models: tuple[ModelBundle, FlameLayer]) -> None:
    """In float64 (net and FLAME layer) the fold and the vertex path agree to rounding of float64."""
    bundle, _ = models
    flame64 = FlameLayer(bundle.flame, dtype=torch.float64)
    assert not flame64.unit_weights  # the DEMO head's skin-weight sums are folded in too
    torch.manual_seed(2)
    net = IdRank(bundle.idrank.rank_net.config).double().eval()  # type: ignore[union-attr]
    folded = fold_first_layer(net, flame64, bundle.front_indices)
    shapes = torch.randn(7, flame64.n_shape, dtype=torch.float64)
    with torch.no_grad():
        front = flame64.neutral(shapes).vertices[:, torch.as_tensor(bundle.front_indices)] * 1000.0
        x = torch.cat([front.mean(0, keepdim=True).expand_as(front), front - front.mean(0)], dim=1).reshape(7, -1)
        torch.testing.assert_close(folded(shapes), net.first_linear(x), rtol=1e-9, atol=1e-9)
        # fewer coefficients than the basis has: the missing ones are zero
        torch.testing.assert_close(
            folded(shapes[:, :40]), folded(torch.nn.functional.pad(shapes[:, :40], (0, 260))), rtol=1e-12, atol=1e-9
        )


def test_fold_refuses_what_it_cannot_fold(models: tuple[ModelBundle, FlameLayer]) -> None:
    bundle, flame = models

    class PosedFlame(FlameLayer):  # any other head model keeps the vertex path
        pass

    assert bundle.folded_rank(PosedFlame(bundle.flame)) is None
    bundle.fold_rank = False
    try:
        assert bundle.folded_rank(flame) is None
    finally:
        bundle.fold_rank = True
    assert bundle.folded_rank(flame) is bundle.folded_rank(flame)  # computed once, kept
    with pytest.raises(ValueError, match="front-face"):
        fold_first_layer(bundle.idrank.rank_net, flame, bundle.front_indices[:100])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="coefficients"):
        bundle.folded_rank(flame)(torch.zeros(3, flame.n_shape + 1))  # type: ignore[misc]


@pytest.mark.parametrize("n_photos", [1, 3])
def test_identity_stage_ranks_alike_with_and_without_the_fold(
    models: tuple[ModelBundle, FlameLayer], n_photos: int
) -> None:
    bundle, flame = models
    g = torch.Generator().manual_seed(n_photos)
    cond = IdentityConditions(
        idgen=torch.nn.functional.normalize(torch.randn(n_photos, 512, generator=g), dim=1),
        idrank=torch.randn(n_photos, 1024, generator=g),
    )
    settings: dict[str, Any] = dict(n_per_photo=10, top_k=4, sampler="ddim", steps=4, eta=1.0, seed=9, device=CPU)
    vertex, folded = (
        sample_and_rank_identities(
            bundle, flame, cond, progress=lambda *a: None, should_cancel=lambda: False, fold_rank=fold, **settings
        )
        for fold in (False, True)
    )
    assert torch.equal(vertex.shapes, folded.shapes) and torch.equal(vertex.neutral, folded.neutral)
    np.testing.assert_allclose(folded.per_photo_log_probabilities, vertex.per_photo_log_probabilities, atol=1e-4)
    np.testing.assert_allclose(folded.probabilities, vertex.probabilities, rtol=1e-4, atol=1e-9)
    np.testing.assert_array_equal(folded.keep, vertex.keep)


def test_whole_reconstruction_keeps_the_same_identities(reconstructor: Reconstructor, tmp_path: Path) -> None:
    bundle = reconstructor.bundle(CPU)
    results = {}
    for fold in (False, True):
        bundle.fold_rank = fold
        args = ReconstructArgs(
            image=str(SAMPLE), output=str(tmp_path / f"{fold}.npz"), n_shapes=16, n_expressions=4, top_k=6,
            sampler="ddpm", steps=None, seed=3, extra={"preset": "fast"},
        )  # fmt: skip
        results[fold] = reconstructor.run(args, lambda *a: None, lambda: False).result
    bundle.fold_rank = True
    vertex, folded = results[False], results[True]
    np.testing.assert_array_equal(folded.identity_params, vertex.identity_params)  # same samples, same order
    np.testing.assert_allclose(folded.identity_scores, vertex.identity_scores, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(folded.identity_vertices, vertex.identity_vertices)
    np.testing.assert_array_equal(folded.spread_identity, vertex.spread_identity)


def _official_size_net(seed: int) -> IdRank:
    torch.manual_seed(seed)
    return IdRank().eval()


def _assert_same_fold(a: rank_fold.FoldedFirstLayer, b: rank_fold.FoldedFirstLayer) -> None:
    for name in ("mean_weight", "offset_weight", "bias"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name


def test_fold_cache_serves_the_same_fold_and_never_a_stale_or_foreign_one(
    models: tuple[ModelBundle, FlameLayer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle, flame = models
    net = _official_size_net(5)
    fresh = fold_first_layer(net, flame, bundle.front_indices)
    first = cached_fold(net, flame, bundle.front_indices, tmp_path)
    _assert_same_fold(first, fresh)
    (path,) = (tmp_path / rank_fold.CACHE_FOLDER).glob("*.pt")
    calls: list[int] = []
    real = rank_fold.fold_first_layer

    def spy(*a: Any) -> rank_fold.FoldedFirstLayer:
        calls.append(1)
        return real(*a)

    monkeypatch.setattr(rank_fold, "fold_first_layer", spy)
    _assert_same_fold(cached_fold(net, flame, bundle.front_indices, tmp_path), fresh)
    assert calls == []  # read from the cache, not folded
    # one weight of the first layer nudged by one float32 step: another key, folded anew, not the stored one
    tuned = _official_size_net(5)
    with torch.no_grad():
        w = tuned.first_linear.weight.view(-1)
        w[123] = torch.nextafter(w[123], torch.tensor(10.0))
    assert fold_key(tuned, flame, bundle.front_indices) != fold_key(net, flame, bundle.front_indices)
    _assert_same_fold(
        cached_fold(tuned, flame, bundle.front_indices, tmp_path), real(tuned, flame, bundle.front_indices)
    )
    assert calls == [1]
    # a foreign file under this key's name (another IdRank's fold) and a damaged one: both refused
    other = _official_size_net(6)
    cached_fold(other, flame, bundle.front_indices, tmp_path)
    other_path = next(
        p
        for p in (tmp_path / rank_fold.CACHE_FOLDER).glob("*.pt")
        if p.name.startswith(fold_key(other, flame, bundle.front_indices))
    )
    path.write_bytes(other_path.read_bytes())
    _assert_same_fold(cached_fold(net, flame, bundle.front_indices, tmp_path), fresh)
    assert len(calls) == 3  # other's fold, then this one again
    path.write_bytes(path.read_bytes()[:1000])
    _assert_same_fold(cached_fold(net, flame, bundle.front_indices, tmp_path), fresh)
    assert len(calls) == 4
    _assert_same_fold(cached_fold(net, flame, bundle.front_indices, tmp_path), fresh)  # repaired: served again
    assert len(calls) == 4
    front = bundle.front_indices.copy()
    front[[0, 1]] = front[[1, 0]]  # other front-face rows (same count): another key
    assert fold_key(net, flame, front) != fold_key(net, flame, bundle.front_indices)
