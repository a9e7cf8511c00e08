"""Shared demo-head fixtures: the head is generated once per test session (it takes a few seconds)."""

from __future__ import annotations

from pathlib import Path

import pytest

from inference_server.demo.assets import DemoAssetPaths, ensure_demo_assets
from inference_server.demo.head import generate_demo_head
from inference_server.flame.model_data import FlameModelData


@pytest.fixture(scope="session")
def demo_head() -> FlameModelData:
    return generate_demo_head()


@pytest.fixture(scope="session")
def demo_assets(tmp_path_factory: pytest.TempPathFactory) -> DemoAssetPaths:
    return ensure_demo_assets(Path(tmp_path_factory.mktemp("demo-cache")))
