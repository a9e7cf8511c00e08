from __future__ import annotations

import importlib
import sys

import pytest


@pytest.fixture
def env(addon):
    return importlib.import_module(addon.__name__ + ".managed_env")


def test_plan_and_online_access(env, tmp_path) -> None:
    plan = env.plan_commands("/usr/bin/python3", tmp_path / "venv", "ofer-blender-worker")
    assert plan[0] == ["/usr/bin/python3", "-m", "venv", str(tmp_path / "venv")]
    assert plan[-1][-1] == "ofer-blender-worker" and plan[-1][0] == str(env.managed_python(tmp_path / "venv"))
    with pytest.raises(env.OnlineAccessRequiredError, match="online access is off"):
        env.check_online_access("ofer-blender-worker", online_access=False)
    env.check_online_access("ofer-blender-worker", online_access=True)
    env.check_online_access(str(tmp_path), online_access=False)  # a local source needs no network


def test_builder_runs_steps_and_stops_at_the_first_failure(env, tmp_path) -> None:
    ok = [sys.executable, "-c", "print('step ok')"]
    bad = [sys.executable, "-c", "import sys; sys.exit(3)"]
    builder = env.EnvBuilder([ok, bad, ok], tmp_path / "env.log")
    builder.start()
    builder.join(60)
    assert builder.state == "failed" and builder.step == 1 and "exit code 3" in builder.error
    assert "step ok" in (tmp_path / "env.log").read_text()
    builder = env.EnvBuilder([ok, ok], tmp_path / "env2.log")
    builder.start()
    builder.join(60)
    assert builder.state == "done" and builder.step == builder.total == 2
