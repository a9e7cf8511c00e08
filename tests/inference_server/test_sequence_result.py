"""The sequence result file: round trip, the guarded reader, and the contract's mesh formula."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from inference_server.demo.head import generate_demo_head
from inference_server.flame.layer import FlameLayer
from inference_server.flame.model_data import FlameModelData
from inference_server.sequence.controls import expression_basis, pose_basis, rig_vertices
from inference_server.sequence_result import (
    FORMAT,
    ResultFileError,
    SequenceResult,
    read_sequence_result,
    write_sequence_result,
)


@pytest.fixture(scope="module")
def head() -> FlameModelData:
    return generate_demo_head()


def _homogeneous(rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3], out[:3, 3] = rotation, translation
    return out


def _rodrigues(aa: np.ndarray) -> np.ndarray:
    """Rotation matrix by the matrix exponential of the skew matrix (independent of controls.rodrigues)."""
    from scipy.linalg import expm

    x, y, z = aa
    return expm(np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]], dtype=np.float64))


def contract_mesh(sequence: SequenceResult, t: int) -> np.ndarray:
    """docs/sequence-result.md's formula written out with 4×4 joint matrices, one frame at a time."""
    rest = sequence.identity_vertices[0].astype(np.float64)
    e = sequence.expression_basis.astype(np.float64)
    joints = sequence.joints.astype(np.float64)
    local = [np.eye(3) for _ in joints]
    local[2] = _rodrigues(sequence.frame_jaw_pose[t].astype(np.float64))
    feature = np.concatenate([(r - np.eye(3)).ravel() for r in local[1:]])
    shaped = rest + np.tensordot(sequence.frame_expression_params[t], e, axes=1)
    shaped = shaped + np.tensordot(feature, sequence.pose_basis.astype(np.float64), axes=1)
    world: list[np.ndarray] = []
    for j, parent in enumerate(sequence.parents):
        offset = joints[j] if parent < 0 else joints[j] - joints[parent]
        mine = _homogeneous(local[j], offset)
        world.append(mine if parent < 0 else world[parent] @ mine)
    skin = [w @ _homogeneous(np.eye(3), -joints[j]) for j, w in enumerate(world)]
    blended = np.einsum("vj,jab->vab", sequence.skin_weights.astype(np.float64), np.stack(skin))
    return np.einsum("vab,vb->va", blended[:, :3, :3], shaped) + blended[:, :3, 3]


def make_sequence(head: FlameModelData, frames: int = 4, m: int = 3) -> SequenceResult:
    layer = FlameLayer(head, dtype=torch.float64)
    rng = np.random.default_rng(4)
    shape = rng.normal(0, 1, (1, head.n_shape))
    rest = layer.neutral(torch.as_tensor(shape))
    identity = rest.vertices[0].numpy().astype(np.float32)
    joints = rest.rest_joints[0].numpy().astype(np.float32)
    exp_basis, corr_basis = expression_basis(head, 50), pose_basis(head)
    params = rng.normal(0, 0.5, (frames, 50))
    jaw = np.stack([np.abs(rng.normal(0, 0.2, frames)), rng.normal(0, 0.02, frames), np.zeros(frames)], axis=1)
    vertices = rig_vertices(identity, joints, head.parents, head.weights, exp_basis, corr_basis, params, jaw)
    hypotheses = rng.normal(0, 0.5, (frames, m, 53)).astype(np.float32)
    return SequenceResult(
        meta={"demo": True, "units": "metres", "frames": [{"index": i, "status": "ok"} for i in range(frames)]},
        faces=head.faces.astype(np.int32), template=head.v_template.astype(np.float32),
        identity_params=shape.astype(np.float32), identity_vertices=identity[None], joints=joints,
        parents=head.parents.astype(np.int32), skin_weights=head.weights.astype(np.float32),
        expression_basis=exp_basis, pose_basis=corr_basis, frame_expression_params=params.astype(np.float32),
        frame_jaw_pose=jaw.astype(np.float32), frame_head_pose=np.zeros((frames, 6), np.float32),
        camera=np.array([800, 320, 240], np.float32), frame_vertices=vertices,
        frame_observed=np.ones(frames, np.int32), frame_hypotheses=hypotheses,
        frame_choice=np.zeros(frames, np.int32),
    )  # fmt: skip


