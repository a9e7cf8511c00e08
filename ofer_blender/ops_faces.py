"""Find the faces in the photo and choose one before Reconstruct (the list is drawn over the photo)."""

from __future__ import annotations

from typing import Any

import bpy
from bpy.props import IntProperty, StringProperty

from . import face_list, ids
from .bl_typing import OperatorResult
from .ops_marks import _image
from .preferences import get_preferences, worker_launch
from .worker_client import clean_environment


class OFER_OT_find_faces(bpy.types.Operator):
    """List the faces the worker finds in the photo, to choose one before Reconstruct"""

    bl_idname = ids.OT_FIND_FACES
    bl_label = "Find Faces"

    image_name: StringProperty(name="Image", description="Image datablock (empty: the shown photo)")  # type: ignore[valid-type]

    @classmethod
    def poll(cls, context: Any) -> bool:
        return len(bpy.data.images) > 0

    def execute(self, context: Any) -> OperatorResult:
        image = _image(context, self.image_name)
        if image is None or not image.filepath:
            self.report({"ERROR"}, "Open a photo saved on disk first (the worker reads the file)")
            return {"CANCELLED"}
        command, env = worker_launch(get_preferences(context))
        try:
            faces = face_list.find_faces(command, clean_environment(extra=env), bpy.path.abspath(image.filepath))
        except face_list.FaceListError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        face_list.store(image, faces)
        for area in getattr(context.screen, "areas", []):
            area.tag_redraw()
        several = " — choose one (face 0, nearest the centre, is the default)" if len(faces) > 1 else ""
        self.report({"INFO"}, f"{len(faces)} face{'s' if len(faces) != 1 else ''} found{several}")
        return {"FINISHED"}


class OFER_OT_choose_face(bpy.types.Operator):
    """Reconstruct this face of the photo (clears a box or points marked by hand)"""

    bl_idname = ids.OT_CHOOSE_FACE
    bl_label = "Choose Face"
    bl_options = {"REGISTER", "UNDO"}  # noqa: RUF012

    image_name: StringProperty(name="Image", description="Image datablock (empty: the shown photo)")  # type: ignore[valid-type]
    index: IntProperty(name="Face", min=0, description="Face number in the list (0: nearest the centre)")  # type: ignore[valid-type]

    def execute(self, context: Any) -> OperatorResult:
        image = _image(context, self.image_name)
        if image is None:
            self.report({"ERROR"}, "No photo chosen")
            return {"CANCELLED"}
        try:
            face = face_list.choose(image, self.index)
        except face_list.FaceListError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Reconstruct will use {face.label()}")
        return {"FINISHED"}


CLASSES = (OFER_OT_find_faces, OFER_OT_choose_face)
