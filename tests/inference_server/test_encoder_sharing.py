"""Encoder copies with identical weights are found by content, kept once and run once per image."""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from inference_server.assets_config import resolve_assets
from inference_server.checkpoints import LoadedNetworks, load_networks
from inference_server.demo.weights import ensure_demo_weights
from inference_server.encoder_sharing import find_identical, module_digest, same_weights
from inference_server.model_bundle import ModelBundle, load_model_bundle
from inference_server.nets.arcface import ArcFaceConfig, ArcFaceEncoder
from inference_server.pipeline import Reconstructor, encode
from inference_server.preprocess.crops import arcface_crop, farl_crop
from inference_server.preprocess.detect import FaceDetector
from inference_server.preprocess.image import load_image
from inference_server.protocol import ReconstructArgs

SAMPLE = Path(__file__).resolve().parents[2] / "inference_server" / "assets" / "sample_occluded_face.jpg"
TINY = ArcFaceConfig(layers=(1, 1), widths=(8, 16), embedding_dim=32, input_size=32)


def test_digest_and_equality_follow_every_weight_buffer_and_the_configuration() -> None:
    torch.manual_seed(0)
    encoder = ArcFaceEncoder(TINY)
    same = copy.deepcopy(encoder)
    assert module_digest(same) == module_digest(encoder) and same_weights(same, encoder)
    nudged = copy.deepcopy(encoder)  # one float step in one weight the digest's sample may not see
    with torch.no_grad():
        weight = nudged.fc.weight
        weight[3, 5] = torch.nextafter(weight[3, 5], torch.tensor(1.0))
    assert not same_weights(nudged, encoder)
    statistics = copy.deepcopy(encoder)
    running_var = statistics.bn2.running_var
    assert running_var is not None
    running_var.add_(1e-3)  # a buffer, not a parameter: still part of the function
    assert module_digest(statistics) != module_digest(encoder) and not same_weights(statistics, encoder)
    other_config = ArcFaceEncoder(replace(TINY, embedding_dim=32))
    other_config.load_state_dict(encoder.state_dict())
    assert module_digest(other_config) == module_digest(encoder)  # equal config → equal function
    wider = ArcFaceEncoder(replace(TINY, widths=(8, 32)))
    assert module_digest(wider) != module_digest(encoder)
    sharing = find_identical(
        [("a", encoder), ("b", nudged), ("c", same), ("d", statistics), ("e", copy.deepcopy(nudged))]
    )
    assert sharing.canonical == {"a": "a", "b": "b", "c": "a", "d": "d", "e": "b"}
    assert sharing.shared == 2 and sharing.groups == [["a", "c"], ["b", "e"], ["d"]]


def _demo_networks() -> dict[str, LoadedNetworks]:
    return {kind: load_networks(path) for kind, path in ensure_demo_weights().items()}


@functools.cache
def _reference() -> ModelBundle:
    return load_model_bundle(resolve_assets({}))


def _bundle(nets: dict[str, LoadedNetworks], *, share: bool) -> ModelBundle:
    reference = _reference()  # the DEMO head and front-face list
    return ModelBundle(nets["idgen"], nets["expgen"], nets["idrank"], reference.flame, reference.front_indices,
                       True, reference.sources, share_encoders=share)  # fmt: skip


@pytest.fixture(scope="module")
def crops() -> tuple[object, object]:
    image = load_image(SAMPLE)
    detection = FaceDetector().detect(image)
    return arcface_crop(image.rgb, detection.points5, "BGR"), farl_crop(image.rgb, detection.box)


def _count_encoder_calls(bundle: ModelBundle) -> Iterator[list[str]]:
    calls: list[str] = []
    handles = []
    hooked: set[int] = set()  # a shared module once: a forward pass is one call
    for kind in ("idgen", "expgen", "idrank"):
        networks = getattr(bundle, kind)
        for slot in ("arcface", "farl"):
            module = getattr(networks, slot)
            if module is not None and id(module) not in hooked:
                hooked.add(id(module))
                handles.append(module.register_forward_hook(lambda m, i, o, s=f"{kind}.{slot}": calls.append(s)))
    yield calls
    for handle in handles:
        handle.remove()


def test_demo_encoders_are_shared_and_give_the_same_contexts(crops: tuple[object, object]) -> None:
    arc, far = crops
    shared = _bundle(_demo_networks(), share=True)
    separate = _bundle(_demo_networks(), share=False)
    # The DEMO IdRank was trained on IdGen's ArcFace and ExpGen's FaRL, frozen: those are the same weights.
    assert shared.encoder_sharing.groups == [["idgen.arcface", "idrank.arcface"], ["expgen.arcface"],
                                             ["expgen.farl", "idrank.farl"]]  # fmt: skip
    assert shared.idrank.arcface is shared.idgen.arcface and shared.idrank.farl is shared.expgen.farl
    assert separate.idrank.arcface is not separate.idgen.arcface
    assert shared.model_ids()["shared_encoders"] == shared.encoder_sharing.groups

    device = torch.device("cpu")
    counter = _count_encoder_calls(shared)
    calls = next(counter)
    got = encode(shared, arc, far, device)  # type: ignore[arg-type]
    assert len(calls) == 3  # three distinct encoders, not five passes
    next(counter, None)
    counter = _count_encoder_calls(separate)
    calls = next(counter)
    want = encode(separate, arc, far, device)  # type: ignore[arg-type]
    assert len(calls) == 5
    next(counter, None)
    for name in ("idgen", "expgen", "idrank"):
        assert torch.equal(getattr(got, name), getattr(want, name)), name


def test_copies_that_differ_are_not_shared(crops: tuple[object, object]) -> None:
    arc, far = crops
    nets = _demo_networks()
    with torch.no_grad():
        assert nets["idrank"].farl is not None
        nets["idrank"].farl.visual.proj[0, 0] += 1e-4  # a fine-tuned copy
    bundle = _bundle(nets, share=True)
    assert ["idrank.farl"] in bundle.encoder_sharing.groups
    reference = copy.deepcopy(nets["idrank"].farl)
    enc = encode(bundle, arc, far, torch.device("cpu"))  # type: ignore[arg-type]
    image = torch.from_numpy(np.ascontiguousarray(far.tensor))[None]  # type: ignore[attr-defined]
    with torch.no_grad():
        assert torch.equal(enc.idrank[:, :512], reference(image).float())


def test_shared_encoders_give_the_same_reconstruction(tmp_path: Path) -> None:
    args = ReconstructArgs(image=str(SAMPLE), output="", n_shapes=10, n_expressions=6, top_k=3, sampler="ddim",
                           steps=5, seed=11, device="cpu")  # fmt: skip
    results = []
    for share in (True, False):
        reconstructor = Reconstructor(resolve_assets({}), device="cpu")
        reconstructor._bundle = _bundle(_demo_networks(), share=share)
        out = reconstructor.run(replace(args, output=str(tmp_path / f"{share}.npz")), lambda *a: None, lambda: False)
        results.append(out.result)
    for key in ("identity_params", "identity_scores", "expression_params", "jaw_pose", "expression_vertices"):
        np.testing.assert_array_equal(getattr(results[0], key), getattr(results[1], key), err_msg=key)
