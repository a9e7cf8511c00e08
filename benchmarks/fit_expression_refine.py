"""How much closer would the shown expression sit on the photo if it were refined to the visible landmarks?
(issue 17, a measurement before building it: nothing in the worker refines an expression today).

The worker shows the ExpGen sample whose landmarks fit the photo best ("best fit first"). A sample is a
draw, not a fit: where the photo's lids are closed and no sample closes them, the head's eyes stay open.
This benchmark takes held-out DEMO renders with a known expression (``fit_sampled_identity.capture``: the
worker's pipeline, DEMO weights, fast preset), fits them as the worker does, and then refines the
display-first sample's 50 expression coefficients and jaw by Gauss-Newton on the photo's landmarks:

- residual: the trusted landmarks of the brows, eyes and mouth (iBUG 17-26, 36-67), projected with the
  fit's pose and camera, each weighed by the fit's trust (``HeadFit.weights``); the pose stays as fitted;
- prior: ``λ · |c - c_sample|²`` in the coefficients' own units (unit variance: a 1σ move costs λ px²),
  the jaw's three angles scaled by ``JAW_SIGMA``, so hidden parts keep the sample's values.

Reported per λ, against the render's true landmarks projected with its true pose and camera (% of the eye
distance, median over the landmarks, then median / mean / max over renders): the lids (37, 38, 40, 41,
43, 44, 46, 47), the lips (48-67), the brows (17-26), and the eye opening's error (the mean lid gap, % of
the eye distance); and how many of the hidden landmarks (trust < 0.5) moved away from the truth.

    python benchmarks/fit_expression_refine.py --renders 12 [--occluder mouth] [--cache /tmp/fer]
"""

from __future__ import annotations

import argparse
import pickle
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fit_extra_points import demo_fit_tools
from fit_sampled_identity import SEED, capture, landmarks_on, networks, summary

from inference_server import pipeline
from inference_server.fit.camera import project
from inference_server.fit.stage import TRUSTED_WEIGHT
from inference_server.fit.synthetic import render_case

#: The landmarks an expression moves and a refinement may follow: eyes and mouth (the brows: ``--brows``).
LOCAL = np.r_[36:68]
LIDS = np.array([37, 38, 40, 41, 43, 44, 46, 47])
LIPS = np.arange(48, 68)
BROWS = np.arange(17, 27)
#: Prior scale of the jaw's axis-angle (radians) against the expression's unit-variance coefficients.
JAW_SIGMA = 0.1
STEP = 1e-3


def lid_gap(points: np.ndarray) -> float:
    """Mean vertical gap between upper and lower lid points (image y), both eyes."""
    return float(np.mean([points[lo, 1] - points[up, 1] for up, lo in ((37, 41), (38, 40), (43, 47), (44, 46))]))


def refine(
    layer: Any, shape: np.ndarray, p0: np.ndarray, pose: np.ndarray, camera: np.ndarray, observed: np.ndarray,
    weights: np.ndarray, lam: float, iterations: int = 4,
) -> np.ndarray:  # fmt: skip
    """Gauss-Newton on the projected LOCAL landmarks with a prior on the move from ``p0`` (53,)."""
    scale = np.r_[np.ones(50), np.full(3, JAW_SIGMA)]
    w = np.sqrt(np.where(weights[LOCAL] >= TRUSTED_WEIGHT, weights[LOCAL], 0.0))[:, None]
    p = p0.astype(np.float64).copy()
    for _ in range(iterations):
        probes = np.vstack([p, p + np.diag(STEP * scale)])
        _, lms = landmarks_on(layer, shape, probes)
        xy = np.stack([project(lm[LOCAL], pose, camera) for lm in lms])  # (54, L, 2)
        r = (w * (xy[0] - observed[LOCAL])).reshape(-1)
        jac = (w[None] * (xy[1:] - xy[0]) / STEP).reshape(53, -1).T  # per unit of scaled coefficient
        z = (p - p0) / scale
        lhs = jac.T @ jac + lam * np.eye(53)
        rhs = -(jac.T @ r + lam * z)
        p = p + scale * np.linalg.solve(lhs, rhs)
    return p


def errors(shown: np.ndarray, truth: np.ndarray, hidden: np.ndarray) -> dict[str, float]:
    iod = float(np.linalg.norm(truth[36:42].mean(axis=0) - truth[42:48].mean(axis=0)))
    miss = np.linalg.norm(shown - truth, axis=1) / iod * 100.0
    out = {name: float(np.median(miss[idx])) for name, idx in (("lids", LIDS), ("lips", LIPS), ("brows", BROWS))}
    out["gap"] = abs(lid_gap(shown) - lid_gap(truth)) / iod * 100.0
    out["hidden"] = float(np.median(miss[hidden])) if hidden.any() else float("nan")
    return out


def measure(row: dict[str, Any], layer: Any, nets: tuple[Any, Any], lams: list[float]) -> dict[str, dict]:
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
    hidden[LOCAL] = fit.weights[LOCAL] < 0.5
    out = {}
    for lam in lams:
        p = p0 if lam < 0 else refine(layer, shape, p0, pose, camera, fit.landmarks, fit.weights, lam)
        shown = project(landmarks_on(layer, shape, p[None])[1][0], pose, camera)
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
        global LOCAL
        LOCAL = np.r_[17:27, 36:68]
    tools, _ = demo_fit_tools()
    cache = None if args.cache is None else args.cache / f"runs-{args.renders}-{args.occluder}.pkl"
    if cache is not None and cache.exists():
        rows = pickle.loads(cache.read_bytes())
    else:
        folder = Path(tempfile.mkdtemp()) if cache is None else cache.with_suffix("")
        folder.mkdir(parents=True, exist_ok=True)
        rows = capture(args.renders, args.occluder, folder)
        if cache is not None:
            cache.write_bytes(pickle.dumps(rows))
    for i, row in enumerate(rows):  # the truth: the same draws again
        case = render_case(tools["head"], tools["layer"], tools["texture"], np.random.default_rng(SEED + i),
                           occluder=args.occluder)  # fmt: skip
        row["case_landmarks"], row["case_camera"] = case.landmarks, case.camera
    nets = networks()
    lams = [-1.0] + [float(v) for v in args.lams.split(",")]
    table: dict[str, dict[str, list[float]]] = {}
    for row in rows:
        for name, values in measure(row, tools["layer"], nets, lams).items():
            for key, value in values.items():
                table.setdefault(name, {}).setdefault(key, []).append(value)
    print(f"{len(rows)} renders, occluder {args.occluder}: % of the eye distance, median / mean / max over renders")
    for name, columns in table.items():
        cells = "  ".join(f"{key} {summary(values)}" for key, values in columns.items())
        print(f"  {name:18s} {cells}")


if __name__ == "__main__":
    main()
