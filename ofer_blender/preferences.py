"""Add-on preferences: which worker to run, where the user's FLAME model and OFER checkpoints are."""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from typing import Any

import bpy
from bpy.props import EnumProperty, FloatProperty, IntProperty, StringProperty

from . import ids, managed_env, worker_status_ui
from .paths import managed_env_dir
from .worker_client import WorkerUnavailableError, default_worker_command

WORKER_MODES = [
    (
        "INTERPRETER",
        "Python interpreter",
        "A Python that has the worker installed (e.g. a checkout's .venv/bin/python)",
    ),
    ("MANAGED", "Managed environment", "A virtual environment the add-on creates under its user folder"),
    (
        "COMMAND",
        "Custom command",
        "Any command line that starts a worker speaking the protocol on stdin/stdout",
    ),
]
TORCH_CHOICES = [
    ("AUTO", "Auto", "CUDA when an NVIDIA GPU is found, the Apple-silicon build on macOS, else CPU"),
    ("CPU", "CPU", "The CPU-only build (smallest)"),
    ("CUDA", "CUDA", "An NVIDIA CUDA build from PyTorch's own index"),
    ("CUSTOM", "Custom", "Your own pip requirement line for torch"),
]
CUDA_ITEMS = [(build, label, f"PyTorch's {label} build") for build, label in managed_env.CUDA_BUILDS]
DEVICES = [
    ("auto", "Auto", "CUDA when available, else CPU"),
    ("cuda", "CUDA", "NVIDIA GPU"),
    ("cpu", "CPU", ""),
]
#: The worker's OFER_ENCODER_PRECISION (inference_server/encoder_runtime.py); CPU only, GPUs keep torch. Fast is
#: the artist's default: with it the fast preset takes under a second on a 2-core CPU (issue 19); the worker's own
#: default, for the command line, stays Exact.
ENCODER_PRECISIONS = [
    ("fp32", "Exact", "The image encoders in full precision (fp32), as trained"),
    (
        "auto",
        "Fast",
        "On the CPU, each image encoder in int8 (ONNX Runtime) or bfloat16 where its embeddings of a set of "
        "face crops stay within cosine 0.999 of fp32, else fp32. The first reconstruction with new weights "
        "measures this once (about a minute with the official weights), later ones reuse it",
    ),
]
#: The environment variable the worker reads the encoder precision from.
ENCODER_PRECISION_VARIABLE = "OFER_ENCODER_PRECISION"


@dataclass
class PreferenceDefaults:
    """What the code reads when the add-on is registered without an add-on entry (scripts, tests)."""

    worker_mode: str = "MANAGED"
    worker_python: str = ""
    worker_command: str = ""
    torch_choice: str = "AUTO"
    cuda_build: str = managed_env.DEFAULT_CUDA
    torch_custom: str = ""
    wheel_dir: str = ""
    managed_base_python: str = ""
    flame_model: str = ""
    checkpoint_dir: str = ""
    front_face_indices: str = ""
    landmark_embedding: str = ""
    device: str = "auto"
    encoder_precision: str = "auto"
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


ASSET_VARIABLES = {
    "flame_model": "OFER_FLAME_MODEL",
    "checkpoint_dir": "OFER_CHECKPOINT_DIR",
    "front_face_indices": "OFER_FRONT_INDICES",
    "landmark_embedding": "OFER_LANDMARK_EMBEDDING",
}


PREFERENCES_PATH = "Edit ▸ Preferences ▸ Add-ons ▸ OFER Face Reconstruction"
NO_WORKER_FIX = (
    f"In {PREFERENCES_PATH}, choose Worker: Managed environment and press 'Create Managed Environment' "
    "(or set 'Worker Python' to a Python that has the worker installed)"
)


