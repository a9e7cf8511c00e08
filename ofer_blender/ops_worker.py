"""Preferences buttons: Test worker, Open log, Create managed environment."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import bpy
from bpy.props import EnumProperty

from . import ids, managed_env
from .bl_typing import OperatorResult
from .env_builder import EnvBuilder
from .paths import managed_env_dir, user_folder
from .preferences import get_preferences, worker_launch
from .session import SESSION
from .worker_client import LOG_FILE_NAME, WorkerUnavailableError

ENV_LOG_NAME = "managed_env.log"


def hello_summary(hello: dict) -> str:
    assets = ", ".join(f"{k}: {v}" for k, v in sorted((hello.get("assets") or {}).items())) or "none reported"
    demo = " · DEMO assets" if hello.get("demo") else ""
    return (
        f"Worker {hello.get('worker_version')} (protocol {hello.get('protocol')}) · "
        f"torch {hello.get('torch')} · "
        f"device {hello.get('device')}{demo} · assets: {assets}"
    )


class OFER_OT_test_worker(bpy.types.Operator):
    """Start the worker and run the handshake: shows its device, versions, assets and demo status"""

    bl_idname = ids.OT_TEST_WORKER
    bl_label = "Test Worker"

    @classmethod
    def poll(cls, context: Any) -> bool:
        return not SESSION.busy

    def execute(self, context: Any) -> OperatorResult:
        prefs = get_preferences(context)
        try:
            command, env = worker_launch(prefs)
            client = SESSION.client_for(command, user_folder("logs"), env)
            hello = client.hello(timeout=min(float(prefs.worker_timeout), 120.0))
        except WorkerUnavailableError as exc:
            SESSION.last_report = str(exc)
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        SESSION.last_hello = hello
        SESSION.last_report = ""
        self.report({"INFO"}, hello_summary(hello))
        return {"FINISHED"}


class OFER_OT_open_log(bpy.types.Operator):
    """Open the worker's log, or the managed environment's install log"""

    bl_idname = ids.OT_OPEN_LOG
    bl_label = "Open Log"

    which: EnumProperty(  # type: ignore[valid-type]
        items=[("WORKER", "Worker", "The worker's stderr"), ("ENV", "Environment", "pip's output")],
        default="WORKER",
        options={"SKIP_SAVE"},
    )

    @classmethod
    def poll(cls, context: Any) -> bool:
        return True

    def execute(self, context: Any) -> OperatorResult:
        path = user_folder("logs") / (LOG_FILE_NAME if self.which == "WORKER" else ENV_LOG_NAME)
        if not path.is_file():
            self.report({"WARNING"}, f"No log yet ({path})")
            return {"CANCELLED"}
        bpy.ops.wm.path_open(filepath=str(path))
        return {"FINISHED"}


def _env_progress_timer() -> float | None:
    for window in getattr(bpy.context.window_manager, "windows", []):
        for area in window.screen.areas:
            area.tag_redraw()
    return 0.5 if SESSION.env_building else None


def env_request(prefs: Any) -> managed_env.EnvRequest:
    """The environment the preferences ask for; raises EnvSetupError naming what to change."""
    host = managed_env.detect_platform()
    torch = managed_env.resolve_torch(prefs.torch_choice, prefs.cuda_build, prefs.torch_custom, host)
    staged = managed_env.stage_worker_source(managed_env.extension_root(), user_folder("worker_src"))
    base = bpy.path.abspath(prefs.managed_base_python) if prefs.managed_base_python else ""
    request = managed_env.EnvRequest(
        env_dir=managed_env_dir(),
        base_python=base or managed_env.default_base_python(),
        worker_source=staged,
        torch=torch,
        wheel_dir=Path(bpy.path.abspath(prefs.wheel_dir)) if prefs.wheel_dir else None,
        online=managed_env.allow_online(bpy.app.online_access, bpy.app.background),
    )
    managed_env.check_request(request)
    managed_env.check_disk_space(request.env_dir, torch)
    return request


class OFER_OT_create_managed_env(bpy.types.Operator):
    """Create (or repair) a virtual environment under the add-on's user folder and install this extension's
    worker and the chosen torch build into it. Blender's own Python is not changed"""

    bl_idname = ids.OT_CREATE_MANAGED_ENV
    bl_label = "Create Managed Environment"

    @classmethod
    def poll(cls, context: Any) -> bool:
        return not SESSION.env_building and not SESSION.busy

    def execute(self, context: Any) -> OperatorResult:
        prefs = get_preferences(context)
        try:
            request = env_request(prefs)
        except (managed_env.EnvSetupError, OSError) as exc:
            SESSION.last_report = str(exc)
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        SESSION.release()  # the old environment's worker must not keep files open
        version = managed_env.worker_version(request.worker_source)

        def record(seconds: float) -> None:
            managed_env.write_record(request.env_dir, managed_env.make_record(request, version, seconds))

        builder = EnvBuilder(managed_env.plan_steps(request), user_folder("logs") / ENV_LOG_NAME, on_success=record)
        SESSION.env_builder = builder
        SESSION.last_report = ""
        builder.start()
        if not bpy.app.background:
            bpy.app.timers.register(_env_progress_timer, first_interval=0.5)
            return {"FINISHED"}
        builder.join()
        if builder.state != "done":
            SESSION.last_report = builder.error
            self.report({"ERROR"}, builder.error)
            return {"CANCELLED"}
        self.report({"INFO"}, f"Worker environment ready in {request.env_dir}")
        return {"FINISHED"}


class OFER_OT_cancel_managed_env(bpy.types.Operator):
    """Stop creating the worker environment (it is left incomplete: Repair or Remove it later)"""

    bl_idname = ids.OT_CANCEL_MANAGED_ENV
    bl_label = "Cancel Setup"

    @classmethod
    def poll(cls, context: Any) -> bool:
        return SESSION.env_building

    def execute(self, context: Any) -> OperatorResult:
        assert SESSION.env_builder is not None
        SESSION.env_builder.cancel()
        return {"FINISHED"}


class OFER_OT_remove_managed_env(bpy.types.Operator):
    """Delete the managed worker environment (frees its disk space; results and logs stay)"""

    bl_idname = ids.OT_REMOVE_MANAGED_ENV
    bl_label = "Remove Managed Environment"

    @classmethod
    def poll(cls, context: Any) -> bool:
        return not SESSION.env_building and not SESSION.busy and managed_env_dir().exists()

    def execute(self, context: Any) -> OperatorResult:
        SESSION.release()
        try:
            managed_env.remove_env(managed_env_dir())
        except OSError as exc:
            self.report({"ERROR"}, f"Could not remove the environment ({exc}) — close programs using it and retry")
            return {"CANCELLED"}
        SESSION.env_builder = None
        self.report({"INFO"}, "Worker environment removed")
        return {"FINISHED"}


CLASSES = (
    OFER_OT_test_worker,
    OFER_OT_open_log,
    OFER_OT_create_managed_env,
    OFER_OT_cancel_managed_env,
    OFER_OT_remove_managed_env,
)
