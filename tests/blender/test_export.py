"""FBX and glTF exports keep the shape keys (morph targets), the vertex count and the armature."""

from __future__ import annotations

import bpy
import numpy as np
import pytest
from mesh_probe import basis_world, evaluated_world
from registered import ofer_ops

from inference_server.result import read_result


@pytest.mark.parametrize(("fmt", "suffix"), [("FBX", ".fbx"), ("GLB", ".glb")])
def test_export_and_reimport(addon, result_file, tmp_path, fmt, suffix) -> None:
    result = read_result(result_file)
    assert ofer_ops().import_result(filepath=str(result_file)) == {"FINISHED"}
    n_keys = 1 + (result.identity_vertices.shape[0] - 1) + result.expression_vertices.shape[0]
    out = tmp_path / f"head{suffix}"
    assert ofer_ops().export(format=fmt, filepath=str(out)) == {"FINISHED"}
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


def _reimport(out, fmt):
    bpy.ops.wm.read_factory_settings(use_empty=True)
    if fmt == "FBX":
        bpy.ops.import_scene.fbx(filepath=str(out))
    else:
        bpy.ops.import_scene.gltf(filepath=str(out), merge_vertices=True)
    meshes = [o for o in bpy.data.objects if o.type == "MESH" and o.data.shape_keys is not None]
    armatures = [o for o in bpy.data.objects if o.type == "ARMATURE"]
    return meshes, armatures


@pytest.mark.parametrize("how", ["hide", "hide_viewport", "excluded_collection"])
@pytest.mark.parametrize(("fmt", "suffix"), [("FBX", ".fbx"), ("GLB", ".glb")])
def test_export_with_the_rig_hidden_keeps_bones_skin_and_jaw(addon, result_file, tmp_path, fmt, suffix, how) -> None:
    assert ofer_ops().import_result(filepath=str(result_file)) == {"FINISHED"}
    head = bpy.context.view_layer.objects.active
    rig = head.ofer.rig
    if how == "hide":
        rig.hide_set(True)
    elif how == "hide_viewport":
        rig.hide_viewport = True
    else:
        hidden = bpy.data.collections.new("hidden rigs")
        bpy.context.scene.collection.children.link(hidden)
        hidden.objects.link(rig)
        for collection in list(rig.users_collection):
            if collection is not hidden:
                collection.objects.unlink(rig)
        bpy.context.view_layer.layer_collection.children["hidden rigs"].exclude = True
    out = tmp_path / f"head{suffix}"
    assert ofer_ops().export(format=fmt, filepath=str(out)) == {"FINISHED"}
    # the scene is as the user left it
    assert rig.hide_get() == (how == "hide") and rig.hide_viewport == (how == "hide_viewport")
    assert (bpy.context.view_layer.objects.get(rig.name) is None) == (how == "excluded_collection")
    meshes, armatures = _reimport(out, fmt)
    assert len(meshes) == 1 and len(armatures) == 1
    mesh = meshes[0]
    assert {"root", "neck", "jaw", "left_eye", "right_eye"} <= {b.name for b in armatures[0].data.bones}
    assert any(m.type == "ARMATURE" and m.object == armatures[0] for m in mesh.modifiers)
    jaw = mesh.vertex_groups.get("jaw")
    assert jaw is not None
    assert sum(1 for v in mesh.data.vertices for g in v.groups if g.group == jaw.index and g.weight > 0.5) > 50


@pytest.mark.parametrize(("fmt", "suffix"), [("FBX", ".fbx"), ("GLB", ".glb")])
def test_export_keeps_the_posed_jaw_of_an_expression(addon, result_file, tmp_path, fmt, suffix) -> None:
    """The exported head, read back, shows the chosen expression with its jaw open, where Blender showed it."""
    result = read_result(result_file)
    assert ofer_ops().import_result(filepath=str(result_file)) == {"FINISHED"}
    head = bpy.context.view_layer.objects.active
    m = int(np.argmax(np.linalg.norm(result.jaw_pose, axis=1))) + 1
    head.ofer.expression = m
    shown, basis = evaluated_world(head), basis_world(head)
    jaw_motion = np.linalg.norm(shown - _rest_of(head), axis=1).max()
    assert jaw_motion > 1e-3  # the jaw really moves the mouth by more than a millimetre
    out = tmp_path / f"posed{suffix}"
    assert ofer_ops().export(format=fmt, filepath=str(out)) == {"FINISHED"}
    meshes, _ = _reimport(out, fmt)
    back = meshes[0]
    # the exporters may reorder vertices: match them through the (unique) rest positions
    order = _match(basis_world(back), basis)
    error = np.linalg.norm(evaluated_world(back) - shown[order], axis=1).max()
    assert error < 1e-5, f"mouth {error * 1000:.2f} mm off"


@pytest.mark.parametrize(("fmt", "suffix"), [("FBX", ".fbx"), ("GLB", ".glb")])
def test_export_keeps_the_turned_eyes(addon, result_factory, tmp_path, fmt, suffix) -> None:
    """A head with the photo's gaze (``eye_pose``), read back from its export, still looks that way."""
    path = result_factory(tmp_path / "gaze.npz", fit="ok", eye_pose=True)
    result = read_result(path)
    assert ofer_ops().import_result(filepath=str(path)) == {"FINISHED"}
    head = bpy.context.view_layer.objects.active
    head.ofer.expression = result.expression_vertices.shape[0]
    shown, basis = evaluated_world(head), basis_world(head)
    eyes = result.skin_weights[:, 3:5].sum(axis=1) > 0  # left_eye, right_eye
    assert np.linalg.norm(shown[eyes] - _rest_of(head)[eyes], axis=1).max() > 2e-3  # the eyes really turned
    out = tmp_path / f"gaze{suffix}"
    assert ofer_ops().export(format=fmt, filepath=str(out)) == {"FINISHED"}
    meshes, _ = _reimport(out, fmt)
    back = meshes[0]
    order = _match(basis_world(back), basis)
    error = np.linalg.norm(evaluated_world(back) - shown[order], axis=1)
    assert error[eyes[order]].max() < 1e-5, f"eyeballs {error[eyes[order]].max() * 1000:.3f} mm off"
    assert error.max() < 1e-5, f"the head {error.max() * 1000:.3f} mm off"


def _rest_of(head) -> np.ndarray:
    modifier = head.modifiers["Armature"]
    modifier.show_viewport = False
    try:
        return evaluated_world(head)
    finally:
        modifier.show_viewport = True


def _match(points: np.ndarray, reference: np.ndarray) -> np.ndarray:
    from mathutils.kdtree import KDTree

    tree = KDTree(len(reference))
    for i, p in enumerate(reference):
        tree.insert(p, i)
    tree.balance()
    found = [tree.find(p) for p in points]
    assert max(d for _, _, d in found) < 1e-6
    return np.array([i for _, i, _ in found])
