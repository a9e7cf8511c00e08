"""Session-wide test settings shared by every test folder."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Generated DEMO assets go to a per-session cache, never the user's ~/.cache; worker subprocesses
# started by tests inherit it, so the demo assets are generated once per test session.
if "OFER_TEST_KEEP_CACHE" not in os.environ:
    os.environ["OFER_CACHE_DIR"] = tempfile.mkdtemp(prefix="ofer-test-cache-")
# User assets configured on the developer's machine must not leak into tests.
for _name in ("OFER_FLAME_MODEL", "OFER_CHECKPOINT_DIR", "OFER_FRONT_INDICES", "OFER_LANDMARK_EMBEDDING"):
    os.environ.pop(_name, None)
os.environ["OFER_CONFIG"] = str(Path(os.environ["OFER_CACHE_DIR"]) / "no-config.toml")
