"""Operators that mark the face on a photo: from explicit arguments (scripts, tests) or by clicking."""

from __future__ import annotations

from typing import Any

import bpy
from bpy.props import EnumProperty, FloatVectorProperty, StringProperty

from . import face_marks, ids
from .bl_typing import OperatorResult


def _image(context: Any, name: str) -> bpy.types.Image | None:
    if name:
        return bpy.data.images.get(name)
    space = getattr(context, "space_data", None)
    image = getattr(space, "image", None)
    if image is None:
        settings = getattr(context.scene, ids.SCENE_PROP, None)
        image = None if settings is None else settings.image
    return image


class OFER_OT_set_face_marks(bpy.types.Operator):
    """Store a face box or five face points on a photo (pixels, origin top-left)"""

    bl_idname = ids.OT_SET_FACE_MARKS
    bl_label = "Set Face Marks"
    bl_options = {"REGISTER", "UNDO"}  # noqa: RUF012

    image_name: StringProperty(name="Image", description="Image datablock (empty: the shown photo)")  # type: ignore[valid-type]
    kind: EnumProperty(name="Kind", items=[("POINTS", "Five points", ""), ("BOX", "Box", "")], default="POINTS")  # type: ignore[valid-type]
    points: FloatVectorProperty(name="Points", size=10, description="x, y of left eye, right eye, nose, mouth corners")  # type: ignore[valid-type]
    box: FloatVectorProperty(name="Box", size=4, description="x0, y0, x1, y1")  # type: ignore[valid-type]

    @classmethod
    def poll(cls, context: Any) -> bool:
        return len(bpy.data.images) > 0

    def execute(self, context: Any) -> OperatorResult:
        image = _image(context, self.image_name)
        if image is None:
            self.report({"ERROR"}, f"No image named '{self.image_name}'" if self.image_name else "No photo chosen")
            return {"CANCELLED"}
        try:
            if self.kind == "POINTS":
                face_marks.set_points(image, list(self.points))
            else:
                face_marks.set_box(image, list(self.box))
        except face_marks.FaceMarkError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        return {"FINISHED"}


class OFER_OT_clear_face_marks(bpy.types.Operator):
    """Remove the face marks from a photo (detection runs again)"""

    bl_idname = ids.OT_CLEAR_FACE_MARKS
    bl_label = "Clear Face Marks"
    bl_options = {"REGISTER", "UNDO"}  # noqa: RUF012

    image_name: StringProperty(name="Image")  # type: ignore[valid-type]

    @classmethod
    def poll(cls, context: Any) -> bool:
        return len(bpy.data.images) > 0

    def execute(self, context: Any) -> OperatorResult:
        image = _image(context, self.image_name)
        if image is None:
            self.report({"ERROR"}, "No photo chosen")
            return {"CANCELLED"}
        face_marks.clear(image)
        return {"FINISHED"}


class OFER_OT_click_face_points(bpy.types.Operator):
    """Click the five face points on the photo: left eye, right eye, nose tip, left and right mouth corner"""

    bl_idname = ids.OT_CLICK_FACE_POINTS
    bl_label = "Click Face Points"
    bl_options = {"REGISTER", "UNDO"}  # noqa: RUF012

    _clicked: list[float]

    @classmethod
    def poll(cls, context: Any) -> bool:
        space = context.space_data
        return isinstance(space, bpy.types.SpaceImageEditor) and space.image is not None

    def invoke(self, context: Any, event: Any) -> OperatorResult:
        self._clicked = []
        context.window_manager.modal_handler_add(self)
        self._hint(context)
        return {"RUNNING_MODAL"}

    def _hint(self, context: Any) -> None:
        n = len(self._clicked) // 2
        if context.area is not None:
            context.area.header_text_set(f"Click the {face_marks.POINT_NAMES[n]} ({n + 1}/5) · Esc cancels")

    def modal(self, context: Any, event: Any) -> OperatorResult:
        if event.type in {"ESC", "RIGHTMOUSE"} and event.value == "PRESS":
            self._end(context)
            return {"CANCELLED"}
        if event.type == "LEFTMOUSE" and event.value == "PRESS":
            space = context.space_data
            image = getattr(space, "image", None)
            region = context.region
            if image is None or region is None:
                self._end(context)
                return {"CANCELLED"}
            u, v = region.view2d.region_to_view(event.mouse_region_x, event.mouse_region_y)
            self._clicked += face_marks.uv_to_pixels(u, v, int(image.size[0]), int(image.size[1]))
            if len(self._clicked) == 10:
                try:
                    face_marks.set_points(image, self._clicked)
                except face_marks.FaceMarkError as exc:
                    self.report({"ERROR"}, str(exc))
                    self._end(context)
                    return {"CANCELLED"}
                self._end(context)
                return {"FINISHED"}
            self._hint(context)
            return {"RUNNING_MODAL"}
        return {"PASS_THROUGH"}

    def _end(self, context: Any) -> None:
        if context.area is not None:
            context.area.header_text_set(None)
            context.area.tag_redraw()


CLASSES = (OFER_OT_set_face_marks, OFER_OT_clear_face_marks, OFER_OT_click_face_points)
