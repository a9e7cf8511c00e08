"""The sample photo is reproducible from its script, small, and its face is found."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from inference_server.assets.make_sample_photo import OUTPUT, make_sample_photo
from inference_server.preprocess.detect import detect_face
from inference_server.preprocess.image import load_image
from inference_server.preprocess.synthetic_occluders import ASTRONAUT_POINTS5


def test_sample_photo_is_reproducible_small_and_detected(tmp_path: Path) -> None:
    assert OUTPUT.is_file() and OUTPUT.stat().st_size < 300 * 1024
    again = make_sample_photo(tmp_path / "sample.jpg")
    regenerated = load_image(again).rgb.astype(int)
    shipped = load_image(OUTPUT)
    # Same drawing; JPEG encoders of other Pillow builds may differ by a few levels.
    assert np.abs(regenerated - shipped.rgb.astype(int)).mean() < 1.0
    if hashlib.sha256(again.read_bytes()).hexdigest() != shipped.sha256:
        assert np.abs(regenerated - shipped.rgb.astype(int)).max() < 40
    found = detect_face(shipped)
    eye_distance = float(np.linalg.norm(ASTRONAUT_POINTS5[1] - ASTRONAUT_POINTS5[0]))
    assert found.method == "face_mesh"
    assert np.linalg.norm(found.points5[:2] - ASTRONAUT_POINTS5[:2], axis=1).max() / eye_distance < 0.1
