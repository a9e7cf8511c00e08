"""Reconstruct Sequence: a movie file or an image sequence → the worker's ``sequence`` request → an animated head.

Like Reconstruct: in the UI a ``bpy.app.timers`` callback pumps the job (progress per frame, Cancel works
through the same runner) and imports on the main thread; in background mode (timers never fire) the job
runs synchronously inside the operator. The import is ``ofer_blender.sequence_import.import_sequence``
(keyed expression / pose shape keys, jaw bone, head motion, the clip's camera). A failed or cancelled
job leaves the scene untouched; the worker keeps the finished frames, so running it again resumes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import bpy
from bpy.props import FloatProperty, IntProperty, PointerProperty, StringProperty

from . import ids
from .bl_typing import OperatorResult, ReportLevel
from .job import JobState, ReconstructJob
from .paths import user_folder
from .preferences import get_preferences, worker_launch
from .session import SESSION
from .worker_client import WorkerUnavailableError

TIMER_INTERVAL = 0.1
#: A chosen file with one of these endings is a frame of an image sequence: its folder is the clip.
FRAME_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp")


class OFER_PG_sequence(bpy.types.PropertyGroup):
    """The clip to reconstruct and how (per scene, saved)."""

    source: StringProperty(  # type: ignore[valid-type]
        name="Clip",
        description="A movie file, or any frame of an image sequence (its whole folder is used, in name order)",
        subtype="FILE_PATH",
    )
    fps: FloatProperty(  # type: ignore[valid-type]
        name="Frames per second", description="0: every frame of the clip", default=0.0, min=0.0, max=240.0
    )
    n_expressions: IntProperty(name="Hypotheses per frame", default=32, min=1, max=1000)  # type: ignore[valid-type]
    smoothing: FloatProperty(name="Smoothing (frames)", default=1.0, min=0.0, max=30.0)  # type: ignore[valid-type]
    frame_start: IntProperty(name="Start frame", description="Scene frame of the clip's first frame", default=1)  # type: ignore[valid-type]


def clip_source(path: str) -> str:
    """The ``source`` of the request: a movie file as it is; a frame of an image sequence → its folder."""
    target = Path(path)
    if target.is_file() and target.suffix.lower() in FRAME_SUFFIXES:
        return str(target.parent)
    return str(target)


def sequence_request(scene_settings: Any, clip: Any, prefs: Any, source: str) -> dict[str, Any]:
    """The ``sequence`` request's arguments from the scene's Reconstruct settings and the clip settings."""
    stem = Path(source).stem or "clip"
    output = user_folder("results") / f"{stem}-sequence-{time.strftime('%Y%m%d-%H%M%S')}.npz"
    args: dict[str, Any] = {
        "source": source,
        "output": str(output),
        "n_shapes": int(scene_settings.n_shapes),
        "n_expressions": int(clip.n_expressions),
        "seed": int(scene_settings.seed),
        "jaw_scale": float(scene_settings.jaw_scale),
        "smoothing": float(clip.smoothing),
        "device": prefs.device,
    }
    if clip.fps > 0:
        args["fps"] = float(clip.fps)
    if scene_settings.preset == "CUSTOM":
        args["sampler"] = scene_settings.sampler
        if scene_settings.steps > 0:
            args["steps"] = int(scene_settings.steps)
    else:
        args["preset"] = scene_settings.preset
    return args


def import_clip(context: Any, path: str, frame_start: int, name: str) -> Any:
    """The sequence importer (branch ``anim``: ``ofer_blender.sequence_import``), imported when first used."""
    from .sequence_import import import_sequence

    return import_sequence(context, path, frame_start=frame_start, name=name)


def finish_sequence(context: Any, job: ReconstructJob, frame_start: int, name: str = "") -> tuple[ReportLevel, str]:
    """Import a finished sequence job; returns (report level, message)."""
    if job.state is JobState.SUCCEEDED and job.result_path:
        try:
            obj = import_clip(context, job.result_path, frame_start, name)
        except ImportError as exc:
            return "ERROR", f"This add-on cannot import sequences ({exc}); the result is {job.result_path}"
        except ValueError as exc:  # ResultFileError and the importer's own errors are ValueErrors
            return "ERROR", str(exc)
        frames = job.summary.get("frames") or {}
        bridged = sum(n for status, n in frames.items() if status not in ("ok", "occluded"))
        demo = " (demo assets)" if job.summary.get("demo") else ""
        note = f"; {bridged} frames bridged (no face or unreadable)" if bridged else ""
        message = f"Reconstructed {obj.name}: {job.summary.get('n_frames')} frames{demo}{note}"
        return ("WARNING" if bridged else "INFO"), message
    if job.state is JobState.CANCELLED:
        return "INFO", "Sequence cancelled (finished frames are kept: run it again to resume)"
    assert job.failure is not None
    return "ERROR", job.failure.text()


def drain_sequence_timer() -> float | None:
    """The timer: pump the job; when it ends, import on the main thread and stop the timer."""
    runner = SESSION.runner
    if runner is None or runner.job is None:
        return None
    finished = runner.pump()
    for window in getattr(bpy.context.window_manager, "windows", []):
        for area in window.screen.areas:
            if area.type == "VIEW_3D":
                area.tag_redraw()
    if not finished:
        return TIMER_INTERVAL
    pending = SESSION.pending_import
    level, message = finish_sequence(bpy.context, runner.job, pending.get("frame_start", 1), pending.get("name", ""))
    SESSION.last_report = message if level != "INFO" else ""
    if level != "ERROR" and runner.job.state is JobState.SUCCEEDED:
        bpy.ops.ed.undo_push(message="OFER Reconstruct Sequence")
    return None


class OFER_OT_reconstruct_sequence(bpy.types.Operator):
    """Reconstruct a movie clip or an image sequence as one animated head (runs in the worker process)"""

    bl_idname = ids.OT_RECONSTRUCT_SEQUENCE
    bl_label = "Reconstruct Sequence"
    bl_options = {"REGISTER", "UNDO"}  # noqa: RUF012

    source_path: StringProperty(name="Clip", subtype="FILE_PATH", options={"SKIP_SAVE"})  # type: ignore[valid-type]
    object_name: StringProperty(name="Name", options={"SKIP_SAVE"})  # type: ignore[valid-type]
    timeout: FloatProperty(name="Timeout (s)", default=0.0, min=0.0, options={"SKIP_SAVE"})  # type: ignore[valid-type]

    @classmethod
    def poll(cls, context: Any) -> bool:
        return context.mode == "OBJECT" and not SESSION.busy

    def execute(self, context: Any) -> OperatorResult:
        clip = getattr(context.scene, ids.SCENE_SEQUENCE_PROP)
        chosen = self.source_path or clip.source
        if not chosen:
            self.report({"ERROR"}, "Choose a movie file or a frame of an image sequence first")
            return {"CANCELLED"}
        source = clip_source(bpy.path.abspath(chosen))
        if not Path(source).exists():
            self.report({"ERROR"}, f"The clip '{source}' does not exist")
            return {"CANCELLED"}
        prefs = get_preferences(context)
        settings = getattr(context.scene, ids.SCENE_PROP)
        try:
            command, env = worker_launch(prefs)
            client = SESSION.client_for(command, user_folder("logs"), env)
            runner = SESSION.runner_for(client, self.timeout or prefs.worker_timeout, prefs.cancel_grace)
            runner.start(sequence_request(settings, clip, prefs, source), op="sequence")
        except WorkerUnavailableError as exc:
            SESSION.last_report = str(exc)
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        SESSION.last_report = ""
        SESSION.pending_import = {"name": self.object_name, "frame_start": int(clip.frame_start)}
        if not bpy.app.background:
            if not bpy.app.timers.is_registered(drain_sequence_timer):
                bpy.app.timers.register(drain_sequence_timer, first_interval=TIMER_INTERVAL)
            return {"FINISHED"}
        job = runner.run_sync()
        level, message = finish_sequence(context, job, int(clip.frame_start), self.object_name)
        self.report({level}, message)
        return {"FINISHED"} if level != "ERROR" and job.state is JobState.SUCCEEDED else {"CANCELLED"}


class OFER_PT_sequence(bpy.types.Panel):
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = ids.PANEL_CATEGORY
    bl_idname = ids.PT_SEQUENCE
    bl_label = "Video"
    bl_order = 1  # below Reconstruct
    bl_options = {"DEFAULT_CLOSED"}  # noqa: RUF012

    def draw(self, context: Any) -> None:
        layout: Any = self.layout
        clip = getattr(context.scene, ids.SCENE_SEQUENCE_PROP)
        col = layout.column()
        col.prop(clip, "source")
        col.prop(clip, "fps")
        col.prop(clip, "n_expressions")
        col.prop(clip, "smoothing")
        col.prop(clip, "frame_start")
        col.label(text="Preset, seed, shapes and jaw scale: as in Reconstruct", icon="INFO")
        job = SESSION.job
        if SESSION.busy and job is not None and job.request_id.startswith("sequence"):
            layout.progress(factor=job.fraction, type="BAR", text=f"{job.stage} {job.done}/{job.total}")
            layout.operator(ids.OT_CANCEL, icon="CANCEL")
        else:
            layout.operator(ids.OT_RECONSTRUCT_SEQUENCE, icon="SEQUENCE")


CLASSES = (OFER_PG_sequence, OFER_OT_reconstruct_sequence, OFER_PT_sequence)


def attach() -> None:
    setattr(bpy.types.Scene, ids.SCENE_SEQUENCE_PROP, PointerProperty(type=OFER_PG_sequence))  # type: ignore[func-returns-value]


def detach() -> None:
    if hasattr(bpy.types.Scene, ids.SCENE_SEQUENCE_PROP):
        delattr(bpy.types.Scene, ids.SCENE_SEQUENCE_PROP)
