from __future__ import annotations

from pathlib import Path

import pytest
import torch

from inference_server.diffusion import sample
from inference_server.nets.denoiser import EXPGEN_CONFIG, IDGEN_CONFIG, Denoiser, DenoiserConfig
from inference_server.train.initialisation import start_at_identity
from inference_server.train.presets import PRESETS
from inference_server.train.trainer import Trainer

from .test_trainer import tiny_config


@pytest.mark.parametrize("config", [PRESETS["demo"].idgen, PRESETS["demo"].expgen, IDGEN_CONFIG, EXPGEN_CONFIG])
def test_the_identity_start_predicts_x_t_at_every_timestep(config: DenoiserConfig) -> None:
    torch.manual_seed(0)
    net = Denoiser(config)
    start_at_identity(net)
    x = torch.randn(32, config.feature_dim)
    for t in (0, 500, 999):
        with torch.no_grad():
            eps = net(x, torch.full((32,), t), torch.randn(32, config.context_dim))
        assert float((eps - x).norm() / x.norm()) < 0.1


def test_the_identity_start_keeps_every_parameter_name_and_shape() -> None:
    config = PRESETS["demo"].idgen
    fresh, started = Denoiser(config), Denoiser(config)
    start_at_identity(started)
    a, b = fresh.state_dict(), started.state_dict()
    assert a.keys() == b.keys()
    assert all(a[k].shape == b[k].shape for k in a)


def test_an_untrained_identity_start_samples_near_the_origin_while_the_default_start_explodes() -> None:
    """What the samplers do with ε errors at t ≈ T: the identity start has none to amplify."""
    config = PRESETS["demo"].idgen
    torch.manual_seed(0)
    default, started = Denoiser(config).eval(), Denoiser(config).eval()
    start_at_identity(started)
    context = torch.zeros(1, config.context_dim)
    with torch.no_grad():
        stds = [
            float(sample(net, context, 64, config.feature_dim, sampler="ddim", steps=25, eta=1.0, seed=1).std())
            for net in (default, started)
        ]
    assert stds[1] < 1.0 < 3 * stds[1] < stds[0]


def test_the_trainer_starts_at_identity_only_when_asked(synthetic_set: Path, tmp_path: Path) -> None:
    x = torch.randn(8, 300)
    t, context = torch.full((8,), 900), torch.zeros(8, 512)
    errors = {}
    for flag in (False, True):
        trainer = Trainer(tiny_config("idgen", synthetic_set, tmp_path / str(flag), identity_init=flag))
        denoiser = trainer.networks.denoiser
        assert denoiser is not None
        with torch.no_grad():
            errors[flag] = float((denoiser(x, t, context) - x).norm() / x.norm())
        trainer.close()
    assert errors[True] < 0.1 < errors[False]


def test_the_residual_scale_is_checked() -> None:
    with pytest.raises(ValueError, match="residual_scale"):
        start_at_identity(Denoiser(PRESETS["tiny"].idgen), residual_scale=2.0)


def test_the_ranker_start_on_deviations_scores_samples_apart_and_ignores_the_mean() -> None:
    from inference_server.nets.idrank import IdRank, IdRankConfig, build_rank_input
    from inference_server.train.initialisation import start_on_deviations

    torch.manual_seed(0)
    config = IdRankConfig(hidden_dims=(64, 64, 64, 64))
    fresh, started = IdRank(config), IdRank(config)
    started.load_state_dict(fresh.state_dict())
    start_on_deviations(started)
    # DEMO-like front meshes in mm: coordinates of tens of mm, samples ~1 mm apart.
    vertices = 60.0 * torch.randn(1, config.input_dim // 6, 3) + torch.randn(32, config.input_dim // 6, 3)
    context = torch.randn(1, 1024).expand(32, -1)
    with torch.no_grad():
        before = fresh(build_rank_input(vertices), context).flatten()
        after = started(build_rank_input(vertices), context).flatten()
        moved = started(build_rank_input(vertices + 25.0), context).flatten()
    assert float(after.std()) > 5 * float(before.std())
    torch.testing.assert_close(moved, after)  # the shared mean no longer enters


def test_the_ranker_start_keeps_how_far_a_sample_lies_from_the_mean() -> None:
    """GroupNorm alone normalises W·d and 3·W·d alike; the constant reference channels keep the difference."""
    import torch.nn.functional as F

    from inference_server.nets.idrank import IdRank, IdRankConfig, RankLayer
    from inference_server.train.initialisation import start_on_deviations

    torch.manual_seed(0)
    config = IdRankConfig(hidden_dims=(64, 64, 64, 64))
    net = IdRank(config)
    start_on_deviations(net)
    first = net.ranklayers[0]
    assert isinstance(first, RankLayer) and first.gn is not None
    gn = first.gn
    deviation = torch.randn(1, config.input_dim)
    deviation[:, : config.input_dim // 2] = 0.0  # the mean half is ignored anyway

    def normalised(x: torch.Tensor) -> torch.Tensor:
        return gn(F.selu(first.mlp(x)))

    with torch.no_grad():
        near, far = normalised(0.1 * deviation), normalised(10.0 * deviation)
    reference = first.mlp.weight.abs().sum(dim=1) == 0
    assert int(reference.sum()) == 32 and torch.equal(reference.view(8, 8)[:, 4:], torch.ones(8, 4, dtype=torch.bool))
    # The constant channels' normalised values shrink as the deviation grows: the size of d is readable.
    assert float(far[0, reference].abs().mean()) < 0.5 * float(near[0, reference].abs().mean())
