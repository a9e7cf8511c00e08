"""Read and write FLAME model files (``.pkl`` / ``.npz``), landmark embeddings, UVs and front-face indices.

Every reader validates shapes, dtypes and index ranges and raises :class:`~inference_server.errors.
BadModelFileError` naming the field and the file; a missing file raises ``MissingAssetError`` with a fix.
Pickles only ever go through :mod:`.restricted_pickle` (numpy's ``allow_pickle`` is never switched on).
"""

from __future__ import annotations

import functools
import hashlib
import os
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import numpy as np

from .. import npy_guard
from ..errors import BadModelFileError, MissingAssetError
from .model_data import FLAME_SHAPE_COMPONENTS, FlameModelData
from .restricted_pickle import InertObject, restricted_load

P = ParamSpec("P")
T = TypeVar("T")

__all__ = [
    "OFFICIAL_FRONT_FACE_DATA_SHA256",
    "LandmarkEmbedding",
    "detect_flame_version",
    "flame_file_fields",
    "is_official_front_face_indices",
    "load_flame_model",
    "load_front_face_indices",
    "load_landmark_embedding",
    "load_uv_file",
    "save_flame_npz",
    "save_flame_pkl",
]

#: SHA-256 of the raw little-endian int64 data of the official OFER ``frontindices.npy`` (1785 ids).
OFFICIAL_FRONT_FACE_DATA_SHA256 = "a99bf4b28f18046c4f1810c7aa5685acbe6ade9a2e33ed287f13f4e294a76ff5"
#: Plausibility limits (FLAME: 5,023 vertices, 5 joints); far above any head model, far below a bomb.
MAX_VERTICES = 1_000_000
MAX_JOINTS = 256
MAX_OBJ_BYTES = 256 << 20
_KERNEL_FOLDERS = ("/proc", "/sys", "/dev")
_REWRITE = "use an original FLAME file or one written by save_flame_pkl / save_flame_npz"
#: kintree_table stores the root's parent as an unsigned 2**32 - 1 (or -1 once converted to signed).
_ROOT_PARENT_THRESHOLD = 2**31
# Torch tensors inside DECA's landmark_embedding.npy (its dynamic contour tables): read as inert
# placeholders, never executed; the static / full tables we use are plain numpy arrays.
_LANDMARK_NPY_INERT_GLOBALS = (
    "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_tensor",
    "torch._utils._rebuild_parameter",
    "torch.storage._load_from_bytes",
    "collections.OrderedDict",
)


@dataclass(frozen=True)
class LandmarkEmbedding:
    """Landmarks as points on the mesh: triangle index and barycentric weights per landmark (L = 68 or 51)."""

    faces_idx: np.ndarray  # int64 (L,)
    bary_coords: np.ndarray  # float64 (L, 3)
    source: str = ""

    @property
    def n_landmarks(self) -> int:
        return int(self.faces_idx.shape[0])


# --------------------------------------------------------------------------------------------------
# Small helpers


def _require_file(path: str | Path, what: str) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingAssetError(
            f"{what} not found: {path}",
            "check the path (ofer-worker doctor lists the configured assets); FLAME files come from "
            "https://flame.is.tue.mpg.de after registration",
        )
    real = os.path.realpath(path)
    if any(real == top or real.startswith(top + os.sep) for top in _KERNEL_FOLDERS):
        raise BadModelFileError(f"{path} points into {real}, a kernel file system", "point at the model file itself")
    return path


def _loader(what: str) -> Callable[[Callable[P, T]], Callable[P, T]]:
    """Make a public loader keep its contract: only MissingAssetError / BadModelFileError leave it."""

    def wrap(load: Callable[P, T]) -> Callable[P, T]:
        @functools.wraps(load)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> T:
            try:
                return load(*args, **kwargs)
            except MissingAssetError:
                raise
            except MemoryError:
                raise BadModelFileError(f"{what} {args[0] if args else ''} is too large to load", _REWRITE) from None
            except Exception as exc:  # numpy / OS surprises on hostile files end as this loader's error
                source = args[0] if args else ""
                raise BadModelFileError(
                    f"{what} {source} cannot be read ({type(exc).__name__}: {str(exc)[:200]})", _REWRITE
                ) from exc

        return guarded

    return wrap


