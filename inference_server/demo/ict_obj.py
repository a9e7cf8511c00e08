"""Read the ICT Face Model Light's OBJ files (vertices, texture coordinates, polygons) with numpy only.

Only what the converter needs: ``v`` lines (positions), ``vt`` lines and ``f`` lines with ``v/vt``
corners. Normals are ignored; polygons are quads and triangles, split into triangles on read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


class IctFormatError(ValueError):
    """An ICT file is missing, truncated or not what the converter expects."""


@dataclass(frozen=True)
class ObjMesh:
    vertices: np.ndarray  # float64 (V, 3), the file's units (centimetres for ICT)
    uv: np.ndarray  # float64 (T, 2)
    faces: np.ndarray  # int64 (F, 3) vertex ids, quads split along their 0-2 diagonal
    uv_faces: np.ndarray  # int64 (F, 3) texture-coordinate ids of the same corners
    polygon_of_face: np.ndarray  # int64 (F,) the polygon (0-based, file order) each triangle came from


def read_obj_vertices(path: Path) -> np.ndarray:
    """The ``v`` lines of an OBJ as (V, 3) float64 (the expression and identity files need no more)."""
    try:
        with Path(path).open(encoding="utf-8") as file:
            rows = [line.split()[1:4] for line in file if line.startswith("v ")]
    except OSError as exc:
        raise IctFormatError(f"cannot read {path}: {exc}") from exc
    if not rows:
        raise IctFormatError(f"{path} has no vertex ('v') lines")
    try:
        return np.array(rows, dtype=np.float64)
    except ValueError as exc:
        raise IctFormatError(f"{path}: a vertex line does not hold three numbers ({exc})") from exc


def _corner(token: str) -> tuple[int, int]:
    parts = token.split("/")
    if len(parts) < 2 or not parts[1]:
        raise IctFormatError(f"face corner '{token}' has no texture coordinate (expected v/vt)")
    return int(parts[0]) - 1, int(parts[1]) - 1


def read_obj_mesh(path: Path) -> ObjMesh:
    """Positions, texture coordinates and triangulated polygons of the ICT neutral mesh."""
    vertices: list[list[str]] = []
    uv: list[list[str]] = []
    faces: list[tuple[int, int, int]] = []
    uv_faces: list[tuple[int, int, int]] = []
    polygon: list[int] = []
    try:
        with Path(path).open(encoding="utf-8") as file:
            for line in file:
                if line.startswith("v "):
                    vertices.append(line.split()[1:4])
                elif line.startswith("vt "):
                    uv.append(line.split()[1:3])
                elif line.startswith("f "):
                    corners = [_corner(token) for token in line.split()[1:]]
                    if len(corners) not in (3, 4):
                        raise IctFormatError(f"{path}: a polygon with {len(corners)} corners")
                    n_polygon = polygon[-1] + 1 if polygon else 0
                    for a, b, c in ((0, 1, 2), (0, 2, 3))[: len(corners) - 2]:
                        faces.append((corners[a][0], corners[b][0], corners[c][0]))
                        uv_faces.append((corners[a][1], corners[b][1], corners[c][1]))
                        polygon.append(n_polygon)
    except OSError as exc:
        raise IctFormatError(f"cannot read {path}: {exc}") from exc
    mesh = ObjMesh(
        vertices=np.array(vertices, dtype=np.float64),
        uv=np.array(uv, dtype=np.float64),
        faces=np.array(faces, dtype=np.int64),
        uv_faces=np.array(uv_faces, dtype=np.int64),
        polygon_of_face=np.array(polygon, dtype=np.int64),
    )
    if not len(mesh.faces) or mesh.faces.max() >= len(mesh.vertices) or mesh.uv_faces.max() >= len(mesh.uv):
        raise IctFormatError(f"{path}: faces refer to vertices or texture coordinates that do not exist")
    return mesh
