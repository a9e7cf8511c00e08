"""Every name Blender knows the add-on by, in one place (operator idnames, class names, property keys)."""

from __future__ import annotations

from typing import Final

#: The add-on's module name: ``bl_ext.<repo>.ofer_face`` inside Blender, the extension root in tests.
ADDON_PACKAGE: Final = (__package__ or "ofer_face.ofer_blender").rpartition(".")[0] or "ofer_face"

PANEL_CATEGORY: Final = "OFER"

# Operators
OT_RECONSTRUCT: Final = "ofer.reconstruct"
OT_RECONSTRUCT_SEQUENCE: Final = "ofer.reconstruct_sequence"
OT_CANCEL: Final = "ofer.cancel"
OT_RELEASE_GPU: Final = "ofer.release_gpu"
OT_IMPORT_RESULT: Final = "ofer.import_result"
OT_IMPORT_AGAIN: Final = "ofer.import_again"
OT_IMPORT_SEQUENCE: Final = "ofer.import_sequence"
OT_SET_FLAME_CONTROLS: Final = "ofer.set_flame_controls"
OT_EXPORT: Final = "ofer.export"
OT_SHOW_SPREAD: Final = "ofer.show_spread"
OT_SET_FACE_MARKS: Final = "ofer.set_face_marks"
OT_CLEAR_FACE_MARKS: Final = "ofer.clear_face_marks"
OT_CLICK_FACE_POINTS: Final = "ofer.click_face_points"
OT_FIND_FACES: Final = "ofer.find_faces"
OT_CHOOSE_FACE: Final = "ofer.choose_face"
OT_ADD_PHOTOS: Final = "ofer.add_photos"
OT_REMOVE_PHOTO: Final = "ofer.remove_photo"
OT_CLEAR_PHOTOS: Final = "ofer.clear_photos"
OT_TEST_WORKER: Final = "ofer.test_worker"
OT_OPEN_LOG: Final = "ofer.open_log"
OT_CREATE_MANAGED_ENV: Final = "ofer.create_managed_env"
OT_CANCEL_MANAGED_ENV: Final = "ofer.cancel_managed_env"
OT_REMOVE_MANAGED_ENV: Final = "ofer.remove_managed_env"

# Panels, lists and menus
PT_RECONSTRUCT: Final = "OFER_PT_reconstruct"
PT_SEQUENCE: Final = "OFER_PT_sequence"
PT_HYPOTHESES: Final = "OFER_PT_hypotheses"
PT_EXPORT: Final = "OFER_PT_export"
PT_FACE_MARKS: Final = "OFER_PT_face_marks"
UL_IDENTITIES: Final = "OFER_UL_identities"
UL_PHOTOS: Final = "OFER_UL_photos"

# Properties attached to Blender types
OBJECT_PROP: Final = "ofer"  # bpy.types.Object.ofer: per-object hypothesis state (saved, keyframable)
SCENE_PROP: Final = "ofer_settings"  # bpy.types.Scene.ofer_settings: photo and sampler settings
SCENE_SEQUENCE_PROP: Final = "ofer_sequence"  # bpy.types.Scene.ofer_sequence: the clip and its settings

# Custom (ID) properties
IMAGE_BOX_KEY: Final = "ofer_box"  # [x0, y0, x1, y1] in photo pixels (origin top-left, y down)
IMAGE_POINTS_KEY: Final = "ofer_points"  # 10 floats: five (x, y) in photo pixels
IMAGE_FACES_KEY: Final = "ofer_faces"  # JSON list of the faces the worker found (face_list.py)
IMAGE_FACE_KEY: Final = "ofer_face"  # the chosen face's number (sent as the request's ``face``)
OBJECT_DATA_PREFIX: Final = "ofer_"  # custom properties holding the result's arrays and metadata
COLOR_SPREAD_IDENTITY: Final = "OFER spread identity"
COLOR_SPREAD_EXPRESSION: Final = "OFER spread expression"
