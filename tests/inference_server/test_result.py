"""Result file: bit-exact round trip, atomic writing, and clear errors for every kind of damage."""

from __future__ import annotations

import contextlib
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from inference_server.result import FORMAT, ReconstructionResult, ResultFileError, read_result, write_result


def make_result(rng: np.random.Generator, V: int = 40, F: int = 60, K: int = 3, M: int = 4) -> ReconstructionResult:
    f32 = np.float32
    scores = np.sort(rng.random(K).astype(f32))[::-1] / f32(K)
    return ReconstructionResult(
        meta={"demo": True, "sampler": "ddpm", "seed": 7, "image": {"path": "ä photo.jpg"}},
        faces=rng.integers(0, V, size=(F, 3)).astype(np.int32),
        template=rng.normal(size=(V, 3)).astype(f32),
        identity_params=rng.normal(size=(K, 300)).astype(f32),
        identity_scores=np.ascontiguousarray(scores),
        identity_vertices=rng.normal(size=(K, V, 3)).astype(f32),
        expression_params=rng.normal(size=(M, 50)).astype(f32),
        jaw_pose=rng.normal(size=(M, 3)).astype(f32),
        expression_vertices=rng.normal(size=(M, V, 3)).astype(f32),
        joints=rng.normal(size=(5, 3)).astype(f32),
        parents=np.array([-1, 0, 1, 1, 1], np.int32),
        skin_weights=rng.random((V, 5)).astype(f32),
        spread_identity=rng.random(V).astype(f32),
        spread_expression=rng.random(V).astype(f32),
        uv=rng.random((V + 5, 2)).astype(f32),
        uv_faces=rng.integers(0, V + 5, size=(F, 3)).astype(np.int32),
    )


@pytest.fixture
def result() -> ReconstructionResult:
    return make_result(np.random.default_rng(0))


def test_round_trip_is_bit_exact(tmp_path: Path, result: ReconstructionResult) -> None:
    path = write_result(tmp_path / "sub dir" / "résultat.npz", result)
    back = read_result(path)
    assert back.meta == result.meta and back.format == FORMAT
    for name in (
        "faces",
        "template",
        "identity_vertices",
        "expression_vertices",
        "skin_weights",
        "uv",
        "uv_faces",
    ):
        a, b = getattr(result, name), getattr(back, name)
        assert a.dtype == b.dtype and a.shape == b.shape
        assert a.tobytes() == b.tobytes(), name
    assert back.landmarks is None and back.head_pose is None
    assert back.demo is True


def test_file_is_readable_by_plain_numpy(tmp_path: Path, result: ReconstructionResult) -> None:
    path = write_result(tmp_path / "r.npz", result)
    with np.load(path, allow_pickle=False) as data:
        assert str(data["format"]) == FORMAT
        assert json.loads(str(data["meta_json"]))["seed"] == 7
        np.testing.assert_array_equal(data["expression_vertices"], result.expression_vertices)


def test_write_is_atomic_and_leaves_no_temporary(tmp_path: Path, result: ReconstructionResult) -> None:
    target = tmp_path / "r.npz"
    write_result(target, result)
    before = target.read_bytes()
    bad = make_result(np.random.default_rng(1))
    bad.template[0, 0] = np.nan
    with pytest.raises(ResultFileError, match="template"):
        write_result(target, bad)
    assert target.read_bytes() == before, "a failed write must not touch the existing file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.npz"]


def test_truncated_file_gives_clear_error(tmp_path: Path, result: ReconstructionResult) -> None:
    path = write_result(tmp_path / "r.npz", result)
    data = path.read_bytes()
    for cut in (0, 10, len(data) // 3, len(data) - 30):
        broken = tmp_path / f"cut{cut}.npz"
        broken.write_bytes(data[:cut])
        with pytest.raises(ResultFileError) as info:
            read_result(broken)
        assert str(broken) in str(info.value)


def test_flipped_bytes_give_clear_error(tmp_path: Path, result: ReconstructionResult) -> None:
    path = write_result(tmp_path / "r.npz", result)
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(3)
    for trial in range(20):
        damaged = bytearray(data)
        pos = int(rng.integers(0, len(damaged)))
        damaged[pos] ^= 0xFF
        target = tmp_path / f"flip{trial}.npz"
        target.write_bytes(bytes(damaged))
        with contextlib.suppress(ResultFileError):  # a flip inside padding may be harmless; never a crash
            read_result(target)


def _rewrite(path: Path, out: Path, change: dict[str, np.ndarray | None]) -> None:
    with np.load(path, allow_pickle=False) as data:
        members = {k: data[k] for k in data.files}
    for key, value in change.items():
        if value is None:
            members.pop(key)
        else:
            members[key] = value
    np.savez(out, **members)


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("format", np.array("ofer-result/99"), "ofer-result/99"),
        ("format", None, "not an OFER result"),
        ("meta_json", np.array("{not json"), "JSON"),
        ("template", None, "missing"),
        ("template", np.zeros((40, 3), np.float64), "float64"),
        ("faces", np.full((60, 3), 40, np.int32), "vertex index"),
        ("identity_vertices", np.zeros((3, 41, 3), np.float32), "axis 1"),
        ("identity_scores", np.array([0.1, 0.5, 0.2], np.float32), "descending"),
        ("expression_vertices", np.full((4, 40, 3), np.inf, np.float32), "NaN or infinite"),
        ("parents", np.array([0, 0, 1, 1, 1], np.int32), "root"),
        ("jaw_pose", np.zeros((5, 3), np.float32), "axis 0"),
        ("uv_faces", None, "uv_faces"),
        ("surprise", np.zeros(3, np.float32), "not a key"),
    ],
)
def test_tampered_key_is_named(tmp_path: Path, result: ReconstructionResult, key: str, value, words: str) -> None:
    good = write_result(tmp_path / "good.npz", result)
    bad = tmp_path / "bad.npz"
    _rewrite(good, bad, {key: value})
    with pytest.raises(ResultFileError) as info:
        read_result(bad)
    assert info.value.key == key
    assert words in str(info.value)


