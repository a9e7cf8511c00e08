"""The face mesh's relative depth as a weak residual in the fit's pose solves (fit/pose_batch.py,
``DEPTH_WEIGHT``): docs/texture.md, "Depth from the face mesh". Each render of the fit's sets is fitted by
the stage with the mirrored run beside the direct one (as fit/step.py does), without and with the depth of
both runs. Prints per set the median rotation error, the median reprojection of the visible landmarks (% of
the eye distance, against the true projection), the median |pitch| and |yaw| errors, then the fit stage's
time per photo (20 expressions; the face mesh runs it makes included) without and with depth, alternated.

Run: ``.venv/bin/python benchmarks/fit_depth.py [--sets "test_stage bar,bar 25000"] [--weight 0.2]``
(~6 minutes for the default sets on 2 free cores).
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
from fit_extra_points import demo_fit_tools
from fit_landmark_averaging import DEFAULT_SETS, SETS, alternated_ms, pose_errors

from inference_server.fit import pose_batch, stage
from inference_server.fit.calibration import Correspondence
from inference_server.fit.landmark_averaging import mirrored_landmarks
from inference_server.fit.synthetic import SyntheticCase, render_case

#: (render, direct mesh (478, 2), the 68 of the mirrored run (68, 3) with its depth or None).
Row = tuple[SyntheticCase, np.ndarray, np.ndarray | None, np.ndarray]


def render_set(name: str, n_default: int, tools: dict[str, Any], corr: Correspondence) -> list[Row]:
    """Renders of a set and the face mesh's runs on them (direct with depth, mirrored with depth)."""
    seed, occluder, n, sequential = SETS[name]
    rows, rng = [], np.random.default_rng(seed)
    detect = lambda rgb: tools["faces"].face_mesh(rgb, depth=True)  # noqa: E731
    to68 = lambda points: stage.to_68(points, corr)  # noqa: E731
    for i in range(n or n_default):
        if not sequential:
            rng = np.random.default_rng(seed + i)
        case = render_case(tools["head"], tools["layer"], tools["texture"], rng, occluder=occluder)
        found = detect(case.image)
        if not found:
            continue
        mesh = np.asarray(found[0], np.float64)
        rows.append((case, mesh[:, :2], mirrored_landmarks(case.image, to68(mesh), detect, to68), mesh))
    return rows


def evaluate(rows: list[Row], corr: Correspondence, depth: bool) -> str:
    rotation, reprojection, pitch, yaw = [], [], [], []
    for case, flat, mirrored, mesh in rows:
        points, second = (mesh, mirrored) if depth else (flat, None if mirrored is None else mirrored[:, :2])
        fit = stage.fit_head(case.image, None, points, case.landmarks[None], case.landmark_normals,
                             correspondence=corr, mirrored=second)  # fmt: skip
        errors = pose_errors(fit, case)
        if errors is None:
            continue
        rotation.append(errors[0])
        pitch.append(abs(errors[1]))
        yaw.append(abs(errors[2]))
        reprojection.append(errors[3])
    return (f"{np.median(rotation):.2f}°, {100 * np.median(reprojection):.2f} % ({len(rotation)}/{len(rows)} ok; "
            f"|pitch| {np.median(pitch):.2f}°, |yaw| {np.median(yaw):.2f}°)")  # fmt: skip


def fit_cost(tools: dict[str, Any], rows: list[Row], corr: Correspondence, rounds: int) -> None:
    """ms per photo of fit/step.py's work for 20 expressions: the mirrored face mesh run and the fit; with
    depth the direct run's depth comes with the detection (``FaceDetection.landmark_depth``), so only the
    mirrored run is asked for depth. Without and with depth alternated, median of ``rounds``."""
    to68 = lambda points: stage.to_68(points, corr)  # noqa: E731

    def one(depth: bool, i: int) -> None:
        detect = (lambda rgb: tools["faces"].face_mesh(rgb, depth=True)) if depth else tools["faces"].face_mesh
        case, flat, _, deep = rows[i]
        mesh = deep if depth else flat
        mirrored = mirrored_landmarks(case.image, to68(mesh), detect, to68)
        stage.fit_head(case.image, None, mesh, np.repeat(case.landmarks[None], 20, axis=0),
                       case.landmark_normals, correspondence=corr, mirrored=mirrored)  # fmt: skip

    before, after = alternated_ms(one, len(rows[:8]), rounds)
    print(f"fit stage, 20 expressions, median of {rounds} alternated rounds: without depth {before:.0f} ms, "
          f"with depth {after:.0f} ms per photo (x{after / before:.2f})")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--renders", type=int, default=40)
    parser.add_argument("--sets", default=DEFAULT_SETS, help=f"comma-separated, of {', '.join(SETS)}")
    parser.add_argument("--weight", type=float, default=pose_batch.DEPTH_WEIGHT)
    parser.add_argument("--rounds", type=int, default=5, help="timing rounds (0: no timing)")
    args = parser.parse_args()
    pose_batch.DEPTH_WEIGHT = args.weight
    tools, corr = demo_fit_tools()
    for i, name in enumerate(args.sets.split(",")):
        rows = render_set(name, args.renders, tools, corr)
        if i == 0 and args.rounds:
            fit_cost(tools, rows, corr, args.rounds)
        print(f"{name:16s} without depth {evaluate(rows, corr, depth=False)}", flush=True)
        print(f"{name:16s} with depth    {evaluate(rows, corr, depth=True)}", flush=True)


if __name__ == "__main__":
    main()
