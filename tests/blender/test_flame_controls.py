"""FLAME controls: Shape/Exp/Pose keys set to a hypothesis's coefficients give its mesh (1e-5 m)."""

from __future__ import annotations

import bpy
import numpy as np
import pytest
from eye_skinning import rodrigues
from mathutils import Quaternion
from mesh_probe import evaluated_local
from registered import ofer_ops

from inference_server.result import read_result, write_result


@pytest.fixture
def controls_file(result_factory, tmp_path):
    return result_factory(tmp_path / "controls.npz", n_expressions=5, flame_controls=True)


def _import(path, flame_controls: bool = True):
    assert ofer_ops().import_result(filepath=str(path), flame_controls=flame_controls) == {"FINISHED"}
    return bpy.context.view_layer.objects.active


def test_keys_set_to_a_hypothesis_reproduce_its_mesh(addon, controls_file) -> None:
    result = read_result(controls_file)
    obj = _import(controls_file)
    blocks = obj.data.shape_keys.key_blocks
    names = [b.name for b in blocks]
    n_shape, n_exp = result.shape_basis.shape[0], result.expression_basis.shape[0]
    assert [n for n in names if n.startswith("Shape")] == [f"Shape{i}" for i in range(1, n_shape + 1)]
    assert [n for n in names if n.startswith("Exp")] == [f"Exp{i}" for i in range(1, n_exp + 1)]
    assert [n for n in names if n.startswith("Pose")] == [f"Pose{i}" for i in range(1, 37)]
    assert all(blocks[f"Exp{i}"].slider_min == -10 and blocks[f"Exp{i}"].slider_max == 10 for i in range(1, n_exp + 1))
    jaw = obj.ofer.rig.pose.bones["jaw"]
    offsets = np.asarray(obj["ofer_jaw_offset"]).reshape(-1, 3)  # the add-on's pivot correction per hypothesis
    obj.ofer.expression = 0
    errors_without_offset = []
    for m in range(result.expression_vertices.shape[0]):
        # the coefficients straight from the file, the pose correctives from Rodrigues written here
        for i, value in enumerate(result.identity_params[0][:n_shape], start=1):
            blocks[f"Shape{i}"].value = float(value)
        for i, value in enumerate(result.expression_params[m], start=1):
            blocks[f"Exp{i}"].value = float(value)
        feature = np.zeros((4, 3, 3))
        feature[1] = rodrigues(result.jaw_pose[m].astype(np.float64)) - np.eye(3)  # joints 1..4: jaw is the 2nd
        for i, value in enumerate(feature.reshape(-1), start=1):
            blocks[f"Pose{i}"].value = float(value)
        aa = result.jaw_pose[m].astype(np.float64)
        angle = float(np.linalg.norm(aa))
        jaw.rotation_quaternion = Quaternion(aa / angle if angle else (1, 0, 0), angle)
        jaw.location = (0.0, 0.0, 0.0)
        errors_without_offset.append(float(np.abs(evaluated_local(obj) - result.expression_vertices[m]).max()))
        jaw.location = tuple(offsets[m])  # bones at rest point along +Y of the model frame: rig space = bone space
        error = float(np.abs(evaluated_local(obj) - result.expression_vertices[m]).max())
        assert error < 1e-5, f"hypothesis {m + 1}: {error}"
    # FLAME turns the jaw about a joint that moves with the expression: without the offset the rig is off
    assert max(errors_without_offset) > 1e-4


def test_scrollers_still_show_every_hypothesis(addon, controls_file) -> None:
    result = read_result(controls_file)
    obj = _import(controls_file)
    blocks = obj.data.shape_keys.key_blocks
    assert blocks["Exp1"].value == pytest.approx(float(result.expression_params[0][0]), abs=1e-6)
    np.testing.assert_allclose(evaluated_local(obj), result.expression_vertices[0], atol=1e-5)  # imported: hypothesis 1
    for m in range(1, result.expression_vertices.shape[0] + 1):
        obj.ofer.expression = m
        np.testing.assert_allclose(
            evaluated_local(obj), result.expression_vertices[m - 1], atol=1e-5, err_msg=f"EXP {m}"
        )
    addon_module = __import__(type(obj.ofer).__module__.rpartition(".")[0] + ".flame_controls", fromlist=["x"])
    addon_module.set_from_hypothesis(obj, 4)
    assert obj.ofer.expression == 0
    np.testing.assert_allclose(evaluated_local(obj), result.expression_vertices[3], atol=1e-5)


def test_a_result_without_bases_says_reconstruct_again(addon, controls_file, tmp_path) -> None:
    result = read_result(controls_file)
    result.shape_basis = result.expression_basis = result.pose_basis = None  # as written without the option
    plain = write_result(tmp_path / "plain.npz", result)
    before = len(bpy.data.objects)
    with pytest.raises(RuntimeError, match="reconstruct again with FLAME controls on"):
        ofer_ops().import_result(filepath=str(plain), flame_controls=True)
    assert len(bpy.data.objects) == before
