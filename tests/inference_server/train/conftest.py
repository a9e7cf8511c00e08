"""A small synthetic data set rendered once per test session (shared by the training tests)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from inference_server.demo.head import generate_demo_head
from inference_server.flame.model_data import FlameModelData
from inference_server.train.synthetic import SyntheticConfig, write_synthetic_dataset


@pytest.fixture(scope="session")
def demo_head() -> FlameModelData:
    return generate_demo_head()


@pytest.fixture(scope="session")
def synthetic_set(tmp_path_factory: pytest.TempPathFactory, demo_head: FlameModelData) -> Path:
    folder = tmp_path_factory.mktemp("synthetic")
    write_synthetic_dataset(folder, 16, seed=11, head=demo_head, config=SyntheticConfig(size=128))
    return folder


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    # The tests share a small machine: one torch thread avoids oversubscription stalls.
    torch.set_num_threads(1)
