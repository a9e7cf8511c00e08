"""IdRank: appendix E keys and count, the rank input layout, per-row independence, scores."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inference_server.nets.idrank import IdRank, IdRankConfig, RankLayer, build_rank_input, rank_shapes

WIDTHS = (10710, 4096, 1024, 256, 64, 1)


def _appendix_e() -> dict[str, tuple[int, ...]]:
    table: dict[str, tuple[int, ...]] = {}
    for k in range(5):
        out, inp = WIDTHS[k + 1], WIDTHS[k]
        table |= {
            f"ranklayers.{k}.mlp.weight": (out, inp), f"ranklayers.{k}.mlp.bias": (out,),
            f"ranklayers.{k}.scale.weight": (out, 1024), f"ranklayers.{k}.scale.bias": (out,),
            f"ranklayers.{k}.shift.weight": (out, 1024),
        }  # fmt: skip
        if k < 4:
            table |= {f"ranklayers.{k}.gn.weight": (out,), f"ranklayers.{k}.gn.bias": (out,)}
    return table


def test_official_keys_shapes_and_count() -> None:
    model = IdRank()
    state = model.state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == _appendix_e()
    assert len(state) == 33
    assert sum(p.numel() for p in model.parameters()) == 59_505_986


def _reference_logits(model: IdRank, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Spec section 6 written with plain ops in float64: GN(8)(SELU(Wx+b)) * σ(S c + s) + H c."""
    P = {k: v.double() for k, v in model.state_dict().items()}
    h, c = x.double(), c.double()
    for k in range(len(model.ranklayers)):
        h = h @ P[f"ranklayers.{k}.mlp.weight"].T + P[f"ranklayers.{k}.mlp.bias"]
        if f"ranklayers.{k}.gn.weight" in P:
            h = torch.where(h > 0, 1.0507009873554805 * h, 1.0507009873554805 * 1.6732632423543772 * (torch.exp(h) - 1))
            groups = h.reshape(h.shape[0], 8, -1)
            groups = (groups - groups.mean(2, keepdim=True)) / torch.sqrt(
                groups.var(2, unbiased=False, keepdim=True) + 1e-5
            )
            h = groups.reshape(h.shape) * P[f"ranklayers.{k}.gn.weight"] + P[f"ranklayers.{k}.gn.bias"]
        gate = torch.sigmoid(c @ P[f"ranklayers.{k}.scale.weight"].T + P[f"ranklayers.{k}.scale.bias"])
        h = h * gate + c @ P[f"ranklayers.{k}.shift.weight"].T
    return h[:, 0]


def test_small_variant_matches_reference_and_is_batch_independent() -> None:
    torch.manual_seed(0)
    config = IdRankConfig(input_dim=60, hidden_dims=(64, 32, 16), context_dim=24)
    model = IdRank(config).eval()
    with torch.no_grad():
        for p in model.parameters():  # non-trivial norms, so GroupNorm's affine part is exercised
            p.add_(0.1 * torch.randn_like(p))
    x, c = torch.randn(7, 60), torch.randn(7, 24)
    with torch.no_grad():
        logits = model(x, c)
        torch.testing.assert_close(logits.double(), _reference_logits(model, x, c), atol=1e-5, rtol=0)
        for i in range(7):
            torch.testing.assert_close(model(x[i : i + 1], c[i : i + 1]), logits[i : i + 1], atol=1e-5, rtol=0)
        shared = model(x, c[:1])
        torch.testing.assert_close(shared, model(x, c[:1].expand(7, -1)), atol=1e-5, rtol=0)


def test_official_size_batch_independence_and_batch_of_one() -> None:
    torch.manual_seed(1)
    model = IdRank().eval()
    x, c = torch.randn(7, 10710), torch.randn(7, 1024)
    with torch.no_grad():
        logits = model(x, c)
        assert logits.shape == (7,)
        for i in range(7):
            torch.testing.assert_close(model(x[i : i + 1], c[i : i + 1]), logits[i : i + 1], atol=1e-5, rtol=0)


def test_rank_input_layout() -> None:
    rng = np.random.default_rng(0)
    vertices = rng.normal(size=(4, 5, 3)) * 10
    x = build_rank_input(vertices).numpy()
    mean = vertices.mean(axis=0)
    assert x.shape == (4, 30)
    for i in range(4):
        expected = np.concatenate([mean, vertices[i] - mean], axis=0).reshape(-1)  # mean first, xyz per vertex
        np.testing.assert_allclose(x[i], expected, atol=1e-5)
    with pytest.raises(ValueError, match=r"\(N, V, 3\)"):
        build_rank_input(np.zeros((4, 5)))


def test_rank_shapes_scores_and_order() -> None:
    torch.manual_seed(2)
    model = IdRank(IdRankConfig(input_dim=30, hidden_dims=(16, 8), context_dim=12)).eval()
    vertices = torch.randn(6, 5, 3)
    context = torch.randn(1, 12)
    scores = rank_shapes(model, vertices, context)
    with torch.no_grad():
        logits = model(build_rank_input(vertices), context)
    torch.testing.assert_close(scores.logits, logits)
    torch.testing.assert_close(scores.probabilities.sum(), torch.tensor(1.0))
    torch.testing.assert_close(scores.probabilities, torch.softmax(logits, 0))
    assert scores.best == int(logits.argmax())
    assert torch.all(scores.logits[scores.order][:-1] >= scores.logits[scores.order][1:])
    with pytest.raises(ValueError, match="expects 30"):
        rank_shapes(model, torch.randn(6, 4, 3), context)


def test_rows_of_one_image_share_the_mean_half_and_the_context(monkeypatch: pytest.MonkeyPatch) -> None:
    """The samples of one image (same mean half, one context row expanded) take the shared path; the logits
    still match the float64 reference of spec section 6, and rows that share nothing take the per-row path."""
    torch.manual_seed(2)
    model = IdRank().eval()
    vertices = torch.randn(20, 1785, 3) * 30.0
    x = build_rank_input(vertices)
    c = torch.randn(1, 1024).expand(20, -1)
    taken: list[int] = []
    original = RankLayer.shared_head_linear

    def counted(self: RankLayer, h: torch.Tensor) -> torch.Tensor:
        taken.append(h.shape[0])
        return original(self, h)

    monkeypatch.setattr(RankLayer, "shared_head_linear", counted)
    with torch.no_grad():
        shared = model(x, c)
        assert taken == [20]
        reference = _reference_logits(model, x, c)
        torch.testing.assert_close(shared.double(), reference, atol=1e-4, rtol=0)
        torch.testing.assert_close(shared, model.forward_per_row(x, c), atol=1e-5, rtol=0)
        assert float(reference.std()) > 1e-2  # the samples are told apart, so the comparison means something
        distinct = torch.randn(5, 10710)
        model(distinct, c[:5].contiguous())
        assert taken == [20]  # rows without a common half: plain per-row path
