"""The extension validates and builds with the blender_ext.py shipped inside the bpy wheel."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import bpy

ROOT = Path(__file__).resolve().parents[2]


def _blender_ext() -> Path:
    scripts = bpy.utils.system_resource("SCRIPTS")  # type: ignore[attr-defined]  # real API, not in the 4.2 stubs
    return Path(scripts) / "addons_core" / "bl_pkg" / "cli" / "blender_ext.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(_blender_ext()), *args], capture_output=True, text=True, timeout=300)


def test_manifest_validates_and_the_zip_builds_with_the_right_files(tmp_path) -> None:
    proc = _run("validate", str(ROOT))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = tmp_path / "dist"
    out.mkdir()
    proc = _run("build", "--source-dir", str(ROOT), "--output-dir", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (archive,) = out.glob("*.zip")
    with zipfile.ZipFile(archive) as zf:
        names = set(zf.namelist())
    for needed in (
        "blender_manifest.toml",
        "__init__.py",
        "ofer_blender/registration.py",
        "ofer_blender/importer.py",
        "inference_server/protocol.py",
        "inference_server/result.py",
        "inference_server/__init__.py",
    ):
        assert needed in names, needed
    for name in names:
        assert not name.startswith(("tests/", "benchmarks/", ".venv/", "docs/", "tools/", ".git")), name
        assert "__pycache__" not in name and not name.endswith(".egg-info/"), name
    proc = _run("validate", str(archive))
    assert proc.returncode == 0, proc.stdout + proc.stderr
