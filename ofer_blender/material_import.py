"""The head's material: the photo projected into the UV map (``meta["texture"]``, a PNG beside the result).

The texture is packed into the .blend, so a saved file keeps it even when the result folder is cleaned.
The PNG's layout is Blender's own (u right, v up; row 0 of the file is v = 1): it is used as it is.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import bpy

from ..inference_server.result import ReconstructionResult


def texture_path(result: ReconstructionResult, source_path: str) -> Path | None:
    """The texture file the result names, or None when it names none."""
    name = result.meta.get("texture")
    if not isinstance(name, str) or not name:
        return None
    return Path(source_path).parent / Path(name).name  # a bare file name by contract: never leave the folder


def build_material(
    obj: bpy.types.Object,
    result: ReconstructionResult,
    source_path: str,
    created: list[Any],
    warnings: list[str],
) -> Any:
    """Give ``obj`` a material with the projected texture; None (and a warning if one was promised) without."""
    path = texture_path(result, source_path)
    if path is None:
        return None
    mesh: Any = obj.data
    if not mesh.uv_layers:
        warnings.append("The result has a texture but no UV map: the head stays untextured")
        return None
    if not path.is_file():
        warnings.append(f"The texture '{path}' is missing: the head stays untextured (put it beside the result)")
        return None
    try:
        image: Any = bpy.data.images.load(str(path), check_existing=False)
    except RuntimeError as exc:
        warnings.append(f"The texture '{path}' could not be read ({exc}): the head stays untextured")
        return None
    created.append(image)
    image.name = f"{obj.name} texture"
    with contextlib.suppress(TypeError):  # a colour config without that name: 8-bit PNGs load as sRGB anyway
        image.colorspace_settings.name = "sRGB"
    image.pack()
    material: Any = bpy.data.materials.new(f"{obj.name} photo texture")
    created.append(material)
    if bpy.app.version < (5, 0, 0):
        material.use_nodes = True  # deprecated from 5.0, where every material has nodes
    nodes, links = material.node_tree.nodes, material.node_tree.links
    shader = next((n for n in nodes if n.type == "BSDF_PRINCIPLED"), None)
    if shader is None:
        shader = nodes.new("ShaderNodeBsdfPrincipled")
    shader.inputs["Roughness"].default_value = 0.6
    texture: Any = nodes.new("ShaderNodeTexImage")
    texture.image = image
    texture.interpolation = "Linear"
    texture.location = (shader.location[0] - 350, shader.location[1])
    uv: Any = nodes.new("ShaderNodeUVMap")
    uv.uv_map = mesh.uv_layers[0].name
    uv.location = (texture.location[0] - 250, texture.location[1])
    links.new(uv.outputs["UV"], texture.inputs["Vector"])
    links.new(texture.outputs["Color"], shader.inputs["Base Color"])
    nodes.active = texture  # the active image node is what Workbench's Texture colour shows
    mesh.materials.append(material)
    return material
