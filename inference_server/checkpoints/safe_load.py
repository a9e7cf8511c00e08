"""Read a torch checkpoint without executing anything it contains.

``torch.load(weights_only=True)`` uses torch's restricted unpickler: plain containers, numbers, strings
and tensors only; any other global (``os.system``, arbitrary classes) is refused before it is called.
Every failure becomes a ``BadCheckpointError`` that names the file and says what to do.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import torch

from ..errors import BadCheckpointError, MissingAssetError

__all__ = ["read_torch_checkpoint"]

_REDOWNLOAD = (
    "download the file again from https://ofer.is.tue.mpg.de (the download may be incomplete or "
    "the file replaced), or point the worker at the right file"
)


def _first_line(error: BaseException, limit: int = 300) -> str:
    text = str(error).strip().splitlines()
    line = text[0] if text else type(error).__name__
    return line[:limit]


def read_torch_checkpoint(path: str | Path) -> dict[str, Any]:
    """The top-level dict of a ``torch.save`` file, tensors on the CPU (memory-mapped when possible)."""
    path = Path(path)
    if not path.is_file():
        raise MissingAssetError(f"checkpoint {path} does not exist", "check the checkpoint folder setting")
    if path.stat().st_size == 0:
        raise BadCheckpointError(f"checkpoint {path.name} is empty (0 bytes)", _REDOWNLOAD)
    # Memory-mapping keeps a multi-GB file with optimiser state from being read into RAM at once;
    # it only works for the zip container that torch.save writes since PyTorch 1.6.
    is_zip = zipfile.is_zipfile(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except Exception as error:  # torch raises many types here: RuntimeError, UnpicklingError, EOFError, …
        reason = _first_line(error)
        if "weights only load failed" in str(error).lower() or "unsupported global" in str(error).lower():
            raise BadCheckpointError(
                f"checkpoint {path.name} contains Python objects other than tensors and plain values, "
                f"so it was not loaded (nothing in it was executed): {reason}",
                "use the official OFER checkpoint files unmodified; never load files from untrusted sources",
            ) from None
        kind = "truncated or damaged zip archive" if is_zip else "not a PyTorch zip or pickle file"
        raise BadCheckpointError(
            f"checkpoint {path.name} cannot be read as a PyTorch file ({kind}): {reason}",
            _REDOWNLOAD,
        ) from None
    if not isinstance(data, dict) or not all(isinstance(key, str) for key in data):
        raise BadCheckpointError(
            f"checkpoint {path.name} holds a {type(data).__name__}, not the dictionary of an OFER model file",
            _REDOWNLOAD,
        )
    return data
