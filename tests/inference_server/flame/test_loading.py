"""FLAME file readers and writers: round trips, validation errors, landmark embeddings, UVs, front indices."""

from __future__ import annotations

import dataclasses
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from inference_server.errors import BadModelFileError, MissingAssetError
from inference_server.flame.layer import FlameLayer
from inference_server.flame.loading import (
    LandmarkEmbedding,
    flame_file_fields,
    is_official_front_face_indices,
    load_flame_model,
    load_front_face_indices,
    load_landmark_embedding,
    load_uv_file,
    save_flame_npz,
    save_flame_pkl,
)
from inference_server.flame.model_data import FlameModelData
from inference_server.flame.restricted_pickle import UnsafePickleError

ARRAY_FIELDS = [
    f.name
    for f in dataclasses.fields(FlameModelData)
    if f.name not in ("n_shape", "n_expression", "version", "is_demo", "extra")
]


def assert_same_model(loaded: FlameModelData, original: FlameModelData) -> None:
    for name in ARRAY_FIELDS:
        a, b = getattr(loaded, name), getattr(original, name)
        assert (a is None) == (b is None), name
        if a is not None:
            assert np.array_equal(a, b), name
            assert a.dtype == (np.int64 if b.dtype.kind in "iu" else np.float64), name
    assert (loaded.n_shape, loaded.n_expression, loaded.version, loaded.is_demo) == (
        original.n_shape,
        original.n_expression,
        original.version,
        original.is_demo,
    )


@pytest.mark.parametrize("writer", [save_flame_npz, save_flame_pkl], ids=["npz", "pkl"])
def test_round_trip_is_exact(
    tmp_path: Path, make_flame_model: Callable[..., FlameModelData], writer: Callable[..., Path]
) -> None:
    model = make_flame_model(seed=1, n_shape=20, n_expression=7)  # an unusual split survives via n_shape
    model.version, model.is_demo = "FLAME2023", True
    path = writer(model, tmp_path / f"model.{writer.__name__[-3:]}")
    loaded = load_flame_model(path)
    assert_same_model(loaded, model)
    assert loaded.extra["version_source"] == "version field"
    # The written file must not need anything but the allow-list (no stray classes).
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("writer", [save_flame_npz, save_flame_pkl], ids=["npz", "pkl"])
def test_demo_head_round_trip(tmp_path: Path, demo_head: FlameModelData, writer: Callable[..., Path]) -> None:
    loaded = load_flame_model(writer(demo_head, tmp_path / f"demo_head.{writer.__name__[-3:]}"))
    assert_same_model(loaded, demo_head)
    assert loaded.is_demo and loaded.version == demo_head.version


def test_written_pickle_has_the_flame_layout(tmp_path: Path, make_flame_model: Callable[..., FlameModelData]) -> None:
    model = make_flame_model(seed=2)
    path = save_flame_pkl(model, tmp_path / "generic_model.pkl")
    with path.open("rb") as file:
        raw = pickle.load(file)  # our own freshly written file, in the test only
    for name in ("v_template", "shapedirs", "posedirs", "J_regressor", "kintree_table", "weights", "f", "J"):
        assert isinstance(raw[name], np.ndarray), name
    assert raw["kintree_table"].tolist() == [[2**32 - 1, 0, 1, 1, 1], [0, 1, 2, 3, 4]]
    assert raw["f"].dtype == np.uint32 and raw["shapedirs"].shape == (200, 3, 400)
    np.testing.assert_allclose(raw["J"], model.J_regressor @ model.v_template)
    assert flame_file_fields(model).keys() == raw.keys()


def test_loaded_model_drives_the_layer_like_the_original(
    tmp_path: Path, make_flame_model: Callable[..., FlameModelData]
) -> None:
    model = make_flame_model(seed=3)
    loaded = load_flame_model(save_flame_pkl(model, tmp_path / "m.pkl"))
    shape = torch.randn(2, 300, dtype=torch.float64)
    pose = 0.2 * torch.randn(2, 15, dtype=torch.float64)
    a = FlameLayer(model, dtype=torch.float64)(shape=shape, pose=pose)
    b = FlameLayer(loaded, dtype=torch.float64)(shape=shape, pose=pose)
    torch.testing.assert_close(a.vertices, b.vertices, rtol=0, atol=0)
    assert a.landmarks is not None and b.landmarks is not None
    torch.testing.assert_close(a.landmarks, b.landmarks, rtol=0, atol=0)


