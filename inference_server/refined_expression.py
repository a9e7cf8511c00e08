"""The pipeline's ``refine_expression`` step: the refined expression decoded and put first (opt-in).

With the request's ``refine_expression`` the result's expression 1 is the display-first ExpGen sample
refined to the photo's visible eyes and mouth (:mod:`.fit.expression_refine`), and the samples follow it
unchanged, so a result holds M + 1 expressions; meta ``refined_expression`` says so. Without a trusted
fit nothing is added and a warning says why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .fit.expression_refine import EXPRESSIONS, PRIOR, landmark_expression_basis, refine_expression
from .fit.step import PhotoFit
from .flame.layer import FlameLayer
from .flame.model_data import FlameModelData


@dataclass
class DisplayedExpressions:
    """The expressions in display order, with what the texture and the result need of them."""

    expressions: np.ndarray  # (M, 50)
    jaw: np.ndarray  # (M, 3)
    vertices: np.ndarray  # (M, V, 3)
    landmarks: np.ndarray | None  # (M, 68, 3)
    pose_arrays: dict[str, np.ndarray | None]
    meta: dict[str, Any]
    warnings: list[dict[str, str]]


def displayed(
    photo_fit: PhotoFit, expressions: np.ndarray, jaw: np.ndarray, vertices: np.ndarray,
    decoded_landmarks: np.ndarray | None,
) -> DisplayedExpressions:  # fmt: skip
    """The fit's display order as it is (``expressions``, ``jaw``, ``vertices`` already in it)."""
    landmarks = None if decoded_landmarks is None else decoded_landmarks[photo_fit.order]
    return DisplayedExpressions(expressions, jaw, vertices, landmarks, photo_fit.arrays(), photo_fit.meta(), [])


def with_refined_first(shown: DisplayedExpressions, photo_fit: PhotoFit, model: FlameModelData, flame: FlameLayer,
                       identity: torch.Tensor) -> DisplayedExpressions:  # fmt: skip
    """``shown`` with the refined first expression in front, or unchanged with a warning when the fit
    gives nothing to refine to. ``model``/``flame``: the head model and its layer; ``identity``: (1, n_shape)
    the shape the expressions were decoded on."""
    fit, pose, camera = photo_fit.head_fit, shown.pose_arrays["head_pose"], shown.pose_arrays["camera"]
    if pose is None or camera is None or fit.landmarks is None or fit.weights is None or shown.landmarks is None:
        message = "No expression was refined to the photo: the fit to the photo is not trusted."
        return DisplayedExpressions(**{**shown.__dict__, "warnings": [{"code": "refine_unavailable",
                                                                          "message": message}]})  # fmt: skip

    def decode(params: np.ndarray, vertices: bool = False) -> np.ndarray:
        p = torch.as_tensor(params, device=identity.device, dtype=flame.dtype)
        with torch.no_grad():
            out = flame.with_expression(identity.expand(len(p), -1), p[:, :EXPRESSIONS], p[:, EXPRESSIONS:])
        assert out.landmarks is not None
        return (out.vertices if vertices else out.landmarks).cpu().numpy().astype(np.float64)

    start = np.concatenate([shown.expressions[0], shown.jaw[0]]).astype(np.float64)
    basis = landmark_expression_basis(model, start[EXPRESSIONS:])
    refined = refine_expression(decode, start, np.asarray(pose, np.float64), np.asarray(camera, np.float64),
                                fit.landmarks, fit.weights, expression_basis=basis)  # fmt: skip
    front = decode(refined.params[None], vertices=True)[0]
    arrays = dict(shown.pose_arrays)
    poses = arrays["expression_head_pose"]
    if poses is not None:  # the refined expression keeps the pose it was refined under
        arrays["expression_head_pose"] = np.concatenate([np.asarray(pose)[None], poses]).astype(np.float32)
    meta = dict(shown.meta)
    if "expression_fit_px" in meta:
        meta["expression_fit_px"] = [round(refined.error_px, 3), *meta["expression_fit_px"]]
    meta["refined_expression"] = {"index": 0, "from_index": 1, "prior": PRIOR, "points": "eyes and mouth",
                                  "fit_px_before": round(float(fit.expression_errors[photo_fit.order[0]]), 3)
                                  if fit.expression_errors is not None else None}  # fmt: skip
    params = refined.params
    return DisplayedExpressions(
        expressions=np.concatenate([params[None, :EXPRESSIONS], shown.expressions]).astype(shown.expressions.dtype),
        jaw=np.concatenate([params[None, EXPRESSIONS:], shown.jaw]).astype(shown.jaw.dtype),
        vertices=np.concatenate([front[None].astype(shown.vertices.dtype), shown.vertices]),
        landmarks=np.concatenate([refined.landmarks[None], shown.landmarks]),
        pose_arrays=arrays, meta=meta, warnings=[],
    )  # fmt: skip
