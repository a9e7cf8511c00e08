"""The torch and onnxruntime back ends behind one call: ``network(*tensors) -> tensor``."""

from __future__ import annotations

import os
from pathlib import Path

import onnxruntime
import pytest
import torch

from inference_server.backends import (
    BackendError,
    OnnxEpsModel,
    OnnxNetwork,
    TorchEpsModel,
    TorchNetwork,
    create_onnx_session,
)
from inference_server.diffusion import sample
from inference_server.errors import MissingAssetError
from inference_server.nets.denoiser import Denoiser, DenoiserConfig
from inference_server.nets.idrank import IdRank, IdRankConfig
from inference_server.onnx_export import export_denoiser, export_ranker

CONFIG = DenoiserConfig(feature_dim=10, dims=(10, 6, 4), context_dim=16)
HAS_CUDA_PROVIDER = "CUDAExecutionProvider" in onnxruntime.get_available_providers()


@pytest.fixture(scope="module")
def denoiser_and_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Denoiser, Path]:
    torch.manual_seed(0)
    model = Denoiser(CONFIG)
    return model, export_denoiser(model, tmp_path_factory.mktemp("backends") / "denoiser.onnx")


def _inputs(batch: int = 5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(batch)
    x = torch.randn(batch, CONFIG.feature_dim, generator=generator)
    t = torch.randint(0, 1000, (batch,), generator=generator)
    context = torch.randn(1, CONFIG.context_dim, generator=generator).expand(batch, CONFIG.context_dim)
    return x, t, context


def test_torch_network_runs_in_eval_mode_without_autograd(denoiser_and_file: tuple[Denoiser, Path]) -> None:
    model, _ = denoiser_and_file
    model.train()
    wrapped = TorchEpsModel(model)
    assert not model.training
    x, t, context = _inputs()
    out = wrapped(x, t, context)
    assert not out.requires_grad
    with torch.no_grad():
        torch.testing.assert_close(out, model(x, t, context), rtol=0, atol=0)


def test_torch_network_refuses_non_tensor_outputs() -> None:
    class Pair(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return x, x

    with pytest.raises(TypeError, match="Pair returned tuple, expected a tensor"):
        TorchNetwork(Pair())(torch.zeros(1))


def test_onnx_and_torch_back_ends_are_interchangeable(denoiser_and_file: tuple[Denoiser, Path]) -> None:
    model, path = denoiser_and_file
    onnx_model = OnnxEpsModel.from_path(path, device="cpu", intra_op_threads=1)
    assert isinstance(onnx_model, OnnxEpsModel) and not onnx_model.uses_cuda
    x, t, context = _inputs()
    expected = TorchEpsModel(model)(x, t, context)
    torch.testing.assert_close(onnx_model(x, t, context), expected, rtol=0, atol=1e-5)
    # The graph declares t as int64; a float timestep is converted, not refused.
    torch.testing.assert_close(onnx_model(x, t.float(), context), expected, rtol=0, atol=1e-5)
    # And the samplers take either.
    image_context = context[:1]
    runs = [
        sample(m, image_context, 6, CONFIG.feature_dim, sampler="dpmsolver", steps=8, seed=2)
        for m in (TorchEpsModel(model), onnx_model)
    ]
    torch.testing.assert_close(runs[1], runs[0], rtol=0, atol=1e-4)


def test_onnx_network_runs_a_two_input_graph(tmp_path: Path) -> None:
    torch.manual_seed(1)
    ranker = IdRank(IdRankConfig(input_dim=24, hidden_dims=(16, 8), context_dim=12, groups=4))
    network = OnnxNetwork.from_path(export_ranker(ranker, tmp_path / "rank.onnx"), device="auto")
    assert network.input_names == ["x", "context"]
    x, context = torch.randn(7, 24), torch.randn(1, 12)
    torch.testing.assert_close(network(x, context), TorchNetwork(ranker)(x, context), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="the graph takes 2 inputs \\(x, context\\), got 1"):
        network(x)


def test_session_settings(denoiser_and_file: tuple[Denoiser, Path]) -> None:
    session = create_onnx_session(denoiser_and_file[1], device="cpu", intra_op_threads=1)
    assert session.get_providers() == ["CPUExecutionProvider"]
    options = session.get_session_options()
    assert options.intra_op_num_threads == 1 and options.inter_op_num_threads == 1
    auto = create_onnx_session(denoiser_and_file[1], device="auto")
    assert auto.get_providers()[0] == ("CUDAExecutionProvider" if HAS_CUDA_PROVIDER else "CPUExecutionProvider")


def test_missing_and_damaged_graphs_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(MissingAssetError, match="ONNX model file not found"):
        create_onnx_session(tmp_path / "absent.onnx")
    damaged = tmp_path / "damaged.onnx"
    damaged.write_bytes(b"this is not a protobuf")
    with pytest.raises(MissingAssetError, match="cannot load the ONNX model"):
        create_onnx_session(damaged)


def test_bad_devices_are_clear_errors(denoiser_and_file: tuple[Denoiser, Path]) -> None:
    with pytest.raises(BackendError, match="unknown device 'tpu'"):
        create_onnx_session(denoiser_and_file[1], device="tpu")
    if not HAS_CUDA_PROVIDER:
        with pytest.raises(BackendError, match="no CUDA execution provider") as caught:
            create_onnx_session(denoiser_and_file[1], device="cuda")
        assert "onnxruntime-gpu" in caught.value.fix


@pytest.mark.gpu
@pytest.mark.skipif(not (HAS_CUDA_PROVIDER and torch.cuda.is_available()), reason="needs CUDA and onnxruntime-gpu")
def test_cuda_tensors_are_bound_on_the_device(denoiser_and_file: tuple[Denoiser, Path]) -> None:
    model, path = denoiser_and_file
    network = OnnxEpsModel.from_path(path, device="cuda")
    assert network.uses_cuda
    x, t, context = _inputs(9)
    out = network(x.cuda(), t.cuda(), context.cuda())
    assert out.is_cuda
    torch.testing.assert_close(out.cpu(), TorchEpsModel(model)(x, t, context), rtol=0, atol=1e-4)


# -- CPU threads and the accelerated denoiser wrappers ------------------------------------------------------
def test_physical_cores_and_thread_setting() -> None:
    from inference_server.backends import configure_cpu_threads, physical_cpu_cores

    cores = physical_cpu_cores()
    assert 1 <= cores <= (os.cpu_count() or 1)
    before = torch.get_num_threads()
    try:
        assert configure_cpu_threads(1) == 1 and torch.get_num_threads() == 1
        assert configure_cpu_threads() == cores and torch.get_num_threads() == cores
    finally:
        torch.set_num_threads(before)


def test_bf16_autocast_path_runs_on_cpu_and_stays_close(denoiser_and_file: tuple[Denoiser, Path]) -> None:
    from inference_server.backends import AutocastEpsModel, accelerated_denoiser

    model, _ = denoiser_and_file
    x, t, context = _inputs(6)
    autocast = accelerated_denoiser(model, CONFIG.feature_dim, autocast="bf16")
    assert isinstance(autocast, AutocastEpsModel)
    with torch.no_grad():
        reference = model.eval()(x, t, context)
    out = autocast(x, t, context)
    assert out.dtype == torch.float32 and out.shape == reference.shape
    # bf16 keeps 8 mantissa bits: about 2-3 significant digits.
    assert torch.allclose(out, reference, atol=0.05 * float(reference.abs().max()) + 1e-3)
    samples = sample(autocast, context[:1], 4, CONFIG.feature_dim, sampler="dpmsolver_sde", steps=5, seed=0)
    assert torch.isfinite(samples).all()
    with pytest.raises(BackendError, match="precision"):
        AutocastEpsModel(model, CONFIG.feature_dim, "int8")


def test_accelerated_denoiser_choices(denoiser_and_file: tuple[Denoiser, Path]) -> None:
    from inference_server.backends import accelerated_denoiser

    model, _ = denoiser_and_file
    plain = accelerated_denoiser(model, CONFIG.feature_dim)
    x, t, context = _inputs(3)
    with torch.no_grad():
        assert torch.equal(plain(x, t, context), model(x, t, context))
    with pytest.raises(BackendError, match="not both"):
        accelerated_denoiser(model, CONFIG.feature_dim, cuda_graphs=True, compile_=True)
    if not torch.cuda.is_available():
        with pytest.raises(BackendError, match="CUDA"):
            accelerated_denoiser(model, CONFIG.feature_dim, cuda_graphs=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graph_replay_matches_eager(denoiser_and_file: tuple[Denoiser, Path]) -> None:
    from inference_server.backends import CudaGraphEpsModel

    model, _ = denoiser_and_file
    gpu = Denoiser(CONFIG).cuda().eval()
    gpu.load_state_dict(model.state_dict())
    graph = CudaGraphEpsModel(gpu, CONFIG.feature_dim)
    expected = sample(gpu, torch.ones(1, CONFIG.context_dim, device="cuda"), 8, CONFIG.feature_dim,
                      sampler="dpmsolver_sde", steps=6, seed=1, device="cuda")  # fmt: skip
    got = sample(graph, torch.ones(1, CONFIG.context_dim, device="cuda"), 8, CONFIG.feature_dim,
                 sampler="dpmsolver_sde", steps=6, seed=1, device="cuda")  # fmt: skip
    assert torch.allclose(got, expected, atol=1e-4)
