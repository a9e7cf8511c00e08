"""Shared DEMO head, detector and measured correspondence for the fit tests (once per package)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inference_server.demo.head import generate_demo_head
from inference_server.fit.calibration import Correspondence, calibrate_correspondence
from inference_server.flame.layer import FlameLayer
from inference_server.flame.model_data import FlameModelData
from inference_server.preprocess.mediapipe_faces import MediaPipeFaces


@pytest.fixture(scope="package")
def head() -> FlameModelData:
    return generate_demo_head()


@pytest.fixture(scope="package")
def layer(head: FlameModelData) -> FlameLayer:
    return FlameLayer(head, dtype=torch.float64)


@pytest.fixture(scope="package")
def faces() -> MediaPipeFaces:
    return MediaPipeFaces()


@pytest.fixture(scope="package")
def correspondence(head: FlameModelData, faces: MediaPipeFaces) -> Correspondence:
    found = calibrate_correspondence(head, faces.face_mesh)
    assert found is not None, "the detector did not find the model's own calibration renders"
    np.testing.assert_allclose(found.matrix.sum(axis=1), 1.0, atol=1e-9)
    return found


@pytest.fixture(scope="package")
def plain_correspondence(head: FlameModelData, faces: MediaPipeFaces) -> Correspondence:
    """The second face mesh network's correspondence on the head (fit/second_network.py)."""
    found = calibrate_correspondence(head, faces.plain_face_mesh)
    assert found is not None, "the plain face mesh did not find the model's own calibration renders"
    assert found.matrix.shape == (68, 468)
    return found
