"""Session-wide test settings shared by every test folder."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

# Generated DEMO assets go to a per-session cache, never the user's ~/.cache; worker subprocesses
# started by tests inherit it, so the demo assets are generated once per test session.
_SESSION_CACHE = None
if "OFER_TEST_KEEP_CACHE" not in os.environ:
    _SESSION_CACHE = tempfile.mkdtemp(prefix="ofer-test-cache-")
    os.environ["OFER_CACHE_DIR"] = _SESSION_CACHE
# User assets configured on the developer's machine must not leak into tests.
for _name in ("OFER_FLAME_MODEL", "OFER_CHECKPOINT_DIR", "OFER_FRONT_INDICES", "OFER_LANDMARK_EMBEDDING"):
    os.environ.pop(_name, None)
os.environ["OFER_CONFIG"] = str(Path(os.environ.get("OFER_CACHE_DIR", tempfile.gettempdir())) / "no-config.toml")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _SESSION_CACHE is not None:
        shutil.rmtree(_SESSION_CACHE, ignore_errors=True)
