"""Denoiser: official parameter names and counts, registered attention projections, batch independence."""

from __future__ import annotations

import pytest
import torch

from inference_server.nets.denoiser import (
    ATTENTION_PATHS,
    EXPGEN_CONFIG,
    IDGEN_CONFIG,
    Attention,
    Denoiser,
    DenoiserConfig,
    official_parameter_count,
    shared_condition,
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
        state["finals.0.1.fn.fn.to_qkv.0.weight"] = torch.randn_like(state["finals.0.1.fn.fn.to_qkv.0.weight"])
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


# -- the sampling fast path: one shared FiLM condition per step ------------------------------------------
@pytest.mark.parametrize("config", [IDGEN_CONFIG, EXPGEN_CONFIG], ids=["idgen", "expgen"])
def test_shared_condition_equals_the_per_row_path(config: DenoiserConfig) -> None:
    torch.manual_seed(1)
    net = Denoiser(config).eval()
    n = 37
    x = torch.randn(n, config.feature_dim)
    t = torch.tensor([417])
    context = torch.randn(1, config.context_dim)
    with torch.no_grad():
        per_row = net(x, t.repeat(n), context.repeat(n, 1))  # dense tensors: the training path
        broadcast = net(x, t.expand(n), context.expand(n, -1))  # what the samplers pass
        one_row = net(x, t, context)
    assert torch.allclose(broadcast, per_row, atol=1e-5, rtol=0)
    assert torch.allclose(one_row, per_row, atol=1e-5, rtol=0)


def test_shared_condition_only_reduces_rows_that_are_one_by_construction() -> None:
    t_dense, c_dense = torch.tensor([5, 5, 5]), torch.ones(3, 4)
    assert shared_condition(t_dense, c_dense)[1].shape == (3, 4)  # equal values, but dense: per row
    t_b, c_b = shared_condition(torch.tensor([5]).expand(3), torch.ones(1, 4).expand(3, 4))
    assert t_b.shape == (1,) and c_b.shape == (1, 4)
    # Only one of the two shared: it is lined up with the other's rows.
    t_m, c_m = shared_condition(torch.tensor([1, 2, 3]), torch.ones(1, 4))
    assert t_m.shape == (3,) and c_m.shape == (3, 4)


def test_per_row_timesteps_still_differ_per_row() -> None:
    torch.manual_seed(2)
    net = Denoiser(EXPGEN_CONFIG).eval()
    x = torch.randn(1, 53).expand(2, 53).contiguous()
    context = torch.randn(1, 1024).expand(2, -1)
    with torch.no_grad():
        out = net(x, torch.tensor([10, 900]), context)
    assert not torch.allclose(out[0], out[1])


def _official_attention(attention: Attention, x: torch.Tensor) -> torch.Tensor:
    """The official order written out: every token through to_out, then the tokens pooled by to_out_linear."""
    heads, head_dim = attention.heads, attention.head_dim
    weight = attention.to_qkv.weight[..., 0]  # (n, 3 * inner, d)
    bias = attention.to_out.bias
    assert bias is not None
    tokens = torch.einsum("nkd,bd->bnk", weight, x)
    q, k, v = tokens.split(heads * head_dim, dim=2)
    b, n = tokens.shape[:2]

    def split(z: torch.Tensor) -> torch.Tensor:
        return z.reshape(b, n, heads, head_dim).transpose(1, 2)

    scores = split(q) @ split(k).transpose(-1, -2) / head_dim**0.5
    out = (scores.softmax(-1) @ split(v)).transpose(1, 2).reshape(b, n, heads * head_dim)
    projected = out @ attention.to_out.weight[:, :, 0].T + bias  # (b, n, d)
    pooled = torch.einsum("bnd,n->bd", projected, attention.to_out_linear.weight[0])
    return pooled + attention.to_out_linear.bias


@pytest.mark.parametrize("path", ["downs.0.2", "mid_attn", "finals.0.1"])
def test_pooled_attention_equals_the_per_token_formula(path: str) -> None:
    torch.manual_seed(3)
    net = Denoiser(IDGEN_CONFIG).eval()
    attention = net.get_submodule(f"{path}.fn.fn")  # Residual → PreNorm → Attention
    assert isinstance(attention, Attention)
    dim = int(attention.to_out.weight.shape[0])
    x = torch.randn(9, dim)
    with torch.no_grad():
        assert torch.allclose(attention(x), _official_attention(attention, x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_weights_run_and_stay_near_float32(dtype: torch.dtype) -> None:
    """A bundle loaded in fp16/bf16 halves the whole module: the float32 time embedding met half weights
    ('mat1 and mat2 must have the same dtype', seen on CUDA). Late timesteps are where half-precision
    frequencies would go wrong, so t = 999 is checked."""
    torch.manual_seed(2)
    net = Denoiser(IDGEN_CONFIG).eval()
    half = Denoiser(IDGEN_CONFIG).eval()
    half.load_state_dict(net.state_dict())
    half.to(dtype)
    x = torch.randn(8, IDGEN_CONFIG.feature_dim)
    context = torch.randn(1, IDGEN_CONFIG.context_dim)
    for step in (0, 500, 999):
        t = torch.tensor([step])
        with torch.no_grad():
            want = net(x, t, context)
            got = half(x.to(dtype), t, context.to(dtype))
        assert got.dtype == dtype
        relative = (got.float() - want).norm() / want.norm()
        assert relative < 0.05, (step, float(relative))
        # the embedding itself within the dtype's rounding (half-precision frequencies: 0.2 / 1.5 off at 999)
        embedding_error = (half.time_mlp[0](t).float() - net.time_mlp[0](t)).abs().max()
        assert embedding_error < 0.01, (step, float(embedding_error))
    assert half.time_mlp[0].frequencies.dtype == dtype  # the buffer follows the module; the angles do not
