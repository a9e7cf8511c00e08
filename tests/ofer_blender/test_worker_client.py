from __future__ import annotations

import importlib
import sys
from typing import Any

import pytest


@pytest.fixture
def wc(addon):
    return importlib.import_module(addon.__name__ + ".worker_client")


def test_default_command_and_clean_environment(wc) -> None:
    assert wc.default_worker_command("/x/python") == ["/x/python", "-u", "-m", "inference_server", "serve"]
    env = wc.clean_environment({"PATH": "/bin", "PYTHONPATH": "/blender", "PYTHONHOME": "/b"}, {"OFER_X": "1"})
    assert env["PATH"] == "/bin" and env["OFER_X"] == "1"
    assert "PYTHONPATH" not in env and "PYTHONHOME" not in env


def test_hello_round_trip_and_stop(wc, fake_worker, tmp_path) -> None:
    client = wc.WorkerClient(fake_worker("normal"), tmp_path)
    hello = client.hello(timeout=30)
    assert hello["protocol"] == 1 and hello["mode"] == "normal"
    assert client.running
    client.stop(grace=5)
    assert not client.running
    assert "fake worker started in mode normal" in client.log_tail()  # stderr went to the log


def test_missing_program_is_a_clear_error(wc, tmp_path) -> None:
    client = wc.WorkerClient([str(tmp_path / "no-such-python"), "-m", "inference_server"], tmp_path)
    with pytest.raises(wc.WorkerUnavailableError, match="does not exist") as info:
        client.start()
    assert "preferences" in info.value.fix


def test_sending_to_a_dead_worker_raises_with_log_tail(wc, tmp_path) -> None:
    client = wc.WorkerClient([sys.executable, "-c", "import sys; print('dying', file=sys.stderr)"], tmp_path)
    client.start()
    messages: list[Any] = []  # WorkerMessage of the add-on module the fixture loaded
    while not any(m.kind == "exit" for m in messages):
        message = client.get(timeout=10)
        assert message is not None
        messages.append(message)
    with pytest.raises(wc.WorkerUnavailableError) as info:
        client.send("hello")
    assert "dying" in info.value.log_tail


def test_garbage_line_is_reported_not_parsed(wc, tmp_path) -> None:
    script = 'print(\'hello world\'); print(\'{"id": "x", "event": "progress"}\')'
    client = wc.WorkerClient([sys.executable, "-c", script], tmp_path)
    client.start()
    kinds = []
    while "exit" not in kinds:
        message = client.get(timeout=10)
        assert message is not None
        kinds.append(message.kind)
        if message.kind == "garbage":
            assert message.line == "hello world" and "JSON" in message.problem
    assert kinds == ["garbage", "event", "exit"]


def test_handshake_timeout_kills_a_silent_worker(wc, tmp_path) -> None:
    client = wc.WorkerClient([sys.executable, "-c", "import time; time.sleep(60)"], tmp_path)
    with pytest.raises(wc.WorkerUnavailableError, match="handshake"):
        client.hello(timeout=0.5)
    assert not client.running