def _bad(path: Path | str, field: str, problem: str, fix: str = "") -> BadModelFileError:
    return BadModelFileError(
        f"{path}: field '{field}' {problem}",
        fix or "use an original FLAME file or one written by save_flame_pkl / save_flame_npz",
    )


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    if not zipfile.is_zipfile(path):  # np.load would otherwise try it as a pickle or .npy
        raise BadModelFileError(f"{path} is not a readable .npz (not a zip archive)", "write or download it again")
    try:
        return npy_guard.load_npz(path)
    except npy_guard.NpyGuardError as exc:
        raise BadModelFileError(f"{path}: {exc}", "store plain numeric arrays only; write it again") from None
    except OSError as exc:
        raise BadModelFileError(f"{path} is not a readable .npz ({exc})", "write it again") from None


def _load_npy(path: Path) -> np.ndarray:
    try:
        return npy_guard.load_npy(path)
    except npy_guard.NpyGuardError as exc:
        raise BadModelFileError(f"{path}: {exc}", "use a plain numeric .npy") from None


def _load_mapping(path: Path, what: str) -> dict[str, Any]:
    """A ``.pkl`` (restricted) or ``.npz`` file as a dict of plain values."""
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return dict(_load_npz(path))
    if suffix == ".pkl":
        loaded = restricted_load(path)
        if not isinstance(loaded, dict):
            raise BadModelFileError(
                f"{path} holds a {type(loaded).__name__}, not the dict of a {what}", "use the original file"
            )
        return {str(key): value for key, value in loaded.items()}
    raise BadModelFileError(f"{path}: unknown {what} file type '{suffix}'", "use a .pkl or .npz file")


def _first_key(fields: Mapping[str, Any], *names: str) -> str | None:
    return next((name for name in names if name in fields and fields[name] is not None), None)


def _float_array(path: Path, fields: Mapping[str, Any], name: str, ndim: int) -> np.ndarray:
    value = fields[name]
    if isinstance(value, InertObject):
        raise _bad(path, name, f"could not be read ({value!r})")
    array = np.asarray(value)
    if array.dtype.kind not in "fiu" or array.ndim != ndim:
        raise _bad(path, name, f"must be a {ndim}-D numeric array, got dtype {array.dtype} shape {array.shape}")
    array = array.astype(np.float64)
    if not np.all(np.isfinite(array)):
        raise _bad(path, name, "contains NaN or infinite values")
    return array


def _index_array(path: Path, fields: Mapping[str, Any], name: str, ndim: int, upper: int | None) -> np.ndarray:
    array = np.asarray(fields[name])
    if array.dtype.kind == "f" and array.size and np.all(array == np.round(array)):
        array = array.astype(np.int64)  # some tools save indices as floats; exact integers are fine
    if array.dtype.kind not in "iu" or array.ndim != ndim:
        raise _bad(path, name, f"must be a {ndim}-D integer array, got dtype {array.dtype} shape {array.shape}")
    array = array.astype(np.int64)
    if upper is not None and array.size and (array.min() < 0 or array.max() >= upper):
        raise _bad(path, name, f"has indices outside [0, {upper}) (min {array.min()}, max {array.max()})")
    return array


def _scalar_text(value: Any) -> str:
    array = np.asarray(value)
    return str(array.item() if array.ndim == 0 else array.reshape(-1)[0])


# --------------------------------------------------------------------------------------------------
# FLAME model


def detect_flame_version(path: Path, fields: Mapping[str, Any]) -> tuple[str, str]:
    """(version, how it was decided). FLAME 2020 and 2023 share the 300 + 100 column layout, so a
    ``version`` field wins, then the file name; otherwise FLAME 2020, the release OFER was trained on."""
    if "version" in fields:
        return _scalar_text(fields["version"]), "version field"
    name = path.name.lower()
    for year in ("2023", "2020", "2019", "2017"):
        if year in name:
            return f"FLAME{year}", "file name"
    if "flame2023" in str(path).lower():
        return "FLAME2023", "folder name"
    return "FLAME2020", "default (no version field, the file name names no release)"


