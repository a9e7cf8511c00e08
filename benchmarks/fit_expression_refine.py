"""The shown expression refined to the photo's visible eyes and mouth, against the sample it came from
(issue 17; fit/expression_refine.py, the request's ``refine_expression``).

The worker shows the ExpGen sample whose landmarks fit the photo best ("best fit first"). A sample is a
draw, not a fit: where the photo's lids are closed and no sample closes them, the head's eyes stay open.
This benchmark takes held-out DEMO renders with a known expression (``fit_sampled_identity.capture``: the
worker's pipeline, DEMO weights, fast preset), fits them as the worker does, and refines the display-first
sample with ``refine_expression`` at several prior weights λ (``--lams``; the worker's is
``expression_refine.PRIOR``); ``--brows`` adds the brows (iBUG 17-26) to the refined points.

Reported per λ, against the render's true landmarks projected with its true pose and camera (% of the eye
distance, median over the landmarks, then median / mean / max over renders): the lids (37, 38, 40, 41,
43, 44, 46, 47), the lips (48-67), the brows (17-26), the eye opening's error (the mean lid gap) and the
landmarks of the eyes and mouth the fit does not trust (``hidden``: weight < 0.5, e.g. under an occluder).

    python benchmarks/fit_expression_refine.py --renders 12 [--occluder mouth] [--cache /tmp/fer]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fit_extra_points import demo_fit_tools
from fit_sampled_identity import SEED, cached_runs, landmarks_on, networks, summary

from inference_server import pipeline
from inference_server.fit import expression_refine
from inference_server.fit.camera import project
from inference_server.fit.expression_refine import landmark_expression_basis, refine_expression
from inference_server.fit.synthetic import render_case

LIDS = np.array([37, 38, 40, 41, 43, 44, 46, 47])
LIPS = np.arange(48, 68)
BROWS = np.arange(17, 27)


def lid_gap(points: np.ndarray) -> float:
    """Mean vertical gap between upper and lower lid points (image y), both eyes."""
    return float(np.mean([points[lo, 1] - points[up, 1] for up, lo in ((37, 41), (38, 40), (43, 47), (44, 46))]))


def errors(shown: np.ndarray, truth: np.ndarray, hidden: np.ndarray) -> dict[str, float]:
    iod = float(np.linalg.norm(truth[36:42].mean(axis=0) - truth[42:48].mean(axis=0)))
    miss = np.linalg.norm(shown - truth, axis=1) / iod * 100.0
    out = {name: float(np.median(miss[idx])) for name, idx in (("lids", LIDS), ("lips", LIPS), ("brows", BROWS))}
    out["gap"] = abs(lid_gap(shown) - lid_gap(truth)) / iod * 100.0
    out["hidden"] = float(np.median(miss[hidden])) if hidden.any() else float("nan")
    return out


def measure(row: dict[str, Any], head: Any, layer: Any, nets: tuple[Any, Any], lams: list[float]) -> dict[str, dict]:
    args = list(row["fit_args"])
    args[8], args[9] = nets
    photo_fit = pipeline.fit_photo(*args, **row["fit_kwargs"])
    fit = photo_fit.head_fit
    arrays = photo_fit.arrays()
    if arrays["head_pose"] is None or fit.landmarks is None or fit.weights is None:
        return {}
    pose, camera = np.asarray(arrays["head_pose"], np.float64), np.asarray(arrays["camera"], np.float64)
    shape = row["shapes"][row["keep"][0]]
    p0 = np.asarray(args[5], np.float64)[int(photo_fit.order[0])]
    truth = project(row["case_landmarks"], row["case_pose"], row["case_camera"])
    hidden = np.zeros(68, bool)
    local = expression_refine.REFINED_POINTS
    hidden[local] = fit.weights[local] < expression_refine.TRUSTED_WEIGHT
    out = {}
    for lam in lams:
        if lam < 0:
            shown_lm = landmarks_on(layer, shape, p0[None])[1][0]
        else:
            decode = lambda p: landmarks_on(layer, shape, p)[1]  # noqa: E731
            basis = landmark_expression_basis(head, p0[50:])  # as the worker refines (refined_expression.py)
            shown_lm = refine_expression(decode, p0, pose, camera, fit.landmarks, fit.weights, prior=lam,
                                         expression_basis=basis).landmarks  # fmt: skip
        shown = project(shown_lm, pose, camera)
        out["sample (today)" if lam < 0 else f"refined, λ={lam:g}"] = errors(shown, truth, hidden)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--renders", type=int, default=12)
    parser.add_argument("--occluder", choices=["mouth", "eyes"])
    parser.add_argument("--lams", default="1,4,16,64")
    parser.add_argument("--brows", action="store_true", help="the brows (17-26) in the residual too")
    parser.add_argument("--cache", type=Path, help="keep the pipeline runs here and reuse them")
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.brows:
        expression_refine.REFINED_POINTS = np.r_[17:27, 36:68]
    tools, _ = demo_fit_tools()
    rows = cached_runs(args.renders, args.occluder, args.cache)
    for i, row in enumerate(rows):  # the truth: the same draws again
        case = render_case(tools["head"], tools["layer"], tools["texture"], np.random.default_rng(SEED + i),
                           occluder=args.occluder)  # fmt: skip
        row["case_landmarks"], row["case_camera"] = case.landmarks, case.camera
    nets = networks()
    lams = [-1.0] + [float(v) for v in args.lams.split(",")]
    table: dict[str, dict[str, list[float]]] = {}
    for row in rows:
        for name, values in measure(row, tools["head"], tools["layer"], nets, lams).items():
            for key, value in values.items():
                table.setdefault(name, {}).setdefault(key, []).append(value)
    print(f"{len(rows)} renders, occluder {args.occluder}: % of the eye distance, median / mean / max over renders")
    for name, columns in table.items():
        cells = "  ".join(f"{key} {summary(values)}" for key, values in columns.items())
        print(f"  {name:18s} {cells}")


if __name__ == "__main__":
    main()
