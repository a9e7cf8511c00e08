"""ONNX export: every network agrees with torch, at batch sizes other than the traced one, and a whole
sampler run through onnxruntime follows the torch run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TypeVar

import onnx
import onnxruntime
import pytest
import torch

from inference_server.backends import OnnxEpsModel, TorchEpsModel
from inference_server.checkpoints.networks import LoadedNetworks
from inference_server.diffusion import sample
from inference_server.nets.arcface import ArcFaceConfig, ArcFaceEncoder
from inference_server.nets.clip_visual import ClipImageEncoder, ClipVisionConfig
from inference_server.nets.denoiser import EXPGEN_CONFIG, IDGEN_CONFIG, Denoiser, DenoiserConfig
from inference_server.nets.idrank import IdRank, IdRankConfig
from inference_server.onnx_export import (
    MANIFEST_NAME,
    OPSET,
    export_arcface,
    export_clip_visual,
    export_denoiser,
    export_loaded_networks,
    export_ranker,
    read_manifest,
    write_manifest,
)

SMALL_ARCFACE = ArcFaceConfig(layers=(1, 2, 1, 1), widths=(8, 16, 16, 32), embedding_dim=24, input_size=32)
SMALL_CLIP = ClipVisionConfig(width=64, layers=2, heads=4, patch_size=8, image_size=32, output_dim=24)
SMALL_RANKER = IdRankConfig(input_dim=96, hidden_dims=(64, 32, 16, 8), context_dim=48)
SMALL_DENOISER = DenoiserConfig(feature_dim=12, dims=(12, 6, 4), context_dim=48)


def _run_onnx(path: Path, *inputs: torch.Tensor) -> torch.Tensor:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {node.name: tensor.numpy() for node, tensor in zip(session.get_inputs(), inputs, strict=True)}
    return torch.from_numpy(session.run(None, feeds)[0])


def _torch(model: torch.nn.Module, *inputs: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(*inputs)


ModuleT = TypeVar("ModuleT", bound=torch.nn.Module)


def _seeded(seed: int, module: ModuleT) -> ModuleT:
    torch.manual_seed(seed)
    return module


@pytest.fixture(scope="module")
def idgen(tmp_path_factory: pytest.TempPathFactory) -> tuple[Denoiser, Path]:
    torch.manual_seed(0)
    model = Denoiser(IDGEN_CONFIG).eval()
    path = export_denoiser(model, tmp_path_factory.mktemp("onnx") / "idgen.onnx")
    return model, path


@pytest.fixture(scope="module")
def expgen(tmp_path_factory: pytest.TempPathFactory) -> tuple[Denoiser, Path]:
    torch.manual_seed(1)
    model = Denoiser(EXPGEN_CONFIG).eval()
    path = export_denoiser(model, tmp_path_factory.mktemp("onnx") / "expgen.onnx")
    return model, path


def _denoiser_inputs(config: DenoiserConfig, batch: int, seed: int) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    return (
        torch.randn(batch, config.feature_dim, generator=generator),
        torch.randint(0, 1000, (batch,), generator=generator),
        torch.randn(batch, config.context_dim, generator=generator),
    )


@pytest.mark.parametrize("batch", [1, 7, 100])
def test_idgen_and_expgen_denoisers_match_torch(
    idgen: tuple[Denoiser, Path], expgen: tuple[Denoiser, Path], batch: int
) -> None:
    for model, path in (idgen, expgen):
        inputs = _denoiser_inputs(model.config, batch, seed=batch)
        torch.testing.assert_close(_run_onnx(path, *inputs), _torch(model, *inputs), rtol=0, atol=1e-4)


def test_exported_graph_has_dynamic_batch_and_the_documented_interface(idgen: tuple[Denoiser, Path]) -> None:
    graph = onnx.load(str(idgen[1]))
    onnx.checker.check_model(graph)
    assert max(entry.version for entry in graph.opset_import if entry.domain in ("", "ai.onnx")) >= OPSET
    inputs = {node.name: node for node in graph.graph.input}
    assert list(inputs) == ["x", "t", "context"]
    assert inputs["t"].type.tensor_type.elem_type == onnx.TensorProto.INT64
    for node in graph.graph.input:
        assert node.type.tensor_type.shape.dim[0].dim_param == "batch"
    assert [node.name for node in graph.graph.output] == ["eps"]


def test_every_attention_projection_survives_export(tmp_path: Path) -> None:
    """The 16 stacked projections are one parameter saved as 16 keys; the graph must use each of them."""
    model = _seeded(10, Denoiser(SMALL_DENOISER)).eval()
    inputs = _denoiser_inputs(SMALL_DENOISER, 5, seed=3)
    reference = _torch(model, *inputs)
    for block in model.attention_paths():
        projections = model.get_parameter(f"{block}.fn.fn.to_qkv.weight")
        with torch.no_grad():
            projections[7].mul_(-3.0)  # one projection of sixteen
    changed = _torch(model, *inputs)
    assert (reference - changed).abs().max() > 1e-3  # that projection matters to the output ...
    path = export_denoiser(model, tmp_path / "altered.onnx")
    torch.testing.assert_close(_run_onnx(path, *inputs), changed, rtol=0, atol=1e-4)  # ... and is exported


@pytest.mark.parametrize("context_rows", [1, 9])
def test_ranker_matches_torch_with_one_or_per_sample_contexts(tmp_path: Path, context_rows: int) -> None:
    model = _seeded(2, IdRank(SMALL_RANKER))
    path = export_ranker(model, tmp_path / "rank.onnx")
    generator = torch.Generator().manual_seed(context_rows)
    x = 3.0 * torch.randn(9, SMALL_RANKER.input_dim, generator=generator)
    context = torch.randn(context_rows, SMALL_RANKER.context_dim, generator=generator)
    onnx_logits = _run_onnx(path, x, context)
    assert onnx_logits.shape == (9,)
    torch.testing.assert_close(onnx_logits, _torch(model, x, context), rtol=0, atol=1e-4)


def test_encoders_match_torch(tmp_path: Path) -> None:
    arcface = _seeded(3, ArcFaceEncoder(SMALL_ARCFACE))
    clip = _seeded(4, ClipImageEncoder(SMALL_CLIP))
    # Non-trivial BatchNorm statistics, so the eval-mode export is checked, not just identity BNs.
    for module in arcface.modules():
        if (
            isinstance(module, torch.nn.modules.batchnorm._BatchNorm)
            and module.running_mean is not None
            and module.running_var is not None
        ):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    arcface_path = export_arcface(arcface, tmp_path / "arcface.onnx")
    clip_path = export_clip_visual(clip, tmp_path / "clip.onnx")
    generator = torch.Generator().manual_seed(5)
    for model, path, size in ((arcface, arcface_path, 32), (clip, clip_path, 32)):
        for batch in (1, 4):
            image = torch.randn(batch, 3, size, size, generator=generator)
            torch.testing.assert_close(_run_onnx(path, image), _torch(model, image), rtol=0, atol=1e-4)


def test_ddim_through_onnxruntime_follows_the_torch_run(idgen: tuple[Denoiser, Path]) -> None:
    model, path = idgen
    onnx_model = OnnxEpsModel(onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"]))
    context = torch.nn.functional.normalize(torch.randn(1, IDGEN_CONFIG.context_dim), dim=1)
    runs = [
        sample(eps_model, context, 16, IDGEN_CONFIG.feature_dim, sampler="ddim", steps=25, eta=0.0, seed=9)
        for eps_model in (TorchEpsModel(model), onnx_model)
    ]
    via_torch, via_onnx = runs
    torch.testing.assert_close(via_onnx, via_torch, rtol=0, atol=1e-3)


def test_loaded_networks_export_with_a_manifest(tmp_path: Path) -> None:
    networks = LoadedNetworks(
        kind="expgen",
        arcface=_seeded(6, ArcFaceEncoder(SMALL_ARCFACE)),
        denoiser=_seeded(7, Denoiser(SMALL_DENOISER)),
        farl=_seeded(8, ClipImageEncoder(SMALL_CLIP)),
        metadata={"attention_synthetic": True},
    )
    graphs = export_loaded_networks(networks, tmp_path)
    assert {graph.name for graph in graphs} == {"expgen_denoiser", "expgen_arcface", "expgen_farl"}
    assert all(graph.max_abs_difference < 1e-4 for graph in graphs)
    write_manifest(tmp_path, networks, graphs)
    manifest = read_manifest(tmp_path)
    assert manifest["graphs"]["expgen_denoiser"]["file"] == "expgen_denoiser.onnx"
    assert manifest["graphs"]["expgen_denoiser"]["config"] == SMALL_DENOISER.to_dict()
    assert manifest["graphs"]["expgen_farl"]["inputs"] == ["image"]
    assert manifest["models"]["expgen"]["attention_synthetic"] is True
    inputs = _denoiser_inputs(SMALL_DENOISER, 3, seed=0)
    assert networks.denoiser is not None
    torch.testing.assert_close(
        _run_onnx(tmp_path / "expgen_denoiser.onnx", *inputs),
        _torch(networks.denoiser, *inputs),
        rtol=0,
        atol=1e-4,
    )
    json.loads((tmp_path / MANIFEST_NAME).read_text(encoding="utf-8"))  # plain JSON


def test_a_broken_manifest_is_a_clear_error(tmp_path: Path) -> None:
    from inference_server.errors import MissingAssetError

    (tmp_path / MANIFEST_NAME).write_text("{not json", encoding="utf-8")
    with pytest.raises(MissingAssetError, match="unreadable ONNX manifest"):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({"format": "other"}), encoding="utf-8")
    with pytest.raises(MissingAssetError, match="is not an ofer-onnx/1 manifest"):
        read_manifest(tmp_path)


def test_unknown_module_types_are_refused(tmp_path: Path) -> None:
    from inference_server.onnx_export import export_and_verify

    with pytest.raises(TypeError, match="no ONNX export defined for Linear"):
        export_and_verify("linear", torch.nn.Linear(2, 2), tmp_path)
    assert not list(tmp_path.iterdir())