def _split_shapedirs(path: Path, fields: Mapping[str, Any], n_columns: int) -> tuple[int, int]:
    if "n_shape" in fields:
        n_shape = int(np.asarray(fields["n_shape"]))
        n_expression = int(np.asarray(fields.get("n_expression", n_columns - n_shape)))
    elif n_columns > FLAME_SHAPE_COMPONENTS:
        n_shape, n_expression = FLAME_SHAPE_COMPONENTS, n_columns - FLAME_SHAPE_COMPONENTS
    else:
        raise _bad(
            path,
            "shapedirs",
            f"has {n_columns} columns; a FLAME model has {FLAME_SHAPE_COMPONENTS} shape columns followed by "
            "expression columns",
            "add n_shape / n_expression fields if this is a custom model",
        )
    if n_shape < 1 or n_expression < 0 or n_shape + n_expression != n_columns:
        raise _bad(path, "shapedirs", f"has {n_columns} columns, not n_shape {n_shape} + n_expression {n_expression}")
    return n_shape, n_expression


def _parents_from_kintree(path: Path, kintree: np.ndarray) -> np.ndarray:
    if kintree.ndim != 2 or kintree.shape[0] != 2 or kintree.shape[1] < 1:
        raise _bad(path, "kintree_table", f"must have shape (2, J), got {kintree.shape}")
    kintree = kintree.astype(np.int64)
    n_joints = kintree.shape[1]
    if not np.array_equal(kintree[1], np.arange(n_joints)):
        raise _bad(path, "kintree_table", f"second row must list the joints 0..{n_joints - 1} in order")
    parents = kintree[0].copy()
    parents[(parents >= _ROOT_PARENT_THRESHOLD) | (parents < 0)] = -1
    if parents[0] != -1 or any(not 0 <= parents[j] < j for j in range(1, n_joints)):
        raise _bad(path, "kintree_table", f"must be a tree rooted at joint 0 with parents before children: {parents}")
    return parents


def _posedirs(path: Path, fields: Mapping[str, Any], n_vertices: int, n_joints: int) -> np.ndarray:
    posedirs = np.asarray(fields["posedirs"])
    n_pose = 9 * (n_joints - 1)
    # Some re-exports store the flattened (P, 3V) matrix the forward pass uses; fold it back.
    if posedirs.ndim == 2 and posedirs.shape == (n_pose, 3 * n_vertices):
        posedirs = posedirs.reshape(n_pose, n_vertices, 3).transpose(1, 2, 0)
    array = _float_array(path, {"posedirs": posedirs}, "posedirs", 3)
    if array.shape != (n_vertices, 3, n_pose):
        raise _bad(path, "posedirs", f"must have shape ({n_vertices}, 3, {n_pose}), got {array.shape}")
    return array


def _fields_to_model(path: Path, fields: Mapping[str, Any], version: str | None) -> FlameModelData:
    missing = [
        name
        for name in ("v_template", "shapedirs", "posedirs", "J_regressor", "kintree_table", "weights", "f")
        if name not in fields
    ]
    if missing:
        raise BadModelFileError(
            f"{path} is not a FLAME model: missing field(s) {', '.join(missing)}",
            "point the worker at FLAME's generic_model.pkl (or a FLAME 2023 .pkl, or an .npz of its fields)",
        )
    v_template = _float_array(path, fields, "v_template", 2)
    if v_template.shape[1] != 3 or v_template.shape[0] < 3:
        raise _bad(path, "v_template", f"must have shape (V, 3), got {v_template.shape}")
    n_vertices = v_template.shape[0]
    if n_vertices > MAX_VERTICES:
        raise _bad(path, "v_template", f"has {n_vertices} vertices; FLAME has 5,023 (limit {MAX_VERTICES})")
    shapedirs = _float_array(path, fields, "shapedirs", 3)
    if shapedirs.shape[:2] != (n_vertices, 3):
        raise _bad(path, "shapedirs", f"must have shape ({n_vertices}, 3, K), got {shapedirs.shape}")
    n_shape, n_expression = _split_shapedirs(path, fields, shapedirs.shape[2])
    parents = _parents_from_kintree(path, np.asarray(fields["kintree_table"]))
    n_joints = parents.shape[0]
    if n_joints > MAX_JOINTS:
        raise _bad(path, "kintree_table", f"has {n_joints} joints; FLAME has 5 (limit {MAX_JOINTS})")
    J_regressor = _float_array(path, fields, "J_regressor", 2)
    if J_regressor.shape != (n_joints, n_vertices):
        raise _bad(path, "J_regressor", f"must have shape ({n_joints}, {n_vertices}), got {J_regressor.shape}")
    weights = _float_array(path, fields, "weights", 2)
    if weights.shape != (n_vertices, n_joints):
        raise _bad(path, "weights", f"must have shape ({n_vertices}, {n_joints}), got {weights.shape}")
    faces = _index_array(path, fields, "f", 2, n_vertices)
    if faces.shape[1] != 3:
        raise _bad(path, "f", f"must have shape (F, 3), got {faces.shape}")

    model = FlameModelData(
        v_template=v_template,
        shapedirs=shapedirs,
        posedirs=_posedirs(path, fields, n_vertices, n_joints),
        J_regressor=J_regressor,
        parents=parents,
        weights=weights,
        faces=faces,
        n_shape=n_shape,
        n_expression=n_expression,
        is_demo=bool(np.asarray(fields.get("is_demo", False))),
    )
    detected, how = detect_flame_version(path, fields)
    model.version = version or detected
    model.extra["version_source"] = "argument" if version else how
    model.extra["source_path"] = str(path)

    uv_key, uv_faces_key = _first_key(fields, "uv", "vt"), _first_key(fields, "uv_faces", "ft")
    if uv_key and uv_faces_key:
        model.uv, model.uv_faces = _validated_uv(path, fields, uv_key, uv_faces_key, faces.shape[0])
    if _first_key(fields, "lmk_faces_idx") and _first_key(fields, "lmk_bary_coords"):
        embedding = _embedding_from_fields(path, fields)
        _attach_landmarks(model, embedding)
    if _first_key(fields, "front_face_indices"):
        model.front_face_indices = _validated_front_indices(path, fields["front_face_indices"], n_vertices)
    return model


