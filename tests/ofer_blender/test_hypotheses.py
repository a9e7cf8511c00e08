from __future__ import annotations

import importlib
import math

import numpy as np
import pytest


@pytest.fixture
def modules(addon):
    hyp = importlib.import_module(addon.__name__ + ".hypotheses")
    res = importlib.import_module(addon.__name__.rpartition(".")[0] + ".inference_server.result")
    return hyp, res


def _rot(aa: np.ndarray) -> np.ndarray:
    angle = float(np.linalg.norm(aa))
    if angle == 0:
        return np.eye(3)
    x, y, z = aa / angle
    c, s, t = math.cos(angle), math.sin(angle), 1 - math.cos(angle)
    return np.array(
        [
            [t * x * x + c, t * x * y - s * z, t * x * z + s * y],
            [t * x * y + s * z, t * y * y + c, t * y * z - s * x],
            [t * x * z - s * y, t * y * z + s * x, t * z * z + c],
        ]
    )


def test_plan_names_and_shapes(modules, tmp_path) -> None:
    from ofer_test_result_factory import make_result_file

    hyp, res = modules
    result = res.read_result(make_result_file(tmp_path / "r.npz", n_identities=3, n_expressions=4, backend="synthetic"))
    plan = hyp.plan_shape_keys(result)
    np.testing.assert_array_equal(plan.basis, result.identity_vertices[0])
    scores = result.identity_scores
    assert plan.identity_names == [f"ID {k:02d} ({100 * scores[k - 1] / scores[0]:.3g}% of ID 01)" for k in (2, 3)]
    assert plan.expression_names == ["EXP 001", "EXP 002", "EXP 003", "EXP 004"]
    np.testing.assert_array_equal(plan.identity_shapes, result.identity_vertices[1:])
    # posing each rest-space expression by its jaw (independent formula) gives back the file's mesh
    w = result.skin_weights[:, 2:3].astype(np.float64)
    jaw = result.joints[2].astype(np.float64)
    for m in range(4):
        rest = plan.expression_shapes[m].astype(np.float64)
        posed = (1 - w) * rest + w * ((rest - jaw) @ _rot(result.jaw_pose[m].astype(np.float64)).T + jaw)
        np.testing.assert_allclose(posed, result.expression_vertices[m], atol=1e-6)
    assert np.abs(plan.expression_shapes[1:] - result.expression_vertices[1:]).max() > 1e-4  # jaw taken out


def test_key_values_switch_exactly_the_chosen_keys(modules) -> None:
    hyp, _ = modules
    ids, exps = hyp.key_values(1, 0, 3, 4)
    assert not ids.any() and not exps.any()
    ids, exps = hyp.key_values(3, 2, 3, 4)
    assert ids.tolist() == [0, 1] and exps.tolist() == [0, 1, 0, 0]
    ids, exps = hyp.key_values(99, -5, 3, 4)  # clamped
    assert ids.tolist() == [0, 1] and not exps.any()


def test_key_names(modules) -> None:
    hyp, _ = modules
    assert hyp.identity_key_name(2, 0.0131, 0.0132) == "ID 02 (99.2% of ID 01)"
    assert hyp.identity_key_name(3, 0.0129, 0.0132) == "ID 03 (97.7% of ID 01)"  # p=0.013 for both before
    assert hyp.identity_key_name(4, 0.02, 0.4) == "ID 04 (5% of ID 01)"
    assert hyp.identity_key_name(5, 1e-9, 0.9) == "ID 05 (<0.001% of ID 01)"
    assert hyp.identity_key_name(6, 0.3, 0.3) == "ID 06 (100% of ID 01)"
    assert hyp.identity_key_name(2, 0.5, 0.6).startswith(hyp.identity_key_prefix(2))
    assert hyp.expression_key_name(7) == "EXP 007"


def test_expression_note_names_the_order_and_the_fit(modules) -> None:
    hyp, _ = modules
    meta = {"expression_order": "best_fit", "expression_fit_px": [0.84, 2.5, 7.0]}
    assert hyp.expression_note(meta, 2) == "Order: best fit first · EXP 002 is 2.5 px from the visible landmarks"
    assert hyp.expression_note(meta, 0) == "Order: best fit first"  # neutral: no fitted error
    assert hyp.expression_note(meta, 4) == "Order: best fit first"  # beyond the list: nothing invented
    assert hyp.expression_note({"expression_order": "typical"}, 1) == "Order: most typical first"
    assert hyp.expression_note({}, 1) == ""
    refined = meta | {"refined_expression": {"index": 0, "from_index": 1}}
    assert hyp.expression_note(refined, 1) == (
        "Order: best fit first · EXP 001 is 0.8 px from the visible landmarks · refined to the photo's eyes and "
        "mouth (from EXP 002)"
    )
    assert hyp.expression_note(refined, 2) == hyp.expression_note(meta, 2)  # the samples say nothing more
