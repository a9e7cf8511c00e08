"""The extra photos of one person (bpy-free): which chosen files join the list, and why others do not.

The scene keeps a list of extra photos next to the main photo; Reconstruct sends them as the request's
``photos`` (the worker pools the identity over all photos; expressions, fit and texture stay the main
photo's). Adding skips what the worker would refuse anyway, with the reason, so the list stays valid.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ..inference_server.protocol import MAX_EXTRA_PHOTOS

#: File name endings the file browser offers and the list takes (what the worker's loader reads).
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


@dataclass
class PhotoListChange:
    added: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, why)

    def summary(self) -> str:
        parts = [f"Added {len(self.added)} photo{'s' * (len(self.added) != 1)}"]
        parts += [f"skipped {os.path.basename(path)}: {why}" for path, why in self.skipped[:5]]
        if len(self.skipped) > 5:
            parts.append(f"and {len(self.skipped) - 5} more skipped")
        return "; ".join(parts)


def _same(a: str, b: str) -> bool:
    return os.path.normcase(os.path.normpath(a)) == os.path.normcase(os.path.normpath(b))


def add_photos(existing: Sequence[str], chosen: Iterable[str], main: str | None) -> PhotoListChange:
    """Which of ``chosen`` (absolute paths) join ``existing``: images only, no repeats, not the main photo,
    at most ``MAX_EXTRA_PHOTOS`` in all."""
    change = PhotoListChange()
    for path in chosen:
        if not path.lower().endswith(PHOTO_SUFFIXES):
            change.skipped.append((path, "not a photo file (" + ", ".join(PHOTO_SUFFIXES) + ")"))
        elif main and _same(path, main):
            change.skipped.append((path, "it is the main photo"))
        elif any(_same(path, other) for other in [*existing, *change.added]):
            change.skipped.append((path, "already in the list"))
        elif len(existing) + len(change.added) >= MAX_EXTRA_PHOTOS:
            change.skipped.append((path, f"the list is full ({MAX_EXTRA_PHOTOS} extra photos at most)"))
        else:
            change.added.append(path)
    return change


def request_photos(listed: Sequence[str], main: str) -> list[str]:
    """The ``photos`` of a request: the listed photos except the main one (it may have been chosen as main
    after it was listed), each once."""
    out: list[str] = []
    for path in listed:
        if path and not _same(path, main) and not any(_same(path, p) for p in out):
            out.append(path)
    return out
