"""Fuzz a real ``ofer-worker serve`` with generated JSON Lines and count what happens (docs/protocol.md).

Lines come from `hypothesis` strategies: valid requests with fields perturbed (wrong types, huge and
non-finite numbers, odd Unicode, lone surrogates, NUL bytes, special paths), random bytes, deep nesting,
huge number literals, over-long lines, plus a fixed corpus of the lines that used to kill the worker.
Requests are sent in lock step (one line, then its answer), so every line must get exactly one final
answer (``hello``, ``error``, ``result`` or ``cancelled``) before the next is sent.

Counted: lines sent, answers, answer codes, ``internal`` answers, unanswered lines, lines on stdout that
are not protocol events, worker deaths, and the worker's resident memory before and after.

Run: ``nice -n 19 .venv/bin/python benchmarks/fuzz_worker.py --lines 10000`` (a few minutes on 2 cores).
The test suite runs the same harness with fewer lines (tests/benchmarks/test_fuzz_worker.py).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]
FINAL_EVENTS = ("hello", "error", "result", "cancelled")
KNOWN_EVENTS = (*FINAL_EVENTS, "progress")

# --------------------------------------------------------------------------------------------------
# The fixed corpus: each of these ended or confused the worker before (issue 13).

_DEEP = b"[" * 1000 + b"]" * 1000
CORPUS: tuple[bytes, ...] = (
    b'{"id":"deep","op":"reconstruct","args":{"box":' + _DEEP + b"}}",
    b'{"id":"deep2","op":"hello","args":' + b'{"a":' * 900 + b"1" + b"}" * 900 + b"}",
    b'{"id":"' + b"[" * 100_000,
    b'{"id":"bigint","op":"reconstruct","args":{"seed":' + b"9" * 5000 + b"}}",
    b'{"id":"bigint2","op":"hello","args":{"x":-' + b"1" * 4301 + b"}}",
    b'{"id":"bigfloat","op":"reconstruct","args":{"jaw_scale":1' + b"0" * 400 + b".5}}",
    b'{"id":"\\ud800","op":"hello"}',
    b'{"id":"sur","op":"hello","args":{"\\udfff":"\\ud800"}}',
    b'{"id":"eta","op":"reconstruct","args":{"image":"a.jpg","output":"r.npz","eta":1.5}}',
    b'{"id":"eta2","op":"reconstruct","args":{"image":"a.jpg","output":"r.npz","eta":"high"}}',
    b'{"id":"order","op":"reconstruct","args":{"image":"a.jpg","output":"r.npz","expression_order":"random"}}',
    b'{"id":"nul","op":"reconstruct","args":{"image":"a\\u0000.jpg","output":"r.npz"}}',
    b'{"id":"nul2","op":"reconstruct","args":{"image":"a.jpg","output":"r\\u0000.npz"}}',
    b'{"id":"long","op":"reconstruct","args":{"image":"a.jpg","output":"' + b"x" * 252 + b'.npz"}}',
    b'{"id":"proc","op":"reconstruct","args":{"image":"a.jpg","output":"/proc/self/result.npz"}}',
    b'{"id":"sys","op":"reconstruct","args":{"image":"a.jpg","output":"/sys/kernel/result.npz"}}',
    b'{"id":"dev","op":"reconstruct","args":{"image":"/dev/zero","output":"r.npz"}}',
    b'{"id":"nan","op":"reconstruct","args":{"image":"a.jpg","output":"r.npz","box":[0,0,NaN,1]}}',
    b'{"id":"inf","op":"reconstruct","args":{"image":"a.jpg","output":"r.npz","jaw_scale":1e999}}',
    b'{"id":"preset","op":"reconstruct","args":{"image":"a.jpg","output":"r.npz","preset":["fast"]}}',
    b'{"id":"cancel","op":"cancel","args":{"job":' + b"[" * 40 + b"]" * 40 + b"}}",
    b'{"id":"seq-dev","op":"sequence","args":{"source":"/dev/zero","output":"s.npz"}}',
    b'{"id":"seq-root","op":"sequence","args":{"source":"/","output":"s.npz"}}',
    b'{"id":"seq-nan","op":"sequence","args":{"source":"clip.mp4","output":"s.npz","fps":NaN}}',
    b'{"id":"seq-frames","op":"sequence","args":{"source":"clip.mp4","output":"s.npz","max_frames":100000}}',
    b"\xff\xfe\x00\x00",
    b"x" * (1 << 20) + b"y" * 1000,
    b"",
    b"   ",
    b"null",
)

# --------------------------------------------------------------------------------------------------
# Generated lines

_VALID_ARGS: dict[str, Any] = {
    "image": "missing-photo.jpg", "output": "out/r.npz", "n_shapes": 4, "n_expressions": 3, "top_k": 2,
    "sampler": "ddim", "steps": 2, "seed": 1, "jaw_scale": 0.5, "device": "cpu", "box": [1, 2, 30, 40],
    "points": [[1, 2], [3, 4], [5, 6], [7, 8], [9, 10]], "eta": 0.5, "expression_order": "diverse", "preset": "fast",
}  # fmt: skip

_VALID_SEQUENCE_ARGS: dict[str, Any] = {
    "source": "missing-clip.mp4", "output": "out/s.npz", "fps": 12, "n_shapes": 4, "n_expressions": 3,
    "identity_frames": 2, "sampler": "ddim", "steps": 2, "seed": 1, "smoothing": 1.0, "smoothness": 0.1,
    "resume": "auto", "keep_hypotheses": True, "device": "cpu", "preset": "fast",
}  # fmt: skip

_odd_text = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["\ud800", "a\udfffb", "\x00", "a\x00b", "\u202e", "\ufeff", "../../etc/passwd", "/proc/1/mem",
                     "/sys/x.npz", "/dev/null", "C:\\x.npz", "~/x.npz", "x" * 300 + ".npz", "é" * 130 + ".npz"]),
)  # fmt: skip
_numbers = st.one_of(
    st.integers(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True), st.booleans()
)
_leaf = st.one_of(st.none(), _numbers, _odd_text)
_wild = st.recursive(_leaf, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_odd_text, inner, max_size=4),
                     max_leaves=12)  # fmt: skip
_RAW_LITERALS = ["NaN", "-Infinity", "1e999", "-0", "9" * 5000, "0." + "1" * 5000, "[" * 200 + "]" * 200, '"\\ud800"']


def _to_line(obj: Any, ascii_only: bool) -> bytes:
    text = json.dumps(obj, ensure_ascii=ascii_only, allow_nan=True)
    return text.encode("utf-8", "surrogatepass")  # a lone surrogate becomes bytes that are not UTF-8


@st.composite
def perturbed_request(draw: st.DrawFn) -> bytes:
    ops = ["reconstruct", "reconstruct", "reconstruct", "sequence", "hello", "cancel", "dance", ""]
    op = draw(st.sampled_from(ops))
    valid = _VALID_SEQUENCE_ARGS if op == "sequence" else _VALID_ARGS
    args = dict(valid)
    for name in draw(st.lists(st.sampled_from([*valid, "unknown_arg"]), max_size=3)):
        if draw(st.booleans()) and name in args:
            del args[name]
        else:
            args[name] = draw(_wild)
    obj: dict[str, Any] = {"id": draw(st.one_of(st.text(min_size=1, max_size=8), _wild)), "op": op, "args": args}
    if draw(st.integers(0, 9)) == 0:
        obj["args"] = draw(_wild)
    line = _to_line(obj, draw(st.booleans()))
    if draw(st.integers(0, 4)) == 0:  # splice a raw literal JSON libraries would not write
        literal = draw(st.sampled_from(_RAW_LITERALS)).encode()
        line = line.replace(b'"seed": 1', b'"seed": ' + literal, 1).replace(b'"steps": 2', b'"steps": ' + literal, 1)
    return line


raw_bytes = st.binary(max_size=300)
deep_nesting = st.integers(33, 5000).map(lambda n: b'{"id":"d","op":"hello","args":' + b"[" * n + b"]" * n + b"}")
huge_numbers = st.integers(65, 6000).map(lambda n: b'{"id":"n","op":"hello","args":{"x":' + b"7" * n + b"}}")
LINE = st.one_of(perturbed_request(), perturbed_request(), raw_bytes, deep_nesting, huge_numbers)


def sanitise(line: bytes) -> bytes:
    """One protocol line: no newline inside, never a valid ``shutdown`` (that would end the run, by design)."""
    line = line.replace(b"\n", b" ")
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError):
        return line
    if isinstance(obj, dict) and obj.get("op") == "shutdown":
        return line.replace(b"shutdown", b"shutdowm")
    return line


# --------------------------------------------------------------------------------------------------
# The worker under test


@dataclass
class Tally:
    lines: int = 0
    answers: int = 0
    unanswered: int = 0
    extra_answers: int = 0
    not_protocol: int = 0
    deaths: int = 0
    codes: collections.Counter[str] = field(default_factory=collections.Counter)
    internal_examples: list[str] = field(default_factory=list)
    rss_start_mb: float = 0.0
    rss_end_mb: float = 0.0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "codes": dict(self.codes), "rss_growth_mb": self.rss_end_mb - self.rss_start_mb}


class ServeProcess:
    """One ``ofer-worker serve`` on DEMO assets, driven in lock step."""

    def __init__(self, cwd: Path, answer_timeout: float = 60.0) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen(
            [sys.executable, "-u", "-m", "inference_server", "serve", "--device", "cpu", "--threads", "1"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd, env=env,
        )  # fmt: skip
        self.timeout = answer_timeout
        self.events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.stderr_tail: collections.deque[bytes] = collections.deque(maxlen=200)
        self.tally = Tally()
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            try:
                event = json.loads(raw)
                ok = isinstance(event, dict) and event.get("event") in KNOWN_EVENTS and isinstance(event.get("id"), str)
            except ValueError:
                ok = False
            if not ok:
                self.tally.not_protocol += 1
                continue
            self.events.put(event)
        self.events.put(None)  # stdout closed: the worker is gone

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            self.stderr_tail.append(raw)

    def rss_mb(self) -> float:
        try:
            for row in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if row.startswith("VmRSS:"):
                    return int(row.split()[1]) / 1024
        except OSError:
            pass
        return 0.0

    def ask(self, line: bytes) -> dict[str, Any] | None:
        """Send one line; the final answer to it (None: no answer in time, or the worker died)."""
        assert self.proc.stdin is not None
        self.tally.lines += 1
        try:
            self.proc.stdin.write(line + b"\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            self.tally.deaths += 1
            return None
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                event = self.events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.tally.unanswered += 1
                return None
            if event is None:
                self.tally.deaths += 1
                self.events.put(None)
                return None
            if event["event"] in FINAL_EVENTS:
                self.tally.answers += 1
                code = event.get("code", event["event"])
                self.tally.codes[code] += 1
                if code == "internal" and len(self.tally.internal_examples) < 5:
                    self.tally.internal_examples.append(line[:200].decode("utf-8", "replace"))
                return event

    def sync(self) -> bool:
        """A hello that must be answered next: an extra answer to an earlier line would arrive first."""
        answer = self.ask(b'{"id":"sync","op":"hello"}')
        self.tally.lines -= 1  # the sync line is not part of the count
        if answer is None:
            return False
        self.tally.answers -= 1
        self.tally.codes["hello"] -= 1
        if answer.get("id") != "sync":
            self.tally.extra_answers += 1
            return self.sync()
        return True

    def close(self) -> int | None:
        if self.proc.poll() is None:
            self.tally.rss_end_mb = self.rss_mb()
            try:
                self.proc.stdin.write(b'{"id":"bye","op":"shutdown"}\n')  # type: ignore[union-attr]
                self.proc.stdin.flush()  # type: ignore[union-attr]
                self.proc.wait(30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def run_fuzz(worker: ServeProcess, n_lines: int, batch: int = 50, derandomize: bool = True) -> Tally:
    """The corpus, then ``n_lines`` generated lines in hypothesis-drawn batches; returns the tally."""
    t0 = time.monotonic()
    worker.sync()
    worker.tally.rss_start_mb = worker.rss_mb()
    for line in CORPUS:
        worker.ask(sanitise(line))
    worker.sync()
    n_batches = max(1, n_lines // batch)

    @settings(max_examples=n_batches, deadline=None, database=None, derandomize=derandomize,
              suppress_health_check=list(HealthCheck), phases=[__import__("hypothesis").Phase.generate])  # fmt: skip
    @given(st.lists(LINE, min_size=batch, max_size=batch))
    def one_batch(lines: list[bytes]) -> None:
        if worker.tally.deaths:
            return
        for line in lines:
            worker.ask(sanitise(line))

    one_batch()
    worker.sync()
    worker.tally.seconds = time.monotonic() - t0
    return worker.tally


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=10_000, help="generated lines (the corpus comes on top)")
    parser.add_argument("--json", type=Path, help="also write the counts as JSON here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ofer-fuzz-") as tmp:
        worker = ServeProcess(Path(tmp))
        try:
            tally = run_fuzz(worker, args.lines, derandomize=False)
        finally:
            code = worker.close()
    report = tally.as_dict() | {"exit_code": code}
    for key, value in report.items():
        print(f"{key:>18}: {value}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    ok = (
        tally.deaths == 0 and tally.unanswered == 0 and tally.extra_answers == 0 and tally.not_protocol == 0
        and tally.codes["internal"] == 0 and tally.answers == tally.lines and code == 0
        and report["rss_growth_mb"] < 100
    )  # fmt: skip
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
