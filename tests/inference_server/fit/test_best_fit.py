"""'Best fit first' against 'typical' on held-out synthetic renders with a known expression."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inference_server.fit.calibration import Correspondence
from inference_server.fit.stage import TRUSTED_WEIGHT, fit_head
from inference_server.fit.synthetic import ground_truth_texture, render_case
from inference_server.flame.layer import FlameLayer
from inference_server.flame.model_data import FlameModelData
from inference_server.hypotheses import order_expressions
from inference_server.preprocess.mediapipe_faces import MediaPipeFaces


@pytest.mark.timeout(600)
def test_best_fit_first_is_closer_to_the_truth_than_typical_first(
    head: FlameModelData, layer: FlameLayer, faces: MediaPipeFaces, correspondence: Correspondence
) -> None:
    """Each render's candidates: 11 expressions and jaw openings drawn from the prior and one near the
    true expression, as a sampler that found the face would give. The first candidate each order shows is compared with
    the true expression on the landmarks the photo shows (millimetres, model frame)."""
    texture = ground_truth_texture(head)
    rng = np.random.default_rng(21)
    best_errors, typical_errors = [], []
    for _ in range(10):
        case = render_case(head, layer, texture, rng, max_yaw=20)
        candidates = rng.normal(0, 0.3, (12, 50))  # the renders draw expressions the same way
        jaw = np.zeros((12, 3))
        jaw[:, 0] = np.abs(rng.normal(0, 0.12, 12))
        near = int(rng.integers(12))
        candidates[near] = case.expression + rng.normal(0, 0.05, 50)
        jaw[near] = case.jaw
        with torch.no_grad():
            out = layer.with_expression(torch.as_tensor(case.shape[None]), torch.as_tensor(candidates),
                                        torch.as_tensor(jaw))  # fmt: skip
        assert out.landmarks is not None
        landmarks = out.landmarks.numpy()
        found = faces.face_mesh(case.image)
        assert found
        fit = fit_head(case.image, None, found[0], landmarks, case.landmark_normals, correspondence=correspondence)
        assert fit.trusted and fit.weights is not None and fit.expression_errors is not None
        seen = fit.weights >= TRUSTED_WEIGHT
        params = np.concatenate([candidates, jaw], axis=1)

        def truth_error(k: int) -> float:
            return float(np.linalg.norm(landmarks[k] - case.landmarks, axis=1)[seen].mean() * 1000)  # noqa: B023

        best_errors.append(truth_error(int(order_expressions(params, "best_fit", fit.expression_errors)[0])))
        typical_errors.append(truth_error(int(order_expressions(params, "typical")[0])))
    # Measured: 1.07 mm against 1.55 mm (the detector's own error on the DEMO head, ~5 % of the eye
    # distance, is as large as the differences between candidates, so best_fit finds the near one 4 times
    # in 10, typical once).
    assert np.mean(best_errors) < 0.85 * np.mean(typical_errors), (best_errors, typical_errors)
