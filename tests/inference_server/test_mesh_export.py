from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import trimesh

from inference_server.mesh_export import export_hypotheses, write_ply
from tests.inference_server.test_result import make_result


def test_ply_reads_back_in_trimesh(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    verts = rng.normal(size=(10, 3)).astype(np.float32)
    faces = np.array([[0, 1, 2], [2, 3, 4], [5, 6, 9]])
    mesh = trimesh.load(write_ply(tmp_path / "m.ply", verts, faces), process=False)
    assert isinstance(mesh, trimesh.Trimesh)
    np.testing.assert_allclose(mesh.vertices, verts, atol=1e-7)
    np.testing.assert_array_equal(mesh.faces, faces)


def test_export_hypotheses_writes_every_mesh_and_params(tmp_path: Path) -> None:
    result = make_result(np.random.default_rng(1), K=2, M=3)
    written = export_hypotheses(result, tmp_path, millimetres=True)
    assert sorted(p.name for p in written) == sorted(
        ["identity_01.ply", "identity_02.ply", "expression_001.ply", "expression_002.ply", "expression_003.ply",
         "params.json"]
    )  # fmt: skip
    mesh = trimesh.load(tmp_path / "expression_002.ply", process=False)
    assert isinstance(mesh, trimesh.Trimesh)
    np.testing.assert_allclose(mesh.vertices, result.expression_vertices[1] * 1000, rtol=1e-6)
    params = json.loads((tmp_path / "params.json").read_text())
    assert params["units"] == "metres"
    assert params["expressions"][2]["pose"][6:9] == result.jaw_pose[2].tolist()
    assert params["identities"][0]["shape"] == result.identity_params[0].tolist()


def test_params_carry_the_photo_gaze_in_the_eye_joints(tmp_path: Path) -> None:
    """With eye_pose, every expression's 15-D FLAME pose holds it at the eye joints (9:15), beside its jaw;
    without, the eyes are zero."""
    result = make_result(np.random.default_rng(2), K=1, M=2)
    export_hypotheses(result, tmp_path)
    assert json.loads((tmp_path / "params.json").read_text())["expressions"][1]["pose"][9:15] == [0.0] * 6
    result.head_pose = np.array([0.1, -0.2, 0.0, 0.01, 0.0, -0.6], np.float32)
    result.eye_pose = np.array([[0.05, 0.2, 0.0], [0.04, 0.25, 0.0]], np.float32)
    result.meta["gaze"] = {"status": "ok", "yaw_deg": 12.0}
    export_hypotheses(result, tmp_path)
    params = json.loads((tmp_path / "params.json").read_text())
    for m, entry in enumerate(params["expressions"]):
        np.testing.assert_array_equal(entry["pose"][9:15], result.eye_pose.reshape(6).tolist())
        assert entry["pose"][6:9] == result.jaw_pose[m].tolist()
    assert params["gaze"]["yaw_deg"] == 12.0


def test_meshes_first_and_none_write_fewer_plys_and_remove_stale_ones(tmp_path: Path) -> None:
    """A data-set run needs the result file, not a PLY per hypothesis (~70 MB a photo at 100 expressions):
    ``first`` writes identity 1 and expression 1, ``none`` no mesh; params.json always. A folder an earlier
    run filled keeps no PLY of this module's naming that this run did not write; other files stay."""
    result = make_result(np.random.default_rng(3), K=3, M=4)
    export_hypotheses(result, tmp_path)
    assert len(list(tmp_path.glob("*.ply"))) == 7
    (tmp_path / "my_scan.ply").write_bytes(b"ply\n")  # not ours: never touched
    written = export_hypotheses(result, tmp_path, meshes="first")
    assert sorted(p.name for p in written) == ["expression_001.ply", "identity_01.ply", "params.json"]
    assert sorted(p.name for p in tmp_path.glob("*.ply")) == ["expression_001.ply", "identity_01.ply", "my_scan.ply"]
    mesh = trimesh.load(tmp_path / "identity_01.ply", process=False)
    assert isinstance(mesh, trimesh.Trimesh)
    np.testing.assert_allclose(mesh.vertices, result.identity_vertices[0], rtol=1e-6)
    written = export_hypotheses(result, tmp_path, meshes="none")
    assert [p.name for p in written] == ["params.json"]
    assert [p.name for p in tmp_path.glob("*.ply")] == ["my_scan.ply"]
    assert len(json.loads((tmp_path / "params.json").read_text())["expressions"]) == 4
    with pytest.raises(ValueError, match="meshes must be one of"):
        export_hypotheses(result, tmp_path, meshes="some")
