"""The protocol bounds everything while parsing; the server answers every line and never dies."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inference_server import presets, protocol
from inference_server.protocol import (
    RECONSTRUCT_ARGS,
    ArgSpec,
    ProtocolError,
    Request,
    encode_line,
    integer,
    parse_event,
    parse_reconstruct_args,
    parse_request,
)
from inference_server.server import EventWriter, Server, _Job

KILLERS = [
    (b'{"id":"a","op":"hello","args":' + b"[" * 1000 + b"]" * 1000 + b"}", "nested deeper"),
    (b'{"id":"a","op":"hello","args":' + b'{"k":' * 40 + b"1" + b"}" * 41, "nested deeper"),
    (b'{"id":"a","op":"hello","args":{"x":' + b"9" * 5000 + b"}}", "number literal"),
    (b'{"id":"a","op":"hello","args":{"x":1' + b"0" * 400 + b".5}}", "number literal"),
    (b'{"id":"\\ud800","op":"hello"}', "'id'"),
    (b'{"id":"a","op":"hello","args":{"x":"\\udc00"}}', "surrogate"),
    (b'{"id":"a","op":"hello","args":{"\\ud800":1}}', "surrogate"),
    (b'{"id":"a","op":"hello","args":[' + b"0," * 100_001 + b"0]}", "values"),
]


@pytest.mark.parametrize(("line", "words"), KILLERS)
def test_lines_that_used_to_kill_the_worker_are_protocol_errors(line: bytes, words: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_request(line)
    assert words in str(info.value) and info.value.code == "bad_request"


def _reconstruct(**args: Any) -> Request:
    return Request("r", "reconstruct", {"image": "a.jpg", "output": "r.npz", **args})


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ({"eta": 1.5}, "'eta' must be a number from 0 to 1"),
        ({"eta": "high"}, "'eta'"),
        ({"expression_order": "random"}, "'expression_order' must be one of best_fit, typical, diverse, sampled"),
        ({"preset": ["fast"]}, "'preset' must be one of fast, fidelity"),
        ({"image": "a\x00.jpg"}, "'image' holds a NUL byte"),
        ({"output": "r\x00.npz"}, "'output' holds a NUL byte"),
        ({"output": "x" * 252 + ".npz"}, "longer than 255 bytes"),
        ({"output": "x" * 230 + ".npz"}, "room is kept for the temporary name"),
        ({"output": "/proc/self/r.npz"}, "kernel file system"),
        ({"output": "/sys/kernel/r.npz"}, "kernel file system"),
        ({"image": "/dev/zero"}, "kernel file system"),
        ({"output": "/" + "d/" * 2100 + "r.npz"}, "longer than 4096 bytes"),
        ({"output": "r.png"}, "ending in .npz"),
        ({"seed": 2**64}, "'seed' must be an integer"),
        ({"jaw_scale": 10**300}, "'jaw_scale'"),
        ({"wings": 2}, "unknown argument 'wings'"),
    ],
)
def test_every_argument_is_validated_before_any_work(args: dict[str, Any], words: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_reconstruct_args(_reconstruct(**args))
    assert words in str(info.value) and info.value.request_id == "r"


def test_an_output_in_a_folder_nobody_can_write_is_refused(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "file").write_text("x")
    with pytest.raises(ProtocolError, match="not a folder you can write to"):
        parse_reconstruct_args(_reconstruct(output=str(locked / "file" / "sub" / "r.npz")))
    ok = parse_reconstruct_args(_reconstruct(output=str(tmp_path / "new" / "deeper" / "r.npz")))
    assert ok.output.endswith("r.npz") and not (tmp_path / "new").exists()  # checked, nothing created


def test_extras_land_in_extra_and_enums_come_from_their_definitions(monkeypatch: pytest.MonkeyPatch) -> None:
    parsed = parse_reconstruct_args(_reconstruct(eta=0.25, expression_order="diverse", preset="fast"))
    assert parsed.extra == {"eta": 0.25, "expression_order": "diverse", "preset": "fast"}
    monkeypatch.setitem(presets.PRESETS, "draft", presets.Preset("draft", "ddim", 5, 0.0, "test"))
    assert parse_reconstruct_args(_reconstruct(preset="draft")).extra["preset"] == "draft"


def test_a_new_argument_is_one_table_row(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(RECONSTRUCT_ARGS, "face", ArgSpec(integer(0, 1000), extra=True))
    assert parse_reconstruct_args(_reconstruct(face=2)).extra["face"] == 2
    with pytest.raises(ProtocolError, match="'face' must be an integer from 0 to 1000"):
        parse_reconstruct_args(_reconstruct(face=-1))


def test_the_writer_cannot_fail_on_a_string_it_received() -> None:
    line = encode_line({"id": "a\ud800b", "event": "error", "code": "bad_request", "message": "\udfff", "fix": ""})
    assert line.endswith(b"\n") and line.decode("ascii")
    assert json.loads(line)["id"] == "a\ud800b"


def _server() -> tuple[Server, io.BytesIO]:
    class Runner:
        def hello_info(self) -> dict[str, Any]:
            return {"demo": True}

        def reconstruct(self, args, progress, should_cancel) -> dict[str, Any]:
            return {"path": args.output, "summary": {"bad": float("nan")}}  # a bug: NaN in an event

    out = io.BytesIO()
    return Server(Runner(), EventWriter(out)), out


def test_a_bug_in_an_event_is_still_one_answer_and_the_server_goes_on() -> None:
    server, out = _server()
    server._run_job(_Job("j"), server._job_work(_reconstruct()))
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(e["id"], e["event"], e.get("code")) for e in events] == [("j", "error", "internal")]
    assert "invalid event" in events[0]["message"]  # the NaN, not some other failure on the way


def test_the_server_answers_every_killer_line_once(tmp_path: Path) -> None:
    server, out = _server()
    lines = [line for line, _ in KILLERS] + [b"\xff\xfe", b"", b"[]", b'{"id":"c","op":"cancel","args":{"job":"x"}}']
    for line in lines:
        assert server.handle_line(line) is True
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(events) == len(lines)
    assert {e["code"] for e in events} == {"bad_request"}


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.binary(max_size=200), st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass"))))
def test_generated_lines_raise_only_protocol_error(line: bytes) -> None:
    try:
        request = parse_request(line)
    except ProtocolError:
        return
    if request.op == "reconstruct":
        with contextlib.suppress(ProtocolError):
            parse_reconstruct_args(request)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(args=st.dictionaries(st.sampled_from([*RECONSTRUCT_ARGS, "x"]), _JSON, max_size=6))
def test_generated_arguments_raise_only_protocol_error(args: dict[str, Any]) -> None:
    line = json.dumps({"id": "g", "op": "reconstruct", "args": args}).encode("utf-8", "surrogatepass")
    try:
        parse_reconstruct_args(parse_request(line))
    except ProtocolError as exc:
        assert exc.request_id in ("g", None)


def test_events_are_bounded_too() -> None:
    with pytest.raises(ProtocolError) as info:
        parse_event(b'{"id":"a","event":"progress","x":' + b"[" * 100 + b"]" * 100 + b"}")
    assert info.value.code == "internal"
    assert protocol.ERROR_CODES.count("io_error") == 1
