"""Add-on preferences: which worker to run, where the user's FLAME model and OFER checkpoints are."""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bpy
from bpy.props import EnumProperty, FloatProperty, IntProperty, StringProperty

from . import ids, managed_env
from .paths import user_folder
from .session import SESSION
from .worker_client import default_worker_command

WORKER_MODES = [
    (
        "INTERPRETER",
        "Python interpreter",
        "A Python that has the worker installed (pip install ofer-blender-worker)",
    ),
    ("MANAGED", "Managed environment", "A virtual environment the add-on creates under its user folder"),
    (
        "COMMAND",
        "Custom command",
        "Any command line that starts a worker speaking the protocol on stdin/stdout",
    ),
]
DEVICES = [
    ("auto", "Auto", "CUDA when available, else CPU"),
    ("cuda", "CUDA", "NVIDIA GPU"),
    ("cpu", "CPU", ""),
]


@dataclass
class PreferenceDefaults:
    """What the code reads when the add-on is registered without an add-on entry (scripts, tests)."""

    worker_mode: str = "INTERPRETER"
    worker_python: str = ""
    worker_command: str = ""
    managed_source: str = managed_env.DEFAULT_SOURCE
    managed_base_python: str = ""
    flame_model: str = ""
    checkpoint_dir: str = ""
    front_face_indices: str = ""
    landmark_embedding: str = ""
    device: str = "auto"
    default_n_shapes: int = 100
    default_n_expressions: int = 100
    default_top_k: int = 10
    worker_timeout: float = 600.0
    cancel_grace: float = 3.0


def get_preferences(context: Any = None) -> Any:
    blender_prefs: Any = (context or bpy.context).preferences
    addon = blender_prefs.addons.get(ids.ADDON_PACKAGE)
    prefs = None if addon is None else addon.preferences
    return prefs if prefs is not None else PreferenceDefaults()


def managed_env_dir() -> Path:
    return user_folder("worker_env")


ASSET_VARIABLES = {
    "flame_model": "OFER_FLAME_MODEL",
    "checkpoint_dir": "OFER_CHECKPOINT_DIR",
    "front_face_indices": "OFER_FRONT_INDICES",
    "landmark_embedding": "OFER_LANDMARK_EMBEDDING",
}


def worker_launch(prefs: Any) -> tuple[list[str], dict[str, str]]:
    """The worker command line and the extra environment that tells it where the assets are."""
    if prefs.worker_mode == "COMMAND":
        command = shlex.split(prefs.worker_command)
    elif prefs.worker_mode == "MANAGED":
        command = default_worker_command(str(managed_env.managed_python(managed_env_dir())))
    else:
        command = default_worker_command(bpy.path.abspath(prefs.worker_python) if prefs.worker_python else "python3")
    # The worker reads these variables (inference_server/assets_config.py); unset ones fall back to its own
    # config file, and nothing configured at all means the DEMO assets.
    env: dict[str, str] = {}
    for attribute, variable in ASSET_VARIABLES.items():
        value = getattr(prefs, attribute, "")
        if value:
            env[variable] = bpy.path.abspath(value)
    return command, env


