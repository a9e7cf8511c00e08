"""Preferences buttons: Test worker, Open log, Create managed environment."""

from __future__ import annotations

from typing import Any

import bpy

from . import ids, managed_env
from .bl_typing import OperatorResult
from .paths import user_folder
from .preferences import ENV_BUILD, get_preferences, managed_env_dir, worker_launch
from .session import SESSION
from .worker_client import LOG_FILE_NAME, WorkerUnavailableError


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
        command, env = worker_launch(prefs)
        try:
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
    """Open the worker's log file"""

    bl_idname = ids.OT_OPEN_LOG
    bl_label = "Open Log"

    @classmethod
    def poll(cls, context: Any) -> bool:
        return True

    def execute(self, context: Any) -> OperatorResult:
        path = user_folder("logs") / LOG_FILE_NAME
        if not path.is_file():
            self.report({"WARNING"}, f"No worker log yet ({path})")
            return {"CANCELLED"}
        bpy.ops.wm.path_open(filepath=str(path))
        return {"FINISHED"}


def _env_progress_timer() -> float | None:
    for window in getattr(bpy.context.window_manager, "windows", []):
        for area in window.screen.areas:
            area.tag_redraw()
    builder = ENV_BUILD.get("builder")
    return 0.5 if builder is not None and builder.state == "running" else None


class OFER_OT_create_managed_env(bpy.types.Operator):
    """Create a virtual environment under the add-on's user folder and install the worker into it"""

    bl_idname = ids.OT_CREATE_MANAGED_ENV
    bl_label = "Create Managed Environment"

    @classmethod
    def poll(cls, context: Any) -> bool:
        builder = ENV_BUILD.get("builder")
        return builder is None or builder.state != "running"

    def execute(self, context: Any) -> OperatorResult:
        prefs = get_preferences(context)
        source = (
            bpy.path.abspath(prefs.managed_source) if prefs.managed_source.startswith("//") else prefs.managed_source
        )
        try:
            managed_env.check_online_access(source, bpy.app.online_access)
        except managed_env.OnlineAccessRequiredError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        base = (
            bpy.path.abspath(prefs.managed_base_python)
            if prefs.managed_base_python
            else managed_env.default_base_python()
        )
        SESSION.release()  # the old environment's worker must not keep files open
        builder = managed_env.EnvBuilder(
            managed_env.plan_commands(base, managed_env_dir(), source),
            user_folder("logs") / "managed_env.log",
        )
        ENV_BUILD["builder"] = builder
        builder.start()
        if bpy.app.background:
            builder.join()
            if builder.state != "done":
                self.report({"ERROR"}, builder.error)
                return {"CANCELLED"}
        else:
            bpy.app.timers.register(_env_progress_timer, first_interval=0.5)
        return {"FINISHED"}


CLASSES = (OFER_OT_test_worker, OFER_OT_open_log, OFER_OT_create_managed_env)
