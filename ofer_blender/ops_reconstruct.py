"""Reconstruct, Cancel and Release GPU.

Reconstruct returns at once in the UI: a ``bpy.app.timers`` callback pumps the job and imports the result
on the main thread when it arrives. In background mode timers never fire, so the same job runs
synchronously inside the operator. Either way a failed job leaves the scene untouched.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import bpy
from bpy.props import FloatProperty, StringProperty

from . import face_marks, ids
from .bl_typing import OperatorResult, ReportLevel
from .importer import ResultImportError, import_result, import_warnings
from .job import JobState, ReconstructJob
from .ops_photos import extra_photo_paths
from .paths import user_folder
from .preferences import get_preferences, worker_launch
from .session import SESSION
from .worker_client import WorkerUnavailableError

TIMER_INTERVAL = 0.1


def _find_image(path: str) -> bpy.types.Image | None:
    wanted = bpy.path.abspath(path)
    for image in bpy.data.images:
        if image.filepath and bpy.path.abspath(image.filepath) == wanted:
            return image
    return None


def _request_args(
    settings: Any, prefs: Any, image_path: str, image: bpy.types.Image | None, photos: list[str]
) -> dict[str, Any]:
    stem = Path(image_path).stem or "photo"
    output = user_folder("results") / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}-{time.monotonic_ns() % 10**6}.npz"
    args: dict[str, Any] = {
        "image": image_path,
        "output": str(output),
        "n_shapes": int(settings.n_shapes),
        "n_expressions": int(settings.n_expressions),
        "top_k": min(int(settings.top_k), int(settings.n_shapes)),
        "seed": int(settings.seed),
        "jaw_scale": float(settings.jaw_scale),
        "device": prefs.device,
    }
    if settings.preset == "CUSTOM":
        args["sampler"] = settings.sampler
        if settings.steps > 0:
            args["steps"] = int(settings.steps)
    else:
        args["preset"] = settings.preset  # the worker sets sampler, steps and eta (inference_server/presets.py)
    if settings.flame_controls:
        args["flame_controls"] = True  # the bases the import needs for FLAME's own keys (flame_controls.py)
    if settings.refine_expression:
        args["refine_expression"] = True  # expression 1 refined to the photo (inference_server/refined_expression.py)
    args.update(face_marks.request_marks(image))
    if photos:
        args["photos"] = photos  # the identity is pooled over these and the main photo
    return args


def finish_job(context: Any, job: ReconstructJob, name: str = "") -> tuple[ReportLevel, str]:
    """Import a finished job's result; returns (report level, message)."""
    if job.state is JobState.SUCCEEDED and job.result_path:
        try:
            controls = bool(getattr(getattr(context.scene, ids.SCENE_PROP, None), "flame_controls", False))
            obj = import_result(context, job.result_path, name=name, with_flame_controls=controls)
        except ResultImportError as exc:
            return "ERROR", str(exc)
        demo = " (demo assets)" if job.summary.get("demo") else ""
        notes = "".join(f"\n{m}" for m in import_warnings(obj))
        return ("WARNING" if notes else "INFO"), f"Reconstructed {obj.name}{demo}{notes}"
    if job.state is JobState.CANCELLED:
        return "INFO", "Reconstruction cancelled"
    assert job.failure is not None
    return "ERROR", job.failure.text()


def _tag_redraw() -> None:
    wm = bpy.context.window_manager
    for window in getattr(wm, "windows", []):
        for area in window.screen.areas:
            if area.type in {"VIEW_3D", "PREFERENCES", "IMAGE_EDITOR"}:
                area.tag_redraw()


def drain_timer() -> float | None:
    """The timer: pump the job; when it ends, import on the main thread and stop the timer."""
    runner = SESSION.runner
    if runner is None or runner.job is None:
        return None
    finished = runner.pump()
    _tag_redraw()
    if not finished:
        return TIMER_INTERVAL
    level, message = finish_job(bpy.context, runner.job, SESSION.pending_import.get("name", ""))
    SESSION.last_report = message if level != "INFO" else ""
    if level != "ERROR" and runner.job.state is JobState.SUCCEEDED:
        bpy.ops.ed.undo_push(message="OFER Reconstruct")
    if level == "ERROR":
        _popup(message)
    return None


def _popup(message: str) -> None:
    def draw(menu: Any, context: Any) -> None:
        for line in message.splitlines()[:20]:
            menu.layout.label(text=line)

    wm: Any = bpy.context.window_manager
    if getattr(wm, "windows", None):
        wm.popup_menu(draw, title="OFER reconstruction failed", icon="ERROR")


