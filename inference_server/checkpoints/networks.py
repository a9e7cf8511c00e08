"""What a checkpoint loader hands to the pipeline: the networks of one OFER model file plus metadata."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..nets.arcface import ArcFaceEncoder
from ..nets.clip_visual import ClipImageEncoder
from ..nets.denoiser import Denoiser
from ..nets.idrank import IdRank

__all__ = ["FORMAT_VERSION", "KINDS", "SCHEDULE", "LoadedNetworks"]

#: Version tag of the project's own checkpoint format (safetensors + JSON sidecar).
FORMAT_VERSION = "ofer-checkpoint/1"

#: The three model files: IdGen (shape), ExpGen (expression + jaw), IdRank (ranker).
KINDS = ("idgen", "expgen", "idrank")

#: The diffusion schedule every released OFER denoiser was trained with (spec section 7).
SCHEDULE: dict[str, Any] = {
    "num_steps": 1000,
    "beta_start": 1e-4,
    "beta_end": 1e-2,
    "beta_schedule": "linear",
    "prediction": "epsilon",
}


@dataclass
class LoadedNetworks:
    """The networks of one model file, in eval mode on the CPU.

    ``kind`` is ``idgen`` (denoiser + arcface), ``expgen`` (denoiser + arcface + farl) or ``idrank``
    (rank_net + arcface + farl). ``metadata`` holds at least ``format_version``, ``kind``,
    ``attention_synthetic``, ``demo`` and ``provenance``; denoisers also ``schedule``.
    """

    kind: str
    arcface: ArcFaceEncoder
    denoiser: Denoiser | None = None
    farl: ClipImageEncoder | None = None
    rank_net: IdRank | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        needs_denoiser = self.kind != "idrank"
        if needs_denoiser != (self.denoiser is not None) or (self.kind == "idrank") != (self.rank_net is not None):
            raise ValueError(f"a {self.kind} model needs {'a denoiser' if needs_denoiser else 'a rank net'} only")
        if self.kind in ("expgen", "idrank") and self.farl is None:
            raise ValueError(f"a {self.kind} model needs the FaRL encoder")
        self.metadata.setdefault("format_version", FORMAT_VERSION)
        self.metadata.setdefault("kind", self.kind)
        self.metadata.setdefault("attention_synthetic", False)
        self.metadata.setdefault("demo", False)
        self.metadata.setdefault("provenance", {})
        if needs_denoiser:
            self.metadata.setdefault("schedule", dict(SCHEDULE))

    @property
    def attention_synthetic(self) -> bool:
        """True when 15 of 16 attention projections per block were synthesised (official checkpoints)."""
        return bool(self.metadata.get("attention_synthetic", False))

    @property
    def demo(self) -> bool:
        return bool(self.metadata.get("demo", False))

    def modules(self) -> dict[str, Any]:
        """The present networks by their name in the project format (``denoiser``, ``rank_net``, …)."""
        named = {
            "denoiser": self.denoiser,
            "rank_net": self.rank_net,
            "arcface": self.arcface,
            "farl": self.farl,
        }
        return {name: module for name, module in named.items() if module is not None}

    def eval(self) -> LoadedNetworks:
        for module in self.modules().values():
            module.eval()
        return self
