"""The sequence result file: one ``.npz`` per clip (format ``ofer-sequence/1``, docs/sequence-result.md).

Standard library and numpy only, like :mod:`.result`: the Blender add-on imports sequences with this
module. One identity for the whole clip, FLAME's own controls (expression and pose-corrective bases,
joints, skinning) and, per frame, the expression, jaw and head pose the temporal path chose, with the
mesh they make. The writer validates and writes atomically; the reader looks before it reads (shared
with the photo result in :mod:`.npz_contract`) and raises only :class:`ResultFileError`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from .npz_contract import NpzLayout, ResultFileError, check_array, expect, read_checked, write_checked
from .protocol import MAX_SEQUENCE_FRAMES
from .result import EYE_JOINTS, JOINT_NAMES

FORMAT = "ofer-sequence/1"
#: Frames one sequence may hold (protocol.MAX_SEQUENCE_FRAMES): 3,000 frames of the DEMO head's 16,434
#: vertices are 592 MB of ``frame_vertices`` (100 s at 30 fps). The worker refuses a longer clip before
#: any work (lower ``--fps`` or split the clip).
MAX_FRAMES = MAX_SEQUENCE_FRAMES
#: Statuses a frame may have in ``meta["frames"]``.
FRAME_STATUSES = ("ok", "occluded", "no_face", "unreadable", "fit_untrusted")

__all__ = ["FORMAT", "FRAME_STATUSES", "JOINT_NAMES", "MAX_FRAMES", "ResultFileError", "SequenceResult"]


@dataclass
class SequenceResult:
    """A clip's animation. Units are metres. T frames, V vertices, F faces, S shape and E expression
    coefficients, J joints, P = 9 (J - 1) pose-corrective directions, M hypotheses per frame."""

    meta: dict[str, Any]
    faces: np.ndarray  # int32 (F, 3)
    template: np.ndarray  # float32 (V, 3)
    identity_params: np.ndarray  # float32 (1, S)
    identity_vertices: np.ndarray  # float32 (1, V, 3)
    joints: np.ndarray  # float32 (J, 3) rest joints of the identity
    parents: np.ndarray  # int32 (J,)
    skin_weights: np.ndarray  # float32 (V, J)
    expression_basis: np.ndarray  # float32 (E, V, 3) metres per unit coefficient
    pose_basis: np.ndarray  # float32 (P, V, 3) per element of the flattened (R_j - I), joints 1..J-1
    frame_expression_params: np.ndarray  # float32 (T, E)
    frame_jaw_pose: np.ndarray  # float32 (T, 3) axis-angle
    frame_head_pose: np.ndarray  # float32 (T, 6) axis-angle + translation, model -> camera
    camera: np.ndarray  # float32 (3,) f, cx, cy (pixels of the frames)
    frame_vertices: np.ndarray  # float32 (T, V, 3) model frame, head pose not applied
    frame_observed: np.ndarray  # int32 (T,) 1: fitted, 0: bridged by the path
    uv: np.ndarray | None = None  # float32 (T_uv, 2)
    uv_faces: np.ndarray | None = None  # int32 (F, 3)
    frame_hypotheses: np.ndarray | None = None  # float32 (T, M, E + 3) expression ‖ jaw
    frame_choice: np.ndarray | None = None  # int32 (T,) the hypothesis the path chose, before smoothing
    frame_eye_pose: np.ndarray | None = None  # float32 (T, 2, 3) the gaze: left_eye, right_eye axis-angles
    format: str = field(default=FORMAT)

    @property
    def demo(self) -> bool:
        return bool(self.meta.get("demo", False))

    @property
    def n_frames(self) -> int:
        return int(self.frame_vertices.shape[0])


_ARRAY_KEYS = tuple(f.name for f in fields(SequenceResult) if f.name not in ("meta", "format"))
_OPTIONAL_KEYS = frozenset({"uv", "uv_faces", "frame_hypotheses", "frame_choice", "frame_eye_pose"})
_INT_KEYS = frozenset({"faces", "uv_faces", "parents", "frame_observed", "frame_choice"})
_KNOWN_KEYS = frozenset(_ARRAY_KEYS) | {"format", "meta_json"}
#: The reader's limits: ``frame_vertices`` of MAX_FRAMES frames of a 5,023-vertex head is the largest member.
MAX_MEMBER_BYTES = 640 << 20
MAX_TOTAL_BYTES = 1280 << 20
LAYOUT = NpzLayout(FORMAT, _KNOWN_KEYS, _INT_KEYS, MAX_MEMBER_BYTES, MAX_TOTAL_BYTES)


def _array(arrays: dict[str, np.ndarray], key: str, ndim: int, dims: dict[int, int]) -> np.ndarray:
    return check_array(arrays, key, ndim, dims, _INT_KEYS)


def _check_mesh(arrays: dict[str, np.ndarray]) -> tuple[int, int]:
    """(V, J) after checking the head: template, faces, uv, identity, joints, skinning, bases."""
    V = _array(arrays, "template", 2, {1: 3}).shape[0]
    expect(V > 0, "template", "has no vertices")
    faces = _array(arrays, "faces", 2, {1: 3})
    expect(faces.shape[0] > 0, "faces", "has no triangles")
    expect(int(faces.min()) >= 0 and int(faces.max()) < V, "faces", f"vertex index outside 0..{V - 1}")
    if arrays["uv"] is not None or arrays["uv_faces"] is not None:
        expect(arrays["uv"] is not None, "uv", "is missing although uv_faces is present")
        expect(arrays["uv_faces"] is not None, "uv_faces", "is missing although uv is present")
        uv = _array(arrays, "uv", 2, {1: 2})
        uv_faces = _array(arrays, "uv_faces", 2, {0: faces.shape[0], 1: 3})
        expect(int(uv_faces.min()) >= 0 and int(uv_faces.max()) < len(uv), "uv_faces", "uv index out of range")
    _array(arrays, "identity_params", 2, {0: 1})
    _array(arrays, "identity_vertices", 3, {0: 1, 1: V, 2: 3})
    J = _array(arrays, "joints", 2, {1: 3}).shape[0]
    parents = _array(arrays, "parents", 1, {0: J})
    expect(J > 0 and int(parents[0]) == -1, "parents", "the first joint must be the root (parent -1)")
    for j in range(1, J):
        expect(0 <= int(parents[j]) < j, "parents", f"joint {j} has parent {int(parents[j])}, not an earlier joint")
    _array(arrays, "skin_weights", 2, {0: V, 1: J})
    expect(_array(arrays, "expression_basis", 3, {1: V, 2: 3}).shape[0] > 0, "expression_basis", "is empty")
    _array(arrays, "pose_basis", 3, {0: 9 * (J - 1), 1: V, 2: 3})
    return V, J


def validate(result: SequenceResult) -> None:
    """Check dtypes, shapes, cross-key consistency and finiteness; raise ResultFileError on the first fault."""
    expect(result.format == FORMAT, "format", f"is '{result.format}', expected '{FORMAT}'")
    expect(isinstance(result.meta, dict), "meta_json", "must be a JSON object")
    arrays = {k: getattr(result, k) for k in _ARRAY_KEYS}
    for key in _ARRAY_KEYS:
        expect(arrays[key] is not None or key in _OPTIONAL_KEYS, key, "is missing")
    V, J = _check_mesh(arrays)
    E = arrays["expression_basis"].shape[0]
    T = _array(arrays, "frame_expression_params", 2, {1: E}).shape[0]
    expect(0 < T <= MAX_FRAMES, "frame_expression_params", f"holds {T} frames (1 to {MAX_FRAMES})")
    _array(arrays, "frame_jaw_pose", 2, {0: T, 1: 3})
    _array(arrays, "frame_head_pose", 2, {0: T, 1: 6})
    camera = _array(arrays, "camera", 1, {0: 3})
    expect(float(camera[0]) > 0, "camera", "the focal length must be positive")
    _array(arrays, "frame_vertices", 3, {0: T, 1: V, 2: 3})
    observed = _array(arrays, "frame_observed", 1, {0: T})
    expect(bool(np.isin(observed, (0, 1)).all()), "frame_observed", "must hold only 0 and 1")
    if arrays["frame_hypotheses"] is not None or arrays["frame_choice"] is not None:
        expect(
            arrays["frame_hypotheses"] is not None, "frame_hypotheses", "is missing although frame_choice is present"
        )
        expect(arrays["frame_choice"] is not None, "frame_choice", "is missing although frame_hypotheses is present")
        M = _array(arrays, "frame_hypotheses", 3, {0: T, 2: E + 3}).shape[1]
        expect(M > 0, "frame_hypotheses", "holds no hypothesis")
        choice = _array(arrays, "frame_choice", 1, {0: T})
        expect(bool(((choice >= 0) & (choice < M)).all()), "frame_choice", f"a choice outside 0..{M - 1}")
    if arrays["frame_eye_pose"] is not None:
        eyes = _array(arrays, "frame_eye_pose", 3, {0: T, 1: 2, 2: 3})
        expect(max(EYE_JOINTS) < J, "frame_eye_pose", f"needs the eye joints; the head has {J} joints")
        expect(bool((np.linalg.norm(eyes, axis=2) <= np.pi).all()), "frame_eye_pose", "turns an eye by more than 180°")
    frames = result.meta.get("frames")
    expect(frames is None or (isinstance(frames, list) and len(frames) == T), "meta_json", f"'frames' must list {T}")


def write_sequence_result(path: str | os.PathLike[str], result: SequenceResult) -> Path:
    """Validate and write ``result`` atomically to ``path`` (a ``.npz``). Returns the final path."""
    validate(result)
    arrays = {key: getattr(result, key) for key in _ARRAY_KEYS}
    return write_checked(path, result.format, result.meta, arrays, "a sequence result")


def read_sequence_result(path: str | os.PathLike[str]) -> SequenceResult:
    """Read and fully validate a sequence result file. Raises ResultFileError naming the bad key."""
    return read_checked(path, LAYOUT, _build)


def _build(meta: dict[str, Any], members: dict[str, np.ndarray]) -> SequenceResult:
    for key in _ARRAY_KEYS:
        expect(key in members or key in _OPTIONAL_KEYS, key, "is missing")
    result = SequenceResult(meta=meta, **{k: members.get(k) for k in _ARRAY_KEYS})  # type: ignore[arg-type]
    validate(result)
    return result