def worker_launch(prefs: Any) -> tuple[list[str], dict[str, str]]:
    """The worker command line and the extra environment that tells it where the assets are.

    Raises WorkerUnavailableError, naming the preference and the button, when no worker is set up yet.
    """
    if prefs.worker_mode == "COMMAND":
        command = shlex.split(prefs.worker_command)
        if not command:
            raise WorkerUnavailableError("The worker command is empty", f"Write it in {PREFERENCES_PATH} ▸ Command")
    elif prefs.worker_mode == "MANAGED":
        env_dir = managed_env_dir()
        state = managed_env.env_state(env_dir)
        if state != "ready":
            what = "No worker environment yet" if state == "missing" else "The worker environment is incomplete"
            fix = NO_WORKER_FIX if state == "missing" else f"Press 'Repair' in {PREFERENCES_PATH} ▸ Worker"
            raise WorkerUnavailableError(what, fix)
        command = default_worker_command(str(managed_env.managed_python(env_dir)))
    else:
        if not prefs.worker_python:
            raise WorkerUnavailableError("No worker Python is set", NO_WORKER_FIX)
        command = default_worker_command(bpy.path.abspath(prefs.worker_python))
    # The worker reads these variables (inference_server/assets_config.py); unset ones fall back to its own
    # config file, and nothing configured at all means the DEMO assets.
    # The precision is always set, so the worker runs what the preferences show.
    env: dict[str, str] = {ENCODER_PRECISION_VARIABLE: getattr(prefs, "encoder_precision", "auto")}
    for attribute, variable in ASSET_VARIABLES.items():
        value = getattr(prefs, attribute, "")
        if value:
            env[variable] = bpy.path.abspath(value)
    return command, env


def worker_ready(prefs: Any) -> bool:
    try:
        worker_launch(prefs)
    except WorkerUnavailableError:
        return False
    return True


class OFER_AP_preferences(bpy.types.AddonPreferences):
    bl_idname = ids.ADDON_PACKAGE

    worker_mode: EnumProperty(name="Worker", items=WORKER_MODES, default="MANAGED")  # type: ignore[valid-type]
    worker_python: StringProperty(  # type: ignore[valid-type]
        name="Worker Python",
        subtype="FILE_PATH",
        description="Python interpreter with the OFER worker installed",
    )
    worker_command: StringProperty(  # type: ignore[valid-type]
        name="Command",
        description="Full command line of the worker, e.g. 'conda run -n ofer ofer-worker serve'",
    )
    torch_choice: EnumProperty(name="torch", items=TORCH_CHOICES, default="AUTO")  # type: ignore[valid-type]
    cuda_build: EnumProperty(name="CUDA", items=CUDA_ITEMS, default=managed_env.DEFAULT_CUDA)  # type: ignore[valid-type]
    torch_custom: StringProperty(  # type: ignore[valid-type]
        name="Requirement",
        description="pip arguments for torch, e.g. 'torch==2.13.0' or 'torch --index-url https://…'",
    )
    wheel_dir: StringProperty(  # type: ignore[valid-type]
        name="Local wheel folder",
        subtype="DIR_PATH",
        description="Install every package from this folder of wheels, without the internet (empty: package index)",
    )
    managed_base_python: StringProperty(  # type: ignore[valid-type]
        name="Base Python",
        subtype="FILE_PATH",
        description="Python 3.11+ that creates the environment (empty: Blender's own Python, which is not changed)",
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
    encoder_precision: EnumProperty(  # type: ignore[valid-type]
        name="Encoders", items=ENCODER_PRECISIONS, default="auto"
    )
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
            worker_status_ui.draw_managed_env(box, self)
        row = box.row()
        row.operator(ids.OT_TEST_WORKER, icon="PLAY")
        row.operator(ids.OT_OPEN_LOG, icon="TEXT").which = "WORKER"
        row.operator(ids.OT_RELEASE_GPU, icon="X")
        worker_status_ui.draw_worker_status(box)
        box = layout.box()
        box.label(text="Assets", icon="FILE_FOLDER")
        box.prop(self, "flame_model")
        box.prop(self, "checkpoint_dir")
        box.prop(self, "front_face_indices")
        box.prop(self, "landmark_embedding")
        box.label(text="Leave all empty to use the DEMO assets (ICT-based head, not FLAME/OFER)", icon="INFO")
        box = layout.box()
        box.label(text="Defaults", icon="PREFERENCES")
        row = box.row()
        row.prop(self, "device")
        row.prop(self, "encoder_precision", expand=True)
        row = box.row()
        row.prop(self, "default_n_shapes")
        row.prop(self, "default_n_expressions")
        row.prop(self, "default_top_k")
        row = box.row()
        row.prop(self, "worker_timeout")
        row.prop(self, "cancel_grace")
        box.label(text=f"Python {sys.version.split()[0]} · Blender {bpy.app.version_string}")
