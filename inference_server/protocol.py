"""JSON Lines protocol between the Blender add-on and the worker (contract version 1).

Standard library only: the add-on and the worker import this same module. One UTF-8 JSON object per
line; requests are ``{"id", "op", "args"}``, events are ``{"id", "event", ...}``.

Everything a line can make the reader do is bounded while it is parsed: the line's length, the nesting
depth, the number of values, the length of every string and number literal. A line outside the bounds
is a :class:`ProtocolError`, never a ``RecursionError`` or ``ValueError`` from deep inside ``json``.
``reconstruct`` arguments are checked by one table (:data:`RECONSTRUCT_ARGS`) before any work starts.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any, Final

PROTOCOL_VERSION: Final = 1

OPS: Final = ("hello", "reconstruct", "sequence", "cancel", "shutdown")
EVENTS: Final = ("hello", "progress", "result", "error", "cancelled")
STAGES: Final = (
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
    # sequence requests (docs/protocol.md): per-frame passes, the clip's identity, the temporal path
    "frames",
    "identity",
    "expressions",
    "path",
)
ERROR_CODES: Final = (
    "bad_request",
    "bad_image",
    "no_face",
    "missing_asset",
    "bad_checkpoint",
    "out_of_memory",
    "io_error",
    "busy",
    "internal",
)
SAMPLERS: Final = ("ddpm", "ddim", "dpmsolver")
DEVICES: Final = ("auto", "cuda", "cpu")

#: A line longer than this is refused before JSON parsing (a megabyte is far beyond any real request).
MAX_LINE_BYTES: Final = 1 << 20
#: Deepest nesting of objects / arrays in one line (real messages use 4).
MAX_DEPTH: Final = 32
#: Most values (objects, arrays, strings, numbers, ...) in one line.
MAX_VALUES: Final = 100_000
#: Longest string (also object keys), in characters; longer than any path an OS accepts.
MAX_STRING_CHARS: Final = 65_536
#: Longest request id, in characters.
MAX_ID_CHARS: Final = 256
#: Longest number literal, in characters (a float64 needs 24; Python refuses ints over 4300 digits).
MAX_NUMBER_CHARS: Final = 64
#: Longest path argument, in bytes of UTF-8 (Linux PATH_MAX).
MAX_PATH_BYTES: Final = 4096
#: Longest file or folder name, in bytes (NAME_MAX of ext4, APFS, NTFS).
MAX_NAME_BYTES: Final = 255
#: Bytes a temporary name adds to the final name of a file the worker writes (``.NAME.PID.HEX8.part``,
#: see atomic_io), rounded up.
TEMP_NAME_OVERHEAD: Final = 24
#: Most frames one ``sequence`` request may process (sequence_result.MAX_FRAMES: 3,000 frames of the DEMO
#: head's 16,434 vertices are 592 MB of meshes, under the result reader's 640 MiB per-array limit).
MAX_SEQUENCE_FRAMES: Final = 3000
#: Most extra photos of the same person in one ``reconstruct`` (``photos``); the main ``image`` is one more.
MAX_EXTRA_PHOTOS: Final = 15
#: Most identity samples one job holds in memory: ``n_shapes`` × the number of photos (a neutral mesh
#: each, ~60 kB for FLAME: 600 MB at the bound, as a single-photo job with the largest ``n_shapes``).
MAX_POOLED_SHAPES: Final = 10_000
#: Where the worker never reads a photo nor writes a file: kernel file systems (it may run as root).
SPECIAL_FOLDERS: Final = ("/proc", "/sys", "/dev")


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
    photos: tuple[str, ...] = ()  # extra photos of the same person: they add to the identity only
    n_shapes: int = 100
    n_expressions: int = 100
    top_k: int = 10
    sampler: str = "ddpm"
    steps: int | None = None
    seed: int = 0
    jaw_scale: float = 0.5
    device: str = "auto"
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SequenceArgs:
    """Validated arguments of a ``sequence`` request (a video or a folder of frames → one animation)."""

    source: str
    output: str
    fps: float | None = None  # frames per second to process (a video is subsampled); None: every frame
    max_frames: int = MAX_SEQUENCE_FRAMES
    resume: str = "auto"  # "auto" | "require" | "restart" (sequence/workdir.py)
    n_shapes: int = 100
    n_expressions: int = 32
    identity_frames: int = 8
    sampler: str = "ddpm"
    steps: int | None = None
    seed: int = 0
    jaw_scale: float = 0.5
    smoothness: float = 0.1
    smoothing: float = 1.0
    keep_hypotheses: bool = True
    device: str = "auto"
    extra: dict[str, Any] = field(default_factory=dict)


def encode(message: dict[str, Any]) -> str:
    """One protocol line (no newline). NaN/Infinity are refused: they are not JSON."""
    return json.dumps(message, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def encode_line(message: dict[str, Any]) -> bytes:
    """``encode`` as UTF-8 bytes with the newline; never fails on a string it was given.

    A lone surrogate (which a request can carry as ``"\\ud800"``) cannot be UTF-8: such a message is
    written with JSON ``\\u`` escapes instead, which every JSON reader accepts.
    """
    text = encode(message)
    try:
        return (text + "\n").encode("utf-8")
    except UnicodeEncodeError:
        return (json.dumps(message, ensure_ascii=True, allow_nan=False, separators=(",", ":")) + "\n").encode()


# --------------------------------------------------------------------------------------------------
# Bounded parsing


class _NonFinite:
    """Stands for a NaN / Infinity literal until the request id is known (the error then names it)."""


_NON_FINITE = _NonFinite()


def _number_literal(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        if len(text) > MAX_NUMBER_CHARS:
            raise ProtocolError(f"a number literal of {len(text)} characters is longer than {MAX_NUMBER_CHARS}")
        return convert(text)

    return parse


def _bounded_loads(text: str) -> Any:
    try:
        return json.loads(
            text,
            parse_int=_number_literal(int),
            parse_float=_number_literal(float),
            parse_constant=lambda _name: _NON_FINITE,
        )
    except ProtocolError:
        raise
    except RecursionError:
        raise ProtocolError(f"not valid JSON (nested deeper than {MAX_DEPTH} levels)") from None
    except ValueError as exc:  # JSONDecodeError, and anything a literal converter raises
        raise ProtocolError(f"not valid JSON ({exc})") from None


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _check_string(text: str, where: str) -> None:
    if len(text) > MAX_STRING_CHARS:
        raise ProtocolError(f"{where}: a string of {len(text)} characters is longer than {MAX_STRING_CHARS}")
    if _has_surrogate(text):
        raise ProtocolError(f"{where}: a string holds a lone UTF-16 surrogate (\\ud800-\\udfff), which is not text")


def _check_tree(root: Any, where: str) -> None:
    """Walk a parsed value without recursion: depth, count, string sizes, NaN/Infinity."""
    stack: list[tuple[Any, int]] = [(root, 1)]
    count = 0
    while stack:
        value, depth = stack.pop()
        count += 1
        if count > MAX_VALUES:
            raise ProtocolError(f"{where} holds more than {MAX_VALUES} values")
        if isinstance(value, dict | list):
            if depth > MAX_DEPTH:
                raise ProtocolError(f"{where} is nested deeper than {MAX_DEPTH} levels")
            if isinstance(value, dict):
                for key in value:
                    _check_string(key, where)
                stack.extend((item, depth + 1) for item in value.values())
            else:
                stack.extend((item, depth + 1) for item in value)
        elif isinstance(value, str):
            _check_string(value, where)
        elif value is _NON_FINITE or (isinstance(value, float) and not math.isfinite(value)):
            raise ProtocolError(f"{where}: NaN and Infinity are not JSON numbers; send finite values")


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
    obj = _bounded_loads(text)
    if not isinstance(obj, dict):
        raise ProtocolError(f"expected a JSON object, got {type(obj).__name__}")
    return obj


def _request_id(obj: dict[str, Any]) -> str:
    raw = obj.get("id")
    if not isinstance(raw, str) or not raw or len(raw) > MAX_ID_CHARS or _has_surrogate(raw):
        raise ProtocolError(f"'id' must be a non-empty string of at most {MAX_ID_CHARS} characters of valid Unicode")
    return raw


def parse_request(line: str | bytes) -> Request:
    """Parse one request line; raise ProtocolError (with the id when one could be read)."""
    obj = _parse_object(line)
    request_id = _request_id(obj)
    try:
        _check_tree(obj, "the request")
    except ProtocolError as exc:
        raise _with_id(exc, request_id) from None
    op = obj.get("op")
    if op not in OPS:
        shown = op if not isinstance(op, str) else op[:64]
        raise ProtocolError(f"unknown op {shown!r}; known ops: {', '.join(OPS)}", request_id)
    args = obj.get("args", {})
    if not isinstance(args, dict):
        raise ProtocolError("'args' must be a JSON object", request_id)
    return Request(request_id, str(op), args)


def _with_id(exc: ProtocolError, request_id: str) -> ProtocolError:
    return ProtocolError(str(exc), request_id, exc.code)


def parse_event(line: str | bytes) -> dict[str, Any]:
    """Parse one event line from the worker; raise ProtocolError for anything else (garbage on stdout)."""
    try:
        obj = _parse_object(line)
        if obj.get("event") not in EVENTS:
            raise ProtocolError(f"unknown event {str(obj.get('event'))[:64]!r}")
        if not isinstance(obj.get("id"), str):
            raise ProtocolError("event without a string 'id'")
        _check_tree(obj, "the event")
    except ProtocolError as exc:
        raise ProtocolError(str(exc), code="internal") from None
    return obj


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


# --------------------------------------------------------------------------------------------------
# reconstruct arguments: one table, one checker per kind of value


class ArgumentError(ValueError):
    """One bad argument: what is wrong with it; the caller adds the request id."""


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _finite_number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ArgumentError(f"'{name}' must be a finite number, got {_shown(value)}")
    try:
        return float(value)
    except OverflowError:
        raise ArgumentError(f"'{name}' is too large, got {_shown(value)}") from None


def integer(lo: int, hi: int) -> Callable[[Any, str], int]:
    def check(value: Any, name: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise ArgumentError(f"'{name}' must be an integer from {lo} to {hi}, got {_shown(value)}")
        return value

    return check


def number(lo: float, hi: float) -> Callable[[Any, str], float]:
    def check(value: Any, name: str) -> float:
        result = _finite_number(value, name)
        if not lo <= result <= hi:
            raise ArgumentError(f"'{name}' must be a number from {lo:g} to {hi:g}, got {_shown(value)}")
        return result

    return check


def boolean(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise ArgumentError(f"'{name}' must be true or false, got {_shown(value)}")
    return value


def choice(allowed: Callable[[], Iterable[str]]) -> Callable[[Any, str], str]:
    """One of the names ``allowed()`` returns: the enum's own definition, read when a request comes."""

    def check(value: Any, name: str) -> str:
        names = tuple(allowed())
        if not isinstance(value, str) or value not in names:
            raise ArgumentError(f"'{name}' must be one of {', '.join(names)}, got {_shown(value)}")
        return value

    return check


