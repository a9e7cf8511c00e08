"""Fixtures for tests with the real ``bpy`` wheel (headless): a registered add-on and result files.

bpy is one process-wide Blender; every test starts from ``read_factory_settings(use_empty=True)`` and
registers the extension afresh, and unregisters it afterwards, so no state leaks between tests.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

bpy = pytest.importorskip("bpy")

HERE = Path(__file__).resolve().parent
# The tests import their shared helpers (mesh_probe.py) by plain name, as zip_scenarios.py does when run as a
# script; pytest's importlib mode does not put this folder on the path by itself.
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
FAKE_WORKER = HERE.parent / "ofer_blender" / "fake_worker.py"


def _load(path: Path, name: str) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


loader = _load(HERE.parent / "ofer_blender" / "extension_loader.py", "ofer_test_extension_loader")


def _unregister_at_exit() -> None:
    """The bpy module hangs at exit while Python property-update callbacks are registered."""
    module = sys.modules.get(loader.PACKAGE)
    registration = sys.modules.get(f"{loader.PACKAGE}.ofer_blender.registration")
    if module is not None and registration is not None and registration._registered:
        module.unregister()


atexit.register(_unregister_at_exit)


_CACHE: dict[tuple[int, int, int, str, bool, bool], Path] = {}


def torch_python() -> str:
    """A Python with torch and the worker: this one, unless the version matrix (tests/blender/matrix.py)
    runs these tests in a bpy-only environment and names the project's Python in OFER_TEST_TORCH_PYTHON."""
    return os.environ.get("OFER_TEST_TORCH_PYTHON") or sys.executable


def blender_ext() -> Path:
    """Blender's own extension tool, as shipped inside this bpy (what `blender --command extension` runs)."""
    return Path(bpy.utils.system_resource("SCRIPTS")) / "addons_core" / "bl_pkg" / "cli" / "blender_ext.py"


