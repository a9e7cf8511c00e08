"""The fit of both detector runs started from the direct run's pose (``stage.SEED_FROM_DIRECT``) against the
yaw search from every start, A/B in one process on the fit's sets: median rotation error, reprojection,
|pitch| and |yaw| (``fit_depth.evaluate``, as the worker fits), and the fit stage's ms per photo for 20
expressions, alternated (``fit_depth.fit_cost``). docs/texture.md, "Fit cost".

Run: ``.venv/bin/python benchmarks/fit_seeded.py [--sets "test_stage bar,dev bar"] [--renders 40]``
(about 4 minutes for the default sets on 2 free cores).
"""

from __future__ import annotations

import argparse

import numpy as np
from fit_depth import evaluate, render_set
from fit_extra_points import demo_fit_tools
from fit_landmark_averaging import DEFAULT_SETS, SETS, alternated_ms

from inference_server.fit import stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default=DEFAULT_SETS, help=f"comma-separated, of {', '.join(SETS)}")
    parser.add_argument("--renders", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=5, help="alternated timing rounds")
    args = parser.parse_args()
    tools, corr = demo_fit_tools()
    timing_rows = None
    for name in args.sets.split(","):
        rows = render_set(name, args.renders, tools, corr)
        timing_rows = timing_rows or rows
        results = {}
        for seeded in (False, True):
            stage.SEED_FROM_DIRECT = seeded
            results[seeded] = evaluate(rows, corr, depth=True)
        print(f"{name:16s} yaw search {results[False]}   seeded {results[True]}", flush=True)
    assert timing_rows

    def one(seeded: bool, i: int) -> None:
        stage.SEED_FROM_DIRECT = seeded
        case, _, mirrored, mesh = timing_rows[i]  # the rows carry the mirrored run's landmarks already
        stage.fit_head(case.image, None, mesh, np.repeat(case.landmarks[None], 20, axis=0),
                       case.landmark_normals, correspondence=corr, mirrored=mirrored)  # fmt: skip

    searched, seeded = alternated_ms(one, len(timing_rows[:8]), args.rounds)
    print(f"fit_head, 20 expressions, ms per photo (median of {args.rounds}): yaw search {searched:.0f}, "
          f"seeded {seeded:.0f}")  # fmt: skip


if __name__ == "__main__":
    main()
