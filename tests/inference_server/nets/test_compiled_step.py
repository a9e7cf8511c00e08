"""The inductor-compiled fused step computes the plain Denoiser's function, and falls back cleanly."""

from __future__ import annotations

import functools
import logging

import pytest
import torch

from inference_server.nets import compiled_step
from inference_server.nets.compiled_step import CompiledStep, compile_requested, compiler_available
from inference_server.nets.denoiser import EXPGEN_CONFIG, IDGEN_CONFIG, Denoiser
from inference_server.nets.fused_denoiser import FusedDenoiser
from tests.inference_server.nets.test_fused_denoiser import random_official_denoiser

CONFIGS = {"idgen": IDGEN_CONFIG, "expgen": EXPGEN_CONFIG}


@functools.cache
def _net(name: str) -> Denoiser:
    return random_official_denoiser(name, {"idgen": 5, "expgen": 6}[name])


def _assert_close(got: torch.Tensor, want: torch.Tensor, rel: float = 1e-5) -> None:
    assert got.shape == want.shape and got.dtype == want.dtype
    error = (got - want).abs().max().item()
    assert error <= rel * want.abs().max().item(), f"max error {error:.3g}, scale {want.abs().max().item():.3g}"


def _inputs(name: str, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(batch)
    config = CONFIGS[name]
    return torch.randn(batch, config.feature_dim, generator=g) * 2.0, torch.randn(1, config.context_dim, generator=g)


@pytest.mark.parametrize("name", ["idgen", "expgen"])
def test_the_step_module_run_eagerly_equals_the_plain_denoiser(name: str) -> None:
    """What inductor traces is the same function (checked without a compiler)."""
    net = _net(name)
    fused = FusedDenoiser(net, use_mkldnn=False, compile_step=False)
    module = CompiledStep(fused).eval()
    x, context = _inputs(name, 7)
    for step in (999, 37, 0):
        t = torch.tensor([step])
        with torch.no_grad():
            want = net(x, t.expand(7), context.expand(7, -1))
            a, b = fused._film_rows(t.to(torch.float32), context)
            _assert_close(module(x, a, b), want)


def test_packed_weights_cannot_be_traced() -> None:
    fused = FusedDenoiser(_net("expgen"), use_mkldnn=True, compile_step=False)
    qkv = fused.downs[0][2].qkv  # 6144 × 53: packed for oneDNN wherever this build has it
    if qkv.packed is None:
        pytest.skip("no oneDNN packing in this torch build")
    with pytest.raises(ValueError, match="use_mkldnn=False"):
        compiled_step._Lin(qkv)


@pytest.mark.skipif(compiler_available() is None, reason="no C++ compiler for inductor")
@pytest.mark.parametrize("batch", [100])  # batch 1 is one more compile (~1-2 min): left out
def test_the_compiled_step_equals_the_plain_denoiser(batch: int) -> None:
    net = _net("expgen")
    fused, packed = _compiled_expgen()
    x, context = _inputs("expgen", batch)
    for step in (999, 500, 1, 0):
        t = torch.tensor([step])
        with torch.no_grad():
            want = net(x, t.expand(batch), context.expand(batch, -1))
        _assert_close(fused(x, t.expand(batch), context.expand(batch, -1)), want)
    assert fused.compile_requested and fused._compiled is not None, fused.compile_note
    if torch.backends.mkldnn.is_available():  # freezing took effect: the GEMMs were packed for oneDNN
        assert packed > 0


@functools.cache
def _compiled_expgen() -> tuple[FusedDenoiser, int]:
    """The compiled ExpGen step and how many linear layers inductor packed for oneDNN while compiling it."""
    from torch._dynamo.utils import counters

    fused = FusedDenoiser(_net("expgen"), compile_step=True)
    x, context = _inputs("expgen", 100)
    counters.clear()
    # Caches off for this compile: a cached graph would skip the passes whose counter is read.
    with torch._inductor.config.patch(force_disable_caches=True), torch.no_grad():
        fused(x, torch.tensor([3]).expand(100), context.expand(100, -1))
    return fused, counters["inductor"]["mkldnn_linear_weight_pack_matcher_count"]


def test_without_a_compiler_the_eager_step_runs_and_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(compiled_step, "compiler_available", lambda: None)
    net = _net("expgen")
    fused = FusedDenoiser(net, compile_step=True)
    x, context = _inputs("expgen", 5)
    with caplog.at_level(logging.WARNING, logger="inference_server.nets.fused_denoiser"), torch.no_grad():
        got = fused(x, torch.tensor([250]), context)
        want = net(x, torch.tensor([250]), context)
    _assert_close(got, want)
    assert not fused.compile_requested and "no C++ compiler" in fused.compile_note
    assert "running the eager fused step" in caplog.text


def test_a_failing_compilation_falls_back_to_the_eager_step(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("C++ compile error: cannot find Python.h")

    monkeypatch.setattr(compiled_step, "compile_step", lambda fused: (broken, ""))
    net = _net("expgen")
    fused = FusedDenoiser(net, compile_step=True)
    x, context = _inputs("expgen", 3)
    with torch.no_grad():
        _assert_close(fused(x, torch.tensor([10]), context), net(x, torch.tensor([10]), context))
    assert not fused.compile_requested and "Python.h" in fused.compile_note


@pytest.mark.parametrize(("value", "wanted"), [("1", True), ("on", True), ("0", False), ("", False)])
def test_the_environment_switch(monkeypatch: pytest.MonkeyPatch, value: str, wanted: bool) -> None:
    monkeypatch.setenv(compiled_step.COMPILE_ENV, value)
    assert compile_requested() is wanted
    assert FusedDenoiser(_net("expgen"), use_mkldnn=False).compile_requested is wanted
