"""The demo head: a generated stand-in in exactly the FLAME model layout (DEMO data, not FLAME).

It lets the whole worker run on a fresh machine and in every test without the licensed FLAME files:
about 5,000 vertices, 300 shape + 100 expression components, pose correctives, a 5-joint rig, UVs, a
68-point landmark embedding and a 1785-vertex front-face list. The same seed gives the same bytes on
every machine (see :mod:`.smooth` for why).
"""

from __future__ import annotations

import numpy as np

from ..flame.model_data import FlameModelData
from .head_bases import N_EXPRESSION, N_SHAPE, expression_basis, pose_correctives, shape_basis
from .head_mesh import build_head_mesh
from .head_rig import PARENTS, front_face_indices, joint_regressor, landmark_embedding, skin_weights

#: Model version string of every demo head (never a FLAME release name).
DEMO_VERSION = "DEMO-FLAME"
#: Bump when the generated data changes; cached assets with another version are regenerated.
GENERATOR_VERSION = "2"  # 2: identity components 3x stronger (head_bases.shape_amplitude)


def generate_demo_head(seed: int = 0) -> FlameModelData:
    """Generate the demo head. ``seed`` only changes the random higher-order basis components.

    ``extra`` holds ``vertex_colors`` (V, 3) in [0, 1] for previews and synthetic renders, the seed and the
    generator version.
    """
    mesh = build_head_mesh()
    rng = np.random.Generator(np.random.PCG64(seed))
    shapedirs = np.concatenate([shape_basis(mesh, rng), expression_basis(mesh, rng)], axis=2)
    posedirs = pose_correctives(mesh, rng)
    lmk_faces_idx, lmk_bary_coords = landmark_embedding(mesh)
    return FlameModelData(
        v_template=np.ascontiguousarray(mesh.vertices, dtype=np.float64),
        shapedirs=np.ascontiguousarray(shapedirs, dtype=np.float64),
        posedirs=np.ascontiguousarray(posedirs, dtype=np.float64),
        J_regressor=joint_regressor(mesh),
        parents=PARENTS.copy(),
        weights=skin_weights(mesh),
        faces=mesh.faces.astype(np.int64),
        n_shape=N_SHAPE,
        n_expression=N_EXPRESSION,
        uv=mesh.uv.astype(np.float64),
        uv_faces=mesh.uv_faces.astype(np.int64),
        lmk_faces_idx=lmk_faces_idx,
        lmk_bary_coords=lmk_bary_coords,
        front_face_indices=front_face_indices(mesh),
        version=DEMO_VERSION,
        is_demo=True,
        extra={
            "vertex_colors": mesh.colors.copy(),
            "seed": int(seed),
            "generator_version": GENERATOR_VERSION,
        },
    )
