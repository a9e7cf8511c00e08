"""The managed worker environment: what to install, from where, and what was installed (no bpy).

The environment is a virtual environment under the extension's user folder; Blender's own Python is only
used to create it and is never modified. The worker installed into it is always the one this extension
carries (``pyproject.toml`` + ``inference_server/`` inside the zip), staged into the user folder first
because the extension folder may be read-only and setuptools writes next to the sources. Third-party
packages come from the package index (only when online access is allowed) or from a local wheel folder.
The commands themselves run in :mod:`.env_builder`.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import shutil
import sys
import time
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

PYTORCH_INDEX = "https://download.pytorch.org/whl"
#: CUDA builds offered in the preferences (PyTorch's own index has one folder per CUDA version).
CUDA_BUILDS = (("cu128", "CUDA 12.8"), ("cu126", "CUDA 12.6"), ("cu130", "CUDA 13.0"))
DEFAULT_CUDA = "cu128"
#: MediaPipe's own metadata pulls jax, jaxlib and opencv-contrib-python (≈ 450 MB) that its face
#: detector and face mesh never import; it is installed without dependencies and the worker's
#: pyproject lists what it does need (absl-py, attrs, flatbuffers, protobuf, matplotlib).
MEDIAPIPE_REQUIREMENT = "mediapipe==0.10.21"
#: The second face detector's weights (MTCNN, MIT licence) come inside this wheel; the worker reads the
#: three weight files and never imports the package, whose metadata pins torch < 2.3 and pulls torchvision:
#: installed without dependencies too (inference_server/preprocess/mtcnn.py).
MTCNN_WEIGHTS_REQUIREMENT = "facenet-pytorch==2.6.0"
#: Free space asked for before anything is written (a CUDA torch alone unpacks to ~4-5 GB).
DISK_NEEDED_BYTES = {"cpu": 3 * 10**9, "mps": 3 * 10**9, "custom": 3 * 10**9, "cuda": 8 * 10**9}
RECORD_NAME = "ofer_env.json"
#: The worker's optional extra installed with it: ONNX Runtime and onnx, which the *Fast* encoder preference
#: needs for int8 encoders on the CPU (the versions are the worker's pyproject's).
WORKER_EXTRA = "onnx"
#: Imports what a reconstruction needs, so a broken install fails here and not at the first Reconstruct.
CHECK_SCRIPT = (
    "import torch, cv2, mediapipe, onnx, onnxruntime, inference_server, inference_server.pipeline; "
    "from inference_server.preprocess.mtcnn import Mtcnn; Mtcnn(); "
    "print('worker', inference_server.__version__, 'torch', torch.__version__)"
)
ONLINE_VARIABLE = "OFER_ALLOW_ONLINE"


class EnvSetupError(RuntimeError):
    """The environment cannot be created as asked; the message says what to change."""


class OnlineAccessRequiredError(EnvSetupError):
    pass


@dataclass(frozen=True)
class HostPlatform:
    system: str  # "linux", "windows", "darwin"
    machine: str  # "x86_64", "arm64", ...
    has_nvidia_gpu: bool


def _has_nvidia_gpu() -> bool:
    # The driver ships nvidia-smi on Windows and Linux; /proc/driver/nvidia exists whenever it is loaded.
    return shutil.which("nvidia-smi") is not None or Path("/proc/driver/nvidia/version").exists()


def detect_platform() -> HostPlatform:
    system = {"win32": "windows", "darwin": "darwin"}.get(sys.platform, "linux")
    machine = platform.machine().lower()
    return HostPlatform(system, "arm64" if machine in ("arm64", "aarch64") else machine, _has_nvidia_gpu())


@dataclass(frozen=True)
class TorchPlan:
    """How torch is installed: ``pip install *requirement`` (with ``index_url`` when set)."""

    choice: str  # AUTO, CPU, CUDA or CUSTOM, as asked
    build: str  # "cpu", "cu128", ..., "mps", "custom"
    requirement: tuple[str, ...]
    index_url: str | None
    description: str

    def pip_args(self, local_wheels: bool) -> list[str]:
        """A local wheel folder replaces every index: the folder must hold the build wanted."""
        if self.index_url and not local_wheels:
            return [*self.requirement, "--index-url", self.index_url]
        return list(self.requirement)


def resolve_torch(choice: str, cuda_build: str, custom: str, host: HostPlatform) -> TorchPlan:
    """Turn the preference into the install command that gives this platform the right build.

    PyPI serves a CPU build on Windows and macOS (with Apple's MPS on arm64) but a multi-GB CUDA build on
    Linux, and PyPI has no CUDA build for Windows: so CPU on Linux and CUDA everywhere come from PyTorch's
    own index.
    """
    if choice == "CUSTOM":
        words = shlex.split(custom, posix=host.system != "windows")
        if not words:
            raise EnvSetupError("The custom torch requirement is empty — write e.g. 'torch==2.13.0', or choose Auto")
        return TorchPlan("CUSTOM", "custom", tuple(words), None, f"custom: {custom.strip()}")
    if choice == "AUTO":
        if host.has_nvidia_gpu and host.system != "darwin":
            choice = "CUDA"
        elif host.system == "darwin" and host.machine == "arm64":
            return TorchPlan("AUTO", "mps", ("torch",), None, "Apple-silicon build (MPS) from PyPI")
        else:
            choice = "CPU"
        return _fixed(choice, cuda_build, host, asked="AUTO")
    return _fixed(choice, cuda_build, host, asked=choice)


def _fixed(choice: str, cuda_build: str, host: HostPlatform, asked: str) -> TorchPlan:
    if choice == "CUDA":
        if host.system == "darwin":
            raise EnvSetupError("PyTorch has no CUDA build for macOS — choose Auto or CPU")
        label = dict(CUDA_BUILDS).get(cuda_build)
        if label is None:
            raise EnvSetupError(f"Unknown CUDA build '{cuda_build}' — choose one of {', '.join(dict(CUDA_BUILDS))}")
        return TorchPlan(asked, cuda_build, ("torch",), f"{PYTORCH_INDEX}/{cuda_build}", f"{label} build")
    if choice != "CPU":
        raise EnvSetupError(f"Unknown torch choice '{choice}' — choose Auto, CPU, CUDA or Custom")
    if host.system == "linux":
        return TorchPlan(asked, "cpu", ("torch",), f"{PYTORCH_INDEX}/cpu", "CPU build")
    return TorchPlan(asked, "cpu", ("torch",), None, "CPU build from PyPI")


def allow_online(blender_online_access: bool, background: bool, environ: Mapping[str, str] | None = None) -> bool:
    """Blender's own switch decides; ``OFER_ALLOW_ONLINE=1`` counts only in background mode, where the
    ``bpy`` module and ``blender -b`` offer no way to turn online access on."""
    env = os.environ if environ is None else environ
    return blender_online_access or (background and env.get(ONLINE_VARIABLE) == "1")


@dataclass(frozen=True)
class EnvRequest:
    env_dir: Path
    base_python: str
    worker_source: Path  # a folder with pyproject.toml (the staged copy of the extension's worker)
    torch: TorchPlan
    wheel_dir: Path | None  # None: the package index
    online: bool


def managed_python(env_dir: Path) -> Path:
    return env_dir / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


def default_base_python() -> str:
    """Blender's bundled Python (a known 3.11 / 3.13 on every platform) creates the environment."""
    return sys.executable


def check_request(request: EnvRequest) -> None:
    if request.wheel_dir is not None:
        if not request.wheel_dir.is_dir():
            raise EnvSetupError(f"The local wheel folder '{request.wheel_dir}' does not exist — fix the preference")
    elif not request.online:
        raise OnlineAccessRequiredError(
            "Installing the worker's packages needs the network, but Blender's online access is off — enable "
            "'Allow Online Access' in Preferences ▸ System, or set 'Local wheel folder' to a folder of wheels"
        )
    if not (request.worker_source / "pyproject.toml").is_file():
        raise EnvSetupError(f"No worker source at '{request.worker_source}' — reinstall the extension zip")
    if not Path(request.base_python).is_file():
        raise EnvSetupError(f"The base Python '{request.base_python}' does not exist — fix 'Base Python' or clear it")


def check_disk_space(
    env_dir: Path, torch: TorchPlan, usage: Callable[[str], tuple[int, int, int]] = shutil.disk_usage
) -> None:
    needed = DISK_NEEDED_BYTES["cuda" if torch.build.startswith("cu") else torch.build]
    probe = env_dir
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = usage(str(probe))[2]
    if free < needed:
        raise EnvSetupError(
            f"Not enough disk space for the worker environment: {free / 1e9:.1f} GB free at {probe}, "
            f"{needed / 1e9:.0f} GB needed ({torch.description}) — free some space and try again"
        )


@dataclass(frozen=True)
class Step:
    title: str
    argv: list[str]
    note: str = ""  # written into the log before the command


def plan_steps(request: EnvRequest) -> list[Step]:
    """torch first: the worker's own ``torch`` requirement is then met and pip does not fetch another build."""
    python = str(managed_python(request.env_dir))
    pip = [python, "-m", "pip", "install", "--disable-pip-version-check", "--no-input"]
    if request.wheel_dir is not None:
        pip += ["--no-index", "--find-links", str(request.wheel_dir)]
    local = request.wheel_dir is not None
    return [
        Step("Creating the environment", [request.base_python, "-m", "venv", "--clear", str(request.env_dir)]),
        Step(f"Installing torch ({request.torch.description})", [*pip, *request.torch.pip_args(local)]),
        Step(
            "Installing MediaPipe (without jax) and the MTCNN weights",
            [*pip, "--no-deps", MEDIAPIPE_REQUIREMENT, MTCNN_WEIGHTS_REQUIREMENT],
            note="jax, jaxlib, opencv-contrib-python, sentencepiece, sounddevice (MediaPipe) and torchvision "
            "(facenet-pytorch, whose weight files alone are used) are left out on purpose: pip's note about "
            "those 'dependency conflicts' is expected",
        ),
        Step("Installing the worker", [*pip, f"{request.worker_source}[{WORKER_EXTRA}]"]),
        Step("Checking the worker", [python, "-c", CHECK_SCRIPT]),
    ]


def extension_root() -> Path:
    """The folder the extension was installed into (it holds blender_manifest.toml and pyproject.toml)."""
    return Path(__file__).resolve().parent.parent


def worker_version(root: Path) -> str:
    with (root / "pyproject.toml").open("rb") as handle:
        return str(tomllib.load(handle)["project"]["version"])


def stage_worker_source(root: Path, staging: Path) -> Path:
    """Copy the worker's packaging metadata and source out of the (possibly read-only) extension folder."""
    if not (root / "pyproject.toml").is_file() or not (root / "inference_server").is_dir():
        raise EnvSetupError(
            f"The extension at '{root}' carries no worker source (pyproject.toml, inference_server/) — "
            "reinstall it from the released zip"
        )
    target = staging / f"ofer-blender-worker-{worker_version(root)}"
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "build", "*.egg-info")
    shutil.copytree(root / "inference_server", target / "inference_server", ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        if (root / name).is_file():
            shutil.copy2(root / name, target / name)
    return target


@dataclass(frozen=True)
class EnvRecord:
    """Written into the environment when every step succeeded; shown in the preferences."""

    worker_version: str
    torch_choice: str
    torch_build: str
    torch_description: str
    torch_command: str
    source: str  # "index" or the local wheel folder
    python: str
    created: str
    seconds: float
    size_bytes: int


def folder_size(path: Path) -> int:
    total = 0
    for folder, _dirs, files in os.walk(path):
        for name in files:
            file = Path(folder) / name
            if not file.is_symlink():
                total += file.stat().st_size
    return total


def make_record(request: EnvRequest, version: str, seconds: float) -> EnvRecord:
    steps = plan_steps(request)
    return EnvRecord(
        worker_version=version,
        torch_choice=request.torch.choice,
        torch_build=request.torch.build,
        torch_description=request.torch.description,
        torch_command="pip " + shlex.join(steps[1].argv[3:]),  # argv: python -m pip install ...
        source=str(request.wheel_dir) if request.wheel_dir is not None else "index",
        python=str(managed_python(request.env_dir)),
        created=time.strftime("%Y-%m-%d %H:%M:%S"),
        seconds=round(seconds, 1),
        size_bytes=folder_size(request.env_dir),
    )


def write_record(env_dir: Path, record: EnvRecord) -> None:
    tmp = env_dir / (RECORD_NAME + ".tmp")
    tmp.write_text(json.dumps(asdict(record), indent=2), encoding="utf-8")
    tmp.replace(env_dir / RECORD_NAME)


def read_record(env_dir: Path) -> EnvRecord | None:
    """The record of a complete environment; None when there is none or it is unreadable (→ Repair)."""
    try:
        data = json.loads((env_dir / RECORD_NAME).read_text(encoding="utf-8"))
        return EnvRecord(**data)
    except (OSError, ValueError, TypeError):
        return None


def env_state(env_dir: Path) -> str:
    """ "missing" (nothing there), "broken" (a half-made or damaged environment) or "ready"."""
    if not env_dir.exists():
        return "missing"
    if managed_python(env_dir).is_file() and read_record(env_dir) is not None:
        return "ready"
    return "broken"


def remove_env(env_dir: Path) -> None:
    if env_dir.exists():
        shutil.rmtree(env_dir)
