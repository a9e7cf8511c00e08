"""Encoders through ONNX Runtime fp32: exported once per content key, reused, validated, never stale."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
import torch

from inference_server import encoder_runtime
from inference_server.assets_config import resolve_assets
from inference_server.backends import OnnxNetwork
from inference_server.encoder_runtime import agreement, encoder_networks, requested_encoder_runtime, weights_key
from inference_server.encoder_sharing import module_digest
from inference_server.errors import BadRequestError
from inference_server.nets.arcface import ArcFaceConfig, ArcFaceEncoder, IBasicBlock
from inference_server.nets.clip_visual import ClipImageEncoder, ClipVisionConfig
from inference_server.pipeline import Reconstructor

pytest.importorskip("onnxruntime")

Encode = Callable[[torch.Tensor], torch.Tensor]  # what encoder_networks gives per slot (ONNX or torch)

ARC = ArcFaceConfig(layers=(1, 1), widths=(8, 16), embedding_dim=32, input_size=32)
CLIP = ClipVisionConfig(width=32, layers=2, heads=2, patch_size=8, image_size=32, output_dim=16)


def _encoders(seed: int) -> dict[str, torch.nn.Module]:
    torch.manual_seed(seed)
    arc = ArcFaceEncoder(ARC)
    with torch.no_grad():  # non-trivial BatchNorm statistics, so the exported graph must carry them
        for module in arc.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                assert module.running_mean is not None and module.running_var is not None
                module.running_mean.normal_(0.0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return {"idgen.arcface": arc.eval(), "expgen.farl": ClipImageEncoder(CLIP).eval()}


def _graphs(cache: Path) -> dict[str, float]:
    """The exported fp32 graphs (not the optimised or int8 ones derived from them)."""
    paths = (cache / encoder_runtime.CACHE_FOLDER).glob("*.onnx")
    return {path.name: path.stat().st_mtime_ns for path in paths if path.name.count(".") == 1}


def test_exported_once_then_reused_and_equal_to_torch(tmp_path: Path) -> None:
    modules = _encoders(0)
    networks, report = encoder_networks(modules, tmp_path)
    assert sorted(report.exported) == sorted(modules) and not report.reused and not report.on_torch
    first = _graphs(tmp_path)
    assert len(first) == 2 and not list((tmp_path / encoder_runtime.CACHE_FOLDER).glob(".*"))  # no leftovers
    generator = torch.Generator().manual_seed(5)
    for slot, module in modules.items():
        size = 32
        image = torch.rand(3, 3, size, size, generator=generator) * 2 - 1  # a batch the probe never saw
        with torch.no_grad():
            expected = module(image)
        got = networks[slot](image)
        assert got.shape == expected.shape
        for row in range(3):
            cosine, difference = agreement(expected[row : row + 1], got[row : row + 1])
            assert cosine >= 0.99999 and difference < 1e-4, (slot, cosine, difference)
    again, report = encoder_networks(_encoders(0), tmp_path)  # same weights, new modules: the cache serves
    assert sorted(report.reused) == sorted(modules) and not report.exported
    assert _graphs(tmp_path) == first and set(again) == set(modules)


def test_key_follows_every_value_so_fine_tuned_copies_get_their_own_graph(tmp_path: Path) -> None:
    torch.manual_seed(3)
    arc = ArcFaceEncoder(ArcFaceConfig(layers=(1, 1), widths=(8, 64), embedding_dim=32, input_size=32)).eval()
    nudged = copy.deepcopy(arc)
    with torch.no_grad():
        block = nudged.stages()[1][0]
        assert isinstance(block, IBasicBlock)
        weight = block.conv2.weight  # 36,864 values: the digest samples every 9th
        weight.view(-1)[1] = torch.nextafter(weight.view(-1)[1], torch.tensor(10.0))
    assert module_digest(nudged) == module_digest(arc)  # the sharing digest's sample does not see it
    assert weights_key(nudged) != weights_key(arc)
    tuned = copy.deepcopy(arc)
    with torch.no_grad():
        for parameter in tuned.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    _, report = encoder_networks({"a": arc, "b": tuned}, tmp_path)
    assert sorted(report.exported) == ["a", "b"] and len(_graphs(tmp_path)) == 2


def _files(cache: Path, module: torch.nn.Module) -> encoder_runtime.EncoderFiles:
    kind = encoder_runtime.kind_and_size(module)[0]
    stem = cache / encoder_runtime.CACHE_FOLDER / f"{kind}-{weights_key(module)}"
    return encoder_runtime.EncoderFiles(stem, encoder_runtime.cpu_identity())


def _assert_matches_torch(modules: dict[str, torch.nn.Module], networks: Mapping[str, Encode]) -> None:
    for slot, module in modules.items():
        image = encoder_runtime.probe_input(32) * 0.5
        with torch.no_grad():
            cosine, _ = agreement(module(image), networks[slot](image))
        assert cosine >= 0.99999, slot


def test_second_open_uses_the_stored_optimised_graph_and_probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    modules = _encoders(0)
    encoder_networks(modules, tmp_path)
    for module in modules.values():
        files = _files(tmp_path, module)
        assert files.graph.is_file() and files.probe.is_file() and files.optimised().is_file()
    calls: list[str] = []
    for module in modules.values():  # a torch pass at open would show here
        module.register_forward_hook(lambda *_: calls.append("torch"))
    networks, report = encoder_networks(modules, tmp_path)
    assert (
        calls == [] and sorted(report.optimised_reused) == sorted(modules) and sorted(report.reused) == sorted(modules)
    )
    _assert_matches_torch(modules, networks)


def test_damaged_optimised_graph_is_rebuilt(tmp_path: Path) -> None:
    modules = _encoders(0)
    encoder_networks(modules, tmp_path)
    optimised = _files(tmp_path, modules["idgen.arcface"]).optimised()
    optimised.write_bytes(optimised.read_bytes()[: optimised.stat().st_size // 2])  # a half-written file
    networks, report = encoder_networks(modules, tmp_path)
    assert report.optimised_reused == ["expgen.farl"] and not report.on_torch and not report.exported
    _assert_matches_torch(modules, networks)
    _, report = encoder_networks(modules, tmp_path)  # rebuilt: used again
    assert sorted(report.optimised_reused) == sorted(modules)


def test_damaged_or_foreign_cached_graph_is_exported_again(tmp_path: Path) -> None:
    modules = _encoders(0)
    encoder_networks(modules, tmp_path)
    arc, farl = _files(tmp_path, modules["idgen.arcface"]), _files(tmp_path, modules["expgen.farl"])
    for path in (arc.graph, arc.optimised()):
        path.write_bytes(b"not an onnx graph")  # damaged files
    other = _encoders(1)["expgen.farl"]  # graphs of other weights under this key (stale)
    encoder_networks({"other": other}, tmp_path)
    foreign = _files(tmp_path, other)
    farl.graph.write_bytes(foreign.graph.read_bytes())
    farl.optimised().write_bytes(foreign.optimised().read_bytes())
    networks, report = encoder_networks(modules, tmp_path)
    assert sorted(report.exported) == sorted(modules) and not report.on_torch
    _assert_matches_torch(modules, networks)
    farl.probe.write_bytes(b"\x93NUMPY garbage")  # a damaged stored probe: torch computes it again
    networks, report = encoder_networks(modules, tmp_path)
    assert sorted(report.reused) == sorted(modules) and not report.on_torch
    _assert_matches_torch(modules, networks)


def test_without_onnxruntime_everything_stays_on_torch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(encoder_runtime, "onnxruntime_available", lambda: False)
    networks, report = encoder_networks(_encoders(0), tmp_path)
    assert networks == {} and set(report.on_torch) == {"idgen.arcface", "expgen.farl"}
    assert not (tmp_path / encoder_runtime.CACHE_FOLDER).exists()


def test_demo_bundle_contexts_through_onnxruntime_match_torch(tmp_path: Path) -> None:
    """The bundle's three contexts of the sample photo's crops: ONNX Runtime encoders against the torch ones."""
    from inference_server.assets_config import resolve_assets
    from inference_server.model_bundle import load_model_bundle
    from inference_server.preprocess.crops import arcface_crop, farl_crop
    from inference_server.preprocess.detect import FaceDetector
    from inference_server.preprocess.image import load_image

    sample = Path(__file__).resolve().parents[2] / "inference_server" / "assets" / "sample_occluded_face.jpg"
    image = load_image(sample)
    detection = FaceDetector().detect(image)
    blob = torch.from_numpy(arcface_crop(image.rgb, detection.points5, "BGR").blob)[None]
    crop = torch.from_numpy(farl_crop(image.rgb, detection.box).tensor)[None]
    bundle = load_model_bundle(resolve_assets({}))
    with torch.no_grad():
        plain = bundle.contexts(blob, crop)
    report = bundle.use_encoder_runtime(tmp_path)
    distinct = sorted(set(bundle.encoder_sharing.canonical.values()))
    assert sorted(report.exported) == distinct and not report.on_torch
    assert all(isinstance(bundle.runners[slot], OnnxNetwork) for slot in distinct)
    with torch.no_grad():
        fast = bundle.contexts(blob, crop)
        bundle.plain_encoders(True)
        again = bundle.contexts(blob, crop)
    for a, b, c in zip(plain, fast, again, strict=True):
        assert torch.equal(a, c)  # switching back gives torch's contexts bit for bit
        cosine, difference = agreement(a, b)
        assert cosine >= 0.99999 and difference < 1e-4


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, None),
        ({"OFER_ENCODER_RUNTIME": "torch"}, None),
        ({"OFER_ENCODER_RUNTIME": "onnxruntime"}, "fp32"),
        ({"OFER_ENCODER_PRECISION": "int8"}, "int8"),
        ({"OFER_ENCODER_RUNTIME": "onnxruntime", "OFER_ENCODER_PRECISION": "int8"}, "int8"),
    ],
)
def test_environment_switches_select_the_encoder_runtime(environ: dict[str, str], expected: str | None) -> None:
    assert requested_encoder_runtime(environ) == expected


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"OFER_ENCODER_RUNTIME": "onnx"}, "OFER_ENCODER_RUNTIME"),
        ({"OFER_ENCODER_PRECISION": "INT8"}, "OFER_ENCODER_PRECISION"),
    ],
)
def test_misspelt_switch_is_a_bad_request_naming_the_variable(
    environ: dict[str, str], named: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(BadRequestError) as caught:
        requested_encoder_runtime(environ)
    assert named in caught.value.message and "restart the worker" in caught.value.fix
    # Through the pipeline: the request fails with the same error before any model is loaded.
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    reconstructor = Reconstructor(resolve_assets({}))
    with pytest.raises(BadRequestError, match=named):
        reconstructor.bundle(torch.device("cpu"))
    assert reconstructor._bundle is None
