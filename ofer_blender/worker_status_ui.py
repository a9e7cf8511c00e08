"""Drawing the worker's state: the managed environment box, the worker status from its ``hello``, and the
first-run guidance the OFER panel shows before any worker exists."""

from __future__ import annotations

from typing import Any

import bpy

from . import ids, managed_env
from .paths import managed_env_dir
from .session import SESSION


def torch_summary(prefs: Any) -> str:
    """What the current torch preference will install on this machine (or why it cannot)."""
    try:
        plan = managed_env.resolve_torch(
            prefs.torch_choice, prefs.cuda_build, prefs.torch_custom, managed_env.detect_platform()
        )
    except managed_env.EnvSetupError as exc:
        return str(exc)
    return f"torch: {plan.description}"


def draw_builder(layout: Any) -> bool:
    """Progress, Cancel, and the outcome of the last attempt; True while a build runs."""
    builder = SESSION.env_builder
    if builder is None:
        return False
    if builder.state == "running":
        layout.progress(factor=builder.step / max(builder.total, 1), type="BAR", text=builder.status_line())
        layout.operator(ids.OT_CANCEL_MANAGED_ENV, icon="CANCEL")
        return True
    if builder.state in ("failed", "cancelled"):
        layout.label(text=f"Environment {builder.state}: {builder.error}", icon="ERROR")
        layout.operator(ids.OT_OPEN_LOG, text="Open Environment Log", icon="TEXT").which = "ENV"
    return False


def draw_managed_env(layout: Any, prefs: Any) -> None:
    layout.prop(prefs, "torch_choice", expand=True)
    if prefs.torch_choice == "CUDA":
        layout.prop(prefs, "cuda_build")
    elif prefs.torch_choice == "CUSTOM":
        layout.prop(prefs, "torch_custom")
    layout.label(text=torch_summary(prefs), icon="INFO")
    layout.prop(prefs, "wheel_dir")
    layout.prop(prefs, "managed_base_python")
    if not prefs.wheel_dir and not managed_env.allow_online(bpy.app.online_access, bpy.app.background):
        layout.label(text="Online access is off: allow it (Preferences ▸ System) or set a wheel folder", icon="ERROR")
    if draw_builder(layout):
        return
    env_dir = managed_env_dir()
    state = managed_env.env_state(env_dir)
    record = managed_env.read_record(env_dir)
    row = layout.row()
    if state == "missing":
        row.operator(ids.OT_CREATE_MANAGED_ENV, icon="PACKAGE")
    else:
        row.operator(ids.OT_CREATE_MANAGED_ENV, text="Repair", icon="FILE_REFRESH")
        row.operator(ids.OT_REMOVE_MANAGED_ENV, text="Remove", icon="TRASH")
    row.operator(ids.OT_OPEN_LOG, text="Environment Log", icon="TEXT").which = "ENV"
    if record is not None:
        col = layout.column(align=True)
        col.label(
            text=f"Environment ready: worker {record.worker_version}, {record.torch_description}", icon="CHECKMARK"
        )
        col.label(text=f"Installed with: {record.torch_command}")
        col.label(text=f"{record.size_bytes / 1e9:.2f} GB in {env_dir} · from {record.source} · {record.created}")
    elif state == "broken":
        layout.label(text="The environment is incomplete: press Repair", icon="ERROR")


def draw_encoder_status(col: Any, hello: dict[str, Any]) -> None:
    """The encoders' precision the worker runs with, and whether it has ONNX Runtime for the int8 ones."""
    precision = hello.get("encoder_precision")
    if precision is None:  # a worker older than this line
        return
    ort = hello.get("onnxruntime")
    if precision != "fp32" and not ort:
        col.label(text="Encoders: Fast, but this worker has no ONNX Runtime: int8 is off", icon="ERROR")
        col.label(text="Managed environment: press Repair; else pip install onnxruntime in the worker's Python")
        return
    name = "Exact (fp32)" if precision == "fp32" else "Fast (int8 / bf16 where close)"
    col.label(text=f"Encoders: {name} · ONNX Runtime {ort or 'not installed'}")


def draw_denoiser_status(col: Any, hello: dict[str, Any]) -> None:
    """What runs the sampling steps on the CPU: ONNX Runtime (the default where installed) or torch."""
    runtime = hello.get("denoiser_runtime")
    if runtime is None:  # a worker older than this line
        return
    if runtime == "onnxruntime":
        col.label(text="Sampling steps on the CPU: ONNX Runtime (same samples as torch, faster)")
    else:
        col.label(text="Sampling steps on the CPU: torch (ONNX Runtime not installed or turned off)")


def draw_worker_status(layout: Any) -> None:
    """What the worker said in its last ``hello`` (Test Worker): versions, device, model files."""
    hello = SESSION.last_hello
    if hello:
        col = layout.column(align=True)
        col.label(text=f"Worker {hello.get('worker_version')} · Python {hello.get('python')}", icon="CHECKMARK")
        build = hello.get("torch_build") or "?"
        col.label(text=f"torch {hello.get('torch')} ({build}) · backend {hello.get('backend')}")
        memory = hello.get("device_memory_gb")
        memory_text = f", {memory:.1f} GB" if isinstance(memory, int | float) else ""
        col.label(text=f"Device {hello.get('device')}: {hello.get('device_name') or '?'}{memory_text}")
        draw_encoder_status(col, hello)
        draw_denoiser_status(col, hello)
        if hello.get("demo"):
            col.label(text="DEMO assets in use (no FLAME/OFER files configured)", icon="INFO")
        lines = hello.get("doctor") or []
        for line in lines:
            col.label(text=str(line), icon="ERROR" if "MISSING" in str(line) or "not set" in str(line) else "NONE")
        if not lines:
            for name, where in sorted((hello.get("assets") or {}).items()):
                if isinstance(where, dict):
                    found = "found" if where.get("exists") else "missing" if where.get("path") else "not set"
                    col.label(text=f"{name}: {where.get('path') or '-'} ({found}, {where.get('source')})")
        for name in hello.get("missing") or []:
            col.label(text=f"missing: {name}", icon="ERROR")
    if SESSION.last_report:
        for line in SESSION.last_report.splitlines()[:8]:
            layout.label(text=line)


def draw_first_run(layout: Any, prefs: Any) -> bool:
    """The OFER panel's guidance before any worker exists; True when it drew something."""
    from .preferences import worker_ready

    building = SESSION.env_building
    if not building and worker_ready(prefs):
        return False
    box = layout.box()
    if building:
        box.label(text="Setting up the worker (one time)", icon="TIME")
        draw_builder(box)
        return True
    box.label(text="First run: no worker yet", icon="INFO")
    if prefs.worker_mode == "MANAGED":
        box.label(text="Create the worker environment once (torch, about 1–3 GB):")
        box.label(text=torch_summary(prefs))
        draw_builder(box)
        box.operator(ids.OT_CREATE_MANAGED_ENV, icon="PACKAGE")
    else:
        box.label(text="Set 'Worker Python' in the add-on preferences,")
        box.label(text="or switch Worker to 'Managed environment' and create it")
    box.operator("preferences.addon_show", text="Open Preferences", icon="PREFERENCES").module = ids.ADDON_PACKAGE
    return True