def test_round_trip_and_the_mesh_formula(head: FlameModelData, tmp_path: Path) -> None:
    sequence = make_sequence(head)
    back = read_sequence_result(write_sequence_result(tmp_path / "s.npz", sequence))
    assert back.n_frames == 4 and back.demo and back.format == FORMAT
    assert back.pose_basis.shape == (36, head.n_vertices, 3)
    for t in range(back.n_frames):
        assert np.abs(contract_mesh(back, t) - back.frame_vertices[t]).max() < 1e-5


def test_rig_equals_the_flame_layer_where_the_joints_agree(head: FlameModelData) -> None:
    """Expression alone (no jaw: nothing skins) and jaw alone (rest joints unmoved): FLAME's own layer."""
    layer = FlameLayer(head, dtype=torch.float64)
    shape = np.random.default_rng(1).normal(0, 1, (1, head.n_shape))
    rest = layer.neutral(torch.as_tensor(shape))
    identity, joints = rest.vertices[0].numpy(), rest.rest_joints[0].numpy()
    params = np.random.default_rng(2).normal(0, 0.5, (2, 50))
    jaw = np.array([[0.0, 0.0, 0.0], [0.25, 0.03, 0.0]])
    params[1] = 0.0
    ours = rig_vertices(identity, joints, head.parents, head.weights, expression_basis(head, 50), pose_basis(head),
                        params, jaw)  # fmt: skip
    flame = layer.with_expression(torch.as_tensor(shape), torch.as_tensor(params), torch.as_tensor(jaw))
    assert np.abs(ours - flame.vertices.numpy()).max() < 1e-5


@pytest.mark.parametrize(
    ("damage", "key"),
    [
        ("frame_observed", "frame_observed"),
        ("pose_basis", "pose_basis"),
        ("frame_choice", "frame_choice"),
        ("nan", "frame_vertices"),
        ("format", "format"),
        ("unknown", "extra"),
    ],
)
def test_tampered_files_are_refused_naming_the_key(head: FlameModelData, tmp_path: Path, damage: str, key: str) -> None:
    sequence = make_sequence(head, frames=2)
    path = write_sequence_result(tmp_path / "s.npz", sequence)
    with np.load(path) as data:
        members = {k: data[k] for k in data.files}
    if damage == "frame_observed":
        members["frame_observed"] = np.array([1, 2], np.int32)
    elif damage == "pose_basis":
        members["pose_basis"] = members["pose_basis"][:35]
    elif damage == "frame_choice":
        members["frame_choice"] = np.array([0, 7], np.int32)
    elif damage == "nan":
        members["frame_vertices"][1, 5, 0] = np.nan
    elif damage == "format":
        members["format"] = np.array("ofer-result/1")
    else:
        members["extra"] = np.zeros(3, np.float32)
    np.savez(tmp_path / "bad.npz", **members)
    with pytest.raises(ResultFileError) as caught:
        read_sequence_result(tmp_path / "bad.npz")
    assert caught.value.key == key and "bad.npz" in str(caught.value)


def test_the_gaze_round_trips_and_is_checked(head: FlameModelData, tmp_path: Path) -> None:
    """frame_eye_pose (T, 2, 3): optional, read back exactly; refused in another shape or past half a turn."""
    sequence = make_sequence(head)
    sequence.frame_eye_pose = np.tile(np.array([[0.05, 0.2, 0.0], [0.04, 0.25, 0.0]], np.float32), (4, 1, 1))
    back = read_sequence_result(write_sequence_result(tmp_path / "eyes.npz", sequence))
    assert back.frame_eye_pose is not None
    np.testing.assert_array_equal(back.frame_eye_pose, sequence.frame_eye_pose)
    for bad, message in ((np.zeros((3, 2, 3), np.float32), "frame_eye_pose"),
                         (np.full((4, 2, 3), 2.0, np.float32), "more than 180")):  # fmt: skip
        sequence.frame_eye_pose = bad
        with pytest.raises(ResultFileError, match=message):
            write_sequence_result(tmp_path / "bad.npz", sequence)


def test_a_photo_result_or_garbage_is_refused_cleanly(tmp_path: Path) -> None:
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ResultFileError, match="corrupt"):
        read_sequence_result(tmp_path / "junk.npz")
    with zipfile.ZipFile(tmp_path / "meta.npz", "w") as archive:
        with archive.open("format.npy", "w") as member:
            np.lib.format.write_array(member, np.array(FORMAT))
        with archive.open("meta_json.npy", "w") as member:
            np.lib.format.write_array(member, np.array(json.dumps([1, 2])))
    with pytest.raises(ResultFileError, match="JSON object"):
        read_sequence_result(tmp_path / "meta.npz")
