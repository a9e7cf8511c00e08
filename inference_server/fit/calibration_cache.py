"""The detector-to-68 correspondence of a head model, measured once and kept in the user cache.

:func:`.calibration.calibrate_correspondence` renders 40 heads of the model and runs the detector on
each render: about 35 s on two loaded cores (1.5-2 s with the seven mean-head renders it used before),
paid by every fresh worker and every ``ofer-worker reconstruct`` without this cache. Its result depends
only on what it reads, so the file is named by a SHA-256 of exactly that: the head model (template,
bases, rig, faces, vertex colours), the landmark embedding, the detector (MediaPipe's version) and the
source text of the code that measures it (calibration, landmark table, renderer, camera), so a change to
any of them measures afresh instead of reading a stale correspondence.

The file is written atomically and checked when read (the key inside, shapes, finite, rows that sum to
one, one precision in (0, 1] per landmark); a file that fails any check is measured again and replaced,
never trusted.
"""

from __future__ import annotations

import hashlib
import io
import logging
import zipfile
from pathlib import Path

import numpy as np

from ..atomic_io import atomic_write_bytes
from ..errors import IOFailedError
from ..flame.model_data import FlameModelData
from . import calibration, camera, landmarks68
from .calibration import Correspondence, Detector, calibrate_correspondence

log = logging.getLogger(__name__)

#: Bump when the file's layout changes.
FORMAT = 2
FOLDER = "fit_calibration"
#: Calibrations that ship with the worker (the DEMO head's, made by ``python -m
#: inference_server.fit.calibration_cache``): read when the user cache has none, so the first DEMO
#: reconstruction on a machine does not pay the ~35 s measurement. A stale one (its key no longer matches the
#: code) is simply not found, and the measurement runs as without it.
PACKAGED = Path(__file__).resolve().parents[1] / "assets" / FOLDER


#: The face mesh network a calibration is measured for: the refined one (the default, whose key names no
#: detector, as before there was a second) or the plain one (fit/second_network.py).
DETECTORS = ("face_mesh", "plain_face_mesh")


def calibration_key(model: FlameModelData, detector: str = DETECTORS[0]) -> str:
    """Hex SHA-256 of everything the calibration's result depends on (see the module docstring)."""
    from .. import render

    if detector not in DETECTORS:
        raise ValueError(f"unknown detector {detector!r}; use one of {DETECTORS}")
    digest = hashlib.sha256(f"format {FORMAT}\n".encode())
    if detector != DETECTORS[0]:
        digest.update(f"detector {detector}\n".encode())
    colours = model.extra.get("vertex_colors")
    # The renders are random heads of the model (identity, expression, jaw): its bases and rig count too.
    arrays = {"v_template": model.v_template, "faces": model.faces, "lmk_faces_idx": model.lmk_faces_idx,
              "lmk_bary_coords": model.lmk_bary_coords, "vertex_colors": colours, "shapedirs": model.shapedirs,
              "posedirs": model.posedirs, "J_regressor": model.J_regressor, "parents": model.parents,
              "weights": model.weights, "sizes": np.array([model.n_shape, model.n_expression])}  # fmt: skip
    for name, value in arrays.items():
        if value is None:
            digest.update(f"{name}: none\n".encode())
            continue
        a = np.ascontiguousarray(value)
        digest.update(f"{name}: {a.dtype.str} {a.shape}\n".encode())
        digest.update(a.tobytes())
    digest.update(f"mediapipe {_mediapipe_version()}\n".encode())
    for module in (calibration, landmarks68, camera, render):
        digest.update(Path(str(module.__file__)).read_bytes())
    return digest.hexdigest()


def _mediapipe_version() -> str:
    try:
        import mediapipe

        return str(getattr(mediapipe, "__version__", "unknown"))
    except ImportError:
        return "absent"


def cached_correspondence(
    model: FlameModelData, detect: Detector, cache_dir: Path | None, detector: str = DETECTORS[0]
) -> Correspondence | None:
    """:func:`.calibration.calibrate_correspondence`, read from ``cache_dir`` when measured before (None:
    no cache, always measure); ``detector`` names the network ``detect`` runs (DETECTORS). A cache that
    cannot be written only costs the next run the measurement."""
    if cache_dir is None:
        return calibrate_correspondence(model, detect)
    key = calibration_key(model, detector)
    path = Path(cache_dir) / FOLDER / f"{key}.npz"
    for candidate in (path, PACKAGED / path.name):
        found, measured = read_cached(candidate, key)
        if found:
            return measured
    measured = calibrate_correspondence(model, detect)
    try:
        write_cached(path, key, measured)
    except (OSError, IOFailedError) as exc:  # a read-only or full cache folder must not fail the reconstruction
        log.warning("could not cache the landmark calibration in %s: %s", path, exc)
    return measured


def write_cached(path: Path, key: str, measured: Correspondence | None) -> None:
    """Atomically write the measured correspondence (or the fact that there is none) under ``key``."""
    buffer = io.BytesIO()
    matrix, precision = (np.zeros((0, 0)), np.zeros(0)) if measured is None else (measured.matrix, measured.precision)
    np.savez(buffer, key=np.array(key), found=np.array(measured is not None),
             matrix=np.asarray(matrix, dtype=np.float64),
             precision=np.asarray(precision, dtype=np.float64))  # fmt: skip
    atomic_write_bytes(path, buffer.getvalue())


def read_cached(path: Path, key: str) -> tuple[bool, Correspondence | None]:
    """(True, correspondence or None) for a valid file of ``key``; (False, None) when absent or invalid."""
    if not path.is_file():
        return False, None
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["key"]) != key:
                raise ValueError("the file belongs to another key")
            if not bool(data["found"]):
                return True, None
            matrix = np.array(data["matrix"], dtype=np.float64)
            precision = np.array(data["precision"], dtype=np.float64)
        if matrix.ndim != 2 or matrix.shape[0] != landmarks68.N_LANDMARKS or matrix.shape[1] < 468:
            raise ValueError(f"shape {matrix.shape}")
        if not np.isfinite(matrix).all() or not np.allclose(matrix.sum(axis=1), 1.0, atol=1e-6):
            raise ValueError("rows are not affine combinations")
        if precision.shape != (matrix.shape[0],) or not ((precision > 0) & (precision <= 1)).all():
            raise ValueError("precision is not one weight in (0, 1] per landmark")
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:  # truncated, foreign, tampered
        log.warning("ignoring the cached landmark calibration %s (%s); measuring again", path, exc)
        return False, None
    return True, Correspondence(matrix, precision)


def write_packaged_demo_calibration() -> list[Path]:
    """Measure the DEMO head's calibrations (both face mesh networks) as the worker loads that head, and
    write them into PACKAGED."""
    from ..assets_config import resolve_assets
    from ..model_bundle import load_model_bundle
    from ..preprocess.mediapipe_faces import MediaPipeFaces

    flame = load_model_bundle(resolve_assets({})).flame
    faces = MediaPipeFaces()
    try:
        measured = {name: calibrate_correspondence(flame, getattr(faces, name)) for name in DETECTORS}
    finally:
        faces.close()
    for stale in PACKAGED.glob("*.npz"):
        stale.unlink()
    paths = []
    for name, correspondence in measured.items():
        key = calibration_key(flame, name)
        paths.append(PACKAGED / f"{key}.npz")
        write_cached(paths[-1], key, correspondence)
    return paths


if __name__ == "__main__":
    print(*write_packaged_demo_calibration(), sep="\n")
