"""The second face mesh network under an occluder (fit/second_network.py; docs/texture.md, "A second network
under an occluder"). Each render of the fit's sets is fitted as the worker fits a photo (the direct run with
its depth, the mirrored run), without the second network (before) and with it (after: where the photo shows
an occluder, the plain face mesh's runs on the photo and its mirror are fitted too, at
``SECOND_NETWORK_WEIGHT`` or at each ``--weights``). Prints per set the median rotation error, the median
reprojection of the visible landmarks (% of the eye distance, against the true projection), the median
|pitch| / |yaw| errors and how many fits used the second network; then the fit stage's time per photo on the
first set's renders (the face mesh runs it makes and the fit of 20 expressions), before and after, alternated.

Also on renders under the training occluders (``--occluders``: a hand over the mouth, a hand-shaped blob,
sunglasses, a surgical mask, none), where the detection's own occlusion evidence (``preprocess/occlusion.py``
on its five points) asks for the second network as in the worker.

Run: ``.venv/bin/python benchmarks/fit_second_network.py [--sets "bar 25000,bar 26000"] [--weights 0.5,1]``
(~8 minutes for the default sets on 2 free cores, ~6 more for the two sets of 80, ~8 for the occluders).
"""

from __future__ import annotations

import argparse
import dataclasses
from functools import partial
from typing import Any

import numpy as np
from fit_depth import Row, render_set
from fit_extra_points import demo_fit_tools
from fit_landmark_averaging import DEFAULT_SETS, SETS, alternated_ms, pose_errors

from inference_server.fit import stage
from inference_server.fit.calibration import Correspondence, calibrate_correspondence
from inference_server.fit.landmark_averaging import mirrored_landmarks
from inference_server.fit.second_network import SECOND_NETWORK_WEIGHT, SecondNetwork, second_network_runs
from inference_server.fit.synthetic import render_case, with_saturated_disc, with_training_occluder
from inference_server.preprocess.mediapipe_faces import MESH_POINTS5
from inference_server.preprocess.occlusion import occluded_points

#: The training renders' occluders tried by default beside the bar sets ("none": clean renders).
OCCLUDER_SETS = "hand_over_mouth,hand_blob,sunglasses,surgical_mask,none"


def occluder_set(name: str, n: int, tools: dict[str, Any], corr: Correspondence) -> list[Row]:
    """Renders (seeds 30000+) under the training renders' occluder ``name`` (``train/synthetic.py``; "none":
    clean; "saturated_disc": fit/synthetic.py's egg-like disc) and the face mesh's runs on them, as
    ``fit_depth.render_set`` makes them."""
    detect = lambda rgb: tools["faces"].face_mesh(rgb, depth=True)  # noqa: E731
    to68 = lambda points: stage.to_68(points, corr)  # noqa: E731
    rows = []
    for i in range(n):
        rng = np.random.default_rng(30000 + i)
        case = render_case(tools["head"], tools["layer"], tools["texture"], rng)
        if name == "saturated_disc":  # an egg-like disc of the face's hue at the lips (fit/synthetic.py)
            case = dataclasses.replace(case, image=with_saturated_disc(case, rng)[0])
        elif name != "none":
            case = dataclasses.replace(case, image=with_training_occluder(case, name, rng)[0])
        found = detect(case.image)
        if found:
            mesh = np.asarray(found[0], np.float64)
            rows.append((case, mesh[:, :2], mirrored_landmarks(case.image, to68(mesh), detect, to68), mesh))
    return rows


def fit(row: Row, corr: Correspondence, network: SecondNetwork | None) -> stage.HeadFit:
    """As fit/step.py fits a photo: the detection's own occlusion evidence (its five points, here the face
    mesh's) asks for the second network too."""
    case, _, mirrored, mesh = row
    runs = None if network is None else partial(second_network_runs, case.image, network=network)
    seen = bool(occluded_points(case.image, mesh[list(MESH_POINTS5), :2]))
    return stage.fit_head(case.image, None, mesh, case.landmarks[None], case.landmark_normals,
                          correspondence=corr, mirrored=mirrored, occluded_runs=runs, occluder_seen=seen)  # fmt: skip


