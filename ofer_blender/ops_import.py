"""File ▸ Import ▸ OFER result (.npz), and re-importing an object's own result file."""

from __future__ import annotations

from typing import Any

import bpy
from bpy.props import BoolProperty, StringProperty
from bpy_extras.io_utils import ImportHelper

from . import ids
from .bl_typing import OperatorResult
from .importer import ResultImportError, import_result, import_warnings


class OFER_OT_import_result(bpy.types.Operator, ImportHelper):  # type: ignore[misc]
    """Import an OFER result file as a rigged head whose hypotheses are shape keys"""

    bl_idname = ids.OT_IMPORT_RESULT
    bl_label = "Import OFER Result"
    bl_options = {"REGISTER", "UNDO", "PRESET"}  # noqa: RUF012

    filename_ext = ".npz"
    filepath: StringProperty(name="File", subtype="FILE_PATH", options={"SKIP_SAVE"})  # type: ignore[valid-type]
    filter_glob: StringProperty(default="*.npz", options={"HIDDEN"})  # type: ignore[valid-type]
    object_name: StringProperty(name="Name", description="Name of the new object (empty: from the photo)")  # type: ignore[valid-type]
    flame_controls: BoolProperty(  # type: ignore[valid-type]
        name="FLAME controls",
        description="Add FLAME's Shape, Exp and Pose keys (the MPI FLAME add-on's names) set from the best "
        "hypothesis; needs a result reconstructed with FLAME controls",
        default=False,
    )

    @classmethod
    def poll(cls, context: Any) -> bool:
        return context.mode == "OBJECT"

    def execute(self, context: Any) -> OperatorResult:
        try:
            obj = import_result(
                context, bpy.path.abspath(self.filepath), name=self.object_name, with_flame_controls=self.flame_controls
            )
        except ResultImportError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        for message in import_warnings(obj):
            self.report({"WARNING"}, message)
        self.report({"INFO"}, f"Imported {obj.name}")
        return {"FINISHED"}


class OFER_OT_import_again(bpy.types.Operator):
    """Import the active head's result file again (a fresh object with all hypotheses)"""

    bl_idname = ids.OT_IMPORT_AGAIN
    bl_label = "Import Again"
    bl_options = {"REGISTER", "UNDO"}  # noqa: RUF012

    @classmethod
    def poll(cls, context: Any) -> bool:
        obj = context.active_object
        state = None if obj is None else getattr(obj, ids.OBJECT_PROP, None)
        return context.mode == "OBJECT" and state is not None and state.is_result and bool(state.source_path)

    def execute(self, context: Any) -> OperatorResult:
        obj: Any = context.active_object
        try:
            new = import_result(context, bpy.path.abspath(getattr(obj, ids.OBJECT_PROP).source_path))
        except ResultImportError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        for message in import_warnings(new):
            self.report({"WARNING"}, message)
        return {"FINISHED"}


def menu_import(self: Any, context: Any) -> None:
    self.layout.operator(ids.OT_IMPORT_RESULT, text="OFER result (.npz)")


CLASSES = (OFER_OT_import_result, OFER_OT_import_again)