class OFER_OT_reconstruct(bpy.types.Operator):
    """Reconstruct the face in the photo as ranked FLAME hypotheses (runs in the worker process)"""

    bl_idname = ids.OT_RECONSTRUCT
    bl_label = "Reconstruct"
    bl_options = {"REGISTER", "UNDO"}  # noqa: RUF012

    image_path: StringProperty(name="Photo file", subtype="FILE_PATH", options={"SKIP_SAVE"})  # type: ignore[valid-type]
    image_name: StringProperty(name="Image", description="Image datablock with the photo", options={"SKIP_SAVE"})  # type: ignore[valid-type]
    object_name: StringProperty(name="Name", options={"SKIP_SAVE"})  # type: ignore[valid-type]
    timeout: FloatProperty(  # type: ignore[valid-type]
        name="Timeout (s)",
        default=0.0,
        min=0.0,
        description="0: the preferences' worker timeout",
        options={"SKIP_SAVE"},
    )

    @classmethod
    def poll(cls, context: Any) -> bool:
        return context.mode == "OBJECT" and not SESSION.busy

    def _photo(self, context: Any) -> tuple[str, bpy.types.Image | None]:
        settings = getattr(context.scene, ids.SCENE_PROP)
        if self.image_path:
            return bpy.path.abspath(self.image_path), _find_image(self.image_path)
        image = bpy.data.images.get(self.image_name) if self.image_name else settings.image
        if self.image_name and image is None:
            raise ValueError(f"No image named '{self.image_name}' in this file")
        if image is not None:
            if image.packed_file is not None or not image.filepath:
                raise ValueError(f"The image '{image.name}' has no file on disk: save it to a file first")
            return bpy.path.abspath(image.filepath), image
        if settings.image_path:
            return bpy.path.abspath(settings.image_path), _find_image(settings.image_path)
        raise ValueError("Choose a photo first (an image in the file or a photo file)")

    def execute(self, context: Any) -> OperatorResult:
        try:
            image_path, image = self._photo(context)
        except ValueError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        if not Path(image_path).is_file():
            self.report({"ERROR"}, f"The photo '{image_path}' does not exist")
            return {"CANCELLED"}
        prefs = get_preferences(context)
        settings = getattr(context.scene, ids.SCENE_PROP)
        photos = extra_photo_paths(settings, image_path)
        missing = [p for p in photos if not Path(p).is_file()]
        if missing:
            self.report({"ERROR"}, f"The extra photo '{missing[0]}' does not exist: remove it from the extra photos")
            return {"CANCELLED"}
        timeout = self.timeout or prefs.worker_timeout
        try:
            command, env = worker_launch(prefs)
            client = SESSION.client_for(command, user_folder("logs"), env)
            runner = SESSION.runner_for(client, timeout, prefs.cancel_grace)
            runner.start(_request_args(settings, prefs, image_path, image, photos))
        except WorkerUnavailableError as exc:
            SESSION.last_report = str(exc)
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        SESSION.last_report = ""
        SESSION.pending_import = {"name": self.object_name}
        if not bpy.app.background:
            if not bpy.app.timers.is_registered(drain_timer):
                bpy.app.timers.register(drain_timer, first_interval=TIMER_INTERVAL)
            return {"FINISHED"}
        job = runner.run_sync()
        level, message = finish_job(context, job, self.object_name)
        self.report({level}, message)
        return {"FINISHED"} if level != "ERROR" and job.state is JobState.SUCCEEDED else {"CANCELLED"}


class OFER_OT_cancel(bpy.types.Operator):
    """Cancel the running reconstruction"""

    bl_idname = ids.OT_CANCEL
    bl_label = "Cancel"

    @classmethod
    def poll(cls, context: Any) -> bool:
        return SESSION.busy

    def execute(self, context: Any) -> OperatorResult:
        if SESSION.runner is not None:
            SESSION.runner.cancel()
        return {"FINISHED"}


class OFER_OT_release_gpu(bpy.types.Operator):
    """Stop the worker process to free its GPU memory (the next run starts it again)"""

    bl_idname = ids.OT_RELEASE_GPU
    bl_label = "Release GPU"

    @classmethod
    def poll(cls, context: Any) -> bool:
        return SESSION.client is not None

    def execute(self, context: Any) -> OperatorResult:
        SESSION.release()
        return {"FINISHED"}


CLASSES = (OFER_OT_reconstruct, OFER_OT_cancel, OFER_OT_release_gpu)
