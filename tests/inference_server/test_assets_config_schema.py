"""The config file is checked against its schema: a bad key is named, the worker still starts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inference_server.assets_config import doctor_report, resolve_assets

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('assets = "oops"', "key 'assets' must be a table"),
        ("assets = [1]", "key 'assets' must be a table"),
        ("x = " + "[" * 5000 + "]" * 5000, "nested too deeply"),
        ("[assets]\nflame_modle = '/a.pkl'", "unknown key 'assets.flame_modle'"),
        ("[assets]\nflame_model = 5", "assets.flame_model must be a path string"),
        ("[assets]\ncheckpoint_dir = ['/a', '/b']", "assets.checkpoint_dir must be a path string"),
        ("[assets]\nflame_model = ''", "assets.flame_model must be a path string"),
        ("flame_model = {a = 1}", "flame_model must be a path string"),
    ],
)
def test_schema_faults_are_named_and_do_not_break_doctor(tmp_path: Path, text: str, words: str) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(text)
    config = resolve_assets({}, env={}, config_file=cfg)
    report = "\n".join(doctor_report(config))
    assert words in report, report
    assert config.use_demo


def test_good_keys_survive_a_bad_neighbour(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text("[assets]\nflame_model = '/my/generic_model.pkl'\nfront_face_indices = 3\n")
    config = resolve_assets({}, env={}, config_file=cfg)
    assert config.path("flame_model") == Path("/my/generic_model.pkl")
    assert config.path("front_face_indices") is None
    assert any("assets.front_face_indices" in p for p in config.problems)


@pytest.mark.parametrize("text", ['assets = "oops"', "assets = [1]", "x = " + "[" * 5000 + "]" * 5000])
def test_doctor_command_survives_a_broken_config(tmp_path: Path, text: str) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(text)
    proc = subprocess.run(
        [sys.executable, "-m", "inference_server", "doctor", "--json", "--config", str(cfg)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert json.loads(proc.stdout)["demo"] is True


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(st.binary(max_size=1024), st.text(max_size=512).map(lambda t: ("[assets]\n" + t).encode())))
def test_generated_config_files_never_raise(tmp_path: Path, data: bytes) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_bytes(data)
    config = resolve_assets({}, env={}, config_file=cfg)
    doctor_report(config)
    config.missing()