def test_object_arrays_are_refused_without_unpickling(tmp_path: Path, result: ReconstructionResult) -> None:
    good = write_result(tmp_path / "good.npz", result)
    bad = tmp_path / "bad.npz"
    _rewrite(good, bad, {"template": np.array([object()], dtype=object)})
    with pytest.raises(ResultFileError):
        read_result(bad)


def test_not_a_zip_and_folder(tmp_path: Path) -> None:
    text = tmp_path / "text.npz"
    text.write_text("hello")
    with pytest.raises(ResultFileError):
        read_result(text)
    with pytest.raises(ResultFileError, match="folder"):
        read_result(tmp_path)
    assert not zipfile.is_zipfile(text)


def test_head_on_the_photo_keys_round_trip_and_are_checked(tmp_path: Path, result: ReconstructionResult) -> None:
    """head_pose (6,), camera (3,), expression_head_pose (M, 6): optional, written and read back exactly."""
    M = result.expression_params.shape[0]
    result.head_pose = np.array([0.1, -0.2, 0.0, 0.01, 0.0, -0.6], np.float32)
    result.camera = np.array([520.0, 214.0, 141.0], np.float32)
    result.expression_head_pose = np.tile(result.head_pose, (M, 1))
    back = read_result(write_result(tmp_path / "posed.npz", result))
    assert back.expression_head_pose is not None and back.camera is not None
    np.testing.assert_array_equal(back.expression_head_pose, result.expression_head_pose)
    np.testing.assert_array_equal(back.camera, result.camera)
    result.expression_head_pose = np.zeros((M + 1, 6), np.float32)  # one row too many
    with pytest.raises(ResultFileError, match="expression_head_pose"):
        write_result(tmp_path / "bad.npz", result)


def test_eye_pose_round_trips_with_a_head_pose_and_is_checked(tmp_path: Path, result: ReconstructionResult) -> None:
    """eye_pose (2, 3): written and read back exactly; refused without a head_pose, in another shape, or
    turning an eye by more than half a turn."""
    result.head_pose = np.array([0.1, -0.2, 0.0, 0.01, 0.0, -0.6], np.float32)
    result.camera = np.array([520.0, 214.0, 141.0], np.float32)
    result.eye_pose = np.array([[0.05, 0.2, 0.0], [0.05, 0.25, 0.0]], np.float32)
    back = read_result(write_result(tmp_path / "eyes.npz", result))
    assert back.eye_pose is not None
    np.testing.assert_array_equal(back.eye_pose, result.eye_pose)
    for broken, message in (
        ({"eye_pose": np.zeros((3, 3), np.float32)}, "eye_pose"),
        ({"eye_pose": np.array([[4.0, 0, 0], [0, 0, 0]], np.float32)}, "more than 180"),
        ({"head_pose": None, "camera": None}, "without a head_pose"),
    ):
        saved = {key: getattr(result, key) for key in broken}
        for key, value in broken.items():
            setattr(result, key, value)
        with pytest.raises(ResultFileError, match=message):
            write_result(tmp_path / "bad.npz", result)
        for key, value in saved.items():
            setattr(result, key, value)


def test_flame_control_bases_round_trip_together_and_follow_the_coefficients(
    tmp_path: Path, result: ReconstructionResult
) -> None:
    rng = np.random.default_rng(5)
    V = result.template.shape[0]
    result.shape_basis = rng.normal(size=(7, V, 3)).astype(np.float32)
    result.expression_basis = rng.normal(size=(50, V, 3)).astype(np.float32)
    result.pose_basis = rng.normal(size=(36, V, 3)).astype(np.float32)
    back = read_result(write_result(tmp_path / "controls.npz", result))
    for key in ("shape_basis", "expression_basis", "pose_basis"):
        assert getattr(back, key).tobytes() == getattr(result, key).tobytes()
    result.pose_basis = None  # the three come together
    with pytest.raises(ResultFileError, match=r"pose_basis.*missing although shape_basis"):
        write_result(tmp_path / "bad.npz", result)
    result.pose_basis = rng.normal(size=(18, V, 3)).astype(np.float32)  # FLAME's 5 joints have 36 columns
    with pytest.raises(ResultFileError, match=r"pose_basis.*expected 36"):
        write_result(tmp_path / "bad.npz", result)
    result.pose_basis = rng.normal(size=(36, V, 3)).astype(np.float32)
    result.expression_basis = result.expression_basis[:10]  # fewer directions than coefficients
    with pytest.raises(ResultFileError, match="expression_basis"):
        write_result(tmp_path / "bad.npz", result)
