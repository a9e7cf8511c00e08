from __future__ import annotations

import importlib
import json

import bpy
import numpy as np
import pytest
from mesh_probe import evaluated_local
from registered import ofer_ops, ofer_state

from inference_server.result import read_result


def _id_name(k: int, scores) -> str:
    """Rank and relative score, formatted here independently: three significant digits of a percentage."""
    percent = 100 * float(scores[k - 1]) / float(scores[0])
    text = "100%" if percent >= 99.95 else f"{percent:.3g}%"
    return f"ID {k:02d} ({text} of ID 01)"


def _import(path):
    assert ofer_ops().import_result(filepath=str(path)) == {"FINISHED"}
    return bpy.context.view_layer.objects.active


def test_every_hypothesis_evaluates_to_the_file_mesh(addon, result_file) -> None:
    result = read_result(result_file)
    obj = _import(result_file)
    K, M = result.identity_vertices.shape[0], result.expression_vertices.shape[0]
    state = obj.ofer
    assert (state.n_identities, state.n_expressions, state.identity, state.expression) == (K, M, 1, 0)
    mesh = obj.data
    assert len(mesh.vertices) == result.template.shape[0] and len(mesh.polygons) == result.faces.shape[0]
    loops = np.empty(len(mesh.loops), dtype=np.int32)
    mesh.loops.foreach_get("vertex_index", loops)
    np.testing.assert_array_equal(loops.reshape(-1, 3), result.faces)
    uv = np.empty(len(mesh.loops) * 2, dtype=np.float32)
    mesh.uv_layers["UVMap"].data.foreach_get("uv", uv)
    assert result.uv is not None and result.uv_faces is not None
    np.testing.assert_allclose(uv.reshape(-1, 2), result.uv[result.uv_faces.ravel()], atol=1e-7)
    assert all(p.use_smooth for p in mesh.polygons)
    for k in range(1, K + 1):
        state.identity = k
        np.testing.assert_allclose(evaluated_local(obj), result.identity_vertices[k - 1], atol=1e-6, err_msg=f"ID {k}")
    state.identity = 1
    for m in range(1, M + 1):
        state.expression = m
        np.testing.assert_allclose(
            evaluated_local(obj), result.expression_vertices[m - 1], atol=1e-6, err_msg=f"EXP {m}"
        )
    state.expression = 0
    np.testing.assert_allclose(evaluated_local(obj), result.identity_vertices[0], atol=1e-6)


def test_rest_pose_combination_adds_identity_and_expression(addon, result_file) -> None:
    """Identity k with expression m, rig at rest: identity k + (expression m in rest space − identity 1)."""
    result = read_result(result_file)
    obj = _import(result_file)
    obj.modifiers["Armature"].show_viewport = False  # the rig at rest
    obj.ofer.expression = 3
    rest_exp = evaluated_local(obj).astype(np.float64)
    obj.ofer.identity = 2
    expected = result.identity_vertices[1] + rest_exp - result.identity_vertices[0]
    np.testing.assert_allclose(evaluated_local(obj), expected, atol=1e-6)
    values = {b.name: b.value for b in obj.data.shape_keys.key_blocks[1:]}
    assert sorted(name for name, v in values.items() if v == 1.0) == [
        "EXP 003",
        next(n for n in values if n.startswith("ID 02 ")),
    ]
    assert sum(values.values()) == 2.0


