"""Opt-in bf16 GEMMs in the fused step: close to fp32 on official-size nets, clean fall back, clear errors."""

from __future__ import annotations

import functools
import logging

import pytest
import torch

from inference_server.diffusion import sample
from inference_server.errors import BadRequestError
from inference_server.nets import cpu_precision
from inference_server.nets.cpu_precision import PRECISION_ENV, bf16_supported, requested_precision
from inference_server.nets.denoiser import Denoiser
from inference_server.nets.fused_denoiser import FusedDenoiser, mkldnn_linear_available
from tests.inference_server.nets.test_fused_denoiser import random_official_denoiser


@functools.cache
def _net(name: str) -> Denoiser:
    return random_official_denoiser(name, {"idgen": 21, "expgen": 22}[name])


needs_bf16 = pytest.mark.skipif(not bf16_supported(), reason="this CPU/torch has no native oneDNN bf16 GEMMs")

#: Stated bf16 tolerance of one step, relative to the output's scale: bf16 keeps 8 significant bits (relative
#: rounding 2^-9 ≈ 2e-3 per GEMM input and output); measured 6.3e-3 (IdGen) and 5e-4 (ExpGen) at batch 100.
STEP_REL = 2e-2


def _max_rel(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got - want).abs().max() / want.abs().max())


def test_the_switch_reads_fp32_or_bf16_and_rejects_anything_else() -> None:
    assert requested_precision({}) == "fp32"
    assert requested_precision({PRECISION_ENV: ""}) == "fp32"
    assert requested_precision({PRECISION_ENV: " BF16 "}) == "bf16"
    assert requested_precision({PRECISION_ENV: "fp32"}) == "fp32"
    with pytest.raises(BadRequestError) as caught:
        requested_precision({PRECISION_ENV: "fp16"})
    assert PRECISION_ENV in caught.value.message and "bf16" in caught.value.fix


def test_a_bad_environment_value_stops_the_build(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PRECISION_ENV, "bfloat")
    with pytest.raises(BadRequestError, match=PRECISION_ENV):
        FusedDenoiser(_net("expgen"))


@needs_bf16
@pytest.mark.parametrize("name", ["idgen", "expgen"])
def test_bf16_step_equals_the_fp32_fused_step_within_bf16_tolerance(name: str) -> None:
    net = _net(name)
    fp32, bf16 = FusedDenoiser(net, precision="fp32"), FusedDenoiser(net, precision="bf16")
    assert bf16.precision == "bf16" and bf16.precision_note == ""
    config = net.config
    g = torch.Generator().manual_seed(11)
    x = torch.randn(100, config.feature_dim, generator=g) * 2.0
    context = torch.randn(1, config.context_dim, generator=g).expand(100, -1)
    for step in (999, 500, 1, 0):
        t = torch.tensor([step]).expand(100)
        want, got = fp32(x, t, context), bf16(x, t, context)
        assert got.dtype == torch.float32 and got.shape == want.shape
        error = _max_rel(got, want)
        assert error <= STEP_REL, f"t={step}: bf16 step differs by {error:.2e} of the output's scale"
        assert error > 1e-6, "the bf16 path did not run (identical to fp32)"


@needs_bf16
def test_the_environment_switch_turns_bf16_on_and_whole_runs_stay_close(monkeypatch: pytest.MonkeyPatch) -> None:
    net = _net("expgen")
    monkeypatch.setenv(PRECISION_ENV, "bf16")
    bf16 = FusedDenoiser(net)
    monkeypatch.delenv(PRECISION_ENV)
    fp32 = FusedDenoiser(net)
    assert (bf16.precision, fp32.precision) == ("bf16", "fp32")
    context = torch.randn(1, net.config.context_dim, generator=torch.Generator().manual_seed(12))
    runs = [sample(m, context, 32, 53, sampler="dpmsolver", steps=20, seed=13) for m in (fp32, bf16)]
    error = _max_rel(runs[1], runs[0])
    # Stated tolerance after a whole 20-step chain: 5e-2 of the samples' scale (measured 1.3e-4).
    assert 1e-7 < error <= 5e-2
    assert runs[0].std() > 0.1


def test_without_native_bf16_the_step_falls_back_to_fp32(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    net = _net("expgen")
    monkeypatch.setattr(cpu_precision, "bf16_supported", lambda: False)
    with caplog.at_level(logging.INFO, logger=cpu_precision.__name__):
        fallback = FusedDenoiser(net, precision="bf16")
    assert fallback.precision == "fp32" and "native bf16" in fallback.precision_note
    assert any("runs in fp32" in record.getMessage() for record in caplog.records)
    fp32 = FusedDenoiser(net, precision="fp32")
    x, context, t = torch.randn(9, 53), torch.randn(1, 1024), torch.tensor([321])
    assert torch.equal(fallback(x, t, context), fp32(x, t, context))


@pytest.mark.skipif(not mkldnn_linear_available(), reason="this torch build has no oneDNN linear")
def test_bf16_needs_the_onednn_gemms() -> None:
    step = FusedDenoiser(_net("expgen"), use_mkldnn=False, precision="bf16")
    assert step.precision == "fp32" and "oneDNN" in step.precision_note
