"""What the worker runs on, for the ``hello`` event: the torch build and the device's name and memory."""

from __future__ import annotations

from typing import Any

import torch


def torch_build() -> str:
    """ "cuda 12.8", "rocm 6.2", "mps" or "cpu": which build of torch this is, not which device is used."""
    if torch.version.cuda:
        return f"cuda {torch.version.cuda}"
    hip = getattr(torch.version, "hip", None)
    if hip:
        return f"rocm {hip}"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_built():
        return "mps"
    return "cpu"


def device_info(device: str) -> dict[str, Any]:
    """Name and total memory (GB) of ``device``; the CPU reports its processor and no memory figure."""
    if device.startswith("cuda") and torch.cuda.is_available():
        index = int(device.split(":", 1)[1]) if ":" in device else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        return {"device_name": props.name, "device_memory_gb": round(props.total_memory / 2**30, 2)}
    if device == "mps":
        return {"device_name": "Apple GPU (MPS)", "device_memory_gb": None}
    import platform

    return {"device_name": platform.processor() or platform.machine(), "device_memory_gb": None}


def runtime_info(device: str) -> dict[str, Any]:
    return {"torch_build": torch_build(), **device_info(device)}
