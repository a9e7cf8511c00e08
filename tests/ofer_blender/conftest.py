from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

HERE = Path(__file__).resolve().parent
FAKE_WORKER = HERE / "fake_worker.py"


def _load(path: Path, name: str) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


loader = _load(HERE / "extension_loader.py", "ofer_test_extension_loader")
factory = _load(HERE.parent / "blender" / "result_factory.py", "ofer_test_result_factory")


def fake_worker_command(mode: str) -> list[str]:
    return [sys.executable, "-u", str(FAKE_WORKER), mode]


@pytest.fixture
def addon() -> ModuleType:
    """The ``ofer_face.ofer_blender`` package as loaded inside Blender."""
    return loader.addon_module("ofer_blender")


@pytest.fixture
def fake_worker() -> object:
    return fake_worker_command