@_loader("FLAME model")
def load_flame_model(
    path: str | Path,
    *,
    landmark_embedding: str | Path | LandmarkEmbedding | None = None,
    uv_file: str | Path | None = None,
    front_face_indices: str | Path | np.ndarray | None = None,
    version: str | None = None,
) -> FlameModelData:
    """Load a FLAME ``.pkl`` (2020 / 2023, chumpy not needed) or ``.npz`` of the same fields.

    Optional extras that FLAME ships separately are attached when given: a landmark embedding (file or
    :class:`LandmarkEmbedding`), a UV file (``.npz`` with vt/ft or uv/uv_faces, or an ``.obj``) and the
    front-face vertex indices (file or array). ``version`` overrides the detected FLAME release.
    """
    path = _require_file(path, "FLAME model file")
    if path.suffix.lower() not in (".pkl", ".npz"):
        raise BadModelFileError(f"{path}: a FLAME model must be a .pkl or .npz file", "use generic_model.pkl")
    model = _fields_to_model(path, _load_mapping(path, "FLAME model"), version)
    if landmark_embedding is not None:
        embedding = (
            landmark_embedding
            if isinstance(landmark_embedding, LandmarkEmbedding)
            else load_landmark_embedding(landmark_embedding)
        )
        _attach_landmarks(model, embedding)
    if uv_file is not None:
        model.uv, model.uv_faces = load_uv_file(uv_file, n_faces=model.faces.shape[0])
    if front_face_indices is not None:
        if isinstance(front_face_indices, np.ndarray):
            model.front_face_indices = _validated_front_indices(
                "front_face_indices argument", front_face_indices, model.n_vertices
            )
        else:
            model.front_face_indices = load_front_face_indices(front_face_indices, n_vertices=model.n_vertices)
    return model


def _attach_landmarks(model: FlameModelData, embedding: LandmarkEmbedding) -> None:
    n_faces = model.faces.shape[0]
    if embedding.faces_idx.size and embedding.faces_idx.max() >= n_faces:
        raise BadModelFileError(
            f"{embedding.source}: landmark triangles go up to {embedding.faces_idx.max()}, but the model has "
            f"{n_faces} triangles",
            "use the landmark embedding that belongs to this FLAME model",
        )
    model.lmk_faces_idx = embedding.faces_idx
    model.lmk_bary_coords = embedding.bary_coords


# --------------------------------------------------------------------------------------------------
# Landmark embeddings

# (triangle key, barycentric key) in order of preference: the 68-point tables first.
_EMBEDDING_KEYS = (
    ("full_lmk_faces_idx", "full_lmk_bary_coords"),
    ("lmk_faces_idx", "lmk_bary_coords"),
    ("lmk_face_idx", "lmk_b_coords"),
    ("static_lmk_faces_idx", "static_lmk_bary_coords"),
)


