"""Network sizes by name: the official OFER sizes, the small DEMO family, and a tiny one for tests."""

from __future__ import annotations

from dataclasses import dataclass

from ..nets.arcface import ArcFaceConfig
from ..nets.clip_visual import ClipVisionConfig
from ..nets.denoiser import EXPGEN_CONFIG, IDGEN_CONFIG, DenoiserConfig
from ..nets.idrank import IdRankConfig


@dataclass(frozen=True)
class SizePreset:
    idgen: DenoiserConfig
    expgen: DenoiserConfig
    arcface: ArcFaceConfig
    farl: ClipVisionConfig
    idrank: IdRankConfig


def _small_denoiser(feature_dim: int, dims: tuple[int, ...], context: int, time_dim: int, tokens: int,
                    heads: int, head_dim: int) -> DenoiserConfig:  # fmt: skip
    return DenoiserConfig(feature_dim=feature_dim, dims=dims, context_dim=context, time_dim=time_dim,
                          n_tokens=tokens, heads=heads, head_dim=head_dim)  # fmt: skip


PRESETS: dict[str, SizePreset] = {
    "official": SizePreset(IDGEN_CONFIG, EXPGEN_CONFIG, ArcFaceConfig(), ClipVisionConfig(), IdRankConfig()),
    # Same family, reduced widths: the three DEMO files stay a few MB in fp16 and train in minutes on a CPU.
    "demo": SizePreset(
        idgen=_small_denoiser(300, (300, 50, 10), 512, 64, 4, 2, 16),
        expgen=_small_denoiser(53, (53, 25, 10), 1024, 64, 4, 2, 16),
        arcface=ArcFaceConfig(layers=(1, 1, 1, 1), widths=(8, 16, 32, 16)),
        farl=ClipVisionConfig(width=64, layers=2, heads=2, patch_size=32),
        # 8 channels per GroupNorm group (8 groups): with 2 (the earlier 16-wide layers) a group normalises
        # to ±1 whatever its input, the gradients vanish and the ranker settles on uniform scores.
        idrank=IdRankConfig(hidden_dims=(64, 64, 64, 64)),
    ),
    "tiny": SizePreset(
        idgen=_small_denoiser(300, (300, 16, 8), 512, 16, 2, 1, 8),
        expgen=_small_denoiser(53, (53, 16, 8), 1024, 16, 2, 1, 8),
        arcface=ArcFaceConfig(layers=(1, 1, 1, 1), widths=(4, 4, 8, 8)),
        farl=ClipVisionConfig(width=32, layers=1, heads=1, patch_size=56),
        idrank=IdRankConfig(hidden_dims=(16, 16, 8, 8)),
    ),
}
