"""The ``sequence`` request through the JSON Lines server (a scripted runner): arguments checked by the
protocol's table before any work, per-frame progress, cancel between frames, a clear refusal when the
runner has no sequence support."""

from __future__ import annotations

import threading
import time
from typing import Any

from inference_server.errors import CancelledError
from inference_server.protocol import SequenceArgs
from tests.inference_server.test_server import Collector, ScriptedRunner, _req, _server


class SequenceRunner(ScriptedRunner):
    def __init__(self, frames: int, step_s: float = 0.0) -> None:
        super().__init__()
        self.frames, self.frame_s = frames, step_s
        self.args: SequenceArgs | None = None
        self.frames_done = 0

    def sequence(self, args: SequenceArgs, progress: Any, should_cancel: Any) -> dict[str, Any]:
        self.args = args
        self.started.set()
        for i in range(self.frames):
            if should_cancel():
                raise CancelledError()
            progress("expressions", i + 1, self.frames, f"frame_{i}")
            self.frames_done += 1
            time.sleep(self.frame_s)
        return {"path": args.output, "summary": {"n_frames": self.frames}}


def _events(out: Collector, rid: str) -> list[dict[str, Any]]:
    return [e for e in out.lines if e["id"] == rid]


def test_sequence_runs_with_defaults_and_reports_each_frame() -> None:
    runner = SequenceRunner(frames=4)
    server, out = _server(runner)
    server.handle_line(_req("s", "sequence", source="clip.mp4", output="clip.npz", fps=12, preset="fast"))
    final = out.wait_for(lambda e: e["id"] == "s" and e["event"] == "result")
    assert final["summary"] == {"n_frames": 4}
    assert [e["done"] for e in _events(out, "s") if e["event"] == "progress"] == [1, 2, 3, 4]
    assert runner.args is not None
    assert (runner.args.fps, runner.args.resume, runner.args.n_expressions, runner.args.extra) == (
        12.0, "auto", 32, {"preset": "fast"},
    )  # fmt: skip


def test_bad_sequence_arguments_are_refused_before_work() -> None:
    runner = SequenceRunner(frames=2)
    server, out = _server(runner)
    cases: list[tuple[str, dict[str, Any]]] = [
        ("a", {"output": "x.npz"}),
        ("b", {"source": "c", "output": "x.npz", "fps": 0}),
        ("c", {"source": "c", "output": "x.npz", "top_k": 3}),
        ("d", {"source": "c", "output": "x.txt"}),
        ("e", {"source": "c", "output": "x.npz", "resume": "maybe"}),
        ("f", {"source": "c", "output": "x.npz", "keep_hypotheses": 1}),
    ]
    for rid, args in cases:
        server.handle_line(_req(rid, "sequence", **args))
        error = out.wait_for(lambda e, rid=rid: e["id"] == rid)
        assert error["event"] == "error" and error["code"] == "bad_request", error
    assert runner.args is None
    messages = {e["id"]: e["message"] for e in out.lines}
    assert "'source'" in messages["a"] and "'fps'" in messages["b"] and "unknown argument 'top_k'" in messages["c"]
    assert "a sequence request takes" in messages["c"] and "'resume'" in messages["e"]


def test_cancel_stops_between_frames() -> None:
    runner = SequenceRunner(frames=200, step_s=0.01)
    server, out = _server(runner)
    server.handle_line(_req("s", "sequence", source="clip", output="clip.npz"))
    assert runner.started.wait(5)
    out.wait_for(lambda e: e["id"] == "s" and e["event"] == "progress")
    server.handle_line(_req("c", "cancel", job="s"))
    assert out.wait_for(lambda e: e["id"] == "s" and e["event"] != "progress")["event"] == "cancelled"
    assert runner.frames_done < 200


def test_a_runner_without_sequences_says_so() -> None:
    server, out = _server(ScriptedRunner(steps=1, step_s=0))
    server.handle_line(_req("s", "sequence", source="clip", output="clip.npz"))
    error = out.wait_for(lambda e: e["id"] == "s")
    assert error["code"] == "bad_request" and "does not run sequence" in error["message"]
    assert threading.active_count() >= 1
