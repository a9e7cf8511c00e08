"""Protocol codec: requests, events and argument validation, as both processes use them."""

from __future__ import annotations

import json

import pytest

from inference_server import protocol
from inference_server.protocol import (
    ProtocolError,
    Request,
    parse_event,
    parse_reconstruct_args,
    parse_request,
)


def test_request_round_trip() -> None:
    req = Request("42", "reconstruct", {"image": "/tmp/ä b.jpg", "output": "/tmp/r.npz"})
    line = req.to_line()
    assert "\n" not in line
    assert parse_request(line) == req
    assert parse_request(line.encode("utf-8") + b"\n") == req


@pytest.mark.parametrize(
    "line",
    [
        "",
        "   ",
        "not json",
        "[1, 2]",
        '"string"',
        '{"op": "hello"}',
        '{"id": 5, "op": "hello"}',
        '{"id": "", "op": "hello"}',
        '{"id": "1", "op": "explode"}',
        '{"id": "1", "op": "hello", "args": [1]}',
        '{"id": "1", "op": "hello", "args": NaN}',
        "{" * 100000,
        b"\xff\xfe\x00",
        "x" * (protocol.MAX_LINE_BYTES + 1),
    ],
)
def test_bad_requests_raise_protocol_error(line: str | bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_request(line)
    assert info.value.code == "bad_request"


def test_bad_request_keeps_the_id_when_readable() -> None:
    with pytest.raises(ProtocolError) as info:
        parse_request('{"id": "abc", "op": "dance"}')
    assert info.value.request_id == "abc"


def _reconstruct(**args: object) -> Request:
    return Request("r1", "reconstruct", {"image": "a.jpg", "output": "r.npz", **args})


def test_reconstruct_defaults() -> None:
    parsed = parse_reconstruct_args(_reconstruct())
    assert (parsed.n_shapes, parsed.n_expressions, parsed.top_k) == (100, 100, 10)
    assert parsed.sampler == "ddpm" and parsed.jaw_scale == 0.5 and parsed.device == "auto"
    assert parsed.box is None and parsed.points is None


def test_reconstruct_extra_photos() -> None:
    assert parse_reconstruct_args(_reconstruct()).photos == ()
    parsed = parse_reconstruct_args(_reconstruct(photos=["b.jpg", "side view.png"], n_shapes=3333))
    assert parsed.photos == ("b.jpg", "side view.png") and parsed.image == "a.jpg"


def test_reconstruct_box_and_points() -> None:
    pts = [[10, 20], [30, 20], [20, 30], [12, 40], [28, 40.5]]
    parsed = parse_reconstruct_args(_reconstruct(box=[1, 2, 30.5, 40], points=pts))
    assert parsed.box == (1.0, 2.0, 30.5, 40.0)
    assert parsed.points is not None and parsed.points[4] == (28.0, 40.5)


@pytest.mark.parametrize(
    ("args", "word"),
    [
        ({"image": ""}, "image"),
        ({"output": 3}, "output"),
        ({"box": [0, 0, 10]}, "box"),
        ({"box": [10, 0, 5, 5]}, "x1 > x0"),
        ({"points": [[0, 0]] * 4}, "five"),
        ({"n_shapes": 0}, "n_shapes"),
        ({"n_shapes": True}, "n_shapes"),
        ({"n_shapes": 5, "top_k": 6}, "top_k"),
        ({"sampler": "euler"}, "sampler"),
        ({"steps": 0}, "steps"),
        ({"seed": -1}, "seed"),
        ({"jaw_scale": "big"}, "jaw_scale"),
        ({"device": "tpu"}, "device"),
        ({"photos": "b.jpg"}, "list of photo paths"),
        ({"photos": ["b.jpg", ""]}, "'photos[1]'"),
        ({"photos": ["b.jpg", 7]}, "'photos[1]'"),
        ({"photos": ["b.jpg", "c\x00.jpg"]}, "'photos[1]' holds a NUL"),
        ({"photos": ["/proc/self/environ"]}, "'photos[0]' is on a kernel file system"),
        ({"photos": [f"{i}.jpg" for i in range(16)]}, "at most 15 extra photos"),
        ({"photos": ["b.jpg", "c.jpg", "b.jpg"]}, "'photos[2]' repeats 'b.jpg'"),
        ({"photos": ["a.jpg"]}, "repeats the main 'image'"),
        ({"photos": ["b.jpg"], "n_shapes": 5001}, "at most 5000"),
        ({"fit": "no"}, "'fit'"),
        ({"fit": False, "refine_expression": True}, "'refine_expression' refines an expression"),
    ],
)
def test_reconstruct_argument_errors_name_the_argument(args: dict[str, object], word: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_reconstruct_args(_reconstruct(**args))
    assert word in str(info.value)
    assert info.value.request_id == "r1"


def test_events() -> None:
    ev = protocol.progress_event("r1", "sample_shapes", 3, 50, "DDPM")
    assert parse_event(protocol.encode(ev)) == ev
    err = protocol.error_event("r1", "no_face", "No face found", "Mark the face")
    assert json.loads(protocol.encode(err))["fix"] == "Mark the face"
    with pytest.raises(ValueError):
        protocol.error_event("r1", "oops", "m", "f")
    with pytest.raises(ProtocolError):
        parse_event('{"id": "1", "event": "party"}')
    with pytest.raises(ValueError):
        protocol.encode({"x": float("nan")})


def test_nan_in_args_is_refused_with_the_request_id() -> None:
    with pytest.raises(ProtocolError) as info:
        parse_request('{"id": "n1", "op": "reconstruct", "args": {"box": [0, 0, Infinity, 1]}}')
    assert info.value.request_id == "n1" and "NaN" in str(info.value)


@pytest.mark.parametrize("bad", [-1, 1.5, True, "0"])
def test_face_is_a_face_number_from_zero(bad: object) -> None:
    assert parse_reconstruct_args(_reconstruct()).face is None  # the face nearest the centre
    assert parse_reconstruct_args(_reconstruct(face=2)).face == 2
    with pytest.raises(ProtocolError, match="'face'"):
        parse_reconstruct_args(_reconstruct(face=bad))


def test_fit_false_asks_for_no_fit() -> None:
    assert "fit" not in parse_reconstruct_args(_reconstruct()).extra
    assert parse_reconstruct_args(_reconstruct(fit=False)).extra["fit"] is False
    assert parse_reconstruct_args(_reconstruct(fit=True, refine_expression=True)).extra["refine_expression"] is True
