"""Int8 encoders: adopted only where the probe crops stay within the threshold of fp32, refused otherwise."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from inference_server import encoder_quantise, encoder_runtime
from inference_server.encoder_quantise import MIN_INT8_COSINE, probe_crops
from inference_server.encoder_runtime import agreement, encoder_networks
from inference_server.nets.arcface import ArcFaceConfig, ArcFaceEncoder
from inference_server.nets.clip_visual import ClipImageEncoder, ClipVisionConfig

pytest.importorskip("onnxruntime")

CLIP = ClipVisionConfig(width=64, layers=2, heads=2, patch_size=8, image_size=32, output_dim=32)


def _vit(seed: int) -> ClipImageEncoder:
    torch.manual_seed(seed)
    return ClipImageEncoder(CLIP).eval()


def _badly_quantising_vit(seed: int) -> ClipImageEncoder:
    """A ViT whose final projection has one huge weight on a feature LayerNorm nearly silences: fp32 barely
    sees it, but per-tensor int8 scales every other weight of that matrix down to zero."""
    net = _vit(seed)
    with torch.no_grad():
        net.visual.ln_post.weight[0] = 1e-4
        net.visual.ln_post.bias[0] = 0.0
        net.visual.proj[0, :] = 2e3
    return net


def _min_cosine_to_torch(module: torch.nn.Module, network: Callable[[torch.Tensor], torch.Tensor]) -> float:
    with torch.no_grad():
        return min(agreement(module(crop), network(crop))[0] for crop in probe_crops("farl", 32))


def test_probe_crops_are_distinct_real_face_framings() -> None:
    crops = probe_crops("farl", 224)
    assert len(crops) == len(encoder_quantise.REFRAMINGS) and all(c.shape == (1, 3, 224, 224) for c in crops)
    for i, a in enumerate(crops):
        for b in crops[i + 1 :]:
            assert float((a - b).abs().mean()) > 0.02  # each re-framing is another input
    assert all(c.shape == (1, 3, 112, 112) for c in probe_crops("arcface", 112))


def test_int8_adopted_where_close_and_reused_without_fp32(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    arcface = ArcFaceEncoder(ArcFaceConfig(layers=(1, 1), widths=(8, 16), embedding_dim=32)).eval()
    modules = {"expgen.farl": _vit(0), "idgen.arcface": arcface}
    networks, report = encoder_networks(modules, tmp_path, "int8")
    assert report.precision == {"expgen.farl": "int8", "idgen.arcface": "fp32"}  # ArcFace: no int8 recipe
    verdict = report.int8["expgen.farl"]
    assert verdict["adopted"] and float(verdict["min_cosine"]) >= MIN_INT8_COSINE  # type: ignore[arg-type]
    assert _min_cosine_to_torch(modules["expgen.farl"], networks["expgen.farl"]) >= MIN_INT8_COSINE
    opened: list[str] = []
    real = encoder_runtime.open_encoder

    def spy(
        m: torch.nn.Module, f: encoder_runtime.EncoderFiles, slot: str, r: encoder_runtime.EncoderRuntimeReport
    ) -> encoder_runtime.OnnxNetwork | None:
        opened.append(slot)
        return real(m, f, slot, r)

    monkeypatch.setattr(encoder_runtime, "open_encoder", spy)
    again, report = encoder_networks(modules, tmp_path, "int8")
    assert opened == ["idgen.arcface"]  # the FaRL verdict is stored: no fp32 session, no probe set
    assert report.precision["expgen.farl"] == "int8" and "expgen.farl" in report.optimised_reused
    crop = probe_crops("farl", 32)[3]
    assert agreement(networks["expgen.farl"](crop), again["expgen.farl"](crop))[0] >= 0.99999


def test_int8_refused_when_the_probe_cosine_is_below_the_threshold(tmp_path: Path) -> None:
    bad = _badly_quantising_vit(1)
    networks, report = encoder_networks({"idrank.farl": bad}, tmp_path, "int8")
    verdict = report.int8["idrank.farl"]
    assert not verdict["adopted"] and float(verdict["min_cosine"]) < MIN_INT8_COSINE  # type: ignore[arg-type]
    assert report.precision["idrank.farl"] == "fp32"  # the slot runs fp32 ONNX Runtime instead
    with torch.no_grad():
        crop = probe_crops("farl", 32)[0]
        assert agreement(bad(crop), networks["idrank.farl"](crop))[0] >= 0.99999
    _, report = encoder_networks({"idrank.farl": bad}, tmp_path, "int8")  # the stored verdict still refuses
    assert report.precision["idrank.farl"] == "fp32" and not report.int8["idrank.farl"]["adopted"]


def _cached_int8_files(module: ClipImageEncoder, folder: Path) -> encoder_runtime.EncoderFiles:
    """The cache files of ``module`` after its int8 graph was made in ``folder``."""
    encoder_networks({"expgen.farl": module}, folder, "int8")
    kind = encoder_runtime.kind_and_size(module)[0]
    stem = folder / encoder_runtime.CACHE_FOLDER / f"{kind}-{encoder_runtime.weights_key(module)}"
    return encoder_runtime.EncoderFiles(stem, encoder_runtime.cpu_identity())


def test_damaged_int8_graph_is_made_again(tmp_path: Path) -> None:
    module = _vit(2)
    files = _cached_int8_files(module, tmp_path)
    for path in (files.int8_graph, files.int8_optimised):
        path.write_bytes(b"damaged")
    networks, report = encoder_networks({"expgen.farl": module}, tmp_path, "int8")
    assert report.precision["expgen.farl"] == "int8"
    assert _min_cosine_to_torch(module, networks["expgen.farl"]) >= MIN_INT8_COSINE


def test_demo_bundle_records_each_encoders_runtime(tmp_path: Path) -> None:
    """DEMO weights: each encoder's runtime follows its verdict, the meta says what ran where, and the int8
    FaRL (adopted: measured min cosine 0.99956 on these weights) stays within the threshold of torch."""
    from inference_server.assets_config import resolve_assets
    from inference_server.model_bundle import load_model_bundle

    bundle = load_model_bundle(resolve_assets({}))
    canonical = bundle.encoder_sharing.canonical
    assert all(value.startswith("torch fp32") for value in bundle.encoder_runtimes().values())
    crops = {"arcface": probe_crops("arcface", 112), "farl": probe_crops("farl", 224)}
    with torch.no_grad():
        expected = {
            slot: [bundle.runners[slot](c) for c in crops[slot.split(".")[1]]] for slot in set(canonical.values())
        }
    report = bundle.use_encoder_runtime(tmp_path, "int8", release_torch=True)
    runtimes = bundle.encoder_runtimes()
    assert set(runtimes) == set(canonical)
    for slot, first in canonical.items():
        verdict = report.int8[first]
        precision = "int8" if verdict["adopted"] else "fp32"
        assert runtimes[slot] == f"onnxruntime {precision}" + ("" if slot == first else f" (shares {first})")
        if slot.endswith("farl"):
            assert verdict["adopted"] == (float(verdict["min_cosine"]) >= MIN_INT8_COSINE)  # type: ignore[arg-type]
        with torch.no_grad():
            got = [bundle.runners[first](c) for c in crops[slot.split(".")[1]]]
        floor = MIN_INT8_COSINE if precision == "int8" else 0.99999
        assert min(agreement(a, b)[0] for a, b in zip(expected[first], got, strict=True)) >= floor
    with pytest.raises(Exception, match="released"):
        bundle.plain_encoders(True)


def test_worker_switch_runs_the_encoders_in_onnxruntime_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``OFER_ENCODER_PRECISION=int8``: the pipeline opens the runtime (torch copies released) and the result's
    meta names each encoder's runtime; the meshes stay close to the torch encoders' reconstruction."""
    from inference_server.assets_config import resolve_assets
    from inference_server.pipeline import Reconstructor
    from inference_server.protocol import ReconstructArgs

    sample = Path(__file__).resolve().parents[2] / "inference_server" / "assets" / "sample_occluded_face.jpg"
    args = ReconstructArgs(image=str(sample), output="", n_shapes=8, n_expressions=4, top_k=3, seed=1,
                           device="cpu", extra={"preset": "fast"})  # fmt: skip
    results = {}
    for precision in ("torch", "int8"):
        if precision == "int8":
            monkeypatch.setenv("OFER_ENCODER_PRECISION", "int8")
        reconstructor = Reconstructor(resolve_assets({}), device="cpu")
        out = reconstructor.run(
            dataclasses.replace(args, output=str(tmp_path / f"{precision}.npz")),
            lambda *a: None,
            lambda: False,
        )
        results[precision] = out.result
    runtimes = results["int8"].meta["encoder_runtimes"]
    assert all(value.startswith("torch fp32") for value in results["torch"].meta["encoder_runtimes"].values())
    assert runtimes and all(value.startswith("onnxruntime") for value in runtimes.values())
    front = reconstructor.bundle(torch.device("cpu")).front_indices
    a, b = (results[k].identity_vertices[:, front] * 1000 for k in ("torch", "int8"))
    assert float(abs(a - b).max()) < 0.05  # mm (measured 1.5e-5): at cosine ≥ 0.999 the sweep moved meshes ~0.02 mm


def test_files_of_the_full_range_recipe_are_replaced(tmp_path: Path) -> None:
    module = _vit(3)
    files = _cached_int8_files(module, tmp_path)
    earlier = [files.stem.with_name(files.stem.name + end) for end in (".int8.onnx", f".int8-{files.cpu}.json")]
    for path in earlier:
        path.write_bytes(files.int8_graph.read_bytes())
    files.int8_graph.unlink()
    _, report = encoder_networks({"expgen.farl": module}, tmp_path, "int8")
    assert report.int8["expgen.farl"]["adopted"] and files.int8_graph.is_file()
    assert not any(path.exists() for path in earlier)
