"""The expression refined to the photo's visible eyes and mouth (fit/expression_refine.py), on the DEMO head."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inference_server.fit.camera import project
from inference_server.fit.expression_refine import (
    LandmarkDecoder,
    fit_error,
    landmark_expression_basis,
    refine_expression,
)
from inference_server.flame.layer import FlameLayer
from inference_server.flame.model_data import FlameModelData

POSE = np.array([0.05, 0.3, 0.02, 0.01, -0.02, -0.6])
CAMERA = np.array([900.0, 320.0, 240.0])
Case = tuple[LandmarkDecoder, np.ndarray, np.ndarray]  # decoder, the sample, another expression
UPPER, LOWER = [37, 38, 43, 44], [41, 40, 47, 46]  # iBUG lid points, upper and the lower one below each


def _decoder(layer: FlameLayer, shape: np.ndarray) -> LandmarkDecoder:
    def decode(params: np.ndarray) -> np.ndarray:
        p = torch.as_tensor(params, dtype=torch.float64)
        with torch.no_grad():
            out = layer.with_expression(torch.as_tensor(shape[None]).expand(len(p), -1), p[:, :50], p[:, 50:])
        assert out.landmarks is not None
        return out.landmarks.numpy()

    return decode


def _lid_gap(xy: np.ndarray) -> float:
    return float(np.mean(xy[LOWER, 1] - xy[UPPER, 1]))


@pytest.fixture(scope="module")
def case(layer: FlameLayer) -> Case:
    rng = np.random.default_rng(5)
    shape = rng.normal(0, 1, 300) * np.where(np.arange(300) < 32, 1.0, 0.3)
    start = np.r_[rng.normal(0, 0.3, 50), 0.05, 0.0, 0.0]
    truth = np.r_[rng.normal(0, 0.3, 50), 0.12, 0.0, 0.0]
    return _decoder(layer, shape), start, truth


def test_the_visible_eyes_and_mouth_are_followed(case: Case) -> None:
    """Landmarks of another expression seen in full: the refined eyes and mouth land within a third of the
    sample's miss, and the refined expression scores better than the sample by the fit's own measure."""
    decode, start, truth = case
    observed = project(decode(truth[None])[0], POSE, CAMERA)
    weights = np.ones(68)
    refined = refine_expression(decode, start, POSE, CAMERA, observed, weights)
    local = np.arange(36, 68)
    before = np.linalg.norm(project(decode(start[None])[0], POSE, CAMERA) - observed, axis=1)[local].mean()
    after = np.linalg.norm(project(refined.landmarks, POSE, CAMERA) - observed, axis=1)[local].mean()
    assert after < before / 3.0, (before, after)
    assert np.allclose(refined.landmarks, decode(refined.params[None])[0])
    sample_error = fit_error(decode(start[None])[0], POSE, CAMERA, observed, weights)
    assert refined.error_px < sample_error


def test_closed_lids_in_the_photo_close_the_refined_eyes(case: Case) -> None:
    """The photo's upper lids on its lower ones (closed eyes): the refined lid gap is under a quarter of the
    sample's, while the sample's mouth, seen where it is, stays within 1 px."""
    decode, start, _ = case
    observed = project(decode(start[None])[0], POSE, CAMERA)
    observed[UPPER] = observed[LOWER]
    refined = refine_expression(decode, start, POSE, CAMERA, observed, np.ones(68))
    shown = project(refined.landmarks, POSE, CAMERA)
    assert abs(_lid_gap(shown)) < 0.25 * _lid_gap(project(decode(start[None])[0], POSE, CAMERA))
    assert np.abs(shown[48:68] - observed[48:68]).max() < 1.0


def test_hidden_landmarks_keep_the_sample(case: Case) -> None:
    """Untrusted landmarks (under TRUSTED_WEIGHT) pull nothing: with the eyes and mouth all untrusted the
    refinement returns the sample; with the mouth hidden the mouth moves far less than the eyes do."""
    decode, start, truth = case
    observed = project(decode(truth[None])[0], POSE, CAMERA)
    none_seen = np.ones(68)
    none_seen[36:68] = 0.4
    same = refine_expression(decode, start, POSE, CAMERA, observed, none_seen)
    assert np.array_equal(same.params, start)
    mouth_hidden = np.ones(68)
    mouth_hidden[48:68] = 0.0
    refined = refine_expression(decode, start, POSE, CAMERA, observed, mouth_hidden)
    sample_xy, refined_xy = project(decode(start[None])[0], POSE, CAMERA), project(refined.landmarks, POSE, CAMERA)
    moved = np.linalg.norm(refined_xy - sample_xy, axis=1)
    assert moved[48:68].mean() < 0.5 * moved[36:48].mean(), (moved[48:68].mean(), moved[36:48].mean())


def test_a_wrong_parameter_count_is_refused(case: Case) -> None:
    decode, start, _ = case
    with pytest.raises(ValueError, match="50 expression coefficients and 3 jaw angles"):
        refine_expression(decode, start[:50], POSE, CAMERA, np.zeros((68, 2)), np.ones(68))


def test_the_landmark_basis_is_the_layers_own_motion(head: FlameModelData, case: Case) -> None:
    """The expression basis at the landmarks, turned by an open jaw, against finite differences of the
    layer itself: within 2 % of the motion (the joints' drift with the expression is what it leaves out);
    refined with it, the result matches the all-probes refinement to 0.05 px."""
    decode, start, truth = case
    basis = landmark_expression_basis(head, start[50:])
    step = 1e-4
    probes = np.vstack([start, start + np.c_[np.eye(50) * step, np.zeros((50, 3))]])
    landmarks = decode(probes)
    numeric = np.moveaxis((landmarks[1:] - landmarks[0]) / step, 0, 2)  # (68, 3, 50)
    assert np.abs(basis - numeric).max() <= 0.02 * np.abs(numeric).max()
    observed = project(decode(truth[None])[0], POSE, CAMERA)
    fast = refine_expression(decode, start, POSE, CAMERA, observed, np.ones(68), expression_basis=basis)
    full = refine_expression(decode, start, POSE, CAMERA, observed, np.ones(68))
    gap = np.abs(project(fast.landmarks, POSE, CAMERA) - project(full.landmarks, POSE, CAMERA)).max()
    assert gap < 0.05, gap
