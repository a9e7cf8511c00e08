"""The clip's work folder: every finished piece of per-frame work, on disk, so a clip resumes.

``OUT.npz.work/`` beside the output holds ``manifest.json`` (the source and every setting the work
depends on), ``encode/NNNNNN.npz`` (pass 1: detection and image conditions of frame N),
``identity.npz`` (the pooled identity), ``camera.npz`` (the clip's camera) and ``fit/NNNNNN.npz``
(pass 2: the frame's hypotheses and their fit). Each file is written atomically (atomic_io), so a
``kill -9`` leaves either the whole file or none; a file that does not read back is simply redone.
A work folder made for another source or other settings is never mixed in: it is cleared first.
The folder is removed once the result is written.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic_io import atomic_write, atomic_write_text, io_failure
from ..errors import BadRequestError
from ..npy_guard import NpyGuardError, load_npz, write_npz

MANIFEST = "manifest.json"


def work_folder_for(output: str | Path) -> Path:
    target = Path(output).expanduser()
    return target.with_name(target.name + ".work")


def fingerprint(source: dict[str, Any], settings: dict[str, Any]) -> str:
    """SHA-256 of what the per-frame work depends on (JSON with sorted keys)."""
    return hashlib.sha256(json.dumps({"source": source, "settings": settings}, sort_keys=True).encode()).hexdigest()


class WorkFolder:
    def __init__(self, root: Path) -> None:
        self.root = root

    def open(self, key: str, details: dict[str, Any], *, resume: str) -> int:
        """Prepare the folder for work ``key``. ``resume``: "auto" keeps matching work and clears other
        work, "require" refuses to start without matching work, "restart" clears whatever is there.
        Returns how many frames of pass 2 are already done (0 for a fresh start)."""
        manifest = self._manifest()
        matches = manifest is not None and manifest.get("key") == key
        if resume == "require" and not matches:
            why = "there is no earlier work" if manifest is None else "the earlier work used another clip or settings"
            raise BadRequestError(
                f"cannot resume into {self.root}: {why}",
                "Run again without --resume to start over, or with the same clip and settings as before.",
            )
        if self.root.exists() and (resume == "restart" or not matches):
            self.clear()
        if not (self.root / MANIFEST).is_file():
            atomic_write_text(self.root / MANIFEST, json.dumps({"key": key, **details}, sort_keys=True, indent=1))
        return sum(1 for _ in (self.root / "fit").glob("*.npz")) if (self.root / "fit").is_dir() else 0

    def _manifest(self) -> dict[str, Any] | None:
        try:
            value = json.loads((self.root / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return value if isinstance(value, dict) else None

    def clear(self) -> None:
        try:
            shutil.rmtree(self.root)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise io_failure(exc, self.root, "remove the old work folder") from None

    # -- pieces ------------------------------------------------------------------------------------
    def _path(self, kind: str, index: int | None) -> Path:
        return self.root / f"{kind}.npz" if index is None else self.root / kind / f"{index:06d}.npz"

    def save(self, kind: str, index: int | None, arrays: dict[str, np.ndarray]) -> None:
        atomic_write(self._path(kind, index), lambda handle: write_npz(handle, arrays))

    def load(self, kind: str, index: int | None = None) -> dict[str, np.ndarray] | None:
        """A saved piece, or None when it is absent or does not read back (then it is redone)."""
        path = self._path(kind, index)
        if not path.is_file():
            return None
        try:
            return load_npz(path)
        except (NpyGuardError, OSError):
            return None


def pack_meta(value: dict[str, Any]) -> np.ndarray:
    """A JSON object as a 0-d string array (stored beside a piece's arrays)."""
    return np.array(json.dumps(value, sort_keys=True))


def unpack_meta(arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    value = json.loads(str(arrays["meta"][()]))
    if not isinstance(value, dict):
        raise ValueError("not an object")
    return value
