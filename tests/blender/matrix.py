"""Run the extension's zip test (tests/blender/test_zip_install.py) with every supported Blender.

Each Blender is a ``bpy`` wheel in its own virtual environment under ``.matrix/`` (git-ignored, created on
the first run, reused afterwards while its requirement is unchanged). Blender 4.2-5.0 wheels are built for
Python 3.11 and 5.1+ for Python 3.13: the interpreter is looked up on PATH and in pyenv. The worker-made
result files come from the Python running this script (it has torch; the matrix environments only bpy).

    python tests/blender/matrix.py [--only 4.2 5.2]

Prints one line per Blender and a summary; exits non-zero when any version failed.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: OFER_MATRIX_DIR keeps the environments outside the checkout (a CI cache shared by clean clones).
MATRIX_DIR = Path(os.environ.get("OFER_MATRIX_DIR") or ROOT / ".matrix")
TEST = "tests/blender/test_zip_install.py"


@dataclass(frozen=True)
class BlenderVersion:
    label: str
    python: str  # "3.11" / "3.13"
    requirement: str


VERSIONS = (
    BlenderVersion("4.2 LTS", "3.11", "bpy==4.2.*"),
    BlenderVersion("4.5 LTS", "3.11", "bpy==4.5.*"),
    BlenderVersion("5.0", "3.11", "bpy==5.0.*"),
    BlenderVersion("5.2 LTS", "3.13", "bpy==5.2.*"),
)
TEST_TOOLS = ("pytest>=8", "pytest-timeout>=2.3")


def find_python(version: str) -> str:
    """python3.X on PATH, else a pyenv install of it."""
    found = shutil.which(f"python{version}")
    candidates = [found] if found else []
    pyenv_root = os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv"))
    candidates += sorted(glob.glob(f"{pyenv_root}/versions/{version}.*/bin/python{version}"), reverse=True)
    for candidate in candidates:
        # A pyenv shim exists on PATH even when that version is not active: ask the interpreter itself.
        probe = subprocess.run(
            [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], capture_output=True, text=True
        )
        if probe.returncode == 0 and probe.stdout.strip() == version:
            return candidate
    raise SystemExit(f"Python {version} not found (needed for a bpy wheel): install it, e.g. `pyenv install {version}`")


def ensure_env(version: BlenderVersion) -> Path:
    """The version's virtual environment, created (or recreated) when its marker does not match."""
    env = MATRIX_DIR / ("bpy-" + version.requirement.split("==")[1].rstrip(".*"))
    python = env / "bin" / "python"
    marker = env / "ofer-matrix.txt"
    wanted = "\n".join([version.requirement, *TEST_TOOLS])
    if python.is_file() and marker.is_file() and marker.read_text() == wanted:
        return python
    if env.exists():
        shutil.rmtree(env)
    print(f"    creating {env} (first run only)", flush=True)
    for command in (
        [find_python(version.python), "-m", "venv", str(env)],
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", version.requirement, *TEST_TOOLS],
    ):
        proc = subprocess.run(command, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    marker.write_text(wanted)
    return python


def run_version(version: BlenderVersion) -> tuple[bool, str, float]:
    start = time.monotonic()
    try:
        python = ensure_env(version)
    except (RuntimeError, SystemExit) as exc:
        return False, f"environment not created: {exc}", time.monotonic() - start
    env = dict(os.environ, OFER_TEST_TORCH_PYTHON=sys.executable, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [str(python), "-m", "pytest", TEST, "-q", "-s", "-p", "no:cacheprovider"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    seconds = time.monotonic() - start
    lines = [line for line in proc.stdout.splitlines() if line.startswith("Blender ")]
    if proc.returncode == 0 and lines:
        return True, lines[-1][:200], seconds
    return False, (proc.stdout[-4000:] + proc.stderr[-2000:]).strip(), seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", help="version labels to run, e.g. 4.2 5.2")
    args = parser.parse_args(argv)
    chosen = [v for v in VERSIONS if not args.only or v.label.split()[0] in args.only]
    outcome = []
    for version in chosen:
        print(f"=== Blender {version.label} ({version.requirement}, Python {version.python})", flush=True)
        ok, text, seconds = run_version(version)
        print(("PASSED " if ok else "FAILED ") + f"Blender {version.label} in {seconds:.0f} s: {text}", flush=True)
        outcome.append((version.label, ok, seconds))
    print("=== Blender version matrix")
    for label, ok, seconds in outcome:
        print(f"  Blender {label:8s} {'PASSED' if ok else 'FAILED'}  ({seconds:.0f} s)")
    return 0 if all(ok for _, ok, _ in outcome) else 1


if __name__ == "__main__":
    sys.exit(main())