class OFER_AP_preferences(bpy.types.AddonPreferences):
    bl_idname = ids.ADDON_PACKAGE

    worker_mode: EnumProperty(name="Worker", items=WORKER_MODES, default="INTERPRETER")  # type: ignore[valid-type]
    worker_python: StringProperty(  # type: ignore[valid-type]
        name="Worker Python",
        subtype="FILE_PATH",
        description="Python interpreter with the OFER worker installed",
    )
    worker_command: StringProperty(  # type: ignore[valid-type]
        name="Command",
        description="Full command line of the worker, e.g. 'conda run -n ofer ofer-worker serve'",
    )
    managed_source: StringProperty(  # type: ignore[valid-type]
        name="Install from",
        default=managed_env.DEFAULT_SOURCE,
        description="Package name (needs online access), or a local wheel / source folder of the worker",
    )
    managed_base_python: StringProperty(  # type: ignore[valid-type]
        name="Base Python",
        subtype="FILE_PATH",
        description="Python 3.11+ to create the environment with (empty: auto)",
    )
    flame_model: StringProperty(  # type: ignore[valid-type]
        name="FLAME model", subtype="FILE_PATH", description="Your own FLAME generic_model.pkl (or .npz)"
    )
    checkpoint_dir: StringProperty(  # type: ignore[valid-type]
        name="OFER checkpoints",
        subtype="DIR_PATH",
        description="Folder with model_idgen_flame20.tar, model_expgen_flame20.tar, model_idrank.tar",
    )
    front_face_indices: StringProperty(  # type: ignore[valid-type]
        name="Front-face indices",
        subtype="FILE_PATH",
        description="frontindices.npy from the OFER release (1785 vertex ids)",
    )
    landmark_embedding: StringProperty(  # type: ignore[valid-type]
        name="Landmark embedding",
        subtype="FILE_PATH",
        description="Optional FLAME landmark embedding (landmarks on the result)",
    )
    device: EnumProperty(name="Device", items=DEVICES, default="auto")  # type: ignore[valid-type]
    default_n_shapes: IntProperty(name="Identity samples", default=100, min=1, max=10000)  # type: ignore[valid-type]
    default_n_expressions: IntProperty(name="Expression samples", default=100, min=1, max=10000)  # type: ignore[valid-type]
    default_top_k: IntProperty(name="Identities kept", default=10, min=1, max=100)  # type: ignore[valid-type]
    worker_timeout: FloatProperty(  # type: ignore[valid-type]
        name="Worker timeout (s)",
        default=600.0,
        min=1.0,
        description="Stop a worker that sends nothing this long",
    )
    cancel_grace: FloatProperty(name="Cancel grace (s)", default=3.0, min=0.1)  # type: ignore[valid-type]

    def draw(self, context: Any) -> None:
        layout = self.layout
        box = layout.box()
        box.label(text="Worker", icon="CONSOLE")
        box.prop(self, "worker_mode", expand=True)
        if self.worker_mode == "INTERPRETER":
            box.prop(self, "worker_python")
        elif self.worker_mode == "COMMAND":
            box.prop(self, "worker_command")
        else:
            box.prop(self, "managed_source")
            box.prop(self, "managed_base_python")
            row = box.row()
            row.operator(ids.OT_CREATE_MANAGED_ENV, icon="PACKAGE")
            builder = ENV_BUILD.get("builder")
            if builder is not None and builder.state == "running":
                row.progress(
                    factor=builder.step / max(builder.total, 1),
                    text=f"Step {builder.step + 1}/{builder.total}",
                )
            elif builder is not None:
                box.label(text=f"Environment: {builder.state} {builder.error}")
            if not bpy.app.online_access and not managed_env.is_local_source(self.managed_source):
                box.label(text="Online access is off: choose a local wheel or folder", icon="ERROR")
        row = box.row()
        row.operator(ids.OT_TEST_WORKER, icon="PLAY")
        row.operator(ids.OT_OPEN_LOG, icon="TEXT")
        row.operator(ids.OT_RELEASE_GPU, icon="X")
        hello = SESSION.last_hello
        if hello:
            col = box.column(align=True)
            col.label(text=f"Worker {hello.get('worker_version')} · torch {hello.get('torch')} · {hello.get('device')}")
            if hello.get("demo"):
                col.label(text="Demo assets in use (no FLAME/OFER files found)", icon="INFO")
            for name, where in sorted((hello.get("assets") or {}).items()):
                if isinstance(where, dict):
                    found = "found" if where.get("exists") else "missing" if where.get("path") else "not set"
                    col.label(text=f"{name}: {where.get('path') or '-'} ({found})")
                else:
                    col.label(text=f"{name}: {where}")
            for name in hello.get("missing") or []:
                col.label(text=f"missing: {name}", icon="ERROR")
        if SESSION.last_report:
            for line in SESSION.last_report.splitlines()[:8]:
                box.label(text=line)
        box = layout.box()
        box.label(text="Assets", icon="FILE_FOLDER")
        box.prop(self, "flame_model")
        box.prop(self, "checkpoint_dir")
        box.prop(self, "front_face_indices")
        box.prop(self, "landmark_embedding")
        box.label(text="Leave all empty to use the generated DEMO assets (not FLAME/OFER)", icon="INFO")
        box = layout.box()
        box.label(text="Defaults", icon="PREFERENCES")
        box.prop(self, "device")
        row = box.row()
        row.prop(self, "default_n_shapes")
        row.prop(self, "default_n_expressions")
        row.prop(self, "default_top_k")
        row = box.row()
        row.prop(self, "worker_timeout")
        row.prop(self, "cancel_grace")
        box.label(text=f"Python {sys.version.split()[0]} · Blender {bpy.app.version_string}")


#: The running environment build, read by the preferences' draw (transient).
ENV_BUILD: dict[str, managed_env.EnvBuilder] = {}
