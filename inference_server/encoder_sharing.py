"""Encoders with identical weights, found by content at load, are kept and run once.

Each OFER model file carries its own encoder copies (IdGen: ArcFace; ExpGen and IdRank: ArcFace and
FaRL), so a reconstruction runs three ArcFace and two FaRL passes. Whether copies are identical depends on
how the checkpoints were trained (frozen or handed-over encoders are; fine-tuned ones are not), so it is
decided from the weights themselves: a SHA-256 over the module's class, its configuration and every
state-dict entry (name, dtype, shape, bytes — buffers included, so BatchNorm statistics count). Copies
with the same digest compute the same function; the later ones are replaced by the first (their memory is
freed) and their embedding is computed once per image.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

import torch

#: Encoder slots of the three model files, in the order the first of a group is kept.
ENCODER_SLOTS = ("idgen.arcface", "expgen.arcface", "idrank.arcface", "expgen.farl", "idrank.farl")


def module_digest(module: torch.nn.Module) -> str:
    """SHA-256 of what decides the module's function: class, configuration, every state-dict entry."""
    digest = hashlib.sha256()
    digest.update(f"{type(module).__module__}.{type(module).__qualname__}".encode())
    digest.update(repr(getattr(module, "config", None)).encode())
    for name, tensor in module.state_dict().items():
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        # Bytes of the values as stored; a CPU copy only where the tensor lives elsewhere.
        data = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(data.view(torch.uint8).numpy().data if data.numel() else b"")
    return digest.hexdigest()


@dataclass(frozen=True)
class EncoderSharing:
    """``canonical[slot]`` is the slot whose encoder (and embedding) ``slot`` uses; ``digests`` for the record."""

    canonical: dict[str, str]
    digests: dict[str, str]

    @property
    def groups(self) -> list[list[str]]:
        out: dict[str, list[str]] = {}
        for slot, first in self.canonical.items():
            out.setdefault(first, []).append(slot)
        return list(out.values())

    @property
    def shared(self) -> int:
        """How many encoder passes per image sharing saves."""
        return len(self.canonical) - len(set(self.canonical.values()))


def find_identical(modules: Iterable[tuple[str, torch.nn.Module]]) -> EncoderSharing:
    """Group named modules by content: every slot maps to the first slot with the same digest."""
    digests: dict[str, str] = {}
    first_of: dict[str, str] = {}
    canonical: dict[str, str] = {}
    for slot, module in modules:
        digest = module_digest(module)
        digests[slot] = digest
        canonical[slot] = first_of.setdefault(digest, slot)
    return EncoderSharing(canonical, digests)
