"""A skin-coloured hand in the fit (fit/cover.py's ``skin_coloured_mask``; docs/texture.md, "A skin-coloured
hand in the fit"). Each render is fitted as the worker fits a photo (mirrored run, depth, the second network
where an occluder shows), with the skin-coloured cover off (before) and on (after), in one process: median
rotation error and reprojection of the trusted landmarks, how many fits are trusted, how many photos had a
skin-coloured occluder found; then the fit stage's ms per photo without / with, alternated.

    .venv/bin/python benchmarks/fit_skin_cover.py [--sets ...] [--occluders ...] [--renders 40] [--rounds 5]

(~12 minutes for the default sets on 2 free cores.)
"""

from __future__ import annotations

import argparse
from functools import partial
from typing import Any

import numpy as np
from fit_depth import Row, render_set
from fit_extra_points import demo_fit_tools
from fit_landmark_averaging import SETS, alternated_ms, pose_errors
from fit_second_network import OCCLUDER_SETS, fit, occluder_set

from inference_server.fit import cover
from inference_server.fit.calibration import Correspondence, calibrate_correspondence
from inference_server.fit.second_network import SecondNetwork
from inference_server.texture.occluder import face_skin

#: The fit's bar sets and clean sets run by default (fit_landmark_averaging.SETS).
DEFAULT_SETS = "dev bar,held-out bar,test_stage bar,dev clean,held-out clean,test_stage clean"


def hand_found(row: Row, corr: Correspondence) -> bool:
    """Whether the photo's skin-coloured cover test finds an occluder (fit/cover.py), at the fit's scale."""
    from inference_server.fit import stage

    case, _, _, mesh = row
    landmarks = stage.to_68(mesh, corr)[:, :2]
    skin = face_skin(case.image, mesh[:, :2])
    without = cover.occluder_mask(case.image, mesh[:, :2], landmarks, skin)[0]
    cover.SKIN_COVER = True
    try:
        return bool((cover.occluder_mask(case.image, mesh[:, :2], landmarks, skin)[0] & ~without).any())
    finally:
        cover.SKIN_COVER = False


def evaluate(rows: list[Row], corr: Correspondence, network: SecondNetwork, skin_cover: bool) -> str:
    cover.SKIN_COVER = skin_cover
    rotation, reprojection, pitch = [], [], []
    for row in rows:
        errors = pose_errors(fit(row, corr, network), row[0])
        if errors is None:
            continue
        rotation.append(errors[0])
        pitch.append(errors[1])
        reprojection.append(errors[3])
    cover.SKIN_COVER = False
    if not rotation:
        return f"no trusted fit (0/{len(rows)})"
    return (f"{np.median(rotation):.2f}°, {100 * np.median(reprojection):.2f} % ({len(rotation)}/{len(rows)} "
            f"trusted; pitch {np.median(pitch):+.2f}°, |pitch| {np.median(np.abs(pitch)):.2f}°, "
            f"worst {max(rotation):.1f}°)")  # fmt: skip


def fit_cost(rows: list[Row], corr: Correspondence, network: SecondNetwork, rounds: int) -> None:
    def one(after: bool, i: int) -> None:
        cover.SKIN_COVER = after
        fit(rows[i], corr, network)

    before, after = alternated_ms(one, min(8, len(rows)), rounds)
    cover.SKIN_COVER = False
    print(f"fit stage per photo, median of {rounds} alternated rounds: without the skin-coloured cover "
          f"{before:.0f} ms, with it {after:.0f} ms (x{after / before:.2f})", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--renders", type=int, default=40)
    parser.add_argument("--sets", default=DEFAULT_SETS, help=f"comma-separated, of {', '.join(SETS)}")
    parser.add_argument("--occluders", default=OCCLUDER_SETS, help="comma-separated training occluders or none")
    parser.add_argument("--rounds", type=int, default=5, help="timing rounds on the first occluder set (0: none)")
    args = parser.parse_args()
    tools, corr = demo_fit_tools()
    plain = calibrate_correspondence(tools["head"], tools["faces"].plain_face_mesh)
    network = SecondNetwork(partial(tools["faces"].plain_face_mesh, depth=True), lambda: plain)
    sets: list[tuple[str, Any]] = [(f"{n} 30000", partial(occluder_set, n)) for n in args.occluders.split(",") if n]
    sets += [(name, partial(render_set, name)) for name in args.sets.split(",") if name]
    for i, (name, make) in enumerate(sets):
        rows = make(args.renders, tools, corr)
        if i == 0 and args.rounds:
            fit_cost(rows, corr, network, args.rounds)
        found = sum(hand_found(row, corr) for row in rows)
        print(f"{name:22s} skin-coloured occluder found in {found}/{len(rows)}", flush=True)
        for after in (False, True):
            label = "with   " if after else "without"
            print(f"{name:22s} {label} {evaluate(rows, corr, network, after)}", flush=True)


if __name__ == "__main__":
    main()
