"""The managed environment's plan: which torch build each platform gets, where every package comes from,
and that the worker installed is the one the extension carries (never a name looked up on an index)."""

from __future__ import annotations

import importlib
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def env(addon):
    return importlib.import_module(addon.__name__ + ".managed_env")


def _host(env, system: str, machine: str = "x86_64", gpu: bool = False):
    return env.HostPlatform(system, machine, gpu)


def test_auto_picks_cuda_with_an_nvidia_gpu_mps_on_apple_silicon_else_cpu(env) -> None:
    linux_gpu = env.resolve_torch("AUTO", "cu128", "", _host(env, "linux", gpu=True))
    assert linux_gpu.build == "cu128" and linux_gpu.pip_args(False) == [
        "torch",
        "--index-url",
        "https://download.pytorch.org/whl/cu128",
    ]
    windows_gpu = env.resolve_torch("AUTO", "cu126", "", _host(env, "windows", gpu=True))
    assert windows_gpu.index_url == "https://download.pytorch.org/whl/cu126"
    mac = env.resolve_torch("AUTO", "cu128", "", _host(env, "darwin", "arm64"))
    assert mac.build == "mps" and mac.pip_args(False) == ["torch"]
    # No GPU on Linux: PyPI's default torch is the multi-GB CUDA build, so the CPU build comes from PyTorch's index.
    linux_cpu = env.resolve_torch("AUTO", "cu128", "", _host(env, "linux"))
    assert linux_cpu.build == "cpu" and linux_cpu.index_url == "https://download.pytorch.org/whl/cpu"
    # On Windows and Intel macOS PyPI's torch already is the CPU build.
    assert env.resolve_torch("CPU", "cu128", "", _host(env, "windows")).pip_args(False) == ["torch"]
    assert env.resolve_torch("AUTO", "cu128", "", _host(env, "darwin")).pip_args(False) == ["torch"]


def test_explicit_cuda_custom_and_impossible_choices(env) -> None:
    plan = env.resolve_torch("CUDA", "cu130", "", _host(env, "linux"))
    assert plan.choice == "CUDA" and plan.index_url.endswith("/cu130") and "13.0" in plan.description
    with pytest.raises(env.EnvSetupError, match="no CUDA build for macOS"):
        env.resolve_torch("CUDA", "cu128", "", _host(env, "darwin", "arm64"))
    with pytest.raises(env.EnvSetupError, match="Unknown CUDA build"):
        env.resolve_torch("CUDA", "cu999", "", _host(env, "linux"))
    custom = env.resolve_torch(
        "CUSTOM", "cu128", " torch==2.13.0  --index-url https://example.org/simple ", _host(env, "linux")
    )
    assert custom.pip_args(False) == ["torch==2.13.0", "--index-url", "https://example.org/simple"]
    with pytest.raises(env.EnvSetupError, match="custom torch requirement is empty"):
        env.resolve_torch("CUSTOM", "cu128", "  ", _host(env, "linux"))
    # A local wheel folder replaces every index: the index URL is dropped.
    assert env.resolve_torch("CUDA", "cu128", "", _host(env, "linux")).pip_args(True) == ["torch"]


def _request(env, tmp_path: Path, *, wheel_dir=None, online=True, torch=None):
    source = tmp_path / "src"
    source.mkdir(exist_ok=True)
    (source / "pyproject.toml").write_text("[project]\nname='x'\nversion='1.0.0'\n")
    return env.EnvRequest(
        env_dir=tmp_path / "worker_env",
        base_python=sys.executable,
        worker_source=source,
        torch=torch or env.resolve_torch("CUSTOM", "cu128", "torch==2.13.0", _host(env, "linux")),
        wheel_dir=wheel_dir,
        online=online,
    )


def test_plan_installs_torch_first_mediapipe_without_deps_and_the_staged_worker(env, tmp_path) -> None:
    request = _request(env, tmp_path)
    steps = env.plan_steps(request)
    python = str(env.managed_python(request.env_dir))
    assert steps[0].argv == [sys.executable, "-m", "venv", "--clear", str(request.env_dir)]
    assert [s.argv[:4] for s in steps[1:4]] == [[python, "-m", "pip", "install"]] * 3
    assert steps[1].argv[-1] == "torch==2.13.0"
    assert steps[2].argv[-3:] == ["--no-deps", "mediapipe==0.10.21", "facenet-pytorch==2.6.0"]
    # A folder (with the extra that brings ONNX Runtime for the Fast encoders), never a package name.
    assert steps[3].argv[-1] == f"{request.worker_source}[onnx]"
    assert "ofer-blender-worker" not in " ".join(a for s in steps for a in s.argv if a != steps[3].argv[-1])
    assert steps[4].argv[:2] == [python, "-c"] and "inference_server.pipeline" in steps[4].argv[2]
    assert "onnxruntime" in steps[4].argv[2]
    assert not any("--no-index" in s.argv for s in steps)

    wheels = tmp_path / "wheels"
    wheels.mkdir()
    offline = _request(
        env, tmp_path, wheel_dir=wheels, online=False, torch=env.resolve_torch("CPU", "cu128", "", _host(env, "linux"))
    )
    for step in env.plan_steps(offline)[1:4]:
        i = step.argv.index("--no-index")
        assert step.argv[i : i + 3] == ["--no-index", "--find-links", str(wheels)]
        assert "--index-url" not in step.argv
    env.check_request(offline)  # a wheel folder needs no network