def _box(value: Any, name: str) -> tuple[float, float, float, float]:
    if not isinstance(value, list) or len(value) != 4:
        raise ArgumentError(f"'{name}' must be [x0, y0, x1, y1] in pixels, got {_shown(value)}")
    x0, y0, x1, y1 = (_finite_number(v, name) for v in value)
    if not (x1 > x0 and y1 > y0):
        raise ArgumentError(f"'{name}' must have x1 > x0 and y1 > y0")
    return (x0, y0, x1, y1)


def _points(value: Any, name: str) -> tuple[tuple[float, float], ...]:
    if not isinstance(value, list) or len(value) != 5 or not all(isinstance(p, list) and len(p) == 2 for p in value):
        raise ArgumentError(
            f"'{name}' must be five [x, y] pixel pairs: left eye, right eye, nose tip, left and right mouth corner"
        )
    return tuple((_finite_number(p[0], name), _finite_number(p[1], name)) for p in value)


def _plain_path(value: Any, name: str) -> str:
    """A path string the OS can take: no NUL byte, within PATH_MAX / NAME_MAX, not on a kernel file system."""
    if not isinstance(value, str) or not value:
        raise ArgumentError(f"'{name}' must be a non-empty path string")
    if "\x00" in value:
        raise ArgumentError(f"'{name}' holds a NUL byte, which no file name can contain")
    if len(value.encode("utf-8")) > MAX_PATH_BYTES:
        raise ArgumentError(f"'{name}' is longer than {MAX_PATH_BYTES} bytes")
    for part in PurePath(value).parts:
        if len(part.encode("utf-8")) > MAX_NAME_BYTES:
            raise ArgumentError(f"'{name}': the name {_shown(part)} is longer than {MAX_NAME_BYTES} bytes")
    if sys.platform != "win32":
        real = os.path.realpath(os.path.expanduser(value))
        if any(real == top or real.startswith(top + "/") for top in SPECIAL_FOLDERS):
            raise ArgumentError(f"'{name}' is on a kernel file system ({real}); use a normal file")
    return value


