"""The JSON Lines server with a scripted job runner: busy, cancel, malformed lines, shutdown, EOF."""

from __future__ import annotations

import io
import json
import os
import threading
import time
from typing import Any

from inference_server.errors import NoFaceError
from inference_server.protocol import ReconstructArgs
from inference_server.server import EventWriter, Server


class ScriptedRunner:
    def __init__(self, steps: int = 200, step_s: float = 0.01, fail: Exception | None = None) -> None:
        self.steps, self.step_s, self.fail = steps, step_s, fail
        self.started = threading.Event()

    def hello_info(self) -> dict[str, Any]:
        return {"device": "cpu", "demo": True}

    def reconstruct(self, args: ReconstructArgs, progress, should_cancel) -> dict[str, Any]:
        self.started.set()
        if self.fail:
            raise self.fail
        for i in range(self.steps):
            progress("sample_shapes", i + 1, self.steps, "")
            time.sleep(self.step_s)
        return {"path": args.output, "summary": {"demo": True}}


class Collector(io.RawIOBase):
    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []
        self._buffer = b""
        self.cond = threading.Condition()

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        with self.cond:
            self._buffer += bytes(data)
            while b"\n" in self._buffer:
                line, self._buffer = self._buffer.split(b"\n", 1)
                self.lines.append(json.loads(line))
            self.cond.notify_all()
        return len(data)

    def wait_for(self, pred, timeout: float = 5.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for line in self.lines:
                    if pred(line):
                        return line
                left = deadline - time.monotonic()
                assert left > 0, f"timed out; got {self.lines[-5:]}"
                self.cond.wait(left)


def _server(runner: ScriptedRunner) -> tuple[Server, Collector]:
    out = Collector()
    return Server(runner, EventWriter(out)), out  # type: ignore[arg-type]


def _req(rid: str, op: str, **args: Any) -> bytes:
    return json.dumps({"id": rid, "op": op, "args": args}).encode() + b"\n"


def test_hello_and_result() -> None:
    server, out = _server(ScriptedRunner(steps=3, step_s=0))
    server.handle_line(_req("h", "hello"))
    hello = out.wait_for(lambda e: e["id"] == "h")
    assert hello["event"] == "hello" and hello["protocol"] == 1 and hello["demo"] is True
    server.handle_line(_req("r", "reconstruct", image="a.jpg", output="o.npz"))
    res = out.wait_for(lambda e: e["id"] == "r" and e["event"] == "result")
    assert res["path"] == "o.npz"
    assert [e["done"] for e in out.lines if e["event"] == "progress"] == [1, 2, 3]


def test_busy_then_cancel_quickly() -> None:
    runner = ScriptedRunner(steps=10_000, step_s=0.01)
    server, out = _server(runner)
    server.handle_line(_req("a", "reconstruct", image="a.jpg", output="o.npz"))
    runner.started.wait(2)
    server.handle_line(_req("b", "reconstruct", image="a.jpg", output="o.npz"))
    assert out.wait_for(lambda e: e["id"] == "b")["code"] == "busy"
    t0 = time.monotonic()
    server.handle_line(_req("c", "cancel", job="a"))
    assert out.wait_for(lambda e: e["id"] == "a" and e["event"] != "progress")["event"] == "cancelled"
    assert time.monotonic() - t0 < 0.5
    server.handle_line(_req("d", "reconstruct", image="a.jpg", output="o.npz"))  # free again
    server.handle_line(_req("e", "cancel", job="d"))
    out.wait_for(lambda e: e["id"] == "d" and e["event"] == "cancelled")


def test_worker_errors_become_typed_events() -> None:
    server, out = _server(ScriptedRunner(fail=NoFaceError("no face found", "Mark the face.")))
    server.handle_line(_req("r", "reconstruct", image="a.jpg", output="o.npz"))
    err = out.wait_for(lambda e: e["id"] == "r")
    assert (err["code"], err["message"], err["fix"]) == ("no_face", "no face found", "Mark the face.")
    server2, out2 = _server(ScriptedRunner(fail=RuntimeError("boom")))
    server2.handle_line(_req("r", "reconstruct", image="a.jpg", output="o.npz"))
    assert out2.wait_for(lambda e: e["id"] == "r")["code"] == "internal"


def test_malformed_lines_answered_and_server_survives() -> None:
    server, out = _server(ScriptedRunner(steps=1, step_s=0))
    garbage = [
        b"\n",
        b"{",
        b"[]",
        b"null\n",
        b'{"id":"x","op":"nope"}',
        b"\xff\xfe",
        b'{"id":"y","op":"reconstruct"}',
    ]
    for line in garbage * 20:
        assert server.handle_line(line) is True
    errors = [e for e in out.lines if e["event"] == "error"]
    assert len(errors) == len(garbage) * 20
    assert all(e["code"] == "bad_request" and e["message"] and e["fix"] for e in errors)
    server.handle_line(_req("h", "hello"))
    out.wait_for(lambda e: e["id"] == "h")


def test_serve_stops_on_shutdown_and_on_eof() -> None:
    server, out = _server(ScriptedRunner(steps=10_000, step_s=0.01))
    stdin = io.BytesIO(_req("r", "reconstruct", image="a.jpg", output="o.npz") + _req("s", "shutdown"))
    assert server.serve(stdin) == 0
    out.wait_for(lambda e: e["id"] == "r" and e["event"] == "cancelled")
    server2, _ = _server(ScriptedRunner())
    assert server2.serve(io.BytesIO(b"")) == 0


def test_overlong_line_is_refused(monkeypatch) -> None:
    from inference_server import protocol

    monkeypatch.setattr(protocol, "MAX_LINE_BYTES", 1000)
    server, out = _server(ScriptedRunner(steps=1, step_s=0))
    stdin = io.BytesIO(b"x" * 5000 + b"\n" + _req("h", "hello"))
    server.serve(stdin)
    assert out.lines[0]["code"] == "bad_request"
    assert out.lines[1]["event"] == "hello"
    assert os.getpid() > 0


def test_the_next_request_sent_on_reading_the_result_is_accepted() -> None:
    """A client may answer "result" at once; the finished job must not still count as running."""
    server, out = _server(ScriptedRunner(steps=2, step_s=0))
    original_write = out.write

    def write_and_react(data) -> int:
        written = original_write(data)
        if any(e["id"] == "r1" and e["event"] == "result" for e in out.lines) and not any(
            e["id"] == "r2" for e in out.lines
        ):
            server.handle_line(_req("r2", "reconstruct", image="a.jpg", output="o2.npz"))
        return written

    out.write = write_and_react  # type: ignore[method-assign]
    server.handle_line(_req("r1", "reconstruct", image="a.jpg", output="o1.npz"))
    second = out.wait_for(lambda e: e["id"] == "r2" and e["event"] != "progress")
    assert second["event"] == "result", second
