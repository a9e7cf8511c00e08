"""The project's own promises about its code: ruff (lint and format) and mypy clean, tests included; the add-on
never imports torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_ruff_is_clean() -> None:
    proc = _run([str(BIN / "ruff"), "check", "."])
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.slow
def test_ruff_format_is_clean() -> None:
    """Hand-laid-out statements say ``# fmt: skip`` (markdown code blocks: ``<!-- fmt:off -->``)."""
    proc = _run([str(BIN / "ruff"), "format", "--check", "."])
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.slow
def test_mypy_is_clean() -> None:
    # One run over the package and its tests: mypy would otherwise analyse the package twice.
    proc = _run([str(BIN / "mypy"), "inference_server", "ofer_blender", "benchmarks", "tests"])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_addon_and_shared_modules_import_only_stdlib_numpy_bpy() -> None:
    allowed = set(sys.stdlib_module_names) | {
        "numpy",
        "bpy",
        "bpy_extras",
        "gpu",
        "gpu_extras",
        "mathutils",
        "blf",
    }
    files = [*(ROOT / "ofer_blender").rglob("*.py"), ROOT / "__init__.py"]
    files += [
        ROOT / "inference_server" / name
        for name in ("__init__.py", "protocol.py", "result.py", "errors.py", "npz_contract.py", "sequence_result.py")
    ]
    for path in files:
        extra = _imported_modules(path) - allowed
        assert not extra, f"{path.relative_to(ROOT)} imports {sorted(extra)}"


def test_importing_the_worker_package_does_not_import_torch() -> None:
    code = (
        "import sys, inference_server, inference_server.protocol, inference_server.result,"
        " inference_server.sequence_result;"
        "print('torch' in sys.modules)"
    )
    proc = _run([sys.executable, "-c", code])
    assert proc.stdout.strip() == "False", proc.stderr