def _image_path(value: Any, name: str) -> str:
    return _plain_path(value, name)


def _photo_list(value: Any, name: str) -> tuple[str, ...]:
    """Extra photo paths: a list of at most MAX_EXTRA_PHOTOS paths, each checked like ``image``, none repeated."""
    if not isinstance(value, list):
        raise ArgumentError(f"'{name}' must be a list of photo paths, got {_shown(value)}")
    if len(value) > MAX_EXTRA_PHOTOS:
        raise ArgumentError(f"'{name}' holds {len(value)} photos; at most {MAX_EXTRA_PHOTOS} extra photos are taken")
    paths = tuple(_image_path(item, f"{name}[{i}]") for i, item in enumerate(value))
    for i, path in enumerate(paths):
        if path in paths[:i]:
            raise ArgumentError(f"'{name}[{i}]' repeats {_shown(path)}; give each photo once")
    return paths


def _output_path(value: Any, name: str) -> str:
    """The result file: a ``.npz`` whose temporary name still fits, in a folder that exists or can be made."""
    path = _plain_path(value, name)
    target = PurePath(os.path.expanduser(path))
    if target.suffix != ".npz":
        raise ArgumentError(f"'{name}' must be a file name ending in .npz, got {_shown(path)}")
    if len(target.name.encode("utf-8")) > MAX_NAME_BYTES - TEMP_NAME_OVERHEAD:
        raise ArgumentError(
            f"'{name}': the file name is longer than {MAX_NAME_BYTES - TEMP_NAME_OVERHEAD} bytes "
            "(room is kept for the temporary name it is written under)"
        )
    if os.path.isdir(target):
        raise ArgumentError(f"'{name}' is a folder; give a file name ending in .npz")
    folder = os.path.abspath(target.parent)
    while not os.path.exists(folder):  # the nearest existing folder decides whether the rest can be made
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK | os.X_OK):
        raise ArgumentError(f"'{name}': the folder {folder} is not a folder you can write to")
    return path


