"""FLAME's own controls for the result file: the model's directions, so a client can rebuild any mesh.

With ``flame_controls`` on, the result carries the first ``Sc`` shape directions, the expression directions
the hypotheses use and the pose correctives (docs/result-file.md). The Blender add-on turns them into the
shape keys the MPI FLAME add-on names ``Shape1..``, ``Exp1..``, ``Pose1..`` (ofer_blender/flame_controls.py).
numpy only: it reads the model's arrays, it computes nothing with torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .flame.model_data import FlameModelData
from .result import ReconstructionResult

#: Shape directions written by default: as many as DECA/EMOCA fit, the MPI add-on's usual slider count.
DEFAULT_SHAPES = 100


@dataclass(frozen=True)
class FlameControlBases:
    shape_basis: np.ndarray  # float32 (Sc, V, 3) metres per unit shape coefficient
    expression_basis: np.ndarray  # float32 (E, V, 3) metres per unit expression coefficient
    pose_basis: np.ndarray  # float32 (P, V, 3) per unit of the flattened (R - I) of joints 1..J-1


def control_bases(flame: FlameModelData, n_expression: int, n_shapes: int = DEFAULT_SHAPES) -> FlameControlBases:
    """The first ``min(n_shapes, model's)`` shape and first ``n_expression`` expression directions and
    every pose corrective, as (count, V, 3) float32 arrays."""
    if not 0 < n_expression <= flame.n_expression:
        raise ValueError(f"the model has {flame.n_expression} expression directions, {n_expression} asked for")
    n_shapes = max(1, min(int(n_shapes), flame.n_shape))

    def columns(dirs: np.ndarray, first: int, count: int) -> np.ndarray:
        # FLAME stores (V, 3, K): one column per coefficient; the file wants one (V, 3) mesh offset per row
        return np.ascontiguousarray(np.moveaxis(dirs[:, :, first : first + count], 2, 0), dtype=np.float32)

    return FlameControlBases(
        shape_basis=columns(flame.shapedirs, 0, n_shapes),
        expression_basis=columns(flame.shapedirs, flame.n_shape, n_expression),
        pose_basis=columns(flame.posedirs, 0, flame.posedirs.shape[2]),
    )


def attach_requested_bases(result: ReconstructionResult, extra: dict[str, object], flame: FlameModelData) -> None:
    """Put the bases into ``result`` when the request has ``flame_controls`` (and leave it alone otherwise)."""
    if not extra.get("flame_controls"):
        return
    shapes = extra.get("flame_controls_shapes", DEFAULT_SHAPES)
    bases = control_bases(
        flame, result.expression_params.shape[1], shapes if isinstance(shapes, int) else DEFAULT_SHAPES
    )
    result.shape_basis = bases.shape_basis
    result.expression_basis = bases.expression_basis
    result.pose_basis = bases.pose_basis
