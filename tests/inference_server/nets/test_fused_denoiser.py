"""The fused CPU step computes the plain Denoiser's function: per step, over whole sampling runs, in the bundle."""

from __future__ import annotations

import functools

import pytest
import torch

from inference_server.assets_config import resolve_assets
from inference_server.diffusion import sample
from inference_server.model_bundle import ModelBundle, load_model_bundle
from inference_server.nets.denoiser import EXPGEN_CONFIG, IDGEN_CONFIG, Denoiser, DenoiserConfig
from inference_server.nets.fused_denoiser import FusedDenoiser, mkldnn_linear_available

CONFIGS = {"idgen": IDGEN_CONFIG, "expgen": EXPGEN_CONFIG}


def random_official_denoiser(name: str, seed: int) -> Denoiser:
    """Official-size network with every parameter random, norms and pooling included (nothing at 1 or 0)."""
    torch.manual_seed(seed)
    net = Denoiser(CONFIGS[name]).eval()
    with torch.no_grad():
        for key, param in net.named_parameters():
            if key.endswith((".g", "norm.weight")):
                param.uniform_(0.5, 1.5)
            elif key.endswith("norm.bias") or "to_out_linear" in key:
                param.normal_(0.0, 0.3)
    return net


@functools.cache
def _net(name: str) -> Denoiser:
    return random_official_denoiser(name, {"idgen": 1, "expgen": 2}[name])


@functools.cache
def _fused(name: str) -> FusedDenoiser:
    return FusedDenoiser(_net(name))


def _assert_close(got: torch.Tensor, want: torch.Tensor, rel: float = 1e-5) -> None:
    """Relative to the output's scale: |got - want| <= rel * max|want| everywhere."""
    assert got.shape == want.shape and got.dtype == want.dtype
    error = (got - want).abs().max().item()
    assert error <= rel * want.abs().max().item(), f"max error {error:.3g}, scale {want.abs().max().item():.3g}"


@pytest.mark.parametrize("name", ["idgen", "expgen"])
@pytest.mark.parametrize("batch", [1, 100])
def test_fused_step_equals_the_plain_denoiser(name: str, batch: int) -> None:
    net, fused = _net(name), _fused(name)
    config = net.config
    g = torch.Generator().manual_seed(batch)
    x = torch.randn(batch, config.feature_dim, generator=g) * 2.0
    context = torch.randn(1, config.context_dim, generator=g)
    for step in (999, 500, 37, 1, 0):
        t = torch.tensor([step])
        with torch.no_grad():
            want = net(x, t.expand(batch), context.expand(batch, -1))
        _assert_close(fused(x, t.expand(batch), context.expand(batch, -1)), want)  # how the samplers call it
        _assert_close(fused(x, t, context), want)  # one-row t and context


def test_a_new_context_and_unusual_timesteps_are_not_served_from_memory() -> None:
    net, fused = _net("expgen"), _fused("expgen")
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 53, generator=g)
    first, second = torch.randn(1, 1024, generator=g), torch.randn(1, 1024, generator=g)
    for context in (first, second, first):  # the per-image FiLM part follows the context
        with torch.no_grad():
            want = net(x, torch.tensor([250]), context)
        _assert_close(fused(x, torch.tensor([250]), context), want)
    for t in (torch.tensor([12.5]), torch.tensor([1500]), torch.tensor([-3])):  # outside the memo: computed
        with torch.no_grad():
            want = net(x, t, first)
        _assert_close(fused(x, t, first), want)
    assert 12 not in fused._time_rows and 1500 not in fused._time_rows


def test_dense_conditions_and_other_dtypes_run_the_plain_module_unchanged() -> None:
    net, fused = _net("expgen"), _fused("expgen")
    g = torch.Generator().manual_seed(4)
    x = torch.randn(5, 53, generator=g)
    t, context = torch.tensor([3, 90, 400, 700, 999]), torch.randn(5, 1024, generator=g)
    with torch.no_grad():
        assert torch.equal(fused(x, t, context), net(x, t, context))
        x64, ctx64 = x.double(), context[:1].double()
        assert not fused.handles(x64, t[:1], ctx64)


@pytest.mark.skipif(not mkldnn_linear_available(), reason="this torch build has no oneDNN linear")
def test_without_onednn_the_same_function() -> None:
    net, fused = _net("idgen"), _fused("idgen")
    plain_gemm = FusedDenoiser(net, use_mkldnn=False)
    assert fused.uses_mkldnn and not plain_gemm.uses_mkldnn
    x, context, t = torch.randn(7, 300), torch.randn(1, 512), torch.tensor([640])
    with torch.no_grad():
        want = net(x, t, context)
    _assert_close(plain_gemm(x, t, context), want)
    _assert_close(fused(x, t, context), want)


def _small(name: str) -> Denoiser:
    """Official structure, narrower (fast enough for whole sampling runs in a test)."""
    torch.manual_seed(5)
    base = CONFIGS[name]
    config = DenoiserConfig(feature_dim=base.feature_dim, dims=base.dims, context_dim=base.context_dim, time_dim=64,
                            n_tokens=4, heads=2, head_dim=8)  # fmt: skip
    return Denoiser(config).eval()


@pytest.mark.parametrize(("name", "sampler", "steps"), [("expgen", "ddpm", 1000), ("idgen", "dpmsolver", 20)])
def test_whole_sampling_runs_give_the_same_samples(name: str, sampler: str, steps: int) -> None:
    net = _small(name)
    context = torch.randn(1, net.config.context_dim, generator=torch.Generator().manual_seed(6))
    runs = {
        label: sample(model, context, 16, net.config.feature_dim, sampler=sampler, steps=steps, seed=7)
        for label, model in (("plain", net), ("fused", FusedDenoiser(net)))
    }
    # Stated tolerance: 1e-4 of the samples' scale after the whole chain (measured: 3e-7 DDPM, 8e-7 DPM-Solver).
    _assert_close(runs["fused"], runs["plain"], rel=1e-4)
    assert runs["plain"].std() > 0.1  # real samples, not a collapsed chain


@functools.cache
def _demo_bundle() -> ModelBundle:
    return load_model_bundle(resolve_assets({}))


def test_the_bundle_samples_with_the_fused_step_by_default_and_the_flag_turns_it_off() -> None:
    bundle = _demo_bundle()
    assert bundle.idgen.denoiser is not None
    state_before = {k: v.clone() for k, v in bundle.idgen.denoiser.state_dict().items()}
    context = torch.nn.functional.normalize(torch.randn(1, 512, generator=torch.Generator().manual_seed(8)), dim=1)
    model = bundle.idgen_denoiser
    settings = dict(sampler="ddpm", steps=50, seed=9)

    bundle.fuse_denoisers = False
    plain = sample(model, context, 12, model.feature_dim, **settings)  # type: ignore[arg-type]
    assert "idgen" not in bundle._fused
    bundle.fuse_denoisers = True
    fused = sample(model, context, 12, model.feature_dim, **settings)  # type: ignore[arg-type]
    assert "idgen" in bundle._fused and "expgen" not in bundle._fused
    _assert_close(fused, plain, rel=1e-4)
    # The module, its state dict and so the checkpoint layout are untouched by fusing.
    state_after = bundle.idgen.denoiser.state_dict()
    assert state_after.keys() == state_before.keys()
    assert all(torch.equal(state_after[k], state_before[k]) for k in state_before)
