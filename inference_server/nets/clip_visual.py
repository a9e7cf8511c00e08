"""CLIP ViT image tower (ViT-B/16 by default) with the OpenAI key layout ``visual.*`` (spec 3.2, appendix G).

FaRL is this architecture with face-pretrained weights. Written here because ``open_clip`` and ``timm``
import torchvision, which does not run with the CPU torch of this project.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CLIP_MEAN", "CLIP_STD", "CLIP_VIT_B16_CONFIG", "ClipImageEncoder", "ClipVisionConfig"]

#: CLIP input normalisation (RGB, after scaling to [0, 1]).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class ClipVisionConfig:
    """Sizes of the image tower; defaults are CLIP ViT-B/16 (86,192,640 parameters)."""

    width: int = 768
    layers: int = 12
    heads: int = 12
    patch_size: int = 16
    image_size: int = 224
    output_dim: int = 512
    mlp_ratio: int = 4

    def __post_init__(self) -> None:
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by {self.heads} heads")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClipVisionConfig:
        return cls(**data)


CLIP_VIT_B16_CONFIG = ClipVisionConfig()


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 whatever the input dtype (as CLIP does for half precision).

    Its weights are cast too: a bundle loaded in fp16/bf16 halves every parameter, these included, and
    float32 input with half weights is refused by ``layer_norm`` (seen on CUDA)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = None if self.weight is None else self.weight.float()
        bias = None if self.bias is None else self.bias.float()
        return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps).to(x.dtype)


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class SelfAttention(nn.Module):
    """Multi-head self-attention with the fused ``in_proj_weight`` / ``in_proj_bias`` and ``out_proj``."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, width = x.shape
        head_dim = width // self.heads
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        qkv = qkv.reshape(batch, tokens, 3, self.heads, head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * head_dim**-0.5, qkv[1], qkv[2]
        weights = torch.softmax(q @ k.transpose(-1, -2), dim=-1)
        out = (weights @ v).transpose(1, 2).reshape(batch, tokens, width)
        return self.out_proj(out)


class Mlp(nn.Module):
    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.c_fc = nn.Linear(width, hidden)
        self.gelu = QuickGELU()
        self.c_proj = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.gelu(self.c_fc(x)))


class ResidualAttentionBlock(nn.Module):
    """Pre-LN transformer block."""

    def __init__(self, width: int, heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.ln_1 = LayerNorm(width)
        self.attn = SelfAttention(width, heads)
        self.ln_2 = LayerNorm(width)
        self.mlp = Mlp(width, width * mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, config: ClipVisionConfig) -> None:
        super().__init__()
        self.resblocks = nn.Sequential(
            *(ResidualAttentionBlock(config.width, config.heads, config.mlp_ratio) for _ in range(config.layers))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resblocks(x)


class VisionTransformer(nn.Module):
    def __init__(self, config: ClipVisionConfig) -> None:
        super().__init__()
        width, scale = config.width, config.width**-0.5
        self.conv1 = nn.Conv2d(3, width, config.patch_size, stride=config.patch_size, bias=False)
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(config.grid**2 + 1, width))
        self.ln_pre = LayerNorm(width)
        self.transformer = Transformer(config)
        self.ln_post = LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, config.output_dim))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        patches = self.conv1(image.to(self.conv1.weight.dtype))  # (B, width, grid, grid)
        patches = patches.flatten(2).transpose(1, 2)  # (B, grid², width)
        cls = self.class_embedding.to(patches.dtype).expand(patches.shape[0], 1, -1)
        x = torch.cat([cls, patches], dim=1) + self.positional_embedding.to(patches.dtype)
        x = self.transformer(self.ln_pre(x))
        return self.ln_post(x[:, 0]) @ self.proj


class ClipImageEncoder(nn.Module):
    """Holds the tower as ``visual`` so the state dict uses the OpenAI names (``visual.conv1.weight`` …)."""

    def __init__(self, config: ClipVisionConfig = CLIP_VIT_B16_CONFIG) -> None:
        super().__init__()
        self.config = config
        self.visual = VisionTransformer(config)

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) CLIP-normalised RGB → (B, output_dim) embedding, not normalised."""
        return self.visual(image)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.encode_image(image)