def _write_fields(path: Path, fields: dict[str, Any]) -> Path:
    if path.suffix == ".npz":
        np.savez(path, **fields)
    else:
        path.write_bytes(pickle.dumps(fields, protocol=2))
    return path


def _plain_fields(model: FlameModelData) -> dict[str, Any]:
    fields = flame_file_fields(model)
    for name in ("n_shape", "n_expression", "version", "is_demo"):
        del fields[name]  # as in FLAME's own file
    return fields


@pytest.mark.parametrize(
    ("field", "damage", "expected"),
    [
        ("weights", lambda a: a[:, :4], "weights"),
        ("v_template", lambda a: np.where(np.arange(a.shape[0])[:, None] == 5, np.nan, a), "NaN"),
        ("f", lambda a: a + 1000, "outside"),
        ("shapedirs", lambda a: a[:, :, :250], "300 shape columns"),
        ("posedirs", lambda a: a[:, :, :30], "posedirs"),
        ("J_regressor", lambda a: a.T, "J_regressor"),
        ("kintree_table", lambda a: a[:, ::-1], "kintree_table"),
        ("f", lambda a: a.astype(np.float64) + 0.5, "integer"),
        ("v_template", lambda a: a.astype(str), "numeric"),
    ],
)
@pytest.mark.parametrize("suffix", [".pkl", ".npz"])
def test_bad_fields_name_the_field_and_file(
    tmp_path: Path,
    make_flame_model: Callable[..., FlameModelData],
    field: str,
    damage: Callable[[np.ndarray], np.ndarray],
    expected: str,
    suffix: str,
) -> None:
    fields = _plain_fields(make_flame_model(seed=4, extras=False))
    fields[field] = damage(fields[field])
    path = _write_fields(tmp_path / f"generic_model{suffix}", fields)
    with pytest.raises(BadModelFileError) as caught:
        load_flame_model(path)
    message = str(caught.value)
    assert expected in message and str(path) in message and caught.value.fix


def test_missing_fields_and_wrong_contents(tmp_path: Path, make_flame_model: Callable[..., FlameModelData]) -> None:
    fields = _plain_fields(make_flame_model(seed=5, extras=False))
    del fields["J_regressor"], fields["weights"]
    with pytest.raises(BadModelFileError, match=r"missing field.*J_regressor.*weights"):
        load_flame_model(_write_fields(tmp_path / "a.pkl", fields))
    with pytest.raises(BadModelFileError, match="not the dict"):
        load_flame_model(_write_fields(tmp_path / "b.pkl", [1, 2, 3]))  # type: ignore[arg-type]
    (tmp_path / "c.npz").write_bytes(b"not a zip")
    with pytest.raises(BadModelFileError, match=r"not a readable \.npz"):
        load_flame_model(tmp_path / "c.npz")
    np.savez(tmp_path / "d.npz", v_template=np.array([{"a": 1}], dtype=object))
    with pytest.raises(BadModelFileError, match="pickle"):
        load_flame_model(tmp_path / "d.npz")
    (tmp_path / "e.obj").write_text("v 0 0 0\n")
    with pytest.raises(BadModelFileError, match=r"\.pkl or \.npz"):
        load_flame_model(tmp_path / "e.obj")


def test_missing_file_is_a_missing_asset_with_a_fix(tmp_path: Path) -> None:
    for call in (load_flame_model, load_landmark_embedding, load_front_face_indices, load_uv_file):
        with pytest.raises(MissingAssetError) as caught:
            call(tmp_path / "nowhere.pkl")
        assert type(caught.value) is MissingAssetError and "nowhere.pkl" in str(caught.value) and caught.value.fix


