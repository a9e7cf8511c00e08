"""CLIP image tower: appendix G keys and count, and a reference forward pass written with plain ops."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from inference_server.nets.clip_visual import ClipImageEncoder, ClipVisionConfig


def _appendix_g(
    width: int = 768, layers: int = 12, tokens: int = 197, patch: int = 16, out: int = 512
) -> dict[str, tuple[int, ...]]:
    table: dict[str, tuple[int, ...]] = {
        "visual.conv1.weight": (width, 3, patch, patch),
        "visual.class_embedding": (width,),
        "visual.positional_embedding": (tokens, width),
        "visual.ln_pre.weight": (width,),
        "visual.ln_pre.bias": (width,),
        "visual.ln_post.weight": (width,),
        "visual.ln_post.bias": (width,),
        "visual.proj": (width, out),
    }
    for i in range(layers):
        p = f"visual.transformer.resblocks.{i}"
        table |= {
            f"{p}.ln_1.weight": (width,),
            f"{p}.ln_1.bias": (width,),
            f"{p}.attn.in_proj_weight": (3 * width, width),
            f"{p}.attn.in_proj_bias": (3 * width,),
            f"{p}.attn.out_proj.weight": (width, width),
            f"{p}.attn.out_proj.bias": (width,),
            f"{p}.ln_2.weight": (width,),
            f"{p}.ln_2.bias": (width,),
            f"{p}.mlp.c_fc.weight": (4 * width, width),
            f"{p}.mlp.c_fc.bias": (4 * width,),
            f"{p}.mlp.c_proj.weight": (width, 4 * width),
            f"{p}.mlp.c_proj.bias": (width,),
        }
    return table


def test_vit_b16_layout_and_count() -> None:
    model = ClipImageEncoder()
    state = model.state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == _appendix_g()
    assert len(state) == 152
    assert sum(p.numel() for p in model.parameters()) == 86_192_640


def _reference(model: ClipImageEncoder, image: torch.Tensor, heads: int) -> torch.Tensor:
    """OpenAI CLIP visual forward with torch's own multi-head attention (sequence-first) as the oracle."""
    P = {k[len("visual.") :]: v.double() for k, v in model.state_dict().items()}
    width = P["conv1.weight"].shape[0]
    x = F.conv2d(image.double(), P["conv1.weight"], stride=P["conv1.weight"].shape[-1])
    x = x.reshape(x.shape[0], width, -1).permute(0, 2, 1)
    cls = P["class_embedding"].expand(x.shape[0], 1, width)
    x = torch.cat([cls, x], dim=1) + P["positional_embedding"]
    x = F.layer_norm(x, (width,), P["ln_pre.weight"], P["ln_pre.bias"]).permute(1, 0, 2)  # (L, B, W)
    i = 0
    while f"transformer.resblocks.{i}.ln_1.weight" in P:
        p = f"transformer.resblocks.{i}."
        h = F.layer_norm(x, (width,), P[p + "ln_1.weight"], P[p + "ln_1.bias"])
        attn, _ = F.multi_head_attention_forward(
            h,
            h,
            h,
            width,
            heads,
            P[p + "attn.in_proj_weight"],
            P[p + "attn.in_proj_bias"],
            None,
            None,
            False,
            0.0,
            P[p + "attn.out_proj.weight"],
            P[p + "attn.out_proj.bias"],
            training=False,
            need_weights=False,
        )
        x = x + attn
        h = F.layer_norm(x, (width,), P[p + "ln_2.weight"], P[p + "ln_2.bias"])
        h = F.linear(h, P[p + "mlp.c_fc.weight"], P[p + "mlp.c_fc.bias"])
        x = x + F.linear(h * torch.sigmoid(1.702 * h), P[p + "mlp.c_proj.weight"], P[p + "mlp.c_proj.bias"])
        i += 1
    return F.layer_norm(x[0], (width,), P["ln_post.weight"], P["ln_post.bias"]) @ P["proj"]


def test_small_variant_matches_reference_and_batch_of_one() -> None:
    torch.manual_seed(0)
    config = ClipVisionConfig(width=64, layers=2, heads=4, patch_size=8, image_size=32, output_dim=16)
    model = ClipImageEncoder(config).eval()
    assert set(model.state_dict()) == set(_appendix_g(64, 2, 17, 8, 16))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        out = model.encode_image(images)
        torch.testing.assert_close(out.double(), _reference(model, images, heads=4), atol=1e-5, rtol=0)
        torch.testing.assert_close(model(images[1:2]), out[1:2], atol=1e-5, rtol=0)
    assert out.shape == (3, 16)


def test_full_size_batch_of_one() -> None:
    model = ClipImageEncoder().eval()
    with torch.no_grad():
        out = model.encode_image(torch.randn(1, 3, 224, 224))
    assert out.shape == (1, 512) and torch.isfinite(out).all()


def test_half_precision_weights_run_and_stay_close_to_float32() -> None:
    """A bundle loaded in fp16/bf16 halves every parameter, the LayerNorms' too: the encoder must still run
    (it raised 'expected scalar type Float but found Half' on the GPU) and stay near the fp32 embedding."""
    torch.manual_seed(0)
    config = ClipVisionConfig(width=64, layers=2, heads=4, patch_size=8, image_size=32, output_dim=16)
    model = ClipImageEncoder(config).eval()
    image = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        reference = model(image)
        for dtype in (torch.bfloat16, torch.float16):
            half = ClipImageEncoder(config).eval()
            half.load_state_dict(model.state_dict())
            half.to(dtype)
            got = half(image.to(dtype))
            assert got.dtype == dtype
            assert F.cosine_similarity(got.float(), reference).min() > 0.99