def _embedding_from_fields(path: Path | str, fields: Mapping[str, Any]) -> LandmarkEmbedding:
    for faces_key, bary_key in _EMBEDDING_KEYS:
        if faces_key in fields and bary_key in fields:
            break
    else:
        raise BadModelFileError(
            f"{path}: no landmark table found (keys: {', '.join(sorted(fields))})",
            "use flame_static_embedding.pkl, landmark_embedding.npy or an .npz with lmk_faces_idx and lmk_bary_coords",
        )
    squeezed = {
        faces_key: _squeeze_leading(path, faces_key, fields[faces_key], 1),
        bary_key: _squeeze_leading(path, bary_key, fields[bary_key], 2),
    }
    faces_idx = _index_array(Path(path), squeezed, faces_key, 1, None)
    if faces_idx.size and faces_idx.min() < 0:
        raise _bad(path, faces_key, "has negative triangle indices")
    bary = _float_array(Path(path), squeezed, bary_key, 2)
    if bary.shape != (faces_idx.shape[0], 3):
        raise _bad(path, bary_key, f"must have shape ({faces_idx.shape[0]}, 3), got {bary.shape}")
    return LandmarkEmbedding(faces_idx=faces_idx, bary_coords=bary, source=str(path))


def _squeeze_leading(path: Path | str, name: str, value: Any, ndim: int) -> np.ndarray:
    if isinstance(value, InertObject):
        raise _bad(path, name, f"could not be read ({value!r})")
    array = np.asarray(value)
    while array.ndim > ndim and array.shape[0] == 1:  # DECA stores (1, 68) / (1, 68, 3)
        array = array[0]
    return array


def _read_object_npy(path: Path) -> Any:
    """The pickled object inside an ``np.save``-d object array, through the restricted unpickler."""
    with path.open("rb") as file:
        try:
            major, _minor = np.lib.format.read_magic(file)
            if major == 1:
                _shape, _fortran, dtype = np.lib.format.read_array_header_1_0(file)
            elif major == 2:
                _shape, _fortran, dtype = np.lib.format.read_array_header_2_0(file)
            else:
                raise BadModelFileError(f"{path}: .npy format version {major} is not supported")
        except ValueError as exc:
            raise BadModelFileError(f"{path} is not a readable .npy file ({exc})", "download it again") from exc
        offset = file.tell()
    if not dtype.hasobject:
        return _load_npy(path)
    loaded = restricted_load(path, offset=offset, inert_globals=_LANDMARK_NPY_INERT_GLOBALS)
    if isinstance(loaded, np.ndarray) and loaded.dtype.hasobject and loaded.shape == ():
        return loaded.item()
    return loaded


@_loader("landmark embedding")
def load_landmark_embedding(path: str | Path) -> LandmarkEmbedding:
    """FLAME's ``flame_static_embedding.pkl`` (51 points), DECA-style ``landmark_embedding.npy`` (its 68-point
    ``full_*`` tables when present) or an ``.npz`` with ``lmk_faces_idx`` / ``lmk_bary_coords``."""
    path = _require_file(path, "landmark embedding")
    suffix = path.suffix.lower()
    fields: Any
    if suffix == ".npy":
        fields = _read_object_npy(path)
    elif suffix in (".pkl", ".npz"):
        fields = _load_mapping(path, "landmark embedding")
    else:
        raise BadModelFileError(f"{path}: unknown landmark embedding type '{suffix}'", "use a .pkl, .npy or .npz")
    if not isinstance(fields, dict):
        raise BadModelFileError(f"{path} holds a {type(fields).__name__}, not a landmark embedding dict")
    return _embedding_from_fields(path, {str(key): value for key, value in fields.items()})


# --------------------------------------------------------------------------------------------------
# UVs and front-face indices


def _validated_uv(
    path: Path, fields: Mapping[str, Any], uv_key: str, faces_key: str, n_faces: int | None
) -> tuple[np.ndarray, np.ndarray]:
    uv = _float_array(path, fields, uv_key, 2)
    if uv.shape[1] != 2:
        raise _bad(path, uv_key, f"must have shape (T, 2), got {uv.shape}")
    uv_faces = _index_array(path, fields, faces_key, 2, uv.shape[0])
    if uv_faces.shape[1] != 3 or (n_faces is not None and uv_faces.shape[0] != n_faces):
        raise _bad(path, faces_key, f"must have shape ({n_faces}, 3) like the mesh faces, got {uv_faces.shape}")
    return uv, uv_faces


