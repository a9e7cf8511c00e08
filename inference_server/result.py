"""The result file: one ``.npz`` per reconstruction (contract version 1).

Standard library and numpy only: the Blender add-on reads results with this same module.
The writer is atomic (temporary name in the target folder, then ``os.replace``) so a reader never
sees half a file; the reader validates everything and raises :class:`ResultFileError`, which names
the offending key, for any problem — never a bare numpy or zipfile exception.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from .npz_contract import NpzLayout, check_array, expect, read_checked, write_checked
from .npz_contract import ResultFileError as ResultFileError  # the add-on and the worker catch it from here

FORMAT = "ofer-result/1"

#: Joint names in FLAME order; ``joints``/``parents``/``skin_weights`` follow it.
JOINT_NAMES = ("root", "neck", "jaw", "left_eye", "right_eye")


@dataclass
class ReconstructionResult:
    """Everything one reconstruction produced. Units are metres.

    Shapes: V vertices, F faces, K identities kept (best first), M expressions kept (display order),
    S shape coefficients, E expression coefficients, J joints, L landmarks.
    """

    meta: dict[str, Any]
    faces: np.ndarray  # int32 (F, 3)
    template: np.ndarray  # float32 (V, 3)
    identity_params: np.ndarray  # float32 (K, S)
    identity_scores: np.ndarray  # float32 (K,) descending softmax probabilities
    identity_vertices: np.ndarray  # float32 (K, V, 3)
    expression_params: np.ndarray  # float32 (M, E)
    jaw_pose: np.ndarray  # float32 (M, 3) after jaw_scale
    expression_vertices: np.ndarray  # float32 (M, V, 3)
    joints: np.ndarray  # float32 (J, 3)
    parents: np.ndarray  # int32 (J,)
    skin_weights: np.ndarray  # float32 (V, J)
    spread_identity: np.ndarray  # float32 (V,)
    spread_expression: np.ndarray  # float32 (V,)
    uv: np.ndarray | None = None  # float32 (T, 2)
    uv_faces: np.ndarray | None = None  # int32 (F, 3)
    landmarks: np.ndarray | None = None  # float32 (L, 3)
    head_pose: np.ndarray | None = None  # float32 (6,) axis-angle + translation
    camera: np.ndarray | None = None  # float32 (3,) focal length, principal point x, y (pixels)
    expression_head_pose: np.ndarray | None = None  # float32 (M, 6) per-expression head_pose, display order
    # FLAME controls (request ``flame_controls``), all three or none: model directions per unit coefficient
    shape_basis: np.ndarray | None = None  # float32 (Sc, V, 3), Sc <= S: the first Sc shape directions
    expression_basis: np.ndarray | None = None  # float32 (E, V, 3): the directions of expression_params
    pose_basis: np.ndarray | None = None  # float32 (9 (J - 1), V, 3): pose correctives, (R - I) of joints 1..
    # The photo's gaze (with head_pose): axis-angle of the left_eye and right_eye joints (the subject's left
    # and right, FLAME pose order), each relative to the head, as the pose's joints 3 and 4
    eye_pose: np.ndarray | None = None  # float32 (2, 3)
    format: str = field(default=FORMAT)

    @property
    def demo(self) -> bool:
        return bool(self.meta.get("demo", False))


_ARRAY_KEYS = tuple(f.name for f in fields(ReconstructionResult) if f.name not in ("meta", "format"))
FLAME_CONTROL_KEYS = ("shape_basis", "expression_basis", "pose_basis")
_OPTIONAL_KEYS = frozenset(
    {"uv", "uv_faces", "landmarks", "head_pose", "camera", "expression_head_pose", "eye_pose"}
) | frozenset(FLAME_CONTROL_KEYS)
#: The joints ``eye_pose`` turns (indices into JOINT_NAMES).
EYE_JOINTS = (3, 4)
_INT_KEYS = frozenset({"faces", "uv_faces", "parents"})
_KNOWN_KEYS = frozenset(_ARRAY_KEYS) | {"format", "meta_json"}


_expect = expect


def _check_array(arrays: dict[str, np.ndarray], key: str, ndim: int, dims: dict[int, int]) -> np.ndarray:
    return check_array(arrays, key, ndim, dims, _INT_KEYS)


def validate(result: ReconstructionResult) -> None:
    """Check dtypes, shapes, cross-key consistency and finiteness; raise ResultFileError on the first fault."""
    _expect(result.format == FORMAT, "format", f"is '{result.format}', expected '{FORMAT}'")
    _expect(isinstance(result.meta, dict), "meta_json", "must be a JSON object")
    arrays = {k: getattr(result, k) for k in _ARRAY_KEYS}
    for key in _ARRAY_KEYS:
        if arrays[key] is None:
            _expect(key in _OPTIONAL_KEYS, key, "is missing")

    template = _check_array(arrays, "template", 2, {1: 3})
    V = template.shape[0]
    _expect(V > 0, "template", "has no vertices")
    faces = _check_array(arrays, "faces", 2, {1: 3})
    _expect(faces.shape[0] > 0, "faces", "has no triangles")
    _expect(int(faces.min()) >= 0 and int(faces.max()) < V, "faces", f"vertex index outside 0..{V - 1}")

    params = _check_array(arrays, "identity_params", 2, {})
    K = params.shape[0]
    _expect(K > 0, "identity_params", "holds no identity")
    scores = _check_array(arrays, "identity_scores", 1, {0: K})
    _expect(bool(((scores >= 0) & (scores <= 1)).all()), "identity_scores", "must be probabilities in [0, 1]")
    _expect(bool((np.diff(scores) <= 0).all()), "identity_scores", "must be sorted best first (descending)")
    _check_array(arrays, "identity_vertices", 3, {0: K, 1: V, 2: 3})

    exp = _check_array(arrays, "expression_params", 2, {})
    M = exp.shape[0]
    _expect(M > 0, "expression_params", "holds no expression")
    _check_array(arrays, "jaw_pose", 2, {0: M, 1: 3})
    _check_array(arrays, "expression_vertices", 3, {0: M, 1: V, 2: 3})

    joints = _check_array(arrays, "joints", 2, {1: 3})
    J = joints.shape[0]
    parents = _check_array(arrays, "parents", 1, {0: J})
    _expect(J > 0 and int(parents[0]) == -1, "parents", "the first joint must be the root (parent -1)")
    for j in range(1, J):
        _expect(
            0 <= int(parents[j]) < j,
            "parents",
            f"joint {j} has parent {int(parents[j])}, not an earlier joint",
        )
    _check_array(arrays, "skin_weights", 2, {0: V, 1: J})
    for key in ("spread_identity", "spread_expression"):
        spread = _check_array(arrays, key, 1, {0: V})
        _expect(bool((spread >= 0).all()), key, "a standard deviation cannot be negative")

    if arrays["uv"] is not None or arrays["uv_faces"] is not None:
        _expect(arrays["uv"] is not None, "uv", "is missing although uv_faces is present")
        _expect(arrays["uv_faces"] is not None, "uv_faces", "is missing although uv is present")
        uv = _check_array(arrays, "uv", 2, {1: 2})
        uv_faces = _check_array(arrays, "uv_faces", 2, {0: faces.shape[0], 1: 3})
        _expect(
            int(uv_faces.min()) >= 0 and int(uv_faces.max()) < uv.shape[0],
            "uv_faces",
            f"uv index outside 0..{uv.shape[0] - 1}",
        )
    if arrays["landmarks"] is not None:
        _check_array(arrays, "landmarks", 2, {1: 3})
    if arrays["head_pose"] is not None:
        _check_array(arrays, "head_pose", 1, {0: 6})
    if arrays["camera"] is not None:
        _check_array(arrays, "camera", 1, {0: 3})
    if arrays["expression_head_pose"] is not None:
        _check_array(arrays, "expression_head_pose", 2, {0: M, 1: 6})
    if arrays["eye_pose"] is not None:
        eyes = _check_array(arrays, "eye_pose", 2, {0: 2, 1: 3})
        _expect(arrays["head_pose"] is not None, "eye_pose", "is present without a head_pose")
        _expect(max(EYE_JOINTS) < J, "eye_pose", f"needs the eye joints; the head has {J} joints")
        _expect(bool((np.linalg.norm(eyes, axis=1) <= np.pi).all()), "eye_pose", "turns an eye by more than 180°")
    _validate_flame_controls(arrays, V, S=params.shape[1], E=exp.shape[1], J=J)


def _validate_flame_controls(arrays: dict[str, np.ndarray], V: int, *, S: int, E: int, J: int) -> None:
    """The three bases come together; their sizes follow the coefficients they multiply."""
    present = [key for key in FLAME_CONTROL_KEYS if arrays[key] is not None]
    if not present:
        return
    for key in FLAME_CONTROL_KEYS:
        _expect(arrays[key] is not None, key, f"is missing although {present[0]} is present (FLAME controls)")
    shapes = _check_array(arrays, "shape_basis", 3, {1: V, 2: 3})
    _expect(0 < shapes.shape[0] <= S, "shape_basis", f"holds {shapes.shape[0]} directions; expected 1 to {S}")
    _check_array(arrays, "expression_basis", 3, {0: E, 1: V, 2: 3})
    _check_array(arrays, "pose_basis", 3, {0: 9 * (J - 1), 1: V, 2: 3})


def write_result(path: str | os.PathLike[str], result: ReconstructionResult) -> Path:
    """Validate and write ``result`` atomically to ``path`` (a ``.npz``). Returns the final path."""
    validate(result)
    arrays = {key: getattr(result, key) for key in _ARRAY_KEYS}
    return write_checked(path, result.format, result.meta, arrays, "a result")


#: The reader's limits: 10,000 expressions (or identities) on a 5,023-vertex head are 603 MB; with both at
#: their maximum a result is 1.2 GB. Checking one array allocates a quarter of it more (finiteness).
MAX_MEMBER_BYTES = 640 << 20
MAX_TOTAL_BYTES = 1280 << 20
_MAX_MEMBERS = 64
#: The guarded reader's view of this format (npz_contract.py; ``meta_json`` limits are shared there).
LAYOUT = NpzLayout(FORMAT, _KNOWN_KEYS, _INT_KEYS, MAX_MEMBER_BYTES, MAX_TOTAL_BYTES, _MAX_MEMBERS)


def read_result(path: str | os.PathLike[str]) -> ReconstructionResult:
    """Read and fully validate a result file. Raises ResultFileError naming the bad key."""
    return read_checked(path, LAYOUT, _build)


def _build(meta: dict[str, Any], members: dict[str, np.ndarray]) -> ReconstructionResult:
    for key in _ARRAY_KEYS:
        _expect(key in members or key in _OPTIONAL_KEYS, key, "is missing")
    result = ReconstructionResult(meta=meta, **{k: members.get(k) for k in _ARRAY_KEYS})  # type: ignore[arg-type]
    validate(result)
    return result
