"""Export the head with its shape keys (morph targets) and rig, and show the per-vertex spread."""

from __future__ import annotations

from typing import Any

import bpy
from bpy.props import EnumProperty, StringProperty

from . import ids
from .bl_typing import OperatorResult

FORMATS = [
    ("FBX", "FBX", "Autodesk FBX with shape keys and armature"),
    ("GLB", "glTF (.glb)", "Binary glTF with morph targets and skin"),
]


def result_object(context: Any) -> bpy.types.Object | None:
    """The active OFER head (or the head whose rig is active)."""
    obj = context.active_object
    if obj is None:
        return None
    state = getattr(obj, ids.OBJECT_PROP, None)
    if state is not None and state.is_result:
        return obj
    for child in getattr(obj, "children", ()):
        child_state = getattr(child, ids.OBJECT_PROP, None)
        if child_state is not None and child_state.is_result:
            return child
    return None


class ExportError(RuntimeError):
    """The head cannot be exported as it is; the message says why and what to do."""


def _make_selectable(context: Any, targets: list[Any]) -> list[tuple[Any, str, Any]]:
    """Unhide the head and rig for the export (hidden objects cannot be selected, and an exporter with
    ``use_selection`` then silently writes the mesh without its rig); returns what to put back."""
    undo: list[tuple[Any, str, Any]] = []
    view_layer = context.view_layer
    for target in targets:
        if view_layer.objects.get(target.name) is None:
            context.scene.collection.objects.link(target)  # in an excluded collection only: link it for now
            undo.append((target, "link", None))
        for attribute in ("hide_viewport", "hide_select"):
            if getattr(target, attribute):
                undo.append((target, attribute, True))
                setattr(target, attribute, False)
        if target.hide_get():
            undo.append((target, "hide", True))
            target.hide_set(False)
    return undo


def _restore(context: Any, undo: list[tuple[Any, str, Any]]) -> None:
    for target, what, value in reversed(undo):
        if what == "link":
            context.scene.collection.objects.unlink(target)
        elif what == "hide":
            target.hide_set(value)
        else:
            setattr(target, what, value)


def export_head(context: Any, obj: bpy.types.Object, fmt: str, filepath: str) -> None:
    """Run Blender's exporter on the head and its rig only, hidden or not; selection and visibility are
    restored afterwards."""
    rig = getattr(obj, ids.OBJECT_PROP).rig
    targets = [o for o in (obj, rig) if o is not None]
    view_layer = context.view_layer
    selected = [o for o in view_layer.objects if o.select_get()]
    active = view_layer.objects.active
    undo = _make_selectable(context, targets)
    try:
        for other in selected:
            other.select_set(False)
        for target in targets:
            target.select_set(True)
        missing = [t.name for t in targets if not t.select_get()]
        if missing:
            raise ExportError(f"Cannot select {', '.join(missing)} for the export: make it visible and try again")
        view_layer.objects.active = obj
        _run_exporter(fmt, filepath, animated=is_animated(obj))
    finally:
        for target in targets:
            target.select_set(False)
        _restore(context, undo)
        for other in selected:
            other.select_set(True)
        view_layer.objects.active = active


def is_animated(obj: Any) -> bool:
    """Whether the head moves over the scene's frames: keyframes on it (the Identity/Expression scrollers),
    on its shape keys (FLAME controls, a sequence) or on its rig (jaw, head pose)."""
    rig = getattr(obj, ids.OBJECT_PROP).rig
    mesh = obj.data
    owners = [obj, rig, getattr(mesh, "shape_keys", None)]
    return any(getattr(getattr(o, "animation_data", None), "action", None) is not None for o in owners if o)


def _supported(operator: Any, options: dict[str, Any]) -> dict[str, Any]:
    """The options this Blender's exporter knows (the glTF exporter's grew between 4.2 and 5.2)."""
    known = set(operator.get_rna_type().properties.keys())
    return {k: v for k, v in options.items() if k in known}


