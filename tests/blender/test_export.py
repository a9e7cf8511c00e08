"""FBX and glTF exports keep the shape keys (morph targets), the vertex count and the armature."""

from __future__ import annotations

import bpy
import pytest

from inference_server.result import read_result


@pytest.mark.parametrize(("fmt", "suffix"), [("FBX", ".fbx"), ("GLB", ".glb")])
def test_export_and_reimport(addon, result_file, tmp_path, fmt, suffix) -> None:
    result = read_result(result_file)
    assert bpy.ops.ofer.import_result(filepath=str(result_file)) == {"FINISHED"}
    n_keys = 1 + (result.identity_vertices.shape[0] - 1) + result.expression_vertices.shape[0]
    out = tmp_path / f"head{suffix}"
    assert bpy.ops.ofer.export(format=fmt, filepath=str(out)) == {"FINISHED"}
    assert out.is_file()

    bpy.ops.wm.read_factory_settings(use_empty=True)
    if fmt == "FBX":
        bpy.ops.import_scene.fbx(filepath=str(out))
    else:
        bpy.ops.import_scene.gltf(filepath=str(out), merge_vertices=True)
    # the glTF importer adds an icosphere as the bones' display shape: the head is the mesh with shape keys
    meshes = [o for o in bpy.data.objects if o.type == "MESH" and o.data.shape_keys is not None]
    armatures = [o for o in bpy.data.objects if o.type == "ARMATURE"]
    assert len(meshes) == 1 and len(armatures) == 1
    mesh = meshes[0]
    assert len(mesh.data.vertices) == result.template.shape[0]
    assert len(mesh.data.shape_keys.key_blocks) == n_keys
    bones = {b.name for b in armatures[0].data.bones}
    assert {"root", "neck", "jaw", "left_eye", "right_eye"} <= bones
    assert any(m.type == "ARMATURE" for m in mesh.modifiers)