def test_names_ranges_rig_and_metadata(addon, result_file) -> None:
    result = read_result(result_file)
    obj = _import(result_file)
    names = [b.name for b in obj.data.shape_keys.key_blocks]
    scores = result.identity_scores
    assert names == ["Basis", _id_name(2, scores), _id_name(3, scores)] + [f"EXP {m:03d}" for m in range(1, 6)]
    assert all(b.slider_min <= -1 and b.slider_max >= 2 for b in obj.data.shape_keys.key_blocks[1:])
    rig = obj.parent
    assert rig is obj.ofer.rig and rig.type == "ARMATURE"
    assert [b.name for b in rig.data.bones] == ["root", "neck", "jaw", "left_eye", "right_eye"]
    assert rig.data.bones["jaw"].parent.name == "neck"
    np.testing.assert_allclose([rig.data.bones["jaw"].head_local[:]], [result.joints[2]], atol=1e-6)
    assert obj.modifiers["Armature"].object is rig
    # skin weights as vertex groups, read back per vertex
    weights = np.zeros_like(result.skin_weights)
    for vertex in obj.data.vertices:
        for g in vertex.groups:
            weights[vertex.index, g.group] = g.weight
    np.testing.assert_allclose(weights, result.skin_weights, atol=1e-7)
    meta = json.loads(obj["ofer_meta_json"])
    assert meta == result.meta
    np.testing.assert_allclose(
        np.asarray(obj["ofer_expression_params"]).reshape(result.expression_params.shape), result.expression_params
    )
    assert obj.ofer.source_path == str(result_file)
    assert [round(i.score, 6) for i in obj.ofer.identities] == [round(float(s), 6) for s in scores]
    # jaw bone posed by the expression choice
    obj.ofer.expression = 4
    q = rig.pose.bones["jaw"].rotation_quaternion
    # Compare rotations, not (axis, angle): an angle above pi comes back as 2 pi - angle about -axis.
    rotvec = result.jaw_pose[3].astype(np.float64)
    angle = np.linalg.norm(rotvec)
    k = np.array([[0, -rotvec[2], rotvec[1]], [rotvec[2], 0, -rotvec[0]], [-rotvec[1], rotvec[0], 0]]) / angle
    expected = np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k
    np.testing.assert_allclose(np.array(q.to_matrix()), expected, atol=1e-5)


def test_spread_colours(addon, result_file) -> None:
    result = read_result(result_file)
    obj = _import(result_file)
    assert ofer_ops().show_spread(which="EXPRESSION") == {"FINISHED"}
    mesh = obj.data
    assert mesh.color_attributes.active_color_name == "OFER spread expression"
    raw = np.empty(len(mesh.vertices), dtype=np.float32)
    mesh.attributes["ofer_spread_expression_m"].data.foreach_get("value", raw)
    np.testing.assert_array_equal(raw, result.spread_expression)
    colours = np.empty(len(mesh.vertices) * 4, dtype=np.float32)
    mesh.color_attributes["OFER spread expression"].data.foreach_get("color", colours)
    red = colours.reshape(-1, 4)[:, 0]
    assert int(np.argmax(red)) == int(np.argmax(result.spread_expression))


def test_save_and_reload_keeps_everything(addon, result_file, tmp_path) -> None:
    result = read_result(result_file)
    obj = _import(result_file)
    obj.ofer.identity = 3
    blend = tmp_path / "head.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.wm.open_mainfile(filepath=str(blend))
    obj = next(o for o in bpy.data.objects if o.type == "MESH")
    state = ofer_state(obj)
    assert state.is_result and state.identity == 3 and state.n_expressions == 5
    assert len(obj.data.shape_keys.key_blocks) == 1 + 2 + 5
    assert json.loads(obj["ofer_meta_json"]) == result.meta
    np.testing.assert_allclose(np.asarray(obj["ofer_identity_params"]).reshape(3, -1), result.identity_params)
    np.testing.assert_allclose(evaluated_local(obj), result.identity_vertices[2], atol=1e-6)
    state.identity = 1
    state.expression = 2
    np.testing.assert_allclose(evaluated_local(obj), result.expression_vertices[1], atol=1e-6)


@pytest.mark.parametrize("damage", ["truncated", "wrong_format", "missing"])
def test_bad_result_file_is_a_clear_error_and_the_scene_is_unchanged(
    addon, result_file, tmp_path, damage, scene_counts
) -> None:
    bad = tmp_path / "bad.npz"
    if damage == "truncated":
        bad.write_bytes(result_file.read_bytes()[:2000])
    elif damage == "wrong_format":
        with np.load(result_file) as archive:
            members = {k: archive[k] for k in archive.files}
        members["format"] = np.array("something-else/9")
        np.savez(bad, **members)
    before = scene_counts()
    with pytest.raises(RuntimeError, match="Cannot import the OFER result") as info:
        ofer_ops().import_result(filepath=str(bad))
    assert {"truncated": "corrupt", "wrong_format": "format", "missing": "no such result file"}[damage] in str(
        info.value
    )
    assert scene_counts() == before