def _expression_orders() -> tuple[str, ...]:
    from typing import get_args

    from .hypotheses import ExpressionOrder

    return get_args(ExpressionOrder)


def _preset_names() -> tuple[str, ...]:
    from .presets import PRESETS

    return tuple(sorted(PRESETS))


@dataclass(frozen=True)
class ArgSpec:
    """One ``reconstruct`` argument: its checker (value, name → converted value), default, where it goes.

    ``extra`` arguments land in ``ReconstructArgs.extra`` (the pipeline reads them from there); the
    others are ``ReconstructArgs`` fields. ``required`` arguments have no default.
    """

    check: Callable[[Any, str], Any]
    default: Any = None
    required: bool = False
    extra: bool = False


#: Every argument a ``reconstruct`` request may carry. Add a field here (and to ReconstructArgs, or with
#: ``extra=True``) and it is validated, defaulted and documented by the error messages.
RECONSTRUCT_ARGS: dict[str, ArgSpec] = {
    "image": ArgSpec(_image_path, required=True),
    "output": ArgSpec(_output_path, required=True),
    "box": ArgSpec(_box),
    "points": ArgSpec(_points),
    "face": ArgSpec(integer(0, 1000)),
    "photos": ArgSpec(_photo_list, ()),
    "n_shapes": ArgSpec(integer(1, 10_000), 100),
    "n_expressions": ArgSpec(integer(1, 10_000), 100),
    "top_k": ArgSpec(integer(1, 10_000), 10),
    "sampler": ArgSpec(choice(lambda: SAMPLERS), "ddpm"),
    "steps": ArgSpec(integer(1, 1000)),
    "seed": ArgSpec(integer(0, 2**63 - 1), 0),
    "jaw_scale": ArgSpec(number(0.0, 2.0), 0.5),
    "device": ArgSpec(choice(lambda: DEVICES), "auto"),
    "eta": ArgSpec(number(0.0, 1.0), extra=True),
    "expression_order": ArgSpec(choice(_expression_orders), extra=True),
    "preset": ArgSpec(choice(_preset_names), extra=True),
    # the display-first expression refined to the photo's eyes and mouth, put in front (refined_expression.py)
    "refine_expression": ArgSpec(boolean, extra=True),
    # FLAME's own controls in the result: the shape, expression and pose-corrective bases (flame_controls.py)
    "flame_controls": ArgSpec(boolean, extra=True),
    # false: no head pose, camera, gaze or texture on the photo (a data set that needs the meshes only)
    "fit": ArgSpec(boolean, extra=True),
    "flame_controls_shapes": ArgSpec(integer(1, 10_000), extra=True),
}


