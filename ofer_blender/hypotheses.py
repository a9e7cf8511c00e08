"""How a result file's hypotheses become shape keys, and which keys a choice switches on (no bpy).

Semantics (documented in docs/blender.md):

* The **Basis** is identity 1, the best-ranked neutral head (``identity_vertices[0]``).
* ``ID 02 (98.7% of ID 01)`` … hold identities 2..K as absolute shapes (neutral): the rank, and the
  ranker's probability relative to the best one (absolute probabilities of a flat softmax all read alike).
* ``EXP 001`` … hold the M expressions of identity 1 **in the rig's rest space**: the worker's mesh with
  the jaw rotation taken out (:func:`skinning.unpose`). The jaw comes back from the jaw bone, which the
  Expression property poses from ``jaw_pose``; the evaluated mesh then equals ``expression_vertices``.
* Identity *k* with expression *m* switches on both keys: identity *k*'s neutral plus expression *m*'s
  offset from identity 1. FLAME's shape and expression blend shapes and pose correctives are additive, so
  this is FLAME(identity *k*, expression *m*) except that the jaw pivots about identity 1's jaw joint.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..inference_server.result import JOINT_NAMES, ReconstructionResult
from . import skinning

IDENTITY_KEY_FORMAT = "ID {number:02d} ({relative} of ID 01)"
EXPRESSION_KEY_FORMAT = "EXP {number:03d}"
KEY_SLIDER_MIN = -2.0  # widened from Blender's 0..1 so keys can be extrapolated and subtracted
KEY_SLIDER_MAX = 2.0


def relative_score_text(relative: float) -> str:
    """A probability relative to the best one, readable at a glance: "98.7%", "12%", "0.031%"."""
    percent = 100.0 * relative
    if percent >= 99.95:
        return "100%"
    if percent < 1e-3:
        return "<0.001%"
    return f"{percent:.3g}%"


def identity_key_name(number: int, score: float, best: float) -> str:
    """Name of identity ``number`` (1-based; number 1 is the Basis and has no key of its own)."""
    relative = score / best if best > 0 else 0.0
    return IDENTITY_KEY_FORMAT.format(number=number, relative=relative_score_text(relative))


def identity_key_prefix(number: int) -> str:
    return f"ID {number:02d} "


def expression_key_name(number: int) -> str:
    """Name of expression ``number`` (1-based)."""
    return EXPRESSION_KEY_FORMAT.format(number=number)


def jaw_joint_index(result: ReconstructionResult) -> int | None:
    """Index of the jaw joint, or None when the file's rig has no jaw."""
    index = JOINT_NAMES.index("jaw")
    return index if result.joints.shape[0] > index else None


def expression_pose(result: ReconstructionResult, expression: int) -> np.ndarray:
    """(J, 3) axis-angle pose of expression ``expression`` (1-based; 0 = neutral, the rest pose)."""
    pose = np.zeros((result.joints.shape[0], 3))
    jaw = jaw_joint_index(result)
    if expression > 0 and jaw is not None:
        pose[jaw] = result.jaw_pose[expression - 1]
    return pose


@dataclass(frozen=True)
class ShapeKeyPlan:
    basis: np.ndarray  # float32 (V, 3)
    identity_names: list[str]  # identities 2..K
    identity_shapes: np.ndarray  # float32 (K-1, V, 3)
    expression_names: list[str]  # expressions 1..M
    expression_shapes: np.ndarray  # float32 (M, V, 3), rest space of the rig


def plan_shape_keys(result: ReconstructionResult) -> ShapeKeyPlan:
    scores = result.identity_scores
    K = result.identity_vertices.shape[0]
    M = result.expression_vertices.shape[0]
    rest = np.empty_like(result.expression_vertices)
    for m in range(M):  # M poses, each a vectorised solve over all vertices
        rest[m] = skinning.unpose(
            result.expression_vertices[m],
            result.joints,
            result.parents,
            result.skin_weights,
            expression_pose(result, m + 1),
        )
    return ShapeKeyPlan(
        basis=result.identity_vertices[0].astype(np.float32),
        identity_names=[identity_key_name(k, float(scores[k - 1]), float(scores[0])) for k in range(2, K + 1)],
        identity_shapes=result.identity_vertices[1:].astype(np.float32),
        expression_names=[expression_key_name(m) for m in range(1, M + 1)],
        expression_shapes=rest.astype(np.float32),
    )


def key_values(identity: int, expression: int, n_identities: int, n_expressions: int) -> tuple[np.ndarray, np.ndarray]:
    """Values of the identity keys (identities 2..K) and expression keys (1..M) for one choice.

    ``identity`` is 1..K and ``expression`` 0..M (0 = neutral); out-of-range choices are clamped.
    """
    identity = min(max(identity, 1), n_identities)
    expression = min(max(expression, 0), n_expressions)
    id_values = np.zeros(max(n_identities - 1, 0))
    exp_values = np.zeros(n_expressions)
    if identity > 1:
        id_values[identity - 2] = 1.0
    if expression > 0:
        exp_values[expression - 1] = 1.0
    return id_values, exp_values


ORDER_NAMES = {"best_fit": "best fit first", "typical": "most typical first", "diverse": "most diverse first"}


def expression_note(meta: dict[str, object], expression: int) -> str:
    """What the panel says about the shown expression: the display order and, when the worker fitted the
    expressions to the photo, how far this one's landmarks are from the visible ones (``expression_fit_px``),
    and whether it is the sample refined to the photo (``refined_expression``) rather than a sample."""
    order = meta.get("expression_order")
    text = f"Order: {ORDER_NAMES.get(str(order), str(order))}" if order else ""
    errors = meta.get("expression_fit_px")
    if isinstance(errors, list) and 0 < expression <= len(errors) and isinstance(errors[expression - 1], int | float):
        fit = f"EXP {expression:03d} is {float(errors[expression - 1]):.1f} px from the visible landmarks"
        text = f"{text} · {fit}" if text else fit
    refined = meta.get("refined_expression")
    if isinstance(refined, dict) and refined.get("index") == expression - 1:
        source = refined.get("from_index")
        origin = f" (from EXP {int(source) + 1:03d})" if isinstance(source, int) else ""
        text = f"{text} · refined to the photo's eyes and mouth{origin}"
    return text
