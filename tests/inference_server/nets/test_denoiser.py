"""Denoiser: official parameter names and counts, registered attention projections, batch independence."""

from __future__ import annotations

import pytest
import torch

from inference_server.nets.denoiser import (
    ATTENTION_PATHS,
    EXPGEN_CONFIG,
    IDGEN_CONFIG,
    Denoiser,
    DenoiserConfig,
    official_parameter_count,
)

# Appendix B: parameter counts without the attention projections, and selected key shapes.
OFFICIAL = {
    "idgen": (
        IDGEN_CONFIG,
        6_246_954,
        {
            "downs.0.0.mlp.1.weight": (600, 1024),
            "ups.1.1.block1.proj.weight": (300, 600, 1),
            "ups.0.0.2.weight": (50, 10),
            "mid_attn.fn.norm.g": (1, 10, 1),
        },
    ),
    "expgen": (
        EXPGEN_CONFIG,
        1_815_673,
        {
            "downs.0.0.mlp.1.weight": (106, 1536),
            "finals.0.0.res_conv.weight": (53, 106, 1),
            "ups.1.0.2.weight": (53, 25),
            "downs.1.2.fn.fn.to_out.weight": (25, 128, 1),
        },
    ),
}


@pytest.mark.parametrize("name", ["idgen", "expgen"])
def test_official_names_shapes_and_counts(name: str) -> None:
    config, count, samples = OFFICIAL[name]
    model = Denoiser(config)
    state = model.state_dict()
    projections = [k for k in state if ".fn.fn.to_qkv." in k]
    assert official_parameter_count(model) == count
    assert len(state) - len(projections) == 174
    assert sorted(model.attention_paths()) == sorted(ATTENTION_PATHS)
    for path in ATTENTION_PATHS:
        d = state[f"{path}.fn.fn.to_out.weight"].shape[0]
        for i in range(16):
            assert state[f"{path}.fn.fn.to_qkv.{i}.weight"].shape == (384, d, 1)
    assert len(projections) == 6 * 16
    for key, shape in samples.items():
        assert tuple(state[key].shape) == shape
    # Every state-dict entry is a trainable parameter (the projections are registered).
    assert sum(p.numel() for p in model.parameters()) == sum(v.numel() for v in state.values())


def test_projection_slots_load_and_save_individually() -> None:
    model = Denoiser(EXPGEN_CONFIG)
    state = model.state_dict()
    key = "mid_attn.fn.fn.to_qkv.7.weight"
    state[key] = torch.full_like(state[key], 0.25)
    model.load_state_dict(state)
    assert torch.equal(model.state_dict()[key], state[key])
    assert not torch.equal(model.state_dict()["mid_attn.fn.fn.to_qkv.6.weight"], state[key])
    del state["mid_attn.fn.fn.to_qkv.3.weight"]
    with pytest.raises(RuntimeError, match=r"Missing key.*to_qkv\.3\.weight"):
        model.load_state_dict(state)


@pytest.mark.parametrize("config", [IDGEN_CONFIG, EXPGEN_CONFIG], ids=["idgen", "expgen"])
def test_each_row_is_independent_of_the_batch(config: DenoiserConfig) -> None:
    torch.manual_seed(0)
    model = Denoiser(config).eval()
    x = torch.randn(7, config.feature_dim)
    t = torch.tensor([0, 3, 100, 500, 777, 998, 999])
    c = torch.randn(7, config.context_dim)
    with torch.no_grad():
        batch = model(x, t, c)
        for i in range(7):
            alone = model(x[i : i + 1], t[i : i + 1], c[i : i + 1])
            torch.testing.assert_close(batch[i : i + 1], alone, atol=1e-5, rtol=0)
        # Float timesteps are the same timesteps.
        torch.testing.assert_close(model(x, t.float(), c), batch, atol=0, rtol=0)
    assert batch.shape == (7, config.feature_dim) and batch.std() > 0.05


def test_all_sixteen_projections_matter() -> None:
    torch.manual_seed(1)
    model = Denoiser(EXPGEN_CONFIG).eval()
    x, t, c = torch.randn(2, 53), torch.tensor([10, 900]), torch.randn(2, 1024)
    with torch.no_grad():
        before = model(x, t, c)
        state = model.state_dict()
        state["finals.0.1.fn.fn.to_qkv.0.weight"] = torch.randn_like(
            state["finals.0.1.fn.fn.to_qkv.0.weight"]
        )
        model.load_state_dict(state)
        assert (model(x, t, c) - before).abs().max() > 1e-4


def test_gradients_reach_every_parameter() -> None:
    model = Denoiser(DenoiserConfig(feature_dim=6, dims=(6, 4, 2), context_dim=8, time_dim=16))
    out = model(torch.randn(3, 6), torch.tensor([1, 2, 3]), torch.randn(3, 8))
    out.square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_bad_config() -> None:
    with pytest.raises(ValueError, match="dims must start with feature_dim"):
        DenoiserConfig(feature_dim=5, dims=(6, 3), context_dim=4)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::DeprecationWarning")
def test_traceable_with_the_projections_as_one_parameter() -> None:
    # Tracers and the ONNX exporter read state_dict(keep_vars=True); it must give real parameters.
    torch.manual_seed(2)
    model = Denoiser(DenoiserConfig(feature_dim=7, dims=(7, 5, 3), context_dim=6, time_dim=16)).eval()
    live = model.state_dict(keep_vars=True)
    assert all(isinstance(v, torch.nn.Parameter) for v in live.values())
    x, t, c = torch.randn(4, 7), torch.tensor([0, 5, 50, 999]), torch.randn(4, 6)
    with torch.no_grad():
        traced = torch.jit.trace(model, (x, t, c))
        x2, t2, c2 = torch.randn(2, 7), torch.tensor([3, 700]), torch.randn(2, 6)
        torch.testing.assert_close(traced(x2, t2, c2), model(x2, t2, c2), atol=1e-6, rtol=0)
