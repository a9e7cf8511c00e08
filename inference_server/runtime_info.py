"""What the worker runs on, for the ``hello`` event: the torch build, the device's name and memory, and
what the encoders' precision switch will find (ONNX Runtime's version)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from collections.abc import Mapping
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


def onnxruntime_version() -> str | None:
    """The installed ONNX Runtime's version (without importing it: a hello stays fast), None when absent."""
    if importlib.util.find_spec("onnxruntime") is None:
        return None
    for distribution in ("onnxruntime", "onnxruntime-gpu"):
        try:
            return importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "unknown"


def runtime_info(device: str, environ: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """``encoder_precision`` is the switch as set (OFER_ENCODER_PRECISION, unchecked: a misspelt value is the
    first request's error, not a failed hello); ``denoiser_runtime`` likewise (OFER_CPU_DENOISER_RUNTIME), its
    default what this worker can run: ONNX Runtime where installed (nets/onnx_step.py), else torch."""
    ort = onnxruntime_version()
    default_steps = "onnxruntime" if ort and importlib.util.find_spec("onnx") is not None else "torch"
    return {
        "torch_build": torch_build(),
        **device_info(device),
        "onnxruntime": ort,
        "encoder_precision": environ.get("OFER_ENCODER_PRECISION", "fp32"),
        "denoiser_runtime": environ.get("OFER_CPU_DENOISER_RUNTIME", "").strip().lower() or default_steps,
    }
