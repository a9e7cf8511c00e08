"""The model's UV layout kept on disk: read back equal to the computed one, a bad file recomputed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from inference_server.flame.model_data import FlameModelData
from inference_server.texture import layout
from inference_server.texture.stage import TextureInputs


def _inputs(head: FlameModelData) -> TextureInputs:
    assert head.uv is not None and head.uv_faces is not None
    return TextureInputs(head.v_template, head.v_template, head.faces, head.uv, head.uv_faces, np.zeros((68, 3)),
                         np.zeros(6), np.array([500.0, 100.0, 100.0]))  # fmt: skip


def _assert_equal(a: tuple[layout.UVRaster, np.ndarray], b: tuple[layout.UVRaster, np.ndarray]) -> None:
    np.testing.assert_array_equal(a[0].triangle, b[0].triangle)
    np.testing.assert_array_equal(a[0].barycentric, b[0].barycentric)
    np.testing.assert_array_equal(a[1], b[1])


def test_a_layout_read_from_disk_equals_the_computed_one(
    head: FlameModelData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    head_in = _inputs(head)
    monkeypatch.setattr(layout, "_KEPT", type(layout._KEPT)())
    computed = layout.uv_layout(head_in, 96, tmp_path)
    files = list((tmp_path / layout.FOLDER).iterdir())
    assert [f.suffix for f in files] == [".npz"]
    monkeypatch.setattr(layout, "_KEPT", type(layout._KEPT)())  # a fresh process: only the disk has it
    monkeypatch.setattr(layout, "compute_layout", lambda *a: pytest.fail("computed instead of read"))
    _assert_equal(layout.uv_layout(head_in, 96, tmp_path), computed)


def test_a_bad_layout_file_is_computed_again_and_replaced(
    head: FlameModelData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    head_in = _inputs(head)
    key = layout.layout_key(head_in, 64)
    path = tmp_path / layout.FOLDER / f"{key}.npz"
    expected = layout.compute_layout(head_in, 64)
    path.parent.mkdir(parents=True)
    out_of_range = expected[0].triangle.astype(np.int32)
    out_of_range[0, 0] = len(head.faces)
    bad_files = {
        "truncated": b"PK\x03\x04",
        "another key": (key + "x", expected[0].triangle.astype(np.int32)),
        "triangle id out of range": (key, out_of_range),
    }
    for name, content in bad_files.items():
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            np.savez(path, key=np.array(content[0]), triangle=content[1], barycentric=expected[0].barycentric,
                     mirror=expected[1])  # fmt: skip
        assert layout.read_layout(path, key, 64, len(head.faces)) is None, name
        monkeypatch.setattr(layout, "_KEPT", type(layout._KEPT)())
        _assert_equal(layout.uv_layout(head_in, 64, tmp_path), expected)
        replaced = layout.read_layout(path, key, 64, len(head.faces))
        assert replaced is not None, name
        _assert_equal(replaced, expected)


def test_a_cache_folder_that_cannot_be_written_still_gives_the_layout(
    head: FlameModelData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocked = tmp_path / "a_file"
    blocked.write_text("not a folder")
    monkeypatch.setattr(layout, "_KEPT", type(layout._KEPT)())
    head_in = _inputs(head)
    _assert_equal(layout.uv_layout(head_in, 48, blocked / "cache"), layout.compute_layout(head_in, 48))
