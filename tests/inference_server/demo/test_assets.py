"""Demo asset files: written once, read back by the real FLAME loaders, regenerated when stale."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from inference_server.demo import assets
from inference_server.demo.assets import (
    DemoAssetPaths,
    default_cache_dir,
    demo_assets_current,
    ensure_demo_assets,
)
from inference_server.flame.loading import load_flame_model, load_front_face_indices, load_landmark_embedding
from inference_server.flame.model_data import FlameModelData

FIELDS = (
    "v_template",
    "shapedirs",
    "posedirs",
    "J_regressor",
    "parents",
    "weights",
    "faces",
    "uv",
    "uv_faces",
    "lmk_faces_idx",
    "lmk_bary_coords",
    "front_face_indices",
)


def test_files_are_named_and_described_as_demo_data(demo_assets: DemoAssetPaths) -> None:
    for path in (
        demo_assets.model_pkl,
        demo_assets.model_npz,
        demo_assets.landmark_embedding,
        demo_assets.front_face_indices,
        demo_assets.vertex_colors,
        demo_assets.readme,
        demo_assets.license,
        demo_assets.manifest,
    ):
        assert path.is_file() and path.name.startswith("DEMO_"), path
        assert path.parent == demo_assets.directory
    readme = demo_assets.readme.read_text(encoding="utf-8")
    assert "DEMO data, not FLAME" in readme and "ICT Face Model Light" in readme
    assert "MIT License" in demo_assets.license.read_text(encoding="utf-8"), "the licence travels with the copy"
    manifest = json.loads(demo_assets.manifest.read_text(encoding="utf-8"))
    assert manifest["model_version"] == "DEMO-ICT" and len(manifest["files"]) == 7


@pytest.mark.parametrize("name", ["model_pkl", "model_npz"])
def test_the_flame_loader_reads_back_the_generated_head(
    demo_assets: DemoAssetPaths, demo_head: FlameModelData, name: str
) -> None:
    loaded = load_flame_model(getattr(demo_assets, name))
    assert loaded.is_demo and loaded.version == "DEMO-ICT"
    assert (loaded.n_shape, loaded.n_expression) == (300, 100)
    for field in FIELDS:
        np.testing.assert_array_equal(getattr(loaded, field), getattr(demo_head, field), err_msg=field)


def test_separate_landmark_and_front_face_files(demo_assets: DemoAssetPaths, demo_head: FlameModelData) -> None:
    assert demo_head.lmk_faces_idx is not None and demo_head.lmk_bary_coords is not None
    assert demo_head.front_face_indices is not None
    embedding = load_landmark_embedding(demo_assets.landmark_embedding)
    np.testing.assert_array_equal(embedding.faces_idx, demo_head.lmk_faces_idx)
    np.testing.assert_array_equal(embedding.bary_coords, demo_head.lmk_bary_coords)
    ids = load_front_face_indices(demo_assets.front_face_indices, n_vertices=demo_head.n_vertices)
    np.testing.assert_array_equal(ids, demo_head.front_face_indices)
    colors = np.load(demo_assets.vertex_colors, allow_pickle=False)
    assert colors.shape == demo_head.v_template.shape and colors.min() >= 0.0 and colors.max() <= 1.0


def test_current_assets_are_not_rewritten(demo_assets: DemoAssetPaths, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(_paths: DemoAssetPaths) -> None:
        raise AssertionError("regenerated although the assets are current")

    monkeypatch.setattr(assets, "write_demo_assets", fail)
    assert ensure_demo_assets(demo_assets.directory) == demo_assets


def test_changed_or_outdated_assets_are_regenerated(tmp_path: Path, demo_assets: DemoAssetPaths) -> None:
    copy = DemoAssetPaths.in_directory(tmp_path)
    for name in (
        "model_pkl",
        "model_npz",
        "landmark_embedding",
        "front_face_indices",
        "vertex_colors",
        "readme",
        "license",
        "manifest",
    ):
        getattr(copy, name).write_bytes(getattr(demo_assets, name).read_bytes())
    assert demo_assets_current(copy)
    original = copy.front_face_indices.read_bytes()
    copy.front_face_indices.write_bytes(original[:-8] + b"\0" * 8)  # tampered
    assert not demo_assets_current(copy)
    ensure_demo_assets(tmp_path)
    assert copy.front_face_indices.read_bytes() == original and demo_assets_current(copy)

    manifest = json.loads(copy.manifest.read_text(encoding="utf-8"))
    manifest["generator_version"] = "0"
    copy.manifest.write_text(json.dumps(manifest), encoding="utf-8")
    assert not demo_assets_current(copy)
    copy.model_npz.unlink()
    assert not demo_assets_current(copy)
    assert not list(tmp_path.glob("*.tmp")), "no temporary files left behind"


def test_default_cache_dir_honours_ofer_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OFER_CACHE_DIR", str(tmp_path))
    assert default_cache_dir() == tmp_path / "demo"
    monkeypatch.delenv("OFER_CACHE_DIR")
    assert default_cache_dir().parts[-2:] == ("ofer-blender", "demo")
