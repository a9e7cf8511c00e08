"""The detector's run on the mirrored photo as a second observation of the fit's landmarks
(fit/landmark_averaging.py): docs/texture.md, "The mirrored photo". Each render of the fit's sets is fitted
by the stage with the direct run alone (before) and with the mirrored run beside it (after). Prints per
set the median rotation error, the median reprojection of the visible landmarks (% of the eye distance,
against the true projection), the mean signed yaw error (± standard error) and the median |pitch| error,
the face mesh's time per photo, direct and mirrored, and the fit's with and without the mirrored run,
alternated.

Run: ``.venv/bin/python benchmarks/fit_landmark_averaging.py [--renders 40]`` (~8 minutes on 2 free cores).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from fit_extra_points import demo_fit_tools
from scipy.spatial.transform import Rotation

from inference_server.fit import stage
from inference_server.fit.calibration import Correspondence
from inference_server.fit.camera import project, rotation_angle_deg, rotation_matrix
from inference_server.fit.landmark_averaging import mirrored_landmarks
from inference_server.fit.pose import eye_distance
from inference_server.fit.synthetic import SyntheticCase, render_case
from inference_server.preprocess.mediapipe_faces import MediaPipeFaces

#: name: (seed, occluder, renders or None for --renders, one generator for all like test_stage).
SETS = {"dev bar": (21000, "mouth", None, False), "held-out bar": (23000, "mouth", None, False),
        "dev clean": (20000, None, None, False), "held-out clean": (24000, None, None, False),
        "test_stage bar": (5, "mouth", 10, True), "test_stage clean": (3, None, 10, True),
        "bar 25000": (25000, "mouth", 80, False), "bar 26000": (26000, "mouth", 80, False)}  # fmt: skip
#: Run by default (the two 80-render bar sets only with --sets).
DEFAULT_SETS = "dev bar,held-out bar,dev clean,held-out clean,test_stage bar,test_stage clean"
Row = tuple[SyntheticCase, np.ndarray, np.ndarray | None]


def render_set(name: str, n_default: int, tools: dict[str, Any], corr: Correspondence) -> list[Row]:
    """(render, direct mesh, mirrored run's 68 landmarks or None) of every render the detector finds."""
    seed, occluder, n, sequential = SETS[name]
    rows, rng = [], np.random.default_rng(seed)
    for i in range(n or n_default):
        if not sequential:
            rng = np.random.default_rng(seed + i)
        case = render_case(tools["head"], tools["layer"], tools["texture"], rng, occluder=occluder)
        found = tools["faces"].face_mesh(case.image)
        if not found:
            continue
        mesh = np.asarray(found[0], np.float64)
        to68 = lambda points: stage.to_68(points, corr)  # noqa: E731
        rows.append((case, mesh, mirrored_landmarks(case.image, to68(mesh), tools["faces"].face_mesh, to68)))
    return rows


def alternated_ms(per_photo: Callable[[bool, int], None], photos: int, rounds: int) -> tuple[float, float]:
    """Median ms per photo of ``per_photo(side, i)`` over photos 0..``photos``-1, the sides False and True
    alternated ``rounds`` times (load changes hit both)."""
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(rounds):
        for side in (False, True):
            start = time.perf_counter()
            for i in range(photos):
                per_photo(side, i)
            times[side].append(1000 * (time.perf_counter() - start) / photos)
    return float(np.median(times[False])), float(np.median(times[True]))


def pose_errors(fit: stage.HeadFit, case: SyntheticCase) -> tuple[float, float, float, float] | None:
    """(rotation error °, signed pitch °, signed yaw ° — camera frame —, median reprojection of the visible
    landmarks / eye distance) of the reference expression's pose, or None for an untrusted fit."""
    if not fit.trusted or fit.expression_poses is None or fit.camera is None or fit.weights is None:
        return None
    pose = fit.expression_poses[0]
    r_fit, r_true = rotation_matrix(pose[:3]), rotation_matrix(case.pose[:3])
    delta = np.degrees(Rotation.from_matrix(r_fit @ r_true.T).as_rotvec())  # camera frame: x pitch, y yaw
    truth = project(case.landmarks, case.pose, case.camera)
    miss = np.linalg.norm(project(case.landmarks, pose, fit.camera) - truth, axis=1)
    reprojection = float(np.median(miss[fit.weights >= stage.TRUSTED_WEIGHT])) / eye_distance(truth)
    return rotation_angle_deg(r_fit, r_true), float(delta[0]), float(delta[1]), reprojection


def evaluate(rows: list[Row], corr: Correspondence, mirror: bool) -> str:
    rotation, reprojection, yaw, pitch = [], [], [], []
    for case, mesh, mirrored in rows:
        fit = stage.fit_head(case.image, None, mesh, case.landmarks[None], case.landmark_normals,
                             correspondence=corr, mirrored=mirrored if mirror else None)  # fmt: skip
        errors = pose_errors(fit, case)
        if errors is None:
            continue
        rotation.append(errors[0])
        pitch.append(abs(errors[1]))
        yaw.append(errors[2])
        reprojection.append(errors[3])
    found = sum(m is not None for _, _, m in rows)
    return (f"{np.median(rotation):.2f}°, {100 * np.median(reprojection):.2f} % ({len(rotation)}/{len(rows)} ok, "
            f"mirror found {found}; yaw {np.mean(yaw):+.2f}±{np.std(yaw) / np.sqrt(len(yaw)):.2f}°, "
            f"|pitch| {np.median(pitch):.2f}°)")  # fmt: skip


def detector_cost(faces: MediaPipeFaces, rows: list[Row]) -> None:
    images = [case.image for case, _, _ in rows[:10]]
    faces.face_mesh(images[0])
    for flip in (False, True, False, True):
        start = time.perf_counter()
        for image in images:
            faces.face_mesh(np.ascontiguousarray(image[:, ::-1]) if flip else image)
        label = "mirrored" if flip else "direct"
        print(f"face mesh {label}: {1000 * (time.perf_counter() - start) / len(images):.1f} ms per photo")


def fit_cost(faces: MediaPipeFaces, rows: list[Row], corr: Correspondence) -> None:
    """ms per photo of the fit of 20 expressions, direct run alone vs with the mirrored face mesh run and
    fitted (as fit/step.py does), alternated."""
    to68 = lambda points: stage.to_68(points, corr)  # noqa: E731
    total = {False: 0.0, True: 0.0}
    for mirror in (False, True, False, True):
        start = time.perf_counter()
        for case, mesh, _ in rows[:8]:
            mirrored = mirrored_landmarks(case.image, to68(mesh), faces.face_mesh, to68) if mirror else None
            stage.fit_head(case.image, None, mesh, np.repeat(case.landmarks[None], 20, axis=0),
                           case.landmark_normals, correspondence=corr, mirrored=mirrored)  # fmt: skip
        total[mirror] += time.perf_counter() - start
    n = 2 * len(rows[:8])
    print(
        f"fit of 20 expressions: direct {1000 * total[False] / n:.0f} ms, with the mirrored run "
        f"{1000 * total[True] / n:.0f} ms per photo (x{total[True] / total[False]:.2f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--renders", type=int, default=40)
    parser.add_argument("--sets", default=DEFAULT_SETS, help=f"comma-separated, of {', '.join(SETS)}")
    args = parser.parse_args()
    tools, corr = demo_fit_tools()
    for i, name in enumerate(args.sets.split(",")):
        rows = render_set(name, args.renders, tools, corr)
        if i == 0:
            detector_cost(tools["faces"], rows)
            fit_cost(tools["faces"], rows, corr)
        print(f"{name:16s} direct        {evaluate(rows, corr, mirror=False)}", flush=True)
        print(f"{name:16s} + mirrored    {evaluate(rows, corr, mirror=True)}", flush=True)


if __name__ == "__main__":
    main()
