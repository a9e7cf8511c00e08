"""The attention-projection quirk of the official denoisers (spec section 5, appendix H).

Official checkpoints keep only the last of the 16 projections of each attention block, under
``<attn>.fn.fn.qkv.weight``. It goes into slot 15; slots 0-14 are drawn from PyTorch's default Conv1d
initialisation, uniform(-1/sqrt(d), 1/sqrt(d)), with a generator seeded from a fixed constant plus a
stable hash of the block's path, so every load on every machine gives the same tensors.
"""

from __future__ import annotations

import math
import zlib

import torch

__all__ = [
    "ATTENTION_SEED_BASE",
    "OFFICIAL_QKV_SUFFIX",
    "PROJECT_QKV_SUFFIX",
    "SYNTHETIC_WARNING",
    "synthetic_projections",
]

#: Fixed base of the projection seeds; changing it changes every converted model, so it is versioned
#: together with the checkpoint format.
ATTENTION_SEED_BASE = 20_250_101

OFFICIAL_QKV_SUFFIX = ".fn.fn.qkv.weight"
PROJECT_QKV_SUFFIX = ".fn.fn.to_qkv.{index}.weight"

SYNTHETIC_WARNING = (
    "15 of 16 attention projections synthetic: the official checkpoint stores only the last projection "
    "of each attention block; the other 15 were drawn reproducibly from a fixed seed, so results differ "
    "from the official code's (which re-randomises them on every run)"
)


def synthetic_projections(
    attention_path: str, dim: int, count: int = 15, width: int = 384, seed_base: int = ATTENTION_SEED_BASE
) -> list[torch.Tensor]:
    """``count`` projections of shape (width, dim, 1) for the attention block at ``attention_path``."""
    generator = torch.Generator(device="cpu")
    generator.manual_seed(seed_base + zlib.crc32(attention_path.encode("utf-8")))
    bound = 1.0 / math.sqrt(dim)
    return [
        torch.empty(width, dim, 1, dtype=torch.float32).uniform_(-bound, bound, generator=generator)
        for _ in range(count)
    ]
