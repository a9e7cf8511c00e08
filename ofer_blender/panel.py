"""The "OFER" tab in the 3D viewport's sidebar (and a face-marks panel in the Image Editor)."""

from __future__ import annotations

import json
import textwrap
from typing import Any

import bpy

from . import face_list, face_marks, flame_controls, hypotheses, ids, worker_status_ui
from .ops_export import result_object
from .ops_photos import draw_extra_photos
from .preferences import get_preferences
from .session import SESSION


def _meta(obj: Any) -> dict[str, Any]:
    try:
        meta = json.loads(obj.get(ids.OBJECT_DATA_PREFIX + "meta_json", "{}"))
    except (TypeError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


class OFER_UL_identities(bpy.types.UIList):
    bl_idname = ids.UL_IDENTITIES

    def draw_item(
        self,
        context: Any,
        layout: Any,
        data: Any,
        item: Any,
        icon: Any,
        active_data: Any,
        active_prop: Any,
        index: int | None = 0,
        flt_flag: int | None = 0,
    ) -> None:
        row = layout.row()
        row.label(text=item.name, icon="USER")
        row.label(text=hypotheses.relative_score_text(item.relative))
        row.label(text=f"p = {item.score:.2g}")


class OFER_PT_reconstruct(bpy.types.Panel):
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = ids.PANEL_CATEGORY
    bl_idname = ids.PT_RECONSTRUCT
    bl_label = "Reconstruct"

    def draw(self, context: Any) -> None:
        layout: Any = self.layout
        settings = getattr(context.scene, ids.SCENE_PROP)
        worker_status_ui.draw_first_run(layout, get_preferences(context))
        col = layout.column()
        col.template_ID(settings, "image", open="image.open")
        if settings.image is None:
            col.prop(settings, "image_path")
        marks = face_marks.request_marks(settings.image)
        col.label(
            text="Face: " + ("five points" if "points" in marks else "box" if "box" in marks else "detected"),
            icon="FACESEL",
        )
        draw_extra_photos(layout, settings)
        box = layout.box()
        box.row().prop(settings, "preset", expand=True)
        if settings.preset == "CUSTOM":
            box.prop(settings, "sampler")
            box.prop(settings, "steps")
        box.prop(settings, "seed")
        row = box.row(align=True)
        row.prop(settings, "n_shapes", text="Shapes")
        row.prop(settings, "n_expressions", text="Expr.")
        box.prop(settings, "top_k")
        box.prop(settings, "jaw_scale")
        box.prop(settings, "flame_controls")
        box.prop(settings, "refine_expression")
        job = SESSION.job
        if SESSION.busy and job is not None:
            layout.progress(factor=job.fraction, type="BAR", text=f"{job.stage} {job.done}/{job.total}")
            layout.operator(ids.OT_CANCEL, icon="CANCEL")
        else:
            layout.operator(ids.OT_RECONSTRUCT, icon="PLAY")
        if SESSION.last_report:
            for line in SESSION.last_report.splitlines()[:6]:
                layout.label(text=line, icon="ERROR")
        layout.operator(ids.OT_RELEASE_GPU, icon="X")


def result_warning_lines(obj: Any) -> list[tuple[str, str]]:
    """(text, icon) lines about the input a head was made from: the face used and the result file's
    ``meta["warnings"]`` (several faces, low confidence, face cut by the frame, head turn, fit), wrapped."""
    try:
        meta = json.loads(obj.get("ofer_meta_json") or "{}")
    except (TypeError, ValueError):
        return []
    detection = meta.get("detection") or {}
    lines: list[tuple[str, str]] = []
    if detection:
        confidence = detection.get("confidence")
        score = "no detector score" if confidence is None else f"confidence {confidence:.2f}"
        index, count = detection.get("face_index", 0), detection.get("n_faces", 1)
        lines.append((f"Face {index} of {count} ({detection.get('method', '?')}, {score})", "FACESEL"))
    photos = meta.get("photos") or []
    if len(photos) > 1:
        lines.append((f"Identity pooled over {len(photos)} photos", "RENDERLAYERS"))
    for warning in meta.get("warnings") or []:
        text = f"{warning.get('code', '')}: {warning.get('message', '')}"
        for i, part in enumerate(textwrap.wrap(text, 60)):
            lines.append((part, "ERROR" if i == 0 else "BLANK1"))
    return lines


class OFER_PT_hypotheses(bpy.types.Panel):
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = ids.PANEL_CATEGORY
    bl_idname = ids.PT_HYPOTHESES
    bl_label = "Hypotheses"

    @classmethod
    def poll(cls, context: Any) -> bool:
        return result_object(context) is not None

    def draw(self, context: Any) -> None:
        obj = result_object(context)
        assert obj is not None
        state = getattr(obj, ids.OBJECT_PROP)
        layout: Any = self.layout
        lines = result_warning_lines(obj)
        if lines:
            col = layout.box().column(align=True)
            for text, icon in lines:
                col.label(text=text, icon=icon)
        if obj.get(ids.OBJECT_DATA_PREFIX + "format") == "ofer-sequence/1":  # type: ignore[func-returns-value]
            layout.label(text="Sequence: Exp, Pose keys, jaw and head pose keyframed per frame", icon="SEQUENCE")
            layout.operator(ids.OT_IMPORT_AGAIN, icon="IMPORT")
            return
        if state.fit_note:
            layout.label(text=state.fit_note, icon="CAMERA_DATA" if state.camera is not None else "INFO")
        if state.gaze_note:
            layout.label(text=state.gaze_note, icon="HIDE_OFF")
        layout.template_list(ids.UL_IDENTITIES, "", state, "identities", state, "active_identity_row", rows=4)
        layout.prop(state, "identity")
        layout.prop(state, "expression", text=f"Expression (0–{state.n_expressions})")
        note = hypotheses.expression_note(_meta(obj), state.expression)
        if note:
            layout.label(text=note)
        if flame_controls.has_controls(obj) and state.n_expressions > 0:
            layout.operator(
                ids.OT_SET_FLAME_CONTROLS, text="Set FLAME Controls to this Expression", icon="SHAPEKEY_DATA"
            )
        layout.prop(state, "spread_display")
        row = layout.row(align=True)
        row.operator(ids.OT_SHOW_SPREAD, text="Show identity spread").which = "IDENTITY"
        row.operator(ids.OT_SHOW_SPREAD, text="Expression spread").which = "EXPRESSION"
        layout.operator(ids.OT_IMPORT_AGAIN, icon="IMPORT")


class OFER_PT_export(bpy.types.Panel):
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = ids.PANEL_CATEGORY
    bl_idname = ids.PT_EXPORT
    bl_label = "Export"

    @classmethod
    def poll(cls, context: Any) -> bool:
        return result_object(context) is not None

    def draw(self, context: Any) -> None:
        layout: Any = self.layout
        row = layout.row(align=True)
        row.operator(ids.OT_EXPORT, text="FBX").format = "FBX"
        row.operator(ids.OT_EXPORT, text="glTF").format = "GLB"


class OFER_PT_face_marks(bpy.types.Panel):
    bl_idname = ids.PT_FACE_MARKS
    bl_label = "Face Marks"
    bl_space_type = "IMAGE_EDITOR"
    bl_region_type = "UI"
    bl_category = ids.PANEL_CATEGORY

    def draw(self, context: Any) -> None:
        layout: Any = self.layout
        image = getattr(context.space_data, "image", None)
        if image is None:
            layout.label(text="Open the photo here to mark the face")
            return
        marks = face_marks.request_marks(image)
        layout.label(text="Marked: " + (", ".join(marks) or "nothing (the detector runs)"))
        layout.operator(ids.OT_CLICK_FACE_POINTS, icon="RESTRICT_SELECT_OFF")
        layout.operator(ids.OT_CLEAR_FACE_MARKS, icon="X").image_name = image.name
        _draw_face_list(layout, image)


def _draw_face_list(layout: Any, image: Any) -> None:
    """The faces the worker found (drawn over the photo with their numbers): one button each."""
    layout.operator(ids.OT_FIND_FACES, icon="VIEWZOOM").image_name = image.name
    chosen = face_list.chosen(image)
    for face in face_list.stored(image):
        icon = "ERROR" if face.warnings else "USER"
        op = layout.operator(ids.OT_CHOOSE_FACE, text=face.label(), icon=icon, depress=face.index == chosen)
        op.image_name, op.index = image.name, face.index


CLASSES = (OFER_UL_identities, OFER_PT_reconstruct, OFER_PT_hypotheses, OFER_PT_export, OFER_PT_face_marks)
