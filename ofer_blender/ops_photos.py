"""Extra photos of the same person: Add Photos (a multi-select file browser), Remove, Clear, and their list.

The photos live on the scene settings (``extra_photos``); Reconstruct sends them as ``photos``. The worker
then pools the identity over every photo; the head's expressions, pose, camera and texture still come
from the main photo.
"""

from __future__ import annotations

import os
from typing import Any

import bpy
from bpy.props import BoolProperty, CollectionProperty, IntProperty, StringProperty

from . import ids
from .bl_typing import OperatorResult
from .photo_list import PHOTO_SUFFIXES, add_photos, request_photos


def _settings(context: Any) -> Any:
    return getattr(context.scene, ids.SCENE_PROP)


def _main_photo(settings: Any) -> str | None:
    image = settings.image
    if image is not None and image.filepath:
        return bpy.path.abspath(image.filepath)
    return bpy.path.abspath(settings.image_path) if settings.image_path else None


def extra_photo_paths(settings: Any, main: str) -> list[str]:
    """Absolute paths of the listed extra photos, for the request (never the main photo itself)."""
    return request_photos([bpy.path.abspath(item.filepath) for item in settings.extra_photos], main)


class OFER_OT_add_photos(bpy.types.Operator):
    """Add more photos of the same person: the identity is pooled over all photos (select several files)"""

    bl_idname = ids.OT_ADD_PHOTOS
    bl_label = "Add Photos"
    bl_options = {"REGISTER", "UNDO"}  # noqa: RUF012

    directory: StringProperty(subtype="DIR_PATH", options={"SKIP_SAVE"})  # type: ignore[valid-type]
    files: CollectionProperty(type=bpy.types.OperatorFileListElement, options={"SKIP_SAVE"})  # type: ignore[valid-type]
    filter_image: BoolProperty(default=True, options={"HIDDEN", "SKIP_SAVE"})  # type: ignore[valid-type]
    filter_folder: BoolProperty(default=True, options={"HIDDEN", "SKIP_SAVE"})  # type: ignore[valid-type]
    filter_glob: StringProperty(  # type: ignore[valid-type]
        default=";".join(f"*{s}" for s in PHOTO_SUFFIXES), options={"HIDDEN", "SKIP_SAVE"}
    )

    def invoke(self, context: Any, event: Any) -> OperatorResult:
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context: Any) -> OperatorResult:
        folder = bpy.path.abspath(self.directory) if self.directory else ""
        chosen = [os.path.join(folder, f.name) for f in self.files if f.name]
        if not chosen:
            self.report({"ERROR"}, "Choose one or more photo files")
            return {"CANCELLED"}
        settings = _settings(context)
        existing = [bpy.path.abspath(item.filepath) for item in settings.extra_photos]
        change = add_photos(existing, chosen, _main_photo(settings))
        for path in change.added:
            item = settings.extra_photos.add()
            item.name, item.filepath = os.path.basename(path), path
        settings.active_extra_photo = max(0, len(settings.extra_photos) - 1)
        self.report({"WARNING" if change.skipped else "INFO"}, change.summary())
        return {"FINISHED"} if change.added else {"CANCELLED"}


class OFER_OT_remove_photo(bpy.types.Operator):
    """Remove an extra photo from the list (the file stays on disk)"""

    bl_idname = ids.OT_REMOVE_PHOTO
    bl_label = "Remove Photo"
    bl_options = {"REGISTER", "UNDO"}  # noqa: RUF012

    index: IntProperty(name="Index", default=-1, description="-1: the active row", options={"SKIP_SAVE"})  # type: ignore[valid-type]

    @classmethod
    def poll(cls, context: Any) -> bool:
        return len(_settings(context).extra_photos) > 0

    def execute(self, context: Any) -> OperatorResult:
        settings = _settings(context)
        index = settings.active_extra_photo if self.index < 0 else self.index
        if not 0 <= index < len(settings.extra_photos):
            self.report({"ERROR"}, f"There is no extra photo number {index + 1}")
            return {"CANCELLED"}
        settings.extra_photos.remove(index)
        settings.active_extra_photo = min(index, max(0, len(settings.extra_photos) - 1))
        return {"FINISHED"}


class OFER_OT_clear_photos(bpy.types.Operator):
    """Remove every extra photo: the next Reconstruct uses the main photo alone"""

    bl_idname = ids.OT_CLEAR_PHOTOS
    bl_label = "Clear Photos"
    bl_options = {"REGISTER", "UNDO"}  # noqa: RUF012

    @classmethod
    def poll(cls, context: Any) -> bool:
        return len(_settings(context).extra_photos) > 0

    def execute(self, context: Any) -> OperatorResult:
        settings = _settings(context)
        settings.extra_photos.clear()
        settings.active_extra_photo = 0
        return {"FINISHED"}


class OFER_UL_photos(bpy.types.UIList):
    bl_idname = ids.UL_PHOTOS

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
        exists = os.path.isfile(bpy.path.abspath(item.filepath))
        layout.label(text=item.name or item.filepath, icon="IMAGE_DATA" if exists else "ERROR")


def draw_extra_photos(layout: Any, settings: Any) -> None:
    """The list of extra photos with Add / Remove / Clear, under the main photo in the Reconstruct panel."""
    box = layout.box()
    count = len(settings.extra_photos)
    box.label(text=f"Extra photos of this person: {count}" if count else "Extra photos of this person (optional)",
              icon="RENDERLAYERS")  # fmt: skip
    if count:
        box.template_list(ids.UL_PHOTOS, "", settings, "extra_photos", settings, "active_extra_photo", rows=2)
        box.label(text="Identity from all photos; expressions from the main one", icon="INFO")
    row = box.row(align=True)
    row.operator(ids.OT_ADD_PHOTOS, icon="ADD")
    row.operator(ids.OT_REMOVE_PHOTO, text="", icon="REMOVE")
    row.operator(ids.OT_CLEAR_PHOTOS, text="", icon="X")


CLASSES = (OFER_OT_add_photos, OFER_OT_remove_photo, OFER_OT_clear_photos, OFER_UL_photos)
