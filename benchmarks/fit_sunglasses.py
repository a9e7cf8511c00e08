"""Dark lenses in the fit (fit/cover.py's ``DARK_COVER``, fit/trust.py's ``COVERED_EYES_POSE``; docs/texture.md,
"Sunglasses"). Each render is fitted as the worker fits a photo (mirrored run, depth, the second network where
an occluder shows) in three ways, in one process:

- **before**: dark lenses pass the eye zones' colour test, the detector's eyes and brows on them are trusted;
- **lenses as cover**: dark regions too wide for a feature, by the eyes and brows, are an occluder (the eye
  and brow landmarks on them lose their weight), the eyes-hidden rule still refuses such a fit;
- **lenses as cover, pose from the rest**: where the photo shows an object over both eyes, the pose rests on
  the nose, mouth and jaw.

Per set: the median rotation error and reprojection of the trusted landmarks (% of the eye distance, against
the true projection), how many fits are trusted and how many of those are more than 10° off.

    .venv/bin/python benchmarks/fit_sunglasses.py [--sets ...] [--occluders ...] [--renders 40]

(~10 minutes for the default sets on 2 free cores.)
"""

from __future__ import annotations

import argparse
from functools import partial
from typing import Any

import numpy as np
from fit_depth import Row, render_set
from fit_extra_points import demo_fit_tools
from fit_landmark_averaging import SETS, pose_errors
from fit_second_network import fit, occluder_set

from inference_server.fit import cover, trust
from inference_server.fit.calibration import Correspondence, calibrate_correspondence
from inference_server.fit.second_network import SecondNetwork

DEFAULT_SETS = "dev bar,dev clean,held-out clean"
DEFAULT_OCCLUDERS = "sunglasses,bar,surgical_mask,hand_over_mouth,none"
#: name: (DARK_COVER, COVERED_EYES_POSE)
WAYS = {"before": (False, False), "lenses as cover": (True, False), "lenses, pose from the rest": (True, True)}
WRONG_DEG = 10.0


def evaluate(rows: list[Row], corr: Correspondence, network: SecondNetwork, way: tuple[bool, bool]) -> str:
    cover.DARK_COVER, trust.COVERED_EYES_POSE = way
    rotation, reprojection = [], []
    for row in rows:
        errors = pose_errors(fit(row, corr, network), row[0])
        if errors is not None:
            rotation.append(errors[0])
            reprojection.append(errors[3])
    if not rotation:
        return f"0/{len(rows)} trusted"
    wrong = int((np.asarray(rotation) > WRONG_DEG).sum())
    return (f"{np.median(rotation):5.2f}°, {100 * np.median(reprojection):5.2f} % ({len(rotation)}/{len(rows)} "
            f"trusted, {wrong} of them > {WRONG_DEG:.0f}° off)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--renders", type=int, default=40)
    parser.add_argument("--sets", default=DEFAULT_SETS, help=f"comma-separated, of {', '.join(SETS)}")
    parser.add_argument("--occluders", default=DEFAULT_OCCLUDERS,
                        help="comma-separated training occluders (train/synthetic.py), none: clean, "
                             "saturated_disc: an egg-like disc at the lips")  # fmt: skip
    args = parser.parse_args()
    tools, corr = demo_fit_tools()
    plain = calibrate_correspondence(tools["head"], tools["faces"].plain_face_mesh)
    network = SecondNetwork(partial(tools["faces"].plain_face_mesh, depth=True), lambda: plain)
    sets: list[tuple[str, Any]] = [
        (f"{name} 30000", partial(occluder_set, name)) for name in args.occluders.split(",") if name
    ]
    sets += [(name, partial(render_set, name)) for name in args.sets.split(",") if name]
    for name, make in sets:
        rows = make(args.renders, tools, corr)
        for label, way in WAYS.items():
            print(f"{name:22s} {label:28s} {evaluate(rows, corr, network, way)}", flush=True)


if __name__ == "__main__":
    main()
