"""File ▸ Import ▸ OFER result (.npz), and re-importing an object's own result file."""

from __future__ import annotations

from typing import Any

import bpy
from bpy.props import BoolProperty, IntProperty, StringProperty
from bpy_extras.io_utils import ImportHelper

from . import flame_controls, ids, sequence_import
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
        return _report_imported(self, obj)


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
        path = bpy.path.abspath(getattr(obj, ids.OBJECT_PROP).source_path)
        try:
            if obj.get(ids.OBJECT_DATA_PREFIX + "format") == sequence_import.FORMAT:
                new = sequence_import.import_sequence(context, path)
            else:
                new = import_result(context, path, with_flame_controls=flame_controls.has_controls(obj))
        except (ResultImportError, sequence_import.SequenceImportError) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        for message in import_warnings(new):
            self.report({"WARNING"}, message)
        return {"FINISHED"}


class OFER_OT_import_sequence(bpy.types.Operator, ImportHelper):  # type: ignore[misc]
    """Import an OFER sequence file as a head whose FLAME controls, jaw and pose are keyframed per frame"""

    bl_idname = ids.OT_IMPORT_SEQUENCE
    bl_label = "Import OFER Sequence"
    bl_options = {"REGISTER", "UNDO"}  # noqa: RUF012

    filename_ext = ".npz"
    filepath: StringProperty(name="File", subtype="FILE_PATH", options={"SKIP_SAVE"})  # type: ignore[valid-type]
    filter_glob: StringProperty(default="*.npz", options={"HIDDEN"})  # type: ignore[valid-type]
    frame_start: IntProperty(name="First frame", description="Scene frame of the clip's first frame", default=1)  # type: ignore[valid-type]

    @classmethod
    def poll(cls, context: Any) -> bool:
        return context.mode == "OBJECT"

    def execute(self, context: Any) -> OperatorResult:
        path = bpy.path.abspath(self.filepath)
        try:
            obj = sequence_import.import_sequence(context, path, frame_start=self.frame_start)
        except (sequence_import.SequenceImportError, ResultImportError) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        return _report_imported(self, obj)


class OFER_OT_set_flame_controls(bpy.types.Operator):
    """Set the FLAME controls (Shape, Exp, Pose keys and the jaw) to a hypothesis; the Expression scroller goes to 0"""

    bl_idname = ids.OT_SET_FLAME_CONTROLS
    bl_label = "Set FLAME Controls"
    bl_options = {"REGISTER", "UNDO"}  # noqa: RUF012

    expression: IntProperty(name="Expression", description="Hypothesis (0: the one the scroller shows)", min=0)  # type: ignore[valid-type]

    @classmethod
    def poll(cls, context: Any) -> bool:
        obj = context.active_object
        state = None if obj is None else getattr(obj, ids.OBJECT_PROP, None)
        return state is not None and state.is_result and state.n_expressions > 0

    def execute(self, context: Any) -> OperatorResult:
        obj: Any = context.active_object
        state = getattr(obj, ids.OBJECT_PROP)
        try:
            flame_controls.set_from_hypothesis(obj, self.expression or max(state.expression, 1))
        except flame_controls.FlameControlsError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        return {"FINISHED"}


def menu_import(self: Any, context: Any) -> None:
    self.layout.operator(ids.OT_IMPORT_RESULT, text="OFER result (.npz)")
    self.layout.operator(ids.OT_IMPORT_SEQUENCE, text="OFER sequence (.npz)")


CLASSES = (OFER_OT_import_result, OFER_OT_import_again, OFER_OT_import_sequence, OFER_OT_set_flame_controls)


def _report_imported(operator: Any, obj: Any) -> OperatorResult:
    """Tell the user what was imported and what they should know about it (the import's warnings)."""
    for message in import_warnings(obj):
        operator.report({"WARNING"}, message)
    operator.report({"INFO"}, f"Imported {obj.name}")
    return {"FINISHED"}
