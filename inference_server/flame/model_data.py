"""The fields of a FLAME model file, as plain numpy arrays (no torch, no chumpy, no scipy).

This dataclass is what every loader returns (user ``.pkl`` / ``.npz``, the demo generator) and what the
torch layer is built from. Names follow the FLAME pickle (``v_template``, ``shapedirs``, ...), so code
written against FLAME reads naturally; extra assets that FLAME ships in separate files (UVs, the landmark
embedding, the front-face vertex list) are optional fields here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: FLAME joints in pose order (global, neck, jaw, left eye, right eye).
JOINT_NAMES = ("root", "neck", "jaw", "left_eye", "right_eye")
#: Columns of ``shapedirs`` that are identity in every FLAME release (the rest are expression).
FLAME_SHAPE_COMPONENTS = 300


@dataclass
class FlameModelData:
    """One FLAME-layout model. V vertices, F faces, J joints (5), P = 9 * (J - 1) pose-corrective columns."""

    v_template: np.ndarray  # float64 (V, 3), metres
    shapedirs: np.ndarray  # float64 (V, 3, n_shape + n_expression)
    # posedirs: float64 (V, 3, P) as FLAME stores it; applied to the flattened (R - I) of joints 1..
    posedirs: np.ndarray
    J_regressor: np.ndarray  # float64 (J, V), dense
    parents: np.ndarray  # int64 (J,), -1 for the root (kintree_table[0] with the root's 2**32-1 mapped to -1)
    weights: np.ndarray  # float64 (V, J) skinning weights
    faces: np.ndarray  # int64 (F, 3)
    n_shape: int = FLAME_SHAPE_COMPONENTS
    n_expression: int = 100
    uv: np.ndarray | None = None  # float64 (T, 2)
    uv_faces: np.ndarray | None = None  # int64 (F, 3)
    lmk_faces_idx: np.ndarray | None = None  # int64 (68,) triangle of each landmark
    lmk_bary_coords: np.ndarray | None = None  # float64 (68, 3) barycentric weights in that triangle
    front_face_indices: np.ndarray | None = None  # int64 (1785,) sorted vertex ids of the front-face region
    version: str = "FLAME2020"
    is_demo: bool = False  # True for the DEMO head (ICT Face Model, not FLAME): every output must say so
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n_vertices(self) -> int:
        return int(self.v_template.shape[0])

    @property
    def n_joints(self) -> int:
        return int(self.parents.shape[0])
