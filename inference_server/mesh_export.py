"""Per-hypothesis files for other tools: binary PLY meshes and ``params.json`` in FLAME conventions.

Each file is written atomically (``atomic_io``): a full disk or a killed run never leaves half a mesh.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from .atomic_io import atomic_write, atomic_write_text
from .result import ReconstructionResult


def write_ply(path: str | os.PathLike[str], vertices: np.ndarray, faces: np.ndarray, scale: float = 1.0) -> Path:
    """Binary little-endian PLY (float32 xyz, uint8 count + int32 indices), readable by Blender, MeshLab, trimesh."""
    target = Path(path)
    verts = np.ascontiguousarray(np.asarray(vertices, dtype=np.float64) * scale, dtype="<f4")
    tris = np.asarray(faces, dtype=np.int64)
    header = (
        "ply\nformat binary_little_endian 1.0\ncomment OFER for Blender hypothesis\n"
        f"element vertex {len(verts)}\nproperty float x\nproperty float y\nproperty float z\n"
        f"element face {len(tris)}\nproperty list uchar int vertex_indices\nend_header\n"
    )
    face_rows = np.zeros(len(tris), dtype=[("n", "u1"), ("idx", "<i4", (3,))])
    face_rows["n"] = 3
    face_rows["idx"] = tris

    def write(handle: BinaryIO) -> None:
        handle.write(header.encode("ascii"))
        handle.write(verts.tobytes())
        handle.write(face_rows.tobytes())

    return atomic_write(target, write)


def flame_params(result: ReconstructionResult) -> dict[str, Any]:
    """Parameters in FLAME conventions: 15-D pose [global, neck, jaw, left eye, right eye], metres."""
    identities = [
        {
            "rank": k + 1,
            "score": float(result.identity_scores[k]),
            "shape": result.identity_params[k].tolist(),
        }
        for k in range(len(result.identity_params))
    ]
    expressions = []
    for m in range(len(result.expression_params)):
        pose = np.zeros(15)
        pose[6:9] = result.jaw_pose[m]
        if result.eye_pose is not None:  # the photo's gaze, the same for every expression
            pose[9:15] = result.eye_pose.reshape(6)
        expressions.append(
            {
                "index": m + 1,
                "expression": result.expression_params[m].tolist(),
                "jaw_pose": result.jaw_pose[m].tolist(),
                "pose": pose.tolist(),
            }
        )
    return {
        "format": "ofer-flame-params/1",
        "units": "metres",
        "pose_layout": ["global(0:3)", "neck(3:6)", "jaw(6:9)", "left_eye(9:12)", "right_eye(12:15)"],
        "note": "expressions are applied to identity rank 1; jaw_pose already includes jaw_scale; the eye "
        "joints hold the photo's gaze when it was read (meta gaze)",
        "gaze": result.meta.get("gaze"),
        "demo": result.demo,
        "flame_version": result.meta.get("flame_version"),
        "jaw_scale": result.meta.get("jaw_scale"),
        "identities": identities,
        "expressions": expressions,
    }


#: Which hypotheses get a PLY file: every one, the first of each kind (the first-ranked identity and the
#: first-shown expression), or none (``params.json`` and the result file hold them all).
MESH_CHOICES = ("all", "first", "none")
#: The PLY names this module writes; others in the folder are never touched.
HYPOTHESIS_PLY = re.compile(r"(identity_\d{2}|expression_\d{3})\.ply")


def export_hypotheses(
    result: ReconstructionResult, out_dir: str | os.PathLike[str], *, millimetres: bool = False, meshes: str = "all"
) -> list[Path]:
    """Write ``identity_01.ply`` …, ``expression_001.ply`` … (``meshes``: MESH_CHOICES) and ``params.json`` into
    ``out_dir``; hypothesis PLYs an earlier run left there and this one does not write are removed, so the
    folder's meshes are this result's."""
    if meshes not in MESH_CHOICES:
        raise ValueError(f"meshes must be one of {MESH_CHOICES}, not {meshes!r}")
    folder = Path(out_dir)
    scale = 1000.0 if millimetres else 1.0
    count = {"all": None, "first": 1, "none": 0}[meshes]
    written = [
        write_ply(folder / f"identity_{k + 1:02d}.ply", verts, result.faces, scale)
        for k, verts in enumerate(result.identity_vertices[:count])
    ]
    written += [
        write_ply(folder / f"expression_{m + 1:03d}.ply", verts, result.faces, scale)
        for m, verts in enumerate(result.expression_vertices[:count])
    ]
    _remove_stale_meshes(folder, {path.name for path in written})
    written.append(atomic_write_text(folder / "params.json", json.dumps(flame_params(result), indent=1)))
    return written


def _remove_stale_meshes(folder: Path, kept: set[str]) -> None:
    for path in folder.glob("*.ply"):
        if HYPOTHESIS_PLY.fullmatch(path.name) and path.name not in kept:
            path.unlink(missing_ok=True)
