"""ArcFace iresnet: appendix F key layout and count, unit-norm output, eval BatchNorm for any batch."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from inference_server.nets.arcface import ArcFaceConfig, ArcFaceEncoder

BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _appendix_f(layers: tuple[int, ...], widths: tuple[int, ...], fc_in: int) -> dict[str, tuple[int, ...]]:
    table: dict[str, tuple[int, ...]] = {}

    def bn(prefix: str, w: int) -> None:
        table.update({f"{prefix}.{s}": (() if s == "num_batches_tracked" else (w,)) for s in BN})

    table["conv1.weight"] = (widths[0], 3, 3, 3)
    bn("bn1", widths[0])
    table["prelu.weight"] = (widths[0],)
    d_in = widths[0]
    for stage, (count, w) in enumerate(zip(layers, widths, strict=True), start=1):
        for k in range(count):
            i = d_in if k == 0 else w
            bn(f"layer{stage}.{k}.bn1", i)
            table[f"layer{stage}.{k}.conv1.weight"] = (w, i, 3, 3)
            bn(f"layer{stage}.{k}.bn2", w)
            table[f"layer{stage}.{k}.prelu.weight"] = (w,)
            table[f"layer{stage}.{k}.conv2.weight"] = (w, w, 3, 3)
            bn(f"layer{stage}.{k}.bn3", w)
            if k == 0:
                table[f"layer{stage}.{k}.downsample.0.weight"] = (w, i, 1, 1)
                bn(f"layer{stage}.{k}.downsample.1", w)
        d_in = w
    bn("bn2", widths[-1])
    table |= {"fc.weight": (512, fc_in), "fc.bias": (512,)}
    bn("features", 512)
    return table


def test_iresnet100_layout_and_count() -> None:
    model = ArcFaceEncoder()
    state = model.state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == _appendix_f((3, 13, 30, 3), (64, 128, 256, 512), 25088)
    assert len(state) == 925
    assert sum(p.numel() for p in model.parameters()) == 65_156_160


def _randomise_bn(model: ArcFaceEncoder) -> None:
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-0.2, 0.2)  # type: ignore[union-attr]
                module.running_var.uniform_(0.5, 1.5)  # type: ignore[union-attr]


def test_small_variant_unit_norm_batch_independent_even_in_train_mode() -> None:
    torch.manual_seed(0)
    config = ArcFaceConfig(layers=(1, 2, 1, 1), widths=(8, 8, 16, 16))
    model = ArcFaceEncoder(config)
    assert _appendix_f(config.layers, config.widths, 16 * 49).keys() == model.state_dict().keys()
    _randomise_bn(model)
    blobs = torch.rand(5, 3, 112, 112) * 2 - 1
    model.train()  # BatchNorm must still use running statistics
    assert model.features.running_mean is not None
    stats_before = model.features.running_mean.clone()
    with torch.no_grad():
        out = model(blobs)
        alone = model(blobs[2:3])
    torch.testing.assert_close(out.norm(dim=1), torch.ones(5))
    torch.testing.assert_close(out[2:3], alone, atol=1e-5, rtol=0)
    assert torch.equal(model.features.running_mean, stats_before)
    # The embedding before normalisation is what `forward` normalises.
    with torch.no_grad():
        torch.testing.assert_close(F.normalize(model.embed(blobs), dim=1), out)


def test_full_size_batch_of_one() -> None:
    model = ArcFaceEncoder()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 112, 112) * 2 - 1)
    assert out.shape == (1, 512)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(1))
