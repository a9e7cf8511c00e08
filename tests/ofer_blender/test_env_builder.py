"""The environment builder: steps in order, stop at the first failure, cancel, progress from pip's output."""

from __future__ import annotations

import importlib
import sys
import time

import pytest


@pytest.fixture
def eb(addon):
    return importlib.import_module(addon.__name__ + ".env_builder")


@pytest.fixture
def step_type(addon):
    return importlib.import_module(addon.__name__ + ".managed_env").Step


def _py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_steps_run_in_order_and_stop_at_the_first_failure(eb, step_type, tmp_path) -> None:
    ok = step_type("ok", _py("print('step ok')"))
    bad = step_type("bad step", _py("import sys; sys.exit(3)"))
    recorded: list[float] = []  # on_success's argument
    builder = eb.EnvBuilder([ok, bad, ok], tmp_path / "env.log", on_success=recorded.append)
    builder.start()
    builder.join(60)
    assert builder.state == "failed" and builder.step == 1 and "'bad step' failed (exit code 3)" in builder.error
    assert recorded == [] and "step ok" in (tmp_path / "env.log").read_text()
    builder = eb.EnvBuilder([ok, ok], tmp_path / "env2.log", on_success=recorded.append)
    builder.start()
    builder.join(60)
    assert builder.state == "done" and builder.step == builder.total == 2 and len(recorded) == 1


def test_progress_follows_pips_output(eb, step_type, tmp_path) -> None:
    pip_like = (
        "print('Collecting torch==2.13.0'); "
        "print('  Downloading torch-2.13.0-cp311-cp311-manylinux_2_28_x86_64.whl (754.5 MB)'); "
        "print('Collecting numpy<2'); "
        "print('  Downloading https://files.example/numpy-1.26.4-cp311-cp311-manylinux.whl (18.3 MB)'); "
        "print('  Downloading tiny-1.0-py3-none-any.whl (12 kB)'); "
        "print('Installing collected packages: numpy, torch'); "
        "import time; time.sleep(30)"
    )
    builder = eb.EnvBuilder([step_type("Installing torch", _py(pip_like))], tmp_path / "env.log")
    builder.start()
    deadline = time.monotonic() + 30
    while builder.progress.package != "installing numpy, torch" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert builder.progress.downloaded_bytes == 754_500_000 + 18_300_000 + 12_000
    line = builder.status_line()
    assert line.startswith("Step 1/1: Installing torch · installing numpy, torch · 773 MB downloaded"), line
    builder.cancel()
    builder.join(30)
    assert builder.state == "cancelled" and "Repair" in builder.error


def test_a_missing_program_fails_the_step_with_the_reason_in_the_log(eb, step_type, tmp_path) -> None:
    builder = eb.EnvBuilder([step_type("venv", [str(tmp_path / "no-python"), "-m", "venv", "x"])], tmp_path / "env.log")
    builder.start()
    builder.join(30)
    assert builder.state == "failed" and "'venv' failed" in builder.error
    assert "could not run" in (tmp_path / "env.log").read_text()
