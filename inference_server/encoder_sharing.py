"""Encoders with identical weights, found by content at load, are kept and run once.

Each OFER model file carries its own encoder copies (IdGen: ArcFace; ExpGen and IdRank: ArcFace and
FaRL), so a reconstruction runs three ArcFace and two FaRL passes. Whether copies are identical depends on
how the checkpoints were trained (frozen or handed-over encoders are; fine-tuned ones are not), so it is
decided from the weights themselves, exactly: copies are candidates when a SHA-256 over the class, the
configuration and every state-dict entry (name, dtype, shape and a strided sample of ≤ 4096 values —
buffers included, so BatchNorm statistics count) agrees, and are the same when every tensor is then equal
element for element. (Hashing all 1.5 GB of the official encoders took 3.7 s on a loaded 2-core machine;
the sample plus ``torch.equal`` costs a fraction of that and stays exact.) Copies that are the same compute
the same function; the later ones are replaced by the first (their memory is freed) and their embedding is
computed once per image.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

import torch

#: Encoder slots of the three model files, in the order the first of a group is kept.
ENCODER_SLOTS = ("idgen.arcface", "expgen.arcface", "idrank.arcface", "expgen.farl", "idrank.farl")


#: Values per tensor that enter the digest (evenly strided); equality is then checked on all of them.
SAMPLE_VALUES = 4096


def module_digest(module: torch.nn.Module) -> str:
    """SHA-256 of the class, the configuration and every state-dict entry (name, dtype, shape, sampled values).

    Different digests mean different functions; equal digests make two modules candidates for
    :func:`same_weights`."""
    digest = hashlib.sha256()
    digest.update(f"{type(module).__module__}.{type(module).__qualname__}".encode())
    digest.update(repr(getattr(module, "config", None)).encode())
    for name, tensor in module.state_dict().items():
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        flat = tensor.detach().reshape(-1)
        sample = flat[:: max(1, flat.numel() // SAMPLE_VALUES)].cpu().contiguous()
        digest.update(sample.view(torch.uint8).numpy().data if sample.numel() else b"")
    return digest.hexdigest()


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    """Every state-dict entry equal in name, dtype, shape and every value."""
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(
        sa[k].dtype == sb[k].dtype and sa[k].shape == sb[k].shape and torch.equal(sa[k], sb[k]) for k in sa
    )


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
    """Group named modules by content: every slot maps to the first slot with the same weights."""
    digests: dict[str, str] = {}
    firsts: dict[str, list[tuple[str, torch.nn.Module]]] = {}  # digest → the first slot of each group
    canonical: dict[str, str] = {}
    for slot, module in modules:
        digest = module_digest(module)
        digests[slot] = digest
        candidates = firsts.setdefault(digest, [])
        match = next((first for first, other in candidates if same_weights(module, other)), None)
        if match is None:
            candidates.append((slot, module))
        canonical[slot] = match or slot
    return EncoderSharing(canonical, digests)