def evaluate(rows: list[Row], corr: Correspondence, network: SecondNetwork | None) -> str:
    rotation, reprojection, pitch, yaw, second = [], [], [], [], 0
    for row in rows:
        found = fit(row, corr, network)
        errors = pose_errors(found, row[0])
        if errors is None:
            continue
        second += found.second_network
        rotation.append(errors[0])
        pitch.append(abs(errors[1]))
        yaw.append(abs(errors[2]))
        reprojection.append(errors[3])
    return (f"{np.median(rotation):.2f}°, {100 * np.median(reprojection):.2f} % ({len(rotation)}/{len(rows)} "
            f"trusted, {second} with the second network; |pitch| {np.median(pitch):.2f}°, "
            f"|yaw| {np.median(yaw):.2f}°)")  # fmt: skip


def fit_cost(tools: dict[str, Any], rows: list[Row], corr: Correspondence, network: SecondNetwork,
             rounds: int) -> None:  # fmt: skip
    """ms per photo of fit/step.py's work for 20 expressions (the mirrored face mesh run, the second
    network's runs where asked, the fit), before and after alternated, median of ``rounds``."""
    to68 = lambda points: stage.to_68(points, corr)  # noqa: E731
    detect = lambda rgb: tools["faces"].face_mesh(rgb, depth=True)  # noqa: E731

    def one(after: bool, i: int) -> None:
        case, _, _, mesh = rows[i]
        mirrored = mirrored_landmarks(case.image, to68(mesh), detect, to68)
        runs = partial(second_network_runs, case.image, network=network) if after else None
        seen = bool(occluded_points(case.image, mesh[list(MESH_POINTS5), :2]))
        stage.fit_head(case.image, None, mesh, np.repeat(case.landmarks[None], 20, axis=0), case.landmark_normals,
                       correspondence=corr, mirrored=mirrored, occluded_runs=runs, occluder_seen=seen)  # fmt: skip

    before, after = alternated_ms(one, len(rows[:8]), rounds)
    print(
        f"fit stage, 20 expressions, median of {rounds} alternated rounds: without the second network "
        f"{before:.0f} ms, with it {after:.0f} ms per photo (x{after / before:.2f})",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--renders", type=int, default=40)
    parser.add_argument("--sets", default=DEFAULT_SETS, help=f"comma-separated, of {', '.join(SETS)}")
    parser.add_argument(
        "--occluders",
        default=OCCLUDER_SETS,
        help="comma-separated training occluders (train/synthetic.py) or none, 40 renders each",
    )
    parser.add_argument("--weights", default=str(SECOND_NETWORK_WEIGHT), help="comma-separated weights to try")
    parser.add_argument("--rounds", type=int, default=5, help="timing rounds (0: no timing)")
    args = parser.parse_args()
    tools, corr = demo_fit_tools()
    plain = calibrate_correspondence(tools["head"], tools["faces"].plain_face_mesh)
    network = SecondNetwork(partial(tools["faces"].plain_face_mesh, depth=True), lambda: plain)
    sets = [(name, partial(render_set, name)) for name in args.sets.split(",") if name]
    sets += [(f"{name} 30000", partial(occluder_set, name)) for name in args.occluders.split(",") if name]
    for i, (name, make) in enumerate(sets):
        rows = make(args.renders, tools, corr)
        if i == 0 and args.rounds:
            fit_cost(tools, rows, corr, network, args.rounds)
        print(f"{name:16s} without      {evaluate(rows, corr, None)}", flush=True)
        for weight in (float(w) for w in args.weights.split(",")):
            stage.SECOND_NETWORK_WEIGHT = weight
            print(f"{name:16s} with, w={weight:<4g} {evaluate(rows, corr, network)}", flush=True)


if __name__ == "__main__":
    main()