@pytest.mark.parametrize(
    ("step", "factory_options"),
    [("_store_data", {}), ("pose_eyes", {"fit": "ok", "eye_pose": True})],  # after the rig and mesh exist; the eyes
)
def test_failure_midway_removes_everything_it_made(
    addon, result_factory, tmp_path, scene_counts, monkeypatch, step, factory_options
) -> None:
    importer = importlib.import_module(addon.__name__ + ".importer")
    path = result_factory(tmp_path / "result.npz", **factory_options)

    def broken(*args, **kwargs):
        raise RuntimeError(f"simulated failure in {step}")

    monkeypatch.setattr(importer, step, broken)
    before = scene_counts()
    with pytest.raises(RuntimeError, match="simulated"):
        importer.import_result(bpy.context, path)
    assert scene_counts() == before


def test_keyframed_identity_and_expression_play_back(addon, result_file) -> None:
    """Keys on the scrollers move the mesh and the jaw on frame change, where no update callback runs."""
    result = read_result(result_file)
    obj = _import(result_file)
    state = obj.ofer
    m = int(np.argmax(np.linalg.norm(result.jaw_pose, axis=1))) + 1
    for frame, identity, expression in ((1, 1, 0), (10, 1, m), (20, 2, 0)):
        state.identity, state.expression = identity, expression
        obj.keyframe_insert(data_path="ofer.identity", frame=frame)
        obj.keyframe_insert(data_path="ofer.expression", frame=frame)
    state.identity, state.expression = 3, 1  # what the callbacks last showed; playback must override it
    scene = bpy.context.scene
    jaw = obj.ofer.rig.pose.bones["jaw"]
    for frame, expected in ((10, result.expression_vertices[m - 1]), (1, result.identity_vertices[0])):
        scene.frame_set(frame)
        np.testing.assert_allclose(evaluated_local(obj), expected, atol=1e-6, err_msg=f"frame {frame}")
    scene.frame_set(20)
    np.testing.assert_allclose(evaluated_local(obj), result.identity_vertices[1], atol=1e-6)
    assert jaw.rotation_quaternion[0] == pytest.approx(1.0)  # expression 0: the jaw at rest again
    scene.frame_set(14)  # between keys Blender steps the integer through the numbers: one whole head each
    shown, who = obj.ofer.expression, obj.ofer.identity  # the animated values, written back by playback
    assert 0 <= shown <= m and who in (1, 2)
    if shown == 0:
        np.testing.assert_allclose(evaluated_local(obj), result.identity_vertices[who - 1], atol=1e-6)
    elif who == 1:
        np.testing.assert_allclose(evaluated_local(obj), result.expression_vertices[shown - 1], atol=1e-6)


def test_identity_names_tell_rank_and_relative_score_apart(addon, result_factory, tmp_path) -> None:
    """Ten nearly equal probabilities (a flat softmax) still give ten distinct, readable key names."""
    path = result_factory(tmp_path / "flat.npz", n_identities=10)
    with np.load(path) as archive:
        members = {k: archive[k] for k in archive.files}
    members["identity_scores"] = np.linspace(0.0132, 0.0125, 10).astype(np.float32)
    np.savez(tmp_path / "flat2.npz", **members)
    obj = _import(tmp_path / "flat2.npz")
    names = [b.name for b in obj.data.shape_keys.key_blocks if b.name.startswith("ID ")]
    assert len(names) == 9 and len(set(n.split(" (")[1] for n in names)) == 9
    assert names[0] == "ID 02 (99.4% of ID 01)" and names[-1] == "ID 10 (94.7% of ID 01)"
    assert [round(i.relative, 4) for i in obj.ofer.identities][:2] == [1.0, round(0.0131222 / 0.0132, 4)]
