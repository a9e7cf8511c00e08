"""Bfloat16 encoders: adopted per encoder where the probe crops stay within the threshold of fp32, refused
otherwise, the verdict stored and reused, never used on a CPU without native bf16."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from inference_server import encoder_bf16, encoder_runtime
from inference_server.encoder_bf16 import MIN_BF16_COSINE, native_bf16
from inference_server.encoder_probe import probe_crops
from inference_server.encoder_runtime import agreement, encoder_networks, requested_encoder_runtime
from inference_server.errors import BadRequestError
from inference_server.nets.arcface import ArcFaceConfig, ArcFaceEncoder
from inference_server.nets.clip_visual import ClipImageEncoder, ClipVisionConfig

needs_bf16 = pytest.mark.skipif(not native_bf16(), reason="this CPU has no native bf16 arithmetic")
CLIP = ClipVisionConfig(width=64, layers=2, heads=2, patch_size=8, image_size=32, output_dim=32)


def _vit(seed: int) -> ClipImageEncoder:
    torch.manual_seed(seed)
    return ClipImageEncoder(CLIP).eval()


def _bf16_hostile_vit(seed: int) -> ClipImageEncoder:
    """A ViT whose projection is a large constant plus the real weights: the LayerNorm output sums to zero, so
    fp32 cancels the constant and keeps the small part, while bf16 (8 significant bits) rounds the small part
    away and the rounding of the activations no longer cancels."""
    net = _vit(seed)
    with torch.no_grad():
        net.visual.proj.add_(16.0)  # measured: bf16 min cosine 0.89, ONNX Runtime fp32 1 - 6e-10
    return net


def _min_cosine_to_torch(module: torch.nn.Module, network: encoder_runtime.Encoder, kind: str, size: int) -> float:
    with torch.no_grad():
        return min(agreement(module(crop), network(crop))[0] for crop in probe_crops(kind, size))


@needs_bf16
def test_bf16_adopted_on_official_size_arcface_and_close_to_fp32(tmp_path: Path) -> None:
    torch.manual_seed(0)
    arcface = ArcFaceEncoder(ArcFaceConfig()).eval()  # official size (iresnet100), random weights
    networks, report = encoder_networks({"idgen.arcface": arcface}, tmp_path, "bf16")
    assert report.precision == {"idgen.arcface": "bf16"}
    verdict = report.bf16["idgen.arcface"]
    assert verdict["adopted"] and float(verdict["min_cosine"]) >= MIN_BF16_COSINE  # type: ignore[arg-type]
    network = networks["idgen.arcface"]
    assert isinstance(network, encoder_bf16.Bf16Encoder)
    assert all(p.dtype == torch.bfloat16 for p in network.module.parameters())  # really computes in bf16
    crop = probe_crops("arcface", 112)[2]
    out = network(crop)
    assert out.dtype == torch.float32 and out.shape == (1, 512)
    with torch.no_grad():
        cosine, max_diff = agreement(arcface(crop), out)
    assert MIN_BF16_COSINE <= cosine < 1.0 and max_diff > 0  # close, and not the fp32 module itself


@needs_bf16
def test_bf16_refused_where_rounding_hurts_and_the_slot_runs_fp32(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    bad = _bf16_hostile_vit(1)
    networks, report = encoder_networks({"idrank.farl": bad}, tmp_path, "bf16")
    verdict = report.bf16["idrank.farl"]
    assert not verdict["adopted"] and float(verdict["min_cosine"]) < MIN_BF16_COSINE  # type: ignore[arg-type]
    assert report.precision["idrank.farl"] == "fp32"  # ONNX Runtime fp32 instead
    assert _min_cosine_to_torch(bad, networks["idrank.farl"], "farl", 32) >= 0.99999
    assert _min_cosine_to_torch(bad, encoder_bf16.Bf16Encoder(bad), "farl", 32) < MIN_BF16_COSINE  # independent


@needs_bf16
def test_verdict_is_stored_and_reused_and_measured_again_when_it_no_longer_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    modules = {"expgen.farl": _vit(2)}
    first, report = encoder_networks(modules, tmp_path, "bf16")
    assert report.precision == {"expgen.farl": "bf16"}
    (path,) = (tmp_path / encoder_runtime.CACHE_FOLDER).glob("farl-*.bf16-*.json")
    stored = json.loads(path.read_text())
    assert stored["min_cosine"] == report.bf16["expgen.farl"]["min_cosine"] and len(stored["cosines"]) == 7
    measured: list[Path] = []
    real = encoder_bf16.measure_verdict

    def spy(path: Path, *args: object, **kwargs: object) -> dict[str, object]:
        measured.append(path)
        return real(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(encoder_bf16, "measure_verdict", spy)
    again, report = encoder_networks(modules, tmp_path, "bf16")
    assert measured == [] and report.precision == {"expgen.farl": "bf16"}  # no fp32 pass, no probe set
    crop = probe_crops("farl", 32)[4]
    assert agreement(first["expgen.farl"](crop), again["expgen.farl"](crop))[0] >= 0.99999
    stored["probe_embedding"] = [-v for v in stored["probe_embedding"]]  # other kernels / another function
    path.write_text(json.dumps(stored))
    encoder_networks(modules, tmp_path, "bf16")
    assert measured == [path]


def test_without_native_bf16_the_encoders_stay_fp32_with_one_log_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    pytest.importorskip("onnxruntime")
    monkeypatch.setattr(encoder_bf16, "native_bf16", lambda: False)
    arcface = ArcFaceEncoder(ArcFaceConfig(layers=(1, 1), widths=(8, 16), embedding_dim=32)).eval()
    modules = {"idgen.arcface": arcface, "expgen.farl": _vit(3)}
    with caplog.at_level(logging.INFO, logger="inference_server.encoder_runtime"):
        networks, report = encoder_networks(modules, tmp_path, "bf16")
    assert report.precision == {"idgen.arcface": "fp32", "expgen.farl": "fp32"}
    assert all("no native bf16" in str(v["why"]) for v in report.bf16.values()) and len(report.bf16) == 2
    assert [r.message for r in caplog.records if "bf16" in r.message] == [
        "encoder precision bf16: this CPU has no native bf16 arithmetic; bf16 is not used"
    ]
    assert not list((tmp_path / encoder_runtime.CACHE_FOLDER).glob("*.bf16-*"))
    assert _min_cosine_to_torch(arcface, networks["idgen.arcface"], "arcface", 112) >= 0.99999


@needs_bf16
def test_auto_takes_int8_for_farl_and_bf16_for_arcface(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    arcface = ArcFaceEncoder(ArcFaceConfig(layers=(1, 1), widths=(8, 16), embedding_dim=32)).eval()
    _, report = encoder_networks({"idgen.arcface": arcface, "expgen.farl": _vit(0)}, tmp_path, "auto")
    assert report.precision == {"idgen.arcface": "bf16", "expgen.farl": "int8"}
    assert "expgen.farl" not in report.bf16  # int8 came first and was adopted
    bad = _bf16_hostile_vit(1)  # int8 refuses it too (same cancellation), so does bf16: fp32
    _, report = encoder_networks({"idrank.farl": bad}, tmp_path, "auto")
    assert report.precision["idrank.farl"] in ("int8", "fp32")
    if report.precision["idrank.farl"] == "fp32":
        assert not report.int8["idrank.farl"]["adopted"] and not report.bf16["idrank.farl"]["adopted"]


@pytest.mark.parametrize("value", ["bf16", "auto"])
def test_switch_accepts_bf16_and_auto(value: str) -> None:
    assert requested_encoder_runtime({"OFER_ENCODER_PRECISION": value}) == value


@pytest.mark.parametrize("value", ["BF16", "bfloat16", "fp16"])
def test_misspelt_switch_is_a_clear_error(value: str) -> None:
    with pytest.raises(BadRequestError, match="OFER_ENCODER_PRECISION") as caught:
        requested_encoder_runtime({"OFER_ENCODER_PRECISION": value})
    assert "bf16" in str(caught.value.fix) and "auto" in str(caught.value.fix)
    with pytest.raises(ValueError, match="unknown encoder precision"):
        encoder_networks({"expgen.farl": _vit(0)}, Path("/nonexistent"), value)


@needs_bf16
def test_demo_bundle_runs_bf16_encoders_and_says_so(tmp_path: Path) -> None:
    """DEMO weights: each encoder's runtime follows its bf16 verdict, the meta names it, the fp32 torch weights
    are released, and the contexts of the probe crops stay within the threshold."""
    from inference_server.assets_config import resolve_assets
    from inference_server.model_bundle import load_model_bundle

    bundle = load_model_bundle(resolve_assets({}))
    canonical = bundle.encoder_sharing.canonical
    crops = {"arcface": probe_crops("arcface", 112), "farl": probe_crops("farl", 224)}
    firsts = set(canonical.values())
    with torch.no_grad():
        expected = {slot: [bundle.runners[slot](c) for c in crops[slot.split(".")[1]]] for slot in firsts}
    report = bundle.use_encoder_runtime(tmp_path, "bf16", release_torch=True)
    runtimes = bundle.encoder_runtimes()
    for slot, first in canonical.items():
        adopted = bool(report.bf16[first]["adopted"])
        want = "torch bf16" if adopted else f"onnxruntime {report.precision[first]}"
        assert runtimes[slot] == want + ("" if slot == first else f" (shares {first})")
        with torch.no_grad():
            got = [bundle.runners[first](c) for c in crops[slot.split(".")[1]]]
        floor = MIN_BF16_COSINE if adopted else 0.99999
        assert min(agreement(a, b)[0] for a, b in zip(expected[first], got, strict=True)) >= floor
    assert any(v.startswith("torch bf16") for v in runtimes.values())
    with pytest.raises(Exception, match="released"):
        bundle.plain_encoders(True)


@needs_bf16
def test_worker_switch_bf16_writes_the_runtimes_in_the_result_and_keeps_the_meshes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``OFER_ENCODER_PRECISION=bf16``: the pipeline opens the bf16 encoders (fp32 weights released), the result's
    meta names them, and the sampled identities stay close to the torch fp32 encoders' (same seed)."""
    import dataclasses

    from inference_server.assets_config import resolve_assets
    from inference_server.pipeline import Reconstructor
    from inference_server.protocol import ReconstructArgs

    monkeypatch.setattr("inference_server.pipeline.default_cache_dir", lambda: tmp_path / "cache")
    sample = Path(__file__).resolve().parents[2] / "inference_server" / "assets" / "sample_occluded_face.jpg"
    args = ReconstructArgs(image=str(sample), output="", n_shapes=8, n_expressions=4, top_k=3, seed=1,
                           device="cpu", extra={"preset": "fast"})  # fmt: skip
    results = {}
    for precision in ("fp32", "bf16"):
        monkeypatch.setenv("OFER_ENCODER_PRECISION", precision)
        reconstructor = Reconstructor(resolve_assets({}), device="cpu")
        out = reconstructor.run(
            dataclasses.replace(args, output=str(tmp_path / f"{precision}.npz")), lambda *a: None, lambda: False
        )
        results[precision] = out.result
    assert all(v.startswith("torch fp32") for v in results["fp32"].meta["encoder_runtimes"].values())
    runtimes = results["bf16"].meta["encoder_runtimes"]
    assert runtimes and all(v.startswith("torch bf16") for v in runtimes.values())  # DEMO: every verdict adopts
    front = reconstructor.bundle(torch.device("cpu")).front_indices
    a, b = (results[k].identity_vertices[:, front] * 1000 for k in ("fp32", "bf16"))
    assert float(abs(a - b).max()) < 0.05  # mm; the 0.999 cosine sweep moved meshes ~0.02 mm