def test_online_access_is_blenders_switch_or_the_variable_in_background_only(env, tmp_path) -> None:
    assert env.allow_online(True, False, {}) is True
    assert env.allow_online(False, True, {"OFER_ALLOW_ONLINE": "1"}) is True
    assert env.allow_online(False, False, {"OFER_ALLOW_ONLINE": "1"}) is False  # the UI: only Blender's switch
    assert env.allow_online(False, True, {"OFER_ALLOW_ONLINE": "yes"}) is False
    with pytest.raises(env.OnlineAccessRequiredError, match="Allow Online Access"):
        env.check_request(_request(env, tmp_path, online=False))
    with pytest.raises(env.EnvSetupError, match=r"wheel folder .* does not exist"):
        env.check_request(_request(env, tmp_path, wheel_dir=tmp_path / "nowhere", online=False))
    env.check_request(_request(env, tmp_path, online=True))


def test_disk_space_is_checked_before_anything_is_written(env, tmp_path) -> None:
    cpu = env.resolve_torch("CPU", "cu128", "", _host(env, "linux"))
    cuda = env.resolve_torch("CUDA", "cu128", "", _host(env, "linux"))
    gb = 10**9
    env.check_disk_space(tmp_path / "a" / "b", cpu, usage=lambda p: (0, 0, 4 * gb))
    with pytest.raises(env.EnvSetupError, match=r"4\.0 GB free .* 8 GB needed"):
        env.check_disk_space(tmp_path / "a" / "b", cuda, usage=lambda p: (0, 0, 4 * gb))
    seen: list[str] = []

    def usage(path: str) -> tuple[int, int, int]:
        seen.append(path)
        return (0, 0, 10 * gb)

    env.check_disk_space(tmp_path / "a" / "b", cpu, usage=usage)
    assert seen == [str(tmp_path)]  # the nearest folder that exists


def test_the_staged_source_builds_a_wheel_with_the_worker_and_its_demo_weights(env, tmp_path) -> None:
    staged = env.stage_worker_source(ROOT, tmp_path / "staging")
    assert staged.name == "ofer-blender-worker-" + env.worker_version(ROOT)
    assert not list(staged.rglob("__pycache__"))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "w"),
            str(staged),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = (tmp_path / "w").glob("ofer_blender_worker-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "inference_server/pipeline.py" in names and "inference_server/protocol.py" in names
    assert any(n.startswith("inference_server/assets/demo_weights/") and n.endswith(".safetensors") for n in names)
    assert any(n.startswith("inference_server/assets/fit_calibration/") and n.endswith(".npz") for n in names)
    assert not any(n.startswith("ofer_blender/") for n in names)
    with pytest.raises(env.EnvSetupError, match="carries no worker source"):
        env.stage_worker_source(tmp_path / "empty", tmp_path / "staging2")


def test_record_and_state(env, tmp_path) -> None:
    request = _request(env, tmp_path)
    assert env.env_state(request.env_dir) == "missing"
    python = env.managed_python(request.env_dir)
    python.parent.mkdir(parents=True)
    python.write_text("")
    assert env.env_state(request.env_dir) == "broken"  # a venv without a record: a cancelled or failed install
    record = env.make_record(request, "0.1.0", 12.34)
    env.write_record(request.env_dir, record)
    assert env.env_state(request.env_dir) == "ready"
    again = env.read_record(request.env_dir)
    assert again == record and again.torch_command.endswith(
        "install --disable-pip-version-check --no-input torch==2.13.0"
    )
    assert again.size_bytes == env.folder_size(request.env_dir) - len((request.env_dir / env.RECORD_NAME).read_bytes())
    (request.env_dir / env.RECORD_NAME).write_text("{not json")
    assert env.env_state(request.env_dir) == "broken"
    env.remove_env(request.env_dir)
    assert env.env_state(request.env_dir) == "missing"
