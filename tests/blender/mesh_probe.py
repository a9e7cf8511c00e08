"""What Blender shows of a mesh, read back as numpy: the tests' one way to look at evaluated geometry.

Shared by the Blender tests and by ``zip_scenarios.py`` (run as a script from this folder).
"""

from __future__ import annotations

from typing import Any

import bpy
import numpy as np


def evaluated_local(obj: Any) -> np.ndarray:
    """(V, 3) float32: the evaluated mesh (shape keys, armature) in the object's own coordinates."""
    depsgraph = bpy.context.evaluated_depsgraph_get()
    evaluated = obj.evaluated_get(depsgraph)
    mesh = evaluated.to_mesh()
    try:
        out = np.empty(len(mesh.vertices) * 3, dtype=np.float32)
        mesh.vertices.foreach_get("co", out)
    finally:
        evaluated.to_mesh_clear()
    return out.reshape(-1, 3)


def to_world(obj: Any, local: np.ndarray) -> np.ndarray:
    """Object coordinates → world coordinates (float64) through the evaluated world matrix."""
    matrix = np.array(obj.evaluated_get(bpy.context.evaluated_depsgraph_get()).matrix_world)
    return local.astype(np.float64) @ matrix[:3, :3].T + matrix[:3, 3]


def evaluated_world(obj: Any) -> np.ndarray:
    """(V, 3) float64: the evaluated mesh in world coordinates."""
    return to_world(obj, evaluated_local(obj))


def basis_world(obj: Any) -> np.ndarray:
    """(V, 3) float64: the basis shape key in world coordinates (what Edit Mode shows)."""
    data = obj.data.shape_keys.key_blocks[0].data
    co = np.empty(len(data) * 3, dtype=np.float32)
    data.foreach_get("co", co)
    return to_world(obj, co.reshape(-1, 3))
