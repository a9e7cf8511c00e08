"""The bundle's CUDA graph replay of the denoisers: on by default on a CUDA device, never on the CPU, the same
samples as the plain modules (GPU part skipped without one)."""

from __future__ import annotations

import functools
from collections.abc import Callable

import pytest
import torch

from inference_server.assets_config import resolve_assets
from inference_server.backends import (
    CUDA_GRAPHS_ENV,
    CUDA_WHOLE_STEPS_ENV,
    cuda_graphs_requested,
    whole_steps_requested,
)
from inference_server.diffusion import sample
from inference_server.errors import BadRequestError
from inference_server.model_bundle import ModelBundle, load_model_bundle


@functools.cache
def _demo_bundle() -> ModelBundle:
    return load_model_bundle(resolve_assets({}))


@pytest.mark.parametrize(
    ("name", "read", "unset"),
    [(CUDA_GRAPHS_ENV, cuda_graphs_requested, True), (CUDA_WHOLE_STEPS_ENV, whole_steps_requested, False)],
)
def test_the_cuda_switches_default_read_on_and_off_and_refuse_a_typo(
    name: str, read: Callable[[dict[str, str]], bool], unset: bool
) -> None:
    """Graph replay is on unless turned off; whole steps are off unless turned on (until a GPU has measured them)."""
    assert read({}) is unset
    assert read({name: "0"}) is False and read({name: "off"}) is False
    assert read({name: "1"}) is True
    with pytest.raises(BadRequestError, match=name):
        read({name: "maybe"})


def test_the_bundle_hands_the_sampler_its_whole_steps_where_graphs_replay(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the bundle replays graphs and whole steps are asked for, ``sample`` goes through the whole-step
    sampler (here its eager body: the CPU cannot capture) and gets the plain module's samples bit for bit; the
    result's meta says so. Without the switch nothing changes."""
    bundle = _demo_bundle()
    context = torch.nn.functional.normalize(torch.randn(1, 512, generator=torch.Generator().manual_seed(8)), dim=1)
    settings = dict(sampler="ddpm", steps=30, seed=2)
    bundle.fuse_denoisers = False
    try:
        want = sample(bundle.idgen_denoiser, context, 20, 300, **settings)  # type: ignore[arg-type]
        assert bundle.idgen_denoiser.plan_runner() is None
        monkeypatch.setattr(bundle, "_replays_graphs", lambda: True)
        assert bundle.idgen_denoiser.plan_runner() is None  # graphs alone: the network-only replay
        bundle.cuda_whole_steps = True
        assert bundle.idgen_denoiser.plan_runner() is not None
        got = sample(bundle.idgen_denoiser, context, 20, 300, **settings)  # type: ignore[arg-type]
        assert bundle.denoiser_runtimes()["idgen"].endswith("CUDA graph replay of whole steps")
    finally:
        bundle.fuse_denoisers, bundle.cuda_whole_steps = True, None
        bundle._whole_steps.clear()
    assert torch.equal(got, want) and want.std() > 0.1


def test_the_cpu_never_replays_graphs_even_when_asked() -> None:
    bundle = _demo_bundle()
    bundle.cuda_graphs = True
    try:
        assert not bundle._replays_graphs()
        context = torch.zeros(1, 512)
        model = bundle.idgen_denoiser
        out = sample(model, context, 4, model.feature_dim, sampler="dpmsolver", steps=3, seed=1)
        assert torch.isfinite(out).all()
    finally:
        bundle.cuda_graphs = None


def test_a_half_precision_bundle_samples_what_float32_samples() -> None:
    """--precision bf16: ``to`` casts the networks wherever the bundle is placed (they stayed fp32 on the CPU
    before); float32 samples in and out of bf16 networks, close to the float32 bundle's samples."""
    reference = _demo_bundle()
    bundle = load_model_bundle(resolve_assets({}), precision="bf16")
    assert next(bundle.idgen.denoiser.parameters()).dtype == torch.float32  # type: ignore[union-attr]
    bundle.to(torch.device("cpu"))
    assert next(bundle.idgen.denoiser.parameters()).dtype == torch.bfloat16  # type: ignore[union-attr]
    context = torch.nn.functional.normalize(torch.randn(1, 512, generator=torch.Generator().manual_seed(5)), dim=1)
    settings = dict(sampler="dpmsolver", steps=10, seed=6)
    reference.fuse_denoisers = False
    try:
        want = sample(reference.idgen_denoiser, context, 16, 300, **settings)  # type: ignore[arg-type]
    finally:
        reference.fuse_denoisers = True
    got = sample(bundle.idgen_denoiser, context, 16, 300, **settings)  # type: ignore[arg-type]
    assert got.dtype == torch.float32 and torch.isfinite(got).all()
    assert (got - want).norm() / want.norm() < 0.05


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_graph_replay_gives_the_plain_modules_samples_on_cuda(dtype: torch.dtype) -> None:
    bundle = load_model_bundle(resolve_assets({}), precision={torch.float32: "fp32", torch.float16: "fp16"}[dtype])
    bundle.to(torch.device("cuda"))
    context = torch.nn.functional.normalize(torch.randn(1, 512, generator=torch.Generator().manual_seed(3)), dim=1)
    runs = {}
    for graphs in (False, True):
        bundle.cuda_graphs = graphs
        model = bundle.idgen_denoiser
        runs[graphs] = sample(model, context.cuda(), 100, model.feature_dim, sampler="ddpm", steps=50, seed=4,
                              device="cuda")  # fmt: skip
        assert ("idgen" in bundle._fused) is graphs
        assert bundle.denoiser_runtimes()["idgen"].endswith("CUDA graph replay") is graphs
    assert runs[True].dtype == torch.float32
    torch.testing.assert_close(runs[True], runs[False], atol=1e-5, rtol=0)
    assert runs[True].std() > 0.1
    bundle.cuda_graphs, bundle.cuda_whole_steps = True, True
    for _ in range(2):  # capture, then replay
        whole = sample(model, context.cuda(), 100, model.feature_dim, sampler="ddpm", steps=50, seed=4, device="cuda")
        assert bundle.denoiser_runtimes()["idgen"].endswith("CUDA graph replay of whole steps")
        # The update's scaled adds may round differently from run_plan's; a half network can amplify that.
        torch.testing.assert_close(whole, runs[False], atol=1e-5 if dtype == torch.float32 else 2e-3, rtol=0)
