"""A real ``ofer-worker serve`` subprocess on DEMO assets, driven the way the add-on drives it."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

SAMPLE = Path(__file__).resolve().parents[2] / "inference_server" / "assets" / "sample_occluded_face.jpg"
WORKER = [sys.executable, "-u", "-m", "inference_server", "serve", "--device", "cpu"]


class Worker:
    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            WORKER,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=str(SAMPLE.parents[2]),
            env=None if env is None else {**os.environ, **env},
        )
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.stderr: list[bytes] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=lambda: self.stderr.extend(self.proc.stderr), daemon=True).start()  # type: ignore[arg-type]

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.events.put(json.loads(line))  # anything but JSON on stdout fails the test here

    def send(self, rid: str, op: str, **args: Any) -> None:
        self.send_raw(json.dumps({"id": rid, "op": op, "args": args}).encode())

    def send_raw(self, line: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + b"\n")
        self.proc.stdin.flush()

    def next_event(self, timeout: float = 300) -> dict[str, Any]:
        try:
            return self.events.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("worker did not answer; stderr:\n" + b"".join(self.stderr).decode()[-3000:]) from None

    def until(
        self, rid: str, events: tuple[str, ...], timeout: float = 300
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        seen = []
        while True:
            ev = self.next_event(timeout)
            seen.append(ev)
            if ev["id"] == rid and ev["event"] in events:
                return ev, seen

    def close(self) -> None:
        if self.proc.poll() is None:
            self.send("bye", "shutdown")
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture(scope="module")
def worker() -> Any:
    w = Worker()
    yield w
    w.close()


def _job(tmp: Path, name: str, **kw: Any) -> dict[str, Any]:
    args = dict(image=str(SAMPLE), output=str(tmp / name), n_shapes=10, n_expressions=6, top_k=3,
                sampler="ddim", steps=6, seed=1)  # fmt: skip
    args.update(kw)
    return args


def test_hello_reports_demo_and_versions(worker: Worker) -> None:
    worker.send("h1", "hello")
    hello, _ = worker.until("h1", ("hello",), timeout=60)
    assert hello["protocol"] == 1 and hello["demo"] is True
    assert hello["torch"] and hello["python"] and "cpu" in hello["devices"]


def test_reconstruction_with_progress(worker: Worker, tmp_path: Path) -> None:
    worker.send("r1", "reconstruct", **_job(tmp_path, "ä result.npz"))
    result, seen = worker.until("r1", ("result", "error", "cancelled"))
    assert result["event"] == "result", result
    assert Path(result["path"]).is_file()
    stages = {e["stage"] for e in seen if e["event"] == "progress"}
    assert stages == {
        "load",
        "detect",
        "encode",
        "sample_shapes",
        "rank",
        "sample_expressions",
        "decode",
        "fit",
        "texture",
        "write",
    }
    assert result["summary"]["demo"] is True


def test_busy_and_cancel_within_half_a_second(worker: Worker, tmp_path: Path) -> None:
    worker.send("long", "reconstruct", **_job(tmp_path, "long.npz", sampler="ddpm", steps=1000, n_shapes=100))
    while True:  # wait until sampling is under way
        ev = worker.next_event()
        if ev["event"] == "progress" and ev["stage"] == "sample_shapes" and ev["done"] >= 2:
            break
    worker.send("second", "reconstruct", **_job(tmp_path, "second.npz"))
    busy, _ = worker.until("second", ("error",))
    assert busy["code"] == "busy"
    t0 = time.monotonic()
    worker.send("c", "cancel", job="long")
    ended, _ = worker.until("long", ("cancelled", "result", "error"))
    assert ended["event"] == "cancelled"
    assert time.monotonic() - t0 < 0.5
    time.sleep(0.2)
    assert not any(p.name.startswith(("long", ".long")) for p in tmp_path.iterdir())


def test_thousand_malformed_lines_then_still_alive(worker: Worker) -> None:
    bad = [
        b"{",
        b"[]",
        b"42",
        b'{"id":"x"}',
        b'{"id":"x","op":"fly"}',
        b"\xff\xfe",
        b'{"id":"y","op":"reconstruct","args":{}}',
    ]
    for i in range(1000):
        worker.send_raw(bad[i % len(bad)])
    codes = [worker.next_event(60)["code"] for _ in range(1000)]
    assert codes == ["bad_request"] * 1000
    worker.send("h2", "hello")
    worker.until("h2", ("hello",), timeout=60)
    assert worker.proc.poll() is None


def test_killed_client_leaves_no_worker(tmp_path: Path) -> None:
    pid_file = tmp_path / "worker.pid"
    client = (
        "import subprocess, sys, time\n"
        f"p = subprocess.Popen({WORKER!r}, stdin=subprocess.PIPE, stdout=subprocess.PIPE)\n"
        f"open({str(pid_file)!r}, 'w').write(str(p.pid))\n"
        "time.sleep(600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", client])
    deadline = time.monotonic() + 60
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.1)
    worker_pid = int(pid_file.read_text())
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.kill(worker_pid, 0)
        except ProcessLookupError:
            return
        # reap it if it became our zombie (it is not our child, but be safe on odd init systems)
        if Path(f"/proc/{worker_pid}/stat").exists() and Path(f"/proc/{worker_pid}/stat").read_text().split()[2] == "Z":
            return
        time.sleep(0.2)
    os.kill(worker_pid, signal.SIGKILL)
    raise AssertionError("the worker outlived its killed client")


@pytest.mark.parametrize(
    "variable, value",
    [
        ("OFER_CPU_CONCURRENT_SAMPLERS", "maybe"),
        ("OFER_CPU_PRECISION", "bfloat"),
        ("OFER_ENCODER_PRECISION", "INT8"),
        ("OFER_CPU_ENCODER_LANES", "both"),
    ],
)
def test_a_misspelt_speed_switch_is_a_request_error_not_a_dead_worker(
    variable: str, value: str, tmp_path: Path
) -> None:
    """The opt-in speed switches are read from the worker's environment: a typo must not stop the worker before
    its handshake (the add-on would only see it die); each request says which variable and how to fix it."""
    worker = Worker({variable: value})
    try:
        worker.send("h", "hello")
        hello, _ = worker.until("h", ("hello",), timeout=60)
        assert hello["demo"] is True
        for rid in ("r1", "r2"):
            worker.send(rid, "reconstruct", **_job(tmp_path, f"{rid}.npz"))
            answer, _ = worker.until(rid, ("result", "error"))
            assert answer["event"] == "error" and answer["code"] == "bad_request", answer
            assert variable in answer["message"] and "restart the worker" in answer["fix"]
        assert not any(tmp_path.iterdir())
    finally:
        worker.close()
    assert worker.proc.returncode == 0