def test_version_detection(tmp_path: Path, make_flame_model: Callable[..., FlameModelData]) -> None:
    fields = _plain_fields(make_flame_model(seed=6, extras=False))
    generic = load_flame_model(_write_fields(tmp_path / "generic_model.pkl", fields))
    assert generic.version == "FLAME2020" and generic.extra["version_source"].startswith("default")
    assert load_flame_model(_write_fields(tmp_path / "flame2023.pkl", fields)).version == "FLAME2023"
    assert load_flame_model(_write_fields(tmp_path / "FLAME2020.npz", fields)).version == "FLAME2020"
    assert load_flame_model(tmp_path / "flame2023.pkl", version="FLAME2020").version == "FLAME2020"
    fields["version"] = "FLAME2023"
    assert load_flame_model(_write_fields(tmp_path / "generic.npz", fields)).version == "FLAME2023"


def test_flattened_posedirs_are_folded_back(tmp_path: Path, make_flame_model: Callable[..., FlameModelData]) -> None:
    model = make_flame_model(seed=7, extras=False)
    fields = _plain_fields(model)
    fields["posedirs"] = model.posedirs.reshape(-1, 36).T  # (36, 3V) as some re-exports store it
    loaded = load_flame_model(_write_fields(tmp_path / "m.npz", fields))
    assert np.array_equal(loaded.posedirs, model.posedirs)


# ----------------------------------------------------------------------------------------------
# Landmark embeddings


def _torch_tensor_pickle_inside_npy(path: Path, payload: dict[str, Any]) -> None:
    np.save(path, np.array(payload, dtype=object), allow_pickle=True)


def test_landmark_embedding_formats(tmp_path: Path, make_flame_model: Callable[..., FlameModelData]) -> None:
    rng = np.random.default_rng(8)
    faces68, bary68 = rng.integers(0, 300, size=68), rng.dirichlet(np.ones(3), size=68)
    faces51, bary51 = faces68[17:], bary68[17:]

    static = tmp_path / "flame_static_embedding.pkl"
    static.write_bytes(pickle.dumps({"lmk_face_idx": faces51.astype(np.uint32), "lmk_b_coords": bary51}, protocol=2))
    deca = tmp_path / "landmark_embedding.npy"
    _torch_tensor_pickle_inside_npy(
        deca,
        {
            "static_lmk_faces_idx": faces51,
            "static_lmk_bary_coords": bary51,
            "full_lmk_faces_idx": faces68[None],
            "full_lmk_bary_coords": bary68[None],
            "dynamic_lmk_faces_idx": torch.zeros(79, 17, dtype=torch.long),  # DECA keeps these as tensors
        },
    )
    archive = tmp_path / "embedding.npz"
    np.savez(archive, lmk_faces_idx=faces68, lmk_bary_coords=bary68)

    for path, faces, bary in ((static, faces51, bary51), (deca, faces68, bary68), (archive, faces68, bary68)):
        embedding = load_landmark_embedding(path)
        assert np.array_equal(embedding.faces_idx, faces) and embedding.faces_idx.dtype == np.int64
        assert np.array_equal(embedding.bary_coords, bary)

    model = make_flame_model(seed=9, extras=False)
    model_path = save_flame_npz(model, tmp_path / "model.npz")
    loaded = load_flame_model(model_path, landmark_embedding=deca)
    assert loaded.lmk_faces_idx is not None and loaded.lmk_faces_idx.shape == (68,)
    out = FlameLayer(loaded)(shape=torch.zeros(1, 300))
    assert out.landmarks is not None and out.landmarks.shape == (1, 68, 3)
    loaded51 = load_flame_model(model_path, landmark_embedding=LandmarkEmbedding(faces51, bary51))
    assert loaded51.lmk_bary_coords is not None and loaded51.lmk_bary_coords.shape == (51, 3)


def test_landmark_embedding_errors_and_attacks(tmp_path: Path, make_flame_model: Callable[..., FlameModelData]) -> None:
    marker = tmp_path / "marker"

    class Evil:
        def __reduce__(self) -> tuple[Any, tuple[str]]:
            return os.system, (f"touch {marker}",)

    evil = tmp_path / "landmark_embedding.npy"
    np.save(evil, np.array({"full_lmk_faces_idx": Evil()}, dtype=object), allow_pickle=True)
    with pytest.raises(UnsafePickleError, match="system"):
        load_landmark_embedding(evil)
    assert not marker.exists()

    np.savez(tmp_path / "wrong.npz", something=np.zeros(3))
    with pytest.raises(BadModelFileError, match="no landmark table"):
        load_landmark_embedding(tmp_path / "wrong.npz")
    np.savez(tmp_path / "bary.npz", lmk_faces_idx=np.zeros(68, int), lmk_bary_coords=np.zeros((67, 3)))
    with pytest.raises(BadModelFileError, match="lmk_bary_coords"):
        load_landmark_embedding(tmp_path / "bary.npz")
    np.savez(tmp_path / "far.npz", lmk_faces_idx=np.full(68, 10_000), lmk_bary_coords=np.zeros((68, 3)))
    model_path = save_flame_npz(make_flame_model(seed=10, extras=False), tmp_path / "model.npz")
    with pytest.raises(BadModelFileError, match="landmark triangles"):
        load_flame_model(model_path, landmark_embedding=tmp_path / "far.npz")


