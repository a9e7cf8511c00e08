"""Shared DEMO head for the fit tests (generated once per module)."""

from __future__ import annotations

import pytest
import torch

from inference_server.demo.head import generate_demo_head
from inference_server.flame.layer import FlameLayer
from inference_server.flame.model_data import FlameModelData


@pytest.fixture(scope="package")
def head() -> FlameModelData:
    return generate_demo_head()


@pytest.fixture(scope="package")
def layer(head: FlameModelData) -> FlameLayer:
    return FlameLayer(head, dtype=torch.float64)
