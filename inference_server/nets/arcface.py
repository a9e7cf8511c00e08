"""ArcFace iresnet encoder (iresnet100 by default) with the insightface key layout (spec 3.1, appendix F).

BatchNorm always runs with its running statistics (eval behaviour), also inside ``train()``: the
official code skipped the final ``features`` BatchNorm at batch size 1 and let "frozen" layers drift
their statistics (spec section 13); here a sample's embedding never depends on its batch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ARCFACE_CONFIG", "ArcFaceConfig", "ArcFaceEncoder", "IBasicBlock"]

BN_EPS = 1e-5


@dataclass(frozen=True)
class ArcFaceConfig:
    """Blocks per stage and stage widths; the defaults are iresnet100 (65,156,160 parameters)."""

    layers: tuple[int, ...] = (3, 13, 30, 3)
    widths: tuple[int, ...] = (64, 128, 256, 512)
    embedding_dim: int = 512
    input_size: int = 112

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(int(n) for n in self.layers))
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        if len(self.layers) != len(self.widths):
            raise ValueError("layers and widths must have one entry per stage")
        if self.input_size % (2 ** len(self.layers)):
            raise ValueError(f"input_size must be divisible by {2 ** len(self.layers)} (one halving per stage)")

    @property
    def final_map_size(self) -> int:
        return self.input_size // 2 ** len(self.layers)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["layers"], data["widths"] = list(self.layers), list(self.widths)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArcFaceConfig:
        return cls(**{**data, "layers": tuple(data["layers"]), "widths": tuple(data["widths"])})


ARCFACE_CONFIG = ArcFaceConfig()


def _conv3x3(d_in: int, d_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(d_in, d_out, 3, stride=stride, padding=1, bias=False)


class IBasicBlock(nn.Module):
    """BN, conv3x3, BN, PReLU, conv3x3 (strided in block 0), BN, plus the (downsampled) input."""

    def __init__(self, d_in: int, width: int, stride: int, downsample: bool) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(d_in, eps=BN_EPS)
        self.conv1 = _conv3x3(d_in, width)
        self.bn2 = nn.BatchNorm2d(width, eps=BN_EPS)
        self.prelu = nn.PReLU(width)
        self.conv2 = _conv3x3(width, width, stride)
        self.bn3 = nn.BatchNorm2d(width, eps=BN_EPS)
        self.downsample: nn.Sequential | None = (
            nn.Sequential(nn.Conv2d(d_in, width, 1, stride=stride, bias=False), nn.BatchNorm2d(width, eps=BN_EPS))
            if downsample
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        identity = x if self.downsample is None else self.downsample(x)
        return out + identity


class ArcFaceEncoder(nn.Module):
    """``forward(blob (B, 3, S, S) in [-1, 1]) -> (B, embedding_dim)`` L2-normalised identity embedding."""

    def __init__(self, config: ArcFaceConfig = ARCFACE_CONFIG) -> None:
        super().__init__()
        self.config = config
        stem = config.widths[0]
        self.conv1 = _conv3x3(3, stem)
        self.bn1 = nn.BatchNorm2d(stem, eps=BN_EPS)
        self.prelu = nn.PReLU(stem)
        d_in = stem
        for index, (count, width) in enumerate(zip(config.layers, config.widths, strict=True)):
            # Block 0 of every stage halves the map and has a downsample, even when d_in == width.
            blocks = [IBasicBlock(d_in, width, 2, True)]
            blocks += [IBasicBlock(width, width, 1, False) for _ in range(count - 1)]
            self.add_module(f"layer{index + 1}", nn.Sequential(*blocks))
            d_in = width
        self.bn2 = nn.BatchNorm2d(d_in, eps=BN_EPS)
        self.fc = nn.Linear(d_in * config.final_map_size**2, config.embedding_dim)
        self.features = nn.BatchNorm1d(config.embedding_dim, eps=BN_EPS)
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False  # fixed at 1 in the official training
        self.train(False)

    def train(self, mode: bool = True) -> ArcFaceEncoder:
        super().train(mode)
        for module in self.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()  # running statistics always; never batch statistics
        return self

    def stages(self) -> list[nn.Sequential]:
        return [getattr(self, f"layer{i + 1}") for i in range(len(self.config.layers))]

    def embed(self, blob: torch.Tensor) -> torch.Tensor:
        """The 512-d embedding before L2 normalisation (after ``features``)."""
        x = self.prelu(self.bn1(self.conv1(blob)))
        for stage in self.stages():
            x = stage(x)
        x = self.bn2(x)
        return self.features(self.fc(torch.flatten(x, 1)))

    def forward(self, blob: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.embed(blob), dim=1)
