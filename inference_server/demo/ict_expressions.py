"""ICT's ARKit expression shapes re-expressed as orthogonal modes with a standard deviation.

Why not keep the 53 ARKit shapes as they are: FLAME's expression coefficients, ExpGen's diffusion prior
and the synthetic renders all treat the coefficients as independent, zero-mean, unit-variance Gaussians
(x_T ~ N(0, I); a render draws N(0, σ²) per coefficient). ARKit weights are activations in [0, 1], one-sided
(a negative ``eyeBlink_L`` opens the eye past the socket), strongly correlated (left / right pairs) and
redundant (``browInnerUp_L`` + ``_R`` against ``browDown``). As orthogonal modes ordered by variance, a
Gaussian draw is a plausible blend of shapes, its first coefficients carry most of the motion, and the
prior's isotropic noise means the same thing in every direction.

The modes are the principal directions of the shape displacements under independent activations with
E[a²] = 1/3 (uniform in [0, 1]); mode k is scaled to its standard deviation, so coefficient 1 is a 1σ
expression. ``arkit_to_expression`` maps ARKit weights to mode coefficients (least squares), so a named
ARKit expression can still be posed.
"""

from __future__ import annotations

import numpy as np

#: Left out of the expression basis, and why: the eyeballs turn with FLAME's eye joints, not with
#: expression shapes (eyeLook*); mouthClose only makes sense with jawOpen (alone it pushes the lips
#: through each other); jawOpen is the jaw joint's rotation plus its pose corrective.
EXCLUDED_EXPRESSIONS = (
    "jawOpen", "mouthClose", "eyeLookDown_L", "eyeLookDown_R", "eyeLookIn_L", "eyeLookIn_R",
    "eyeLookOut_L", "eyeLookOut_R", "eyeLookUp_L", "eyeLookUp_R",
)  # fmt: skip
#: Second moment of an ARKit activation drawn uniformly from [0, 1].
ACTIVATION_SECOND_MOMENT = 1.0 / 3.0


def expression_modes(shapes: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, object]]:
    """(V, 3, K) orthogonal modes scaled to 1σ from the ARKit displacement fields (V, 3) of ``shapes``,
    and a record: the names used, each mode's share of the variance, and the ARKit → mode matrix."""
    names = [name for name in shapes if name not in EXCLUDED_EXPRESSIONS]
    if not names:
        raise ValueError("no expression shapes to build modes from")
    n_vertices = next(iter(shapes.values())).shape[0]
    displacement = np.stack([shapes[name].reshape(-1) for name in names], axis=1)  # (3V, S)
    u, sigma, _ = np.linalg.svd(displacement * np.sqrt(ACTIVATION_SECOND_MOMENT), full_matrices=False)
    rank = int((sigma > 1e-6 * sigma[0]).sum())
    u, sigma = u[:, :rank], sigma[:rank]
    modes = (u * sigma).reshape(n_vertices, 3, rank)
    # c = Σ⁻¹ Uᵀ D a: the mode coefficients of the displacement D a of ARKit weights a.
    arkit_to_expression = (u.T @ displacement) / sigma[:, None]
    variance = sigma**2 / (sigma**2).sum()
    info: dict[str, object] = {
        "arkit_names": names,
        "n_modes": rank,
        "variance_share": np.round(variance, 5).tolist(),
        "activation_second_moment": ACTIVATION_SECOND_MOMENT,
    }
    return modes, info | {"arkit_to_expression": arkit_to_expression}
