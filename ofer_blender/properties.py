"""Property groups: per-object hypothesis state (saved with the .blend, keyframable) and scene settings."""

from __future__ import annotations

from typing import Any

import bpy
from bpy.props import (
    BoolProperty,
    CollectionProperty,
    EnumProperty,
    FloatProperty,
    IntProperty,
    PointerProperty,
    StringProperty,
)

from . import ids

SAMPLERS = [
    ("ddpm", "DDPM", "Ancestral sampling, the paper's default"),
    ("ddim", "DDIM", "Deterministic, fewer steps"),
    ("dpmsolver", "DPM-Solver", "Fast high-order solver"),
]
#: The worker's speed presets (inference_server/presets.py, the CLI's --preset); CUSTOM sends sampler and steps
PRESETS = [
    ("fast", "Fast", "DPM-Solver++, 20 steps: about 50x fewer network calls than Fidelity"),
    ("fidelity", "Fidelity", "DDPM, 1000 steps, as in the paper"),
    ("CUSTOM", "Custom", "Choose the sampler and the number of steps yourself"),
]
SPREAD_DISPLAY = [
    ("NONE", "None", "Do not show the spread"),
    ("IDENTITY", "Identity", "Per-vertex spread across the identity samples"),
    ("EXPRESSION", "Expression", "Per-vertex spread across the expression samples"),
]


def _on_choice(self: Any, context: Any) -> None:
    from .importer import apply_hypothesis  # importer needs these classes: import at call time

    owner = self.id_data
    if isinstance(owner, bpy.types.Object):
        apply_hypothesis(owner)


def _on_identity_row(self: Any, context: Any) -> None:
    if self.identity != self.active_identity_row + 1:
        self.identity = self.active_identity_row + 1


def _on_spread(self: Any, context: Any) -> None:
    from .importer import show_spread

    owner = self.id_data
    if isinstance(owner, bpy.types.Object):
        show_spread(owner, self.spread_display)


class OFER_PG_identity_item(bpy.types.PropertyGroup):
    """One row of the identity list: the ranker's probability (name is "ID 01"...)."""

    score: FloatProperty(name="Score", min=0.0, max=1.0)  # type: ignore[valid-type]
    relative: FloatProperty(  # type: ignore[valid-type]
        name="Relative score", description="The ranker's probability divided by the best identity's", min=0.0
    )


class OFER_PG_object(bpy.types.PropertyGroup):
    """On the imported head's mesh object."""

    is_result: BoolProperty(name="OFER result", default=False)  # type: ignore[valid-type]
    identity: IntProperty(  # type: ignore[valid-type]
        name="Identity",
        description="Which ranked identity the head shows (1 = best, the Basis)",
        default=1,
        min=1,
        max=10000,
        update=_on_choice,
    )
    expression: IntProperty(  # type: ignore[valid-type]
        name="Expression",
        description="Which expression hypothesis the head shows (0 = neutral)",
        default=0,
        min=0,
        max=10000,
        update=_on_choice,
    )
    n_identities: IntProperty(name="Identities", default=1, min=1)  # type: ignore[valid-type]
    n_expressions: IntProperty(name="Expressions", default=0, min=0)  # type: ignore[valid-type]
    source_path: StringProperty(name="Result file", subtype="FILE_PATH")  # type: ignore[valid-type]
    rig: PointerProperty(name="Rig", type=bpy.types.Object)  # type: ignore[valid-type]
    camera: PointerProperty(name="Photo camera", type=bpy.types.Object)  # type: ignore[valid-type]
    fit_note: StringProperty(name="Fit", description="How the head was placed on the photo, or why not")  # type: ignore[valid-type]
    gaze_note: StringProperty(name="Gaze", description="Where the eye bones look, or why they stay at rest")  # type: ignore[valid-type]
    identities: CollectionProperty(type=OFER_PG_identity_item)  # type: ignore[valid-type]
    active_identity_row: IntProperty(default=0, min=0, update=_on_identity_row)  # type: ignore[valid-type]
    spread_display: EnumProperty(  # type: ignore[valid-type]
        name="Show spread", items=SPREAD_DISPLAY, default="NONE", update=_on_spread
    )


class OFER_PG_photo_item(bpy.types.PropertyGroup):
    """One extra photo of the person (name: the file name shown in the list)."""

    filepath: StringProperty(name="Photo file", subtype="FILE_PATH")  # type: ignore[valid-type]


class OFER_PG_scene(bpy.types.PropertyGroup):
    """The photo and how to sample it (per scene, saved)."""

    image: PointerProperty(name="Photo", type=bpy.types.Image)  # type: ignore[valid-type]
    image_path: StringProperty(name="Photo file", subtype="FILE_PATH")  # type: ignore[valid-type]
    preset: EnumProperty(name="Preset", items=PRESETS, default="fast")  # type: ignore[valid-type]
    sampler: EnumProperty(name="Sampler", items=SAMPLERS, default="ddpm")  # type: ignore[valid-type]
    steps: IntProperty(name="Steps", description="0 = the sampler's default", default=0, min=0, max=1000)  # type: ignore[valid-type]
    seed: IntProperty(name="Seed", default=0, min=0)  # type: ignore[valid-type]
    n_shapes: IntProperty(name="Identity samples", default=100, min=1, max=10000)  # type: ignore[valid-type]
    n_expressions: IntProperty(name="Expression samples", default=100, min=1, max=10000)  # type: ignore[valid-type]
    top_k: IntProperty(name="Identities kept", default=10, min=1, max=100)  # type: ignore[valid-type]
    jaw_scale: FloatProperty(name="Jaw scale", default=0.5, min=0.0, max=2.0)  # type: ignore[valid-type]
    flame_controls: BoolProperty(  # type: ignore[valid-type]
        name="FLAME controls",
        description="Also give FLAME's own Shape, Exp and Pose keys and a free jaw (the MPI FLAME add-on's names)",
        default=False,
    )
    refine_expression: BoolProperty(  # type: ignore[valid-type]
        name="Refine to photo",
        description="Put first a copy of the best-fitting expression refined to the eyes and mouth the photo "
        "shows (closed eyes, pressed lips); the samples follow unchanged",
        default=False,
    )
    #: More photos of the same person, sent as the request's ``photos`` (ops_photos.py).
    extra_photos: CollectionProperty(type=OFER_PG_photo_item)  # type: ignore[valid-type]
    active_extra_photo: IntProperty(default=0, min=0)  # type: ignore[valid-type]


PROPERTY_CLASSES = (OFER_PG_identity_item, OFER_PG_object, OFER_PG_photo_item, OFER_PG_scene)


def attach() -> None:
    setattr(bpy.types.Object, ids.OBJECT_PROP, PointerProperty(type=OFER_PG_object))  # type: ignore[func-returns-value]
    setattr(bpy.types.Scene, ids.SCENE_PROP, PointerProperty(type=OFER_PG_scene))  # type: ignore[func-returns-value]


def detach() -> None:
    for owner, name in ((bpy.types.Object, ids.OBJECT_PROP), (bpy.types.Scene, ids.SCENE_PROP)):
        if hasattr(owner, name):
            delattr(owner, name)
