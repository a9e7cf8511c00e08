"""Demo asset files (DEMO data, not FLAME): written on first use into a cache folder.

The folder holds the DEMO head (the converted ICT Face Model Light, :mod:`.head`) as a FLAME-layout
``.pkl`` (written by the FLAME writer, so the real loader reads it) and ``.npz`` (a copy of the packaged
file, float16 bases), the ICT licence notice, its landmark embedding, its front-face vertex ids, per-vertex preview
colours, a README and a manifest (generator version + SHA-256 of every file). A folder whose manifest does
not match (other generator version, missing or changed file) is regenerated; every file is written under a
temporary name and renamed, so a crash never leaves a half-written asset behind.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..assets_config import default_cache_dir as user_cache_dir
from ..errors import MissingAssetError
from ..flame.loading import save_flame_pkl
from .head import DEMO_VERSION, GENERATOR_VERSION, load_demo_head
from .packaged_head import LICENSE_FILE, MODEL_FILE, PACKAGE_DIR

MODEL_PKL = "DEMO_flame_model.pkl"
MODEL_NPZ = "DEMO_flame_model.npz"
LANDMARK_EMBEDDING = "DEMO_landmark_embedding.npz"
FRONT_FACE_INDICES = "DEMO_front_face_indices.npy"
VERTEX_COLORS = "DEMO_vertex_colors.npy"
README = "DEMO_README.txt"
LICENSE = "DEMO_LICENSE-ICT-FaceKit.txt"
MANIFEST = "DEMO_manifest.json"
_ASSET_FILES = (MODEL_PKL, MODEL_NPZ, LANDMARK_EMBEDDING, FRONT_FACE_INDICES, VERTEX_COLORS, README, LICENSE)

README_TEXT = """DEMO data, not FLAME.

These files were written by ofer-blender (inference_server.demo) so that the worker and its tests run
without the licensed FLAME model. The head is the ICT Face Model Light (USC Institute for Creative
Technologies, MIT licence, see DEMO_LICENSE-ICT-FaceKit.txt) converted to the FLAME file layout: 50 identity
modes of light-stage scans and 43 expression modes built from its ARKit shapes. It contains no FLAME data,
and results made with it are demo results.

For real reconstructions point the worker at your own FLAME 2020 generic_model.pkl.
"""


@dataclass(frozen=True)
class DemoAssetPaths:
    """Where the demo assets are (all inside ``directory``)."""

    directory: Path
    model_pkl: Path
    model_npz: Path
    landmark_embedding: Path
    front_face_indices: Path
    vertex_colors: Path
    readme: Path
    license: Path
    manifest: Path

    @classmethod
    def in_directory(cls, directory: Path) -> DemoAssetPaths:
        return cls(
            directory=directory,
            model_pkl=directory / MODEL_PKL,
            model_npz=directory / MODEL_NPZ,
            landmark_embedding=directory / LANDMARK_EMBEDDING,
            front_face_indices=directory / FRONT_FACE_INDICES,
            vertex_colors=directory / VERTEX_COLORS,
            readme=directory / README,
            license=directory / LICENSE,
            manifest=directory / MANIFEST,
        )


def default_cache_dir() -> Path:
    """The ``demo`` folder of the worker's user cache (``$OFER_CACHE_DIR`` or the platform's cache folder)."""
    return user_cache_dir() / "demo"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_bytes_atomically(path: Path, data: bytes) -> None:
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _npz_bytes(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


@functools.cache
def _package_sha256() -> str:
    return _sha256(PACKAGE_DIR / MODEL_FILE)


def _expected_manifest_header() -> dict[str, str]:
    return {
        "generator_version": GENERATOR_VERSION,
        "package_sha256": _package_sha256(),
        "model_version": DEMO_VERSION,
        "note": "DEMO data, not FLAME",
    }


def demo_assets_current(paths: DemoAssetPaths) -> bool:
    """True when the manifest matches this generator and every file is present and unchanged."""
    try:
        manifest = json.loads(paths.manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(manifest, dict) or any(manifest.get(k) != v for k, v in _expected_manifest_header().items()):
        return False
    files = manifest.get("files")
    if not isinstance(files, dict) or set(files) != set(_ASSET_FILES):
        return False
    for name, digest in files.items():
        path = paths.directory / name
        if not path.is_file() or _sha256(path) != digest:
            return False
    return True


def write_demo_assets(paths: DemoAssetPaths) -> None:
    """Write every asset file from the packaged DEMO head, the manifest last."""
    paths.directory.mkdir(parents=True, exist_ok=True)
    data = load_demo_head()
    save_flame_pkl(data, paths.model_pkl)
    _write_bytes_atomically(paths.model_npz, (PACKAGE_DIR / MODEL_FILE).read_bytes())
    _write_bytes_atomically(paths.license, (PACKAGE_DIR / LICENSE_FILE).read_bytes())
    if data.lmk_faces_idx is None or data.lmk_bary_coords is None or data.front_face_indices is None:
        raise RuntimeError("the demo head generator returned no landmark embedding or front-face ids")
    _write_bytes_atomically(
        paths.landmark_embedding,
        _npz_bytes(lmk_faces_idx=data.lmk_faces_idx, lmk_bary_coords=data.lmk_bary_coords),
    )
    _write_bytes_atomically(paths.front_face_indices, _npy_bytes(data.front_face_indices.astype("<i8")))
    _write_bytes_atomically(paths.vertex_colors, _npy_bytes(data.extra["vertex_colors"].astype("<f4")))
    _write_bytes_atomically(paths.readme, README_TEXT.encode("utf-8"))
    manifest = dict(_expected_manifest_header())
    manifest_files = {name: _sha256(paths.directory / name) for name in _ASSET_FILES}
    text = json.dumps({**manifest, "files": manifest_files}, indent=2, sort_keys=True) + "\n"
    _write_bytes_atomically(paths.manifest, text.encode("utf-8"))


def ensure_demo_assets(cache_dir: Path | None = None) -> DemoAssetPaths:
    """The demo asset files, generated into ``cache_dir`` (default :func:`default_cache_dir`) when missing,
    made by another generator version, or changed since they were written."""
    paths = DemoAssetPaths.in_directory(Path(cache_dir) if cache_dir is not None else default_cache_dir())
    if demo_assets_current(paths):
        return paths
    try:
        write_demo_assets(paths)
    except OSError as exc:
        raise MissingAssetError(
            f"cannot write the demo assets to {paths.directory} ({exc})",
            "set OFER_CACHE_DIR to a writable folder or pass --cache-dir",
        ) from exc
    return paths
