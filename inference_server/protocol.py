"""JSON Lines protocol between the Blender add-on and the worker (contract version 1).

Standard library only: the add-on and the worker import this same module. One UTF-8 JSON object per
line; requests are ``{"id", "op", "args"}``, events are ``{"id", "event", ...}``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Final

PROTOCOL_VERSION: Final = 1

OPS: Final = ("hello", "reconstruct", "cancel", "shutdown")
EVENTS: Final = ("hello", "progress", "result", "error", "cancelled")
STAGES: Final = (
    "load",
    "detect",
    "encode",
    "sample_shapes",
    "rank",
    "sample_expressions",
    "decode",
    "write",
)
ERROR_CODES: Final = (
    "bad_request",
    "bad_image",
    "no_face",
    "missing_asset",
    "bad_checkpoint",
    "out_of_memory",
    "busy",
    "internal",
)
SAMPLERS: Final = ("ddpm", "ddim", "dpmsolver")
DEVICES: Final = ("auto", "cuda", "cpu")

#: A line longer than this is refused before JSON parsing (a megabyte is far beyond any real request).
MAX_LINE_BYTES: Final = 1 << 20


class ProtocolError(ValueError):
    """A line that is not a valid request or event. ``code`` is always ``bad_request`` for requests."""

    def __init__(self, message: str, request_id: str | None = None, code: str = "bad_request") -> None:
        super().__init__(message)
        self.request_id = request_id
        self.code = code


@dataclass(frozen=True)
class Request:
    id: str
    op: str
    args: dict[str, Any] = field(default_factory=dict)

    def to_line(self) -> str:
        return encode({"id": self.id, "op": self.op, "args": self.args})


@dataclass(frozen=True)
class ReconstructArgs:
    """Validated arguments of a ``reconstruct`` request, defaults filled in."""

    image: str
    output: str
    box: tuple[float, float, float, float] | None = None
    points: tuple[tuple[float, float], ...] | None = None
    face: int | None = None  # which detected face (0: nearest the centre, the default)
    n_shapes: int = 100
    n_expressions: int = 100
    top_k: int = 10
    sampler: str = "ddpm"
    steps: int | None = None
    seed: int = 0
    jaw_scale: float = 0.5
    device: str = "auto"
    extra: dict[str, Any] = field(default_factory=dict)


def encode(message: dict[str, Any]) -> str:
    """One protocol line (no newline). NaN/Infinity are refused: they are not JSON."""
    return json.dumps(message, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _parse_object(line: str | bytes) -> dict[str, Any]:
    if isinstance(line, bytes):
        if len(line) > MAX_LINE_BYTES:
            raise ProtocolError(f"line of {len(line)} bytes is longer than the {MAX_LINE_BYTES}-byte limit")
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"line is not UTF-8 ({exc.reason})") from None
    if len(line) > MAX_LINE_BYTES:
        raise ProtocolError(f"line is longer than the {MAX_LINE_BYTES}-byte limit")
    text = line.strip()
    if not text:
        raise ProtocolError("empty line")
    try:
        obj = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ProtocolError(f"not valid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"expected a JSON object, got {type(obj).__name__}")
    return obj


def _has_non_finite(value: Any) -> bool:
    """NaN / Infinity parse (Python's json accepts them) but are not JSON: refuse them with the request id."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_non_finite(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_non_finite(v) for v in value)
    return False


def parse_request(line: str | bytes) -> Request:
    """Parse one request line; raise ProtocolError (with the id when one could be read)."""
    obj = _parse_object(line)
    raw_id = obj.get("id")
    request_id = raw_id if isinstance(raw_id, str) and raw_id else None
    if request_id is None:
        raise ProtocolError("'id' must be a non-empty string")
    op = obj.get("op")
    if op not in OPS:
        raise ProtocolError(f"unknown op {op!r}; known ops: {', '.join(OPS)}", request_id)
    args = obj.get("args", {})
    if not isinstance(args, dict):
        raise ProtocolError("'args' must be a JSON object", request_id)
    if _has_non_finite(args):
        raise ProtocolError("NaN and Infinity are not JSON numbers; send finite values", request_id)
    return Request(request_id, str(op), args)


def parse_event(line: str | bytes) -> dict[str, Any]:
    """Parse one event line from the worker; raise ProtocolError for anything else (garbage on stdout)."""
    obj = _parse_object(line)
    if obj.get("event") not in EVENTS:
        raise ProtocolError(f"unknown event {obj.get('event')!r}", code="internal")
    if not isinstance(obj.get("id"), str):
        raise ProtocolError("event without a string 'id'", code="internal")
    if _has_non_finite(obj):
        raise ProtocolError("event with NaN or Infinity", code="internal")
    return obj


def _number(args: dict[str, Any], key: str, request_id: str) -> float:
    value = args[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ProtocolError(f"'{key}' must be a finite number", request_id)
    return float(value)


def _integer(args: dict[str, Any], key: str, default: int, lo: int, hi: int, request_id: str) -> int:
    value = args.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ProtocolError(f"'{key}' must be an integer from {lo} to {hi}, got {value!r}", request_id)
    return value


def _choice(args: dict[str, Any], key: str, default: str, allowed: tuple[str, ...], request_id: str) -> str:
    value = args.get(key, default)
    if value not in allowed:
        raise ProtocolError(f"'{key}' must be one of {', '.join(allowed)}, got {value!r}", request_id)
    return str(value)


def parse_reconstruct_args(request: Request) -> ReconstructArgs:
    """Validate the arguments of a ``reconstruct`` request; the message says which argument is wrong."""
    args, rid = request.args, request.id
    for key in ("image", "output"):
        if not isinstance(args.get(key), str) or not args[key]:
            raise ProtocolError(f"'{key}' must be a non-empty path string", rid)
    box = None
    if args.get("box") is not None:
        raw = args["box"]
        if not isinstance(raw, list) or len(raw) != 4:
            raise ProtocolError("'box' must be [x0, y0, x1, y1] in pixels", rid)
        values = tuple(_number({"box": v}, "box", rid) for v in raw)
        if not (values[2] > values[0] and values[3] > values[1]):
            raise ProtocolError("'box' must have x1 > x0 and y1 > y0", rid)
        box = (values[0], values[1], values[2], values[3])
    points = None
    if args.get("points") is not None:
        raw = args["points"]
        if (
            not isinstance(raw, list)
            or len(raw) != 5
            or not all(isinstance(p, list) and len(p) == 2 for p in raw)
        ):
            raise ProtocolError(
                "'points' must be five [x, y] pixel pairs: left eye, right eye, nose tip, left and right mouth corner",
                rid,
            )
        points = tuple((_number({"p": p[0]}, "p", rid), _number({"p": p[1]}, "p", rid)) for p in raw)
    steps = None
    if args.get("steps") is not None:
        steps = _integer(args, "steps", 0, 1, 1000, rid)
    jaw_scale = 0.5 if args.get("jaw_scale") is None else _number(args, "jaw_scale", rid)
    if not 0.0 <= jaw_scale <= 2.0:
        raise ProtocolError("'jaw_scale' must be between 0 and 2", rid)
    known = {
        "image", "output", "box", "points", "n_shapes", "n_expressions", "top_k",
        "sampler", "steps", "seed", "jaw_scale", "device",
    }  # fmt: skip
    n_shapes = _integer(args, "n_shapes", 100, 1, 10000, rid)
    top_k = _integer(args, "top_k", 10, 1, 10000, rid)
    if top_k > n_shapes:
        raise ProtocolError(f"'top_k' ({top_k}) cannot exceed 'n_shapes' ({n_shapes})", rid)
    return ReconstructArgs(
        image=args["image"],
        output=args["output"],
        box=box,
        points=points,
        face=None if args.get("face") is None else _integer(args, "face", 0, 0, 1000, rid),
        n_shapes=n_shapes,
        n_expressions=_integer(args, "n_expressions", 100, 1, 10000, rid),
        top_k=top_k,
        sampler=_choice(args, "sampler", "ddpm", SAMPLERS, rid),
        steps=steps,
        seed=_integer(args, "seed", 0, 0, 2**63 - 1, rid),
        jaw_scale=jaw_scale,
        device=_choice(args, "device", "auto", DEVICES, rid),
        extra={k: v for k, v in args.items() if k not in known},
    )


def error_event(request_id: str, code: str, message: str, fix: str) -> dict[str, Any]:
    if code not in ERROR_CODES:
        raise ValueError(f"unknown error code {code!r}")
    return {"id": request_id, "event": "error", "code": code, "message": message, "fix": fix}


def progress_event(request_id: str, stage: str, done: int, total: int, message: str = "") -> dict[str, Any]:
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}")
    return {
        "id": request_id,
        "event": "progress",
        "stage": stage,
        "done": done,
        "total": total,
        "message": message,
    }