# ----------------------------------------------------------------------------------------------
# UVs and front-face indices


def test_uv_files(tmp_path: Path, make_flame_model: Callable[..., FlameModelData]) -> None:
    model = make_flame_model(seed=11, extras=False, n_faces=4, n_vertices=10)
    uv = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.5, 0.25], [0.125, 0.75]])
    uv_faces = np.array([[0, 1, 2], [1, 3, 2], [2, 3, 4], [0, 4, 3]])
    obj = tmp_path / "head_template.obj"
    lines = [f"v {x} {y} {z}" for x, y, z in model.v_template] + [f"vt {u} {v}" for u, v in uv]
    lines += [
        " ".join(["f", *(f"{v + 1}/{t + 1}" for v, t in zip(fv, ft, strict=True))])
        for fv, ft in zip(model.faces, uv_faces, strict=True)
    ]
    obj.write_text("\n".join(lines) + "\n")
    np.savez(tmp_path / "texture.npz", vt=uv, ft=uv_faces, mean=np.zeros(3))
    model_path = save_flame_npz(model, tmp_path / "model.npz")
    for uv_file in (obj, tmp_path / "texture.npz"):
        loaded = load_flame_model(model_path, uv_file=uv_file)
        assert loaded.uv is not None and np.array_equal(loaded.uv, uv)
        assert loaded.uv_faces is not None and np.array_equal(loaded.uv_faces, uv_faces)
    np.savez(tmp_path / "short.npz", vt=uv, ft=uv_faces[:3])
    with pytest.raises(BadModelFileError, match="ft"):
        load_flame_model(model_path, uv_file=tmp_path / "short.npz")


def test_front_face_indices(tmp_path: Path, make_flame_model: Callable[..., FlameModelData]) -> None:
    model_path = save_flame_npz(make_flame_model(seed=12, extras=False), tmp_path / "model.npz")
    ids = np.array([3, 8, 20, 150], dtype=np.int64)
    np.save(tmp_path / "frontindices.npy", ids)
    loaded = load_flame_model(model_path, front_face_indices=tmp_path / "frontindices.npy")
    assert loaded.front_face_indices is not None and np.array_equal(loaded.front_face_indices, ids)
    from_array = load_flame_model(model_path, front_face_indices=ids).front_face_indices
    assert from_array is not None and np.array_equal(from_array, ids)
    assert not is_official_front_face_indices(ids)
    for bad, message in (
        (ids[::-1], "increasing"),
        (np.array([1, 500]), "outside"),
        (ids.astype(float) + 0.5, "integer"),
    ):
        np.save(tmp_path / "bad.npy", bad)
        with pytest.raises(BadModelFileError, match=message):
            load_front_face_indices(tmp_path / "bad.npy", n_vertices=200)
    np.save(tmp_path / "pickled.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(BadModelFileError, match="plain numeric"):
        load_front_face_indices(tmp_path / "pickled.npy")


def test_official_front_face_hash_is_checked_on_raw_int64_data() -> None:
    import hashlib

    from inference_server.flame.loading import OFFICIAL_FRONT_FACE_DATA_SHA256

    ids = np.arange(16, 1801, dtype=np.int32)  # any list: the check hashes its little-endian int64 bytes
    digest = hashlib.sha256(ids.astype("<i8").tobytes()).hexdigest()
    assert is_official_front_face_indices(ids) == (digest == OFFICIAL_FRONT_FACE_DATA_SHA256)
    assert not is_official_front_face_indices(ids)
