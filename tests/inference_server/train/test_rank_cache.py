"""IdRank fitted on cached samples: the folded network equals the trained one, and it learns a prior."""

from __future__ import annotations

import torch

from inference_server.nets.idrank import IdRank, build_rank_input
from inference_server.train.presets import PRESETS
from inference_server.train.rank_cache import RankCache, RankFitSettings, fit_ranker, fold_normalisation

SMALL = PRESETS["demo"].idrank  # 8 channels per GroupNorm group (2 a group cannot learn: presets.py)
V = SMALL.vertex_count


def test_folding_the_normalisation_keeps_the_function_on_raw_inputs() -> None:
    torch.manual_seed(0)
    net = IdRank(SMALL)
    x = torch.randn(6, SMALL.input_dim) * 30.0
    context = torch.randn(1, SMALL.context_dim) * 5.0
    offset = torch.randn(SMALL.input_dim) * 40.0
    context_scale = torch.rand(SMALL.context_dim) + 0.5
    with torch.no_grad():
        expected = net((x - offset) / 4.0, (context / context_scale).expand(6, -1))
    fold_normalisation(net, offset, 4.0, context_scale)
    with torch.no_grad():
        folded = net(x, context.expand(6, -1))
    torch.testing.assert_close(folded, expected, rtol=1e-4, atol=1e-4)


def test_the_ranker_learns_that_samples_near_the_mean_head_are_best() -> None:
    # Every true face is the mean head; samples scatter around it by different amounts. A photo-blind
    # prior ("near the mean head") is all there is to learn, and the "samples' mean" pick cannot find it
    # when the samples share an offset.
    generator = torch.Generator().manual_seed(1)
    mean_head = torch.randn(V, 3, generator=generator) * 50.0
    images, n = 40, 8
    shared = torch.randn(images, 1, V, 3, generator=generator) * 2.0
    radius = torch.rand(images, n, 1, 1, generator=generator) * 4.0
    samples = mean_head + shared + radius * torch.randn(images, n, V, 3, generator=generator)
    truth = mean_head.expand(images, V, 3).clone()
    cache = RankCache(samples, truth, torch.randn(images, SMALL.context_dim, generator=generator))
    torch.manual_seed(0)
    net = IdRank(SMALL)
    losses = fit_ranker(net, cache, mean_head, RankFitSettings(steps=60, batch_images=8, warmup_steps=5))
    assert sum(losses[-10:]) < sum(losses[:10])
    errors = (samples - truth[:, None]).norm(dim=-1).mean(-1)  # (images, n)
    with torch.no_grad():
        picks = torch.stack([net(build_rank_input(s), cache.context[i : i + 1].expand(n, -1)).argmax()
                             for i, s in enumerate(samples)])  # fmt: skip
    ranked = errors[torch.arange(images), picks].mean()
    assert ranked < 0.8 * errors.mean()