def build_extension_zip(out_dir: Path) -> Path:
    """Validate the repository as an extension and build its zip with this Blender's tool."""
    root = HERE.parents[1]
    for args in (["validate", str(root)], ["build", "--source-dir", str(root), "--output-dir", str(out_dir)]):
        out_dir.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run([sys.executable, str(blender_ext()), *args], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    (archive,) = out_dir.glob("*.zip")
    return archive


def run_zip_scenario(
    args: list[str], user_folder: Path, timeout: float, extra_env: dict[str, str] | None = None
) -> dict:
    """Run tests/blender/zip_scenarios.py in a fresh bpy process whose Blender user folder is ``user_folder``."""
    import json

    user_folder.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "OFER_ALLOW_ONLINE")}
    env.update({"BLENDER_USER_RESOURCES": str(user_folder), **(extra_env or {})})
    proc = subprocess.run(
        [sys.executable, str(HERE / "zip_scenarios.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=user_folder,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("SCENARIO ")]
    assert proc.returncode == 0 and lines, proc.stdout[-6000:] + proc.stderr[-6000:]
    return json.loads(lines[-1][len("SCENARIO ") :])


def make_result_file(
    path: str | Path,
    *,
    n_identities: int = 3,
    n_expressions: int = 5,
    seed: int = 0,
    fit: str = "none",
    flame_controls: bool = False,
    eye_pose: bool = False,
) -> Path:
    """The one source of result files for the Blender tests (see result_factory.py).

    Built in a subprocess: torch (for the demo FLAME head) and bpy must not share a process — together
    they deadlock. Each distinct file is built once per session and copied. ``fit="ok"`` adds a known
    head pose and camera, a photo and a texture (the texture is copied beside the copy, as the worker
    writes it; the photo stays where the file records it); ``eye_pose`` (with ``fit="ok"``) a known gaze.
    """
    key = (n_identities, n_expressions, seed, fit, flame_controls, eye_pose)
    if key not in _CACHE:
        cached = Path(tempfile.mkdtemp(prefix="ofer-results-")) / "result.npz"
        args = [str(cached), f"--n-identities={n_identities}", f"--n-expressions={n_expressions}", f"--seed={seed}"]
        args.append(f"--fit={fit}")
        args += ["--flame-controls"] if flame_controls else []
        args += ["--eye-pose"] if eye_pose else []
        proc = subprocess.run(
            [torch_python(), str(HERE / "result_factory.py"), *args], capture_output=True, text=True, timeout=600
        )
        assert proc.returncode == 0, proc.stderr
        _CACHE[key] = cached
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_CACHE[key], target)
    texture = _CACHE[key].with_name("result-texture.png")
    if texture.is_file():
        shutil.copyfile(texture, target.parent / texture.name)
    return target


@pytest.fixture
def addon() -> Iterator[ModuleType]:
    """A fresh empty scene with the extension registered (and an add-on entry, so preferences exist)."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    root = loader.load_extension()
    root.register()
    addons = bpy.context.preferences.addons
    entry = addons.get(loader.PACKAGE)
    if entry is None:
        entry = addons.new()
        entry.module = loader.PACKAGE
    try:
        yield loader.addon_module("ofer_blender")
    finally:
        session = loader.addon_module("ofer_blender.session").SESSION
        session.release()
        root.unregister()
        if addons.get(loader.PACKAGE) is not None:
            addons.remove(addons[loader.PACKAGE])


_SEQUENCES: dict[tuple[int, bool], Path] = {}


def make_sequence_file(path: str | Path, *, n_frames: int = 12, eye_pose: bool = False) -> Path:
    """An ``ofer-sequence/1`` file with its frames folder (tests/blender/sequence_factory.py, in a subprocess
    because it needs torch); built once per session and copied with its frames. ``eye_pose``: with the
    factory's gaze (``frame_eye_pose``)."""
    key = (n_frames, eye_pose)
    if key not in _SEQUENCES:
        cached = Path(tempfile.mkdtemp(prefix="ofer-sequence-")) / "sequence.npz"
        args = [str(cached), str(n_frames)] + (["--eye-pose"] if eye_pose else [])
        proc = subprocess.run(
            [torch_python(), str(HERE / "sequence_factory.py"), *args], capture_output=True, text=True, timeout=600
        )
        assert proc.returncode == 0, proc.stderr
        _SEQUENCES[key] = cached
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_SEQUENCES[key], target)
    return target


@pytest.fixture
def sequence_file(tmp_path: Path) -> Path:
    return make_sequence_file(tmp_path / "sequence.npz")


@pytest.fixture
def sequence_factory() -> Callable[..., Path]:
    return make_sequence_file


@pytest.fixture
def result_file(tmp_path: Path) -> Path:
    return make_result_file(tmp_path / "result.npz")


@pytest.fixture
def result_factory() -> Callable[..., Path]:
    return make_result_file


@pytest.fixture
def fake_worker_command() -> Callable[[str], str]:
    """A custom worker command line (preferences ▸ Custom command) running the fake worker in MODE."""

    def command(mode: str) -> str:
        return f'"{sys.executable}" -u "{FAKE_WORKER}" {mode}'

    return command


def _scene_counts() -> tuple[int, ...]:
    data = bpy.data
    return (len(data.objects), len(data.meshes), len(data.armatures), len(data.shape_keys), len(data.collections))


@pytest.fixture
def scene_counts() -> Callable[[], tuple[int, ...]]:
    """Counts of objects, meshes, armatures, shape-key sets and collections: equal before and after = unchanged."""
    return _scene_counts


@pytest.fixture(scope="session")
def extension_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The extension zip, validated and built once per session with this Blender's own tool."""
    return build_extension_zip(tmp_path_factory.mktemp("dist"))


@pytest.fixture
def zip_scenario() -> Callable[..., dict]:
    return run_zip_scenario