def _read_obj_uv(path: Path) -> dict[str, np.ndarray]:
    uv: list[list[float]] = []
    uv_faces: list[list[int]] = []
    if path.stat().st_size > MAX_OBJ_BYTES:
        raise BadModelFileError(f"{path} is larger than {MAX_OBJ_BYTES >> 20} MB; a FLAME head .obj is about 1 MB")
    try:
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            parts = line.split()
            if not parts:
                continue
            if parts[0] == "vt":
                uv.append([float(parts[1]), float(parts[2])])
            elif parts[0] == "f":
                corners = [corner.split("/") for corner in parts[1:]]
                if len(corners) != 3 or any(len(c) < 2 or not c[1] for c in corners):
                    raise BadModelFileError(f"{path}: faces must be triangles with UV indices (f v/vt ...)")
                uv_faces.append([int(c[1]) - 1 for c in corners])
    except (ValueError, IndexError) as exc:
        raise BadModelFileError(f"{path}: unreadable .obj line ({exc})") from exc
    return {"vt": np.asarray(uv, dtype=np.float64).reshape(-1, 2), "ft": np.asarray(uv_faces).reshape(-1, 3)}


@_loader("UV file")
def load_uv_file(path: str | Path, *, n_faces: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """UV coordinates (T, 2) and UV triangles (F, 3) from an ``.npz`` (vt/ft or uv/uv_faces, e.g. FLAME's
    texture space file) or a textured ``.obj`` (e.g. FLAME's head template)."""
    path = _require_file(path, "UV file")
    suffix = path.suffix.lower()
    if suffix == ".obj":
        fields: Mapping[str, Any] = _read_obj_uv(path)
    elif suffix == ".npz":
        fields = _load_npz(path)
    else:
        raise BadModelFileError(f"{path}: unknown UV file type '{suffix}'", "use an .npz (vt, ft) or an .obj")
    uv_key, faces_key = _first_key(fields, "uv", "vt"), _first_key(fields, "uv_faces", "ft")
    if uv_key is None or faces_key is None:
        raise BadModelFileError(f"{path}: no UV coordinates and UV faces found (need vt and ft, or uv and uv_faces)")
    return _validated_uv(path, fields, uv_key, faces_key, n_faces)


def _validated_front_indices(source: Path | str, value: Any, n_vertices: int | None) -> np.ndarray:
    indices = _index_array(Path(str(source)), {"front_face_indices": value}, "front_face_indices", 1, n_vertices)
    if indices.size == 0 or np.any(np.diff(indices) <= 0):
        raise _bad(source, "front_face_indices", "must be a non-empty, strictly increasing list of vertex ids")
    return indices


@_loader("front-face index file")
def load_front_face_indices(path: str | Path, *, n_vertices: int | None = None) -> np.ndarray:
    """The front-face vertex ids (int64, sorted, unique) from a ``.npy`` or an ``.npz``; no pickles."""
    path = _require_file(path, "front-face index file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            value: Any = _load_npy(path)
        elif suffix == ".npz":
            arrays = _load_npz(path)
            key = "front_face_indices" if "front_face_indices" in arrays else None
            if key is None and len(arrays) == 1:
                key = next(iter(arrays))
            if key is None:
                raise BadModelFileError(f"{path}: no 'front_face_indices' array", "store the ids under that name")
            value = arrays[key]
        else:
            raise BadModelFileError(f"{path}: unknown front-face index file type '{suffix}'", "use a .npy file")
    except ValueError as exc:
        raise BadModelFileError(f"{path} is not a plain numeric .npy ({exc})", "use frontindices.npy") from exc
    return _validated_front_indices(path, value, n_vertices)


def is_official_front_face_indices(indices: np.ndarray) -> bool:
    """True when ``indices`` are exactly the official OFER front-face list (order matters for IdRank)."""
    data = np.ascontiguousarray(np.asarray(indices), dtype="<i8").tobytes()
    return hashlib.sha256(data).hexdigest() == OFFICIAL_FRONT_FACE_DATA_SHA256


# The writers live in .writing; re-exported here, where callers have always found them.
from .writing import flame_file_fields, save_flame_npz, save_flame_pkl  # noqa: E402