def _run_exporter(fmt: str, filepath: str, *, animated: bool = False) -> None:
    """An animated head goes out with its animation sampled at every scene frame: the morph-target weights
    (driven keys included: keyframed scrollers play back) and the bones and rig."""
    if fmt == "FBX":
        bpy.ops.export_scene.fbx(
            filepath=filepath,
            use_selection=True,
            object_types={"ARMATURE", "MESH"},
            use_mesh_modifiers=False,  # keep the shape keys; the rig travels as a skin
            add_leaf_bones=False,
            bake_anim=animated,
            bake_anim_use_all_actions=False,  # the scene's timeline as one take, not every action in the file
            bake_anim_use_nla_strips=False,
            bake_anim_force_startend_keying=True,
            bake_anim_simplify_factor=0.0,  # every frame's value, not a curve fitted through them
            axis_forward="-Z",
            axis_up="Y",
        )
    else:
        operator = bpy.ops.export_scene.gltf
        animation = {
            "export_animation_mode": "SCENE",  # the timeline, sampled: drivers and constraints included
            "export_anim_scene_split_object": False,  # one animation: weights, bones and rig together
            "export_force_sampling": True,
            "export_morph_animation": True,
        }
        operator(
            filepath=filepath,
            export_format="GLB",
            use_selection=True,
            export_morph=True,
            export_skins=True,
            export_apply=False,
            export_animations=animated,
            # the joints' nodes carry the current pose (the chosen expression's jaw) over the rest-pose
            # bind matrices; with the default (rest position) the jaw rotation was lost
            export_rest_position_armature=False,
            **(_supported(operator, animation) if animated else {}),
        )


class OFER_OT_export(bpy.types.Operator):
    """Export the active OFER head with its shape keys and rig"""

    bl_idname = ids.OT_EXPORT
    bl_label = "Export OFER Head"

    format: EnumProperty(name="Format", items=FORMATS, default="FBX")  # type: ignore[valid-type]
    filepath: StringProperty(name="File", subtype="FILE_PATH")  # type: ignore[valid-type]

    @classmethod
    def poll(cls, context: Any) -> bool:
        return context.mode == "OBJECT" and result_object(context) is not None

    def invoke(self, context: Any, event: Any) -> OperatorResult:
        obj = result_object(context)
        if not self.filepath and obj is not None:
            self.filepath = bpy.path.clean_name(obj.name) + (".fbx" if self.format == "FBX" else ".glb")
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context: Any) -> OperatorResult:
        obj = result_object(context)
        if obj is None or not self.filepath:
            self.report({"ERROR"}, "Select an OFER head and give a file name")
            return {"CANCELLED"}
        path = bpy.path.ensure_ext(bpy.path.abspath(self.filepath), ".fbx" if self.format == "FBX" else ".glb")
        try:
            export_head(context, obj, self.format, path)
        except ExportError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Exported {path}")
        return {"FINISHED"}


class OFER_OT_show_spread(bpy.types.Operator):
    """Colour the head by the per-vertex spread of the samples (blue: certain, red: uncertain)"""

    bl_idname = ids.OT_SHOW_SPREAD
    bl_label = "Show Spread"
    bl_options = {"REGISTER", "UNDO"}  # noqa: RUF012

    which: EnumProperty(  # type: ignore[valid-type]
        name="Spread",
        items=[("IDENTITY", "Identity", ""), ("EXPRESSION", "Expression", ""), ("NONE", "Off", "")],
    )

    @classmethod
    def poll(cls, context: Any) -> bool:
        return result_object(context) is not None

    def execute(self, context: Any) -> OperatorResult:
        obj = result_object(context)
        assert obj is not None
        getattr(obj, ids.OBJECT_PROP).spread_display = self.which
        screen = getattr(context, "screen", None)
        for area in getattr(screen, "areas", []):
            if area.type == "VIEW_3D":
                shading = area.spaces.active.shading
                shading.color_type = "VERTEX" if self.which != "NONE" else "MATERIAL"
        return {"FINISHED"}


CLASSES = (OFER_OT_export, OFER_OT_show_spread)