#: Every argument a ``sequence`` request may carry (the same checkers as ``reconstruct``).
SEQUENCE_ARGS: dict[str, ArgSpec] = {
    "source": ArgSpec(_image_path, required=True),
    "output": ArgSpec(_output_path, required=True),
    "fps": ArgSpec(number(0.1, 1000.0)),
    "max_frames": ArgSpec(integer(1, MAX_SEQUENCE_FRAMES), MAX_SEQUENCE_FRAMES),
    "resume": ArgSpec(choice(lambda: ("auto", "require", "restart")), "auto"),
    "n_shapes": ArgSpec(integer(1, 10_000), 100),
    "n_expressions": ArgSpec(integer(1, 1000), 32),
    "identity_frames": ArgSpec(integer(1, 64), 8),
    "sampler": ArgSpec(choice(lambda: SAMPLERS), "ddpm"),
    "steps": ArgSpec(integer(1, 1000)),
    "seed": ArgSpec(integer(0, 2**62), 0),
    "jaw_scale": ArgSpec(number(0.0, 2.0), 0.5),
    "smoothness": ArgSpec(number(0.0, 1000.0), 0.1),
    "smoothing": ArgSpec(number(0.0, 30.0), 1.0),
    "keep_hypotheses": ArgSpec(boolean, True),
    "device": ArgSpec(choice(lambda: DEVICES), "auto"),
    "eta": ArgSpec(number(0.0, 1.0), extra=True),
    "preset": ArgSpec(choice(_preset_names), extra=True),
}


def _cross_checks(values: dict[str, Any], extra: dict[str, Any]) -> None:
    if extra.get("fit") is False and extra.get("refine_expression"):
        raise ArgumentError(
            "'refine_expression' refines an expression to the head's fit on the photo, and 'fit' is false; "
            "drop one of the two"
        )
    if values["top_k"] > values["n_shapes"]:
        raise ArgumentError(f"'top_k' ({values['top_k']}) cannot exceed 'n_shapes' ({values['n_shapes']})")
    if values["image"] in values["photos"]:
        raise ArgumentError(f"'photos' repeats the main 'image' {_shown(values['image'])}; list only the other photos")
    n_photos = 1 + len(values["photos"])
    if values["n_shapes"] * n_photos > MAX_POOLED_SHAPES:
        raise ArgumentError(
            f"'n_shapes' ({values['n_shapes']}) × {n_photos} photos is more than {MAX_POOLED_SHAPES} identity "
            f"samples; lower 'n_shapes' to at most {MAX_POOLED_SHAPES // n_photos}"
        )


def _checked_args(request: Request, table: dict[str, ArgSpec]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(fields, extra) of a request checked against ``table``; ArgumentError names the bad argument."""
    args = request.args
    unknown = sorted(set(args) - set(table))
    if unknown:
        raise ArgumentError(f"unknown argument {_shown(unknown[0])}; a {request.op} request takes {', '.join(table)}")
    values: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for name, spec in table.items():
        raw = args.get(name)
        if raw is None and spec.required:
            raise ArgumentError(f"'{name}' must be a non-empty path string")
        value = spec.default if raw is None else spec.check(raw, name)
        if spec.extra:
            if value is not None:
                extra[name] = value
        else:
            values[name] = value
    return values, extra


def parse_reconstruct_args(request: Request) -> ReconstructArgs:
    """Validate every argument of a ``reconstruct`` request; the message says which one is wrong and how."""
    try:
        values, extra = _checked_args(request, RECONSTRUCT_ARGS)
        _cross_checks(values, extra)
    except ArgumentError as exc:
        raise ProtocolError(str(exc), request.id) from None
    return ReconstructArgs(**values, extra=extra)


def parse_sequence_args(request: Request) -> SequenceArgs:
    """Validate every argument of a ``sequence`` request, before any work."""
    try:
        values, extra = _checked_args(request, SEQUENCE_ARGS)
    except ArgumentError as exc:
        raise ProtocolError(str(exc), request.id) from None
    return SequenceArgs(**values, extra=extra)
