"""Official-layout checkpoints (built by ``conftest`` from the appendix tables) load key for key, and the
loaded denoiser equals a forward pass written here from the raw tensors with plain torch ops (float64)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from inference_server.checkpoints import (
    SYNTHETIC_WARNING,
    LoadedNetworks,
    load_official_checkpoint,
)

ATTENTION_PATHS = ("downs.0.2", "downs.1.2", "mid_attn", "ups.0.3", "ups.1.3", "finals.0.1")

Raw = dict[str, torch.Tensor]


def _load(path: Path) -> LoadedNetworks:
    with pytest.warns(UserWarning, match="15 of 16 attention projections synthetic"):
        return load_official_checkpoint(path)


@pytest.fixture(scope="module")
def loaded(official_files: dict[str, tuple[Path, dict[str, Any]]]) -> dict[str, LoadedNetworks]:
    out = {kind: _load(path) for kind, (path, _) in official_files.items() if kind != "idrank"}
    out["idrank"] = load_official_checkpoint(official_files["idrank"][0])
    return out


# ------------------------------------------------------------------------------------------- every key lands
@pytest.mark.parametrize("kind", ["idgen", "expgen", "idrank"])
def test_every_official_tensor_lands_in_its_network(
    kind: str, official_files: dict[str, tuple[Path, dict[str, Any]]], loaded: dict[str, LoadedNetworks]
) -> None:
    raw = official_files[kind][1]
    networks = loaded[kind]
    assert networks.kind == kind

    arcface = networks.arcface.state_dict()
    assert set(arcface) == set(raw["arcface"]) and len(arcface) == (925 if kind != "idrank" else 133)
    assert all(torch.equal(arcface[k], v) for k, v in raw["arcface"].items())

    if kind == "idgen":
        assert networks.farl is None
    else:
        assert networks.farl is not None
        farl = networks.farl.state_dict()
        visual = {k: v for k, v in raw["farl"].items() if k.startswith("visual.")}
        assert len(raw["farl"]) == 302 and len(visual) == 152 and set(farl) == set(visual)
        assert all(torch.equal(farl[k], v) for k, v in visual.items())

    if kind == "idrank":
        assert networks.rank_net is not None and networks.denoiser is None
        rank = networks.rank_net.state_dict()
        assert set(rank) == set(raw["net"]) and len(rank) == 33
        assert all(torch.equal(rank[k], v) for k, v in raw["net"].items())
        assert networks.metadata["attention_synthetic"] is False
        return

    assert networks.denoiser is not None and networks.rank_net is None
    state = networks.denoiser.state_dict()
    official = {k: v for k, v in raw["net"].items() if not k.endswith(".fn.fn.qkv.weight")}
    assert len(official) == 174 and len(raw["net"]) == 180
    synthetic = {k for k in state if ".to_qkv." in k}
    assert set(state) - synthetic == set(official) and len(synthetic) == 6 * 16
    assert all(torch.equal(state[k], v) for k, v in official.items())
    for path in ATTENTION_PATHS:
        assert torch.equal(state[f"{path}.fn.fn.to_qkv.15.weight"], raw["net"][f"{path}.fn.fn.qkv.weight"])
    meta = networks.metadata
    assert meta["attention_synthetic"] is True and networks.attention_synthetic
    assert meta["schedule"]["num_steps"] == 1000 and meta["schedule"]["beta_start"] == 1e-4
    assert meta["provenance"]["source_file"] == official_files[kind][0].name
    assert len(meta["provenance"]["source_sha256"]) == 64


def test_synthetic_projections_are_reproducible_and_default_distributed(
    official_files: dict[str, tuple[Path, dict[str, Any]]], loaded: dict[str, LoadedNetworks]
) -> None:
    with pytest.warns(UserWarning, match="15 of 16"):
        again = load_official_checkpoint(official_files["idgen"][0], compute_sha256=False)
    first = loaded["idgen"].denoiser.state_dict()  # type: ignore[union-attr]
    second = again.denoiser.state_dict()  # type: ignore[union-attr]
    projections = [k for k in first if ".to_qkv." in k]
    assert all(torch.equal(first[k], second[k]) for k in projections)
    for path in ATTENTION_PATHS:
        stack = torch.stack([first[f"{path}.fn.fn.to_qkv.{i}.weight"] for i in range(15)])
        d = stack.shape[2]
        assert stack.abs().max() <= 1 / math.sqrt(d)
        # uniform(-b, b) has standard deviation b / sqrt(3)
        assert stack.std().item() == pytest.approx(1 / math.sqrt(3 * d), rel=0.05)
        assert not torch.equal(stack[0], stack[1])
    # Different blocks of the same width still get different draws (the seed includes the path).
    assert not torch.equal(first["downs.0.2.fn.fn.to_qkv.0.weight"], first["ups.1.3.fn.fn.to_qkv.0.weight"])


# ------------------------------------------------------------------------------------------ reference pass
def _lin(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    out = x @ weight.reshape(weight.shape[0], -1).double().T
    return out + bias.double() if bias is not None else out


def _silu(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


def _group_norm_1(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    mean = x.mean(dim=1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=1, keepdim=True)
    return (x - mean) / torch.sqrt(var + 1e-5) * weight.double() + bias.double()


def ref_time_embedding(P: Raw, t: torch.Tensor) -> torch.Tensor:
    k = torch.arange(256, dtype=torch.float64)
    freqs = torch.exp(-k * math.log(10000.0) / 255.0)
    angles = t.double()[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    h = _lin(emb, P["time_mlp.1.weight"], P["time_mlp.1.bias"])
    h = 0.5 * h * (1.0 + torch.erf(h / math.sqrt(2.0)))
    return _lin(h, P["time_mlp.3.weight"], P["time_mlp.3.bias"])


def ref_resblock(P: Raw, prefix: str, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
    film = _lin(_silu(cond), P[f"{prefix}.mlp.1.weight"], P[f"{prefix}.mlp.1.bias"])
    d_out = film.shape[1] // 2
    scale, shift = film[:, :d_out], film[:, d_out:]
    h = _lin(x, P[f"{prefix}.block1.proj.weight"], P[f"{prefix}.block1.proj.bias"])
    h = _group_norm_1(h, P[f"{prefix}.block1.norm.weight"], P[f"{prefix}.block1.norm.bias"])
    h = _silu(h * (1.0 + scale) + shift)
    h = _lin(h, P[f"{prefix}.block2.proj.weight"], P[f"{prefix}.block2.proj.bias"])
    h = _silu(_group_norm_1(h, P[f"{prefix}.block2.norm.weight"], P[f"{prefix}.block2.norm.bias"]))
    skip = (
        _lin(x, P[f"{prefix}.res_conv.weight"], P[f"{prefix}.res_conv.bias"]) if f"{prefix}.res_conv.weight" in P else x
    )
    return h + skip


def ref_attention(P: Raw, prefix: str, x: torch.Tensor, projections: torch.Tensor) -> torch.Tensor:
    """projections: (16, 384, d). Residual(PreNorm(Attention)) written per head with explicit slices."""
    d = x.shape[1]
    g = P[f"{prefix}.fn.norm.g"].double().reshape(1, d)
    normed = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12) * g * math.sqrt(d)
    tokens = torch.einsum("nod,bd->bno", projections.double(), normed)  # (B, 16, 384)
    heads = []
    for h in range(4):
        q = tokens[:, :, 32 * h : 32 * h + 32] * 32**-0.5
        k = tokens[:, :, 128 + 32 * h : 128 + 32 * h + 32]
        v = tokens[:, :, 256 + 32 * h : 256 + 32 * h + 32]
        weights = torch.softmax(q @ k.transpose(1, 2), dim=2)  # over the 16 key tokens
        heads.append(weights @ v)  # (B, 16, 32)
    grouped = torch.cat(heads, dim=2)  # (B, 16, 128), channel 32h + c
    out = _lin(grouped, P[f"{prefix}.fn.fn.to_out.weight"], P[f"{prefix}.fn.fn.to_out.bias"])  # (B, 16, d)
    pooled = torch.einsum("bnd,n->bd", out, P[f"{prefix}.fn.fn.to_out_linear.weight"][0].double())
    return pooled + P[f"{prefix}.fn.fn.to_out_linear.bias"].double() + x


def ref_mlp(P: Raw, prefix: str, x: torch.Tensor) -> torch.Tensor:
    return _lin(
        _silu(_lin(x, P[f"{prefix}.0.weight"], P[f"{prefix}.0.bias"])),
        P[f"{prefix}.2.weight"],
        P[f"{prefix}.2.bias"],
    )


def ref_denoiser(
    P: Raw, projections: dict[str, torch.Tensor], x: torch.Tensor, t: torch.Tensor, c: torch.Tensor
) -> torch.Tensor:
    x = _lin(x.double(), P["init_conv.weight"], P["init_conv.bias"])
    initial = x
    cond = torch.cat([ref_time_embedding(P, t), c.double()], dim=1)
    skips = []
    for i in range(2):
        x = ref_resblock(P, f"downs.{i}.0", x, cond)
        skips.append(x)
        x = ref_resblock(P, f"downs.{i}.1", x, cond)
        x = ref_attention(P, f"downs.{i}.2", x, projections[f"downs.{i}.2"])
        skips.append(x)
        x = ref_mlp(P, f"downs.{i}.3", x)
    x = ref_resblock(P, "mid_block1", x, cond)
    x = ref_attention(P, "mid_attn", x, projections["mid_attn"])
    x = ref_resblock(P, "mid_block2", x, cond)
    for j in range(2):
        x = ref_mlp(P, f"ups.{j}.0", x)
        x = ref_resblock(P, f"ups.{j}.1", torch.cat([x, skips.pop()], dim=1), cond)
        x = ref_resblock(P, f"ups.{j}.2", torch.cat([x, skips.pop()], dim=1), cond)
        x = ref_attention(P, f"ups.{j}.3", x, projections[f"ups.{j}.3"])
    x = ref_resblock(P, "finals.0.0", torch.cat([x, initial], dim=1), cond)
    x = ref_attention(P, "finals.0.1", x, projections["finals.0.1"])
    return _lin(x, P["finals.0.2.weight"], P["finals.0.2.bias"])


@pytest.mark.parametrize("kind", ["idgen", "expgen"])
def test_loaded_denoiser_equals_independent_reference(
    kind: str, official_files: dict[str, tuple[Path, dict[str, Any]]], loaded: dict[str, LoadedNetworks]
) -> None:
    P = official_files[kind][1]["net"]
    model = loaded[kind].denoiser
    assert model is not None
    state = model.state_dict()
    # The 15 synthetic projections come from the model (they exist nowhere else); slot 15 from the file.
    projections = {
        path: torch.stack(
            [state[f"{path}.fn.fn.to_qkv.{i}.weight"][:, :, 0] for i in range(15)]
            + [P[f"{path}.fn.fn.qkv.weight"][:, :, 0]]
        )
        for path in ATTENTION_PATHS
    }
    feature = P["init_conv.weight"].shape[0]
    context = P["downs.0.0.mlp.1.weight"].shape[1] - 512
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(5, feature, generator=generator)
    t = torch.tensor([0, 1, 250, 998, 999])
    c = torch.randn(5, context, generator=generator)

    captured: dict[str, torch.Tensor] = {}
    handles = [
        model.time_mlp.register_forward_hook(lambda m, i, o: captured.__setitem__("time", o)),
        model.init_conv.register_forward_hook(lambda m, i, o: captured.__setitem__("init", o)),
        model.downs[0][0].register_forward_hook(lambda m, i, o: captured.__setitem__("rb0", o)),  # type: ignore[index]
    ]
    try:
        with torch.no_grad():
            out = model(x, t, c)
    finally:
        for handle in handles:
            handle.remove()

    time_ref = ref_time_embedding(P, t)
    torch.testing.assert_close(captured["time"].double(), time_ref, atol=1e-5, rtol=0)
    init_ref = _lin(x.double(), P["init_conv.weight"], P["init_conv.bias"])
    cond = torch.cat([time_ref, c.double()], dim=1)
    rb0_ref = ref_resblock(P, "downs.0.0", init_ref, cond)
    torch.testing.assert_close(captured["rb0"].double(), rb0_ref, atol=1e-5, rtol=0)

    out_ref = ref_denoiser(P, projections, x, t, c)
    assert out_ref.std() > 0.05  # a meaningful, non-degenerate comparison
    torch.testing.assert_close(out.double(), out_ref, atol=1e-5, rtol=0)


def test_synthetic_warning_text_names_the_quirk() -> None:
    assert SYNTHETIC_WARNING.startswith("15 of 16 attention projections synthetic")
