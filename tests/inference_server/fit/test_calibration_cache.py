"""The landmark calibration kept in the user cache: a hit gives what the measurement gave, without
running the detector; a damaged or foreign file is measured again; another model is another file."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from inference_server.fit.calibration import RANDOM_VIEWS, VIEWS, Correspondence, calibrate_correspondence
from inference_server.fit.calibration_cache import (
    DETECTORS,
    FOLDER,
    PACKAGED,
    cached_correspondence,
    calibration_key,
    read_cached,
)
from inference_server.flame.model_data import FlameModelData
from inference_server.preprocess.mediapipe_faces import MediaPipeFaces

#: One detection per calibration render.
RENDERS = len(VIEWS) + RANDOM_VIEWS


class CountingDetector:
    def __init__(self, detect=None) -> None:
        self.detect, self.calls = detect, 0

    def __call__(self, rgb: np.ndarray) -> list[np.ndarray]:
        self.calls += 1
        return [] if self.detect is None else list(self.detect(rgb))


def test_a_cache_hit_equals_the_measurement_without_detecting(
    head: FlameModelData, faces: MediaPipeFaces, correspondence: Correspondence, tmp_path: Path
) -> None:
    first = CountingDetector(faces.face_mesh)
    measured = cached_correspondence(head, first, tmp_path)
    assert measured is not None and first.calls == RENDERS
    np.testing.assert_array_equal(measured.matrix, correspondence.matrix)  # the fixture measured it directly
    np.testing.assert_array_equal(measured.precision, correspondence.precision)
    second = CountingDetector(faces.face_mesh)
    cached = cached_correspondence(head, second, tmp_path)
    assert second.calls == 0
    assert cached is not None
    np.testing.assert_array_equal(cached.matrix, measured.matrix)
    np.testing.assert_array_equal(cached.precision, measured.precision)


def test_a_damaged_file_is_measured_again_and_replaced(head: FlameModelData, tmp_path: Path) -> None:
    path = tmp_path / FOLDER / f"{calibration_key(head)}.npz"
    path.parent.mkdir(parents=True)
    for content in (b"not an npz", b"PK\x03\x04truncated"):
        path.write_bytes(content)
        detector = CountingDetector()  # finds nothing: the measurement says "no calibration" (None)
        assert cached_correspondence(head, detector, tmp_path) is None
        assert detector.calls == RENDERS
        assert read_cached(path, calibration_key(head)) == (True, None)  # the replacement is valid


def test_a_file_with_bad_values_or_another_key_is_not_trusted(head: FlameModelData, tmp_path: Path) -> None:
    key = calibration_key(head)
    path = tmp_path / "c.npz"
    good, ones = np.full((68, 478), 1.0 / 478), np.ones(68)
    bad_rows = np.full((68, 478), 1.0)  # rows sum to 478, not 1
    for matrix, precision, owner in ((bad_rows, ones, key), (good, ones, "another model"),
                                     (good, np.zeros(68), key), (good, np.ones(67), key)):  # fmt: skip
        np.savez(path, key=np.array(owner), found=np.array(True), matrix=matrix, precision=precision)
        assert read_cached(path, key) == (False, None)
    np.savez(path, key=np.array(key), found=np.array(True), matrix=good, precision=ones)
    found, measured = read_cached(path, key)
    assert found and measured is not None
    np.testing.assert_array_equal(measured.matrix, good)
    np.testing.assert_array_equal(measured.precision, ones)


def test_the_key_follows_what_the_calibration_reads(head: FlameModelData) -> None:
    key = calibration_key(head)
    assert calibration_key(dataclasses.replace(head)) == key
    moved = dataclasses.replace(head, v_template=head.v_template + 1e-6)
    assert calibration_key(moved) != key
    assert head.lmk_bary_coords is not None
    other_embedding = dataclasses.replace(head, lmk_bary_coords=head.lmk_bary_coords[::-1].copy())
    assert calibration_key(other_embedding) != key
    other_basis = dataclasses.replace(head, shapedirs=head.shapedirs * 1.01)  # the random renders use it
    assert calibration_key(other_basis) != key


def test_a_cache_folder_that_cannot_be_written_only_costs_the_measurement(head: FlameModelData, tmp_path: Path) -> None:
    blocked = tmp_path / "a_file"
    blocked.write_text("not a folder")  # the cache folder cannot be created under it
    detector = CountingDetector()
    assert cached_correspondence(head, detector, blocked / "cache") is None
    assert detector.calls == RENDERS


@pytest.mark.parametrize("network", DETECTORS)
def test_the_demo_heads_calibration_ships_with_the_worker(network: str, faces: MediaPipeFaces, tmp_path: Path) -> None:
    """The DEMO head as the worker loads it finds its calibration for each face mesh network in the package:
    an empty user cache, and no detection at all. When this fails after a change to the calibration, the
    landmark table, the renderer, the camera or the DEMO head, regenerate them:
    `python -m inference_server.fit.calibration_cache`."""
    from inference_server.assets_config import resolve_assets
    from inference_server.model_bundle import load_model_bundle

    flame = load_model_bundle(resolve_assets({})).flame
    path = PACKAGED / f"{calibration_key(flame, network)}.npz"
    assert path.is_file(), "stale packaged calibration: regenerate it"
    detector = CountingDetector()  # would find nothing: a measurement would give None
    shipped = cached_correspondence(flame, detector, tmp_path, network)
    assert detector.calls == 0 and shipped is not None
    assert not (tmp_path / FOLDER).exists()  # read from the package, nothing written to the user cache
    # The numbers the measurement gives on this head now (the worker's DEMO head, which is not the
    # fixture's array-for-array: it comes through the FLAME file layout), for that network's points.
    measured = calibrate_correspondence(flame, getattr(faces, network))
    assert measured is not None
    assert shipped.matrix.shape == measured.matrix.shape == (68, 478 if network == "face_mesh" else 468)
    np.testing.assert_allclose(shipped.matrix, measured.matrix, atol=1e-6)
    np.testing.assert_allclose(shipped.precision, measured.precision, atol=1e-6)


def test_each_network_has_its_own_key(head: FlameModelData) -> None:
    """The refined network's key is the one it had before a second network existed (the shipped file keeps
    its name); the plain network's differs; an unknown name is refused."""
    refined, plain = (calibration_key(head, name) for name in DETECTORS)
    assert refined == calibration_key(head) and plain != refined
    with pytest.raises(ValueError, match="unknown detector"):
        calibration_key(head, "face_mesh_v2")
