"""The photo's gaze (fit/gaze.py) on DEMO renders whose eyes look a known way (docs/texture.md, "Gaze").

Each render (fit/synthetic.py, ``gaze_deg``: yaw ±25°, pitch ±15° for both eyes) is fitted as the worker fits
a photo (mirrored run, depth, the second network where an occluder shows), then its gaze is read from the
face mesh's irises with the fitted pose, and with the true pose (what the iris reading alone costs). The error
of an eye is the angle between the direction it was turned to and the true one (the mean of both eyes); the
eyes left at rest give the error of doing nothing.

    .venv/bin/python benchmarks/fit_gaze.py [--renders 40] [--seed 72000]
    .venv/bin/python benchmarks/fit_gaze.py --calibrate        # fit/gaze.py's GAIN / OFFSET, seeds 71000+

(~2 minutes on 2 free cores.)
"""

from __future__ import annotations

import argparse
import math
from functools import partial
from typing import Any

import numpy as np
from fit_extra_points import demo_fit_tools
from fit_second_network import fit

from inference_server.fit import gaze, stage
from inference_server.fit.calibration import Correspondence, calibrate_correspondence
from inference_server.fit.camera import rotation_matrix
from inference_server.fit.landmark_averaging import mirrored_landmarks
from inference_server.fit.second_network import SecondNetwork
from inference_server.fit.synthetic import SyntheticCase, render_case

Row = tuple[SyntheticCase, np.ndarray, np.ndarray | None, np.ndarray, tuple[float, float]]


def gaze_renders(seed: int, n: int, tools: dict[str, Any], corr: Correspondence) -> list[Row]:
    """Renders (one generator per render from ``seed + i``) with a random gaze, and the face mesh's runs."""
    detect = lambda rgb: tools["faces"].face_mesh(rgb, depth=True)  # noqa: E731
    to68 = lambda points: stage.to_68(points, corr)  # noqa: E731
    rows: list[Row] = []
    for i in range(n):
        rng = np.random.default_rng(seed + i)
        looking = (float(rng.uniform(-25, 25)), float(rng.uniform(-15, 15)))
        case = render_case(tools["head"], tools["layer"], tools["texture"], rng, gaze_deg=looking)
        if tools.get("identity") == "mean":  # fitted with the mean head: the identity as uncertain as a real photo's
            case = mean_identity(tools, case)
        found = detect(case.image)
        if found:
            mesh = np.asarray(found[0], np.float64)
            rows.append((case, mesh[:, :2], mirrored_landmarks(case.image, to68(mesh), detect, to68), mesh, looking))
    return rows


def mean_identity(tools: dict[str, Any], case: SyntheticCase) -> SyntheticCase:
    """``case`` as the fit sees it with the model's mean identity in place of the render's (same expression
    and jaw); its eyeballs at rest and the true gaze stay the render's measure of truth."""
    import dataclasses

    import torch

    from inference_server.fit.synthetic import landmark_normals

    head = tools["head"]
    with torch.no_grad():
        shape = torch.zeros(1, 300, dtype=torch.float64)
        out = tools["layer"].with_expression(
            shape, torch.as_tensor(case.expression[None]), torch.as_tensor(case.jaw[None])
        )
    vertices, landmarks = out.vertices[0].numpy(), out.landmarks[0].numpy()
    assert case.eye_pose is not None
    return dataclasses.replace(case, vertices=gaze.turned_eyes(head, vertices, case.eye_pose), landmarks=landmarks,
                               landmark_normals=landmark_normals(vertices, head.faces, head))  # fmt: skip


def rest_eyes(head: Any, case: SyntheticCase) -> list[gaze.Eyeball]:
    """The case's eyeballs at rest (its mesh has them turned)."""
    assert case.eye_pose is not None
    eyes = gaze.eyeballs(head, gaze.turned_eyes(head, case.vertices, -case.eye_pose))
    assert eyes is not None
    return eyes


def gaze_error(
    eye_pose: np.ndarray | None, eyes: list[gaze.Eyeball], looking: tuple[float, float],
    head: tuple[np.ndarray, np.ndarray] | None = None,
) -> float:  # fmt: skip
    """Mean angle (degrees) between where the two eyes were turned (at rest for None) and the true gaze, in
    the head's frame; with ``head`` (fitted pose, true pose), in the camera's: where the eyes look in the
    photo's view, whatever the head's pose error."""
    truth = gaze.angles_direction(*looking)
    fitted_turn, true_turn = (np.eye(3), np.eye(3)) if head is None else (rotation_matrix(p[:3]) for p in head)
    angles = []
    for k, eye in enumerate(eyes):
        rest = (eye.pupil - eye.centre) / eye.radius
        turned = rest if eye_pose is None else rotation_matrix(eye_pose[k]) @ rest
        cosine = float((fitted_turn @ turned) @ (true_turn @ truth))
        angles.append(math.degrees(math.acos(float(np.clip(cosine, -1.0, 1.0)))))
    return float(np.mean(angles))


def calibrate(rows: list[Row], head: Any, corr: Correspondence) -> list[tuple[float, float]]:
    """Least-squares truth = GAIN × read + OFFSET per axis, from the readings with the true pose; printed and
    returned [(yaw gain, offset), (pitch gain, offset)]."""
    gaze.YAW_GAIN, gaze.YAW_OFFSET_DEG, gaze.PITCH_GAIN, gaze.PITCH_OFFSET_DEG = 1.0, 0.0, 1.0, 0.0
    read, truth = [], []
    for case, _, _, mesh, looking in rows:
        found = gaze.fit_gaze(mesh, stage.to_68(mesh, corr)[:, :2], np.ones(68), rest_eyes(head, case), case.landmarks,
                              case.pose, case.camera)  # fmt: skip
        if found.direction_deg is not None:
            read.append(found.direction_deg)
            truth.append(looking)
    r, t = np.asarray(read), np.asarray(truth)
    fitted = []
    for k, name in enumerate(("YAW", "PITCH")):
        gain, offset = np.polyfit(r[:, k], t[:, k], 1)
        before = np.median(np.abs(r[:, k] - t[:, k]))
        after = np.median(np.abs(gain * r[:, k] + offset - t[:, k]))
        print(f"{name}_GAIN, {name}_OFFSET_DEG = {gain:.3f}, {offset:.2f}   "
              f"(median |error| {before:.2f}° → {after:.2f}°; {len(r)} renders)")  # fmt: skip
        fitted.append((float(gain), float(offset)))
    return fitted


def evaluate(rows: list[Row], head: Any, corr: Correspondence, network: SecondNetwork) -> None:
    fitted, in_view, true_pose, at_rest, skipped = [], [], [], [], []
    for row in rows:
        case, _, _, mesh, looking = row
        eyes = rest_eyes(head, case)
        head_fit = fit(row[:4], corr, network)
        at_rest.append(gaze_error(None, eyes, looking))
        landmarks = stage.to_68(mesh, corr)[:, :2]
        truth = gaze.fit_gaze(mesh, landmarks, np.ones(68), eyes, case.landmarks, case.pose, case.camera)
        if truth.eye_pose is not None:
            true_pose.append(gaze_error(truth.eye_pose, eyes, looking))
        if not head_fit.trusted or head_fit.expression_poses is None or head_fit.camera is None:
            skipped.append("head fit untrusted")
            continue
        assert head_fit.landmarks is not None and head_fit.weights is not None
        found = gaze.fit_gaze(mesh, head_fit.landmarks, head_fit.weights, eyes, case.landmarks,
                              head_fit.expression_poses[0], head_fit.camera)  # fmt: skip
        if found.eye_pose is None:
            skipped.append(found.reason)
            continue
        fitted.append(gaze_error(found.eye_pose, eyes, looking))
        in_view.append(gaze_error(found.eye_pose, eyes, looking, (head_fit.expression_poses[0], case.pose)))
    print(f"{len(rows)} renders; gaze error (mean of both eyes), median / 90th percentile:")
    for name, values in (("eyes at rest", at_rest), ("read, true pose", true_pose), ("read, fitted pose", fitted),
                         ("same, camera frame", in_view)):  # fmt: skip
        print(f"  {name:18s} {np.median(values):5.2f}° / {np.percentile(values, 90):5.2f}°  ({len(values)} renders)")
    print(f"  skipped: {len(skipped)} {sorted(set(skipped))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--renders", type=int, default=40)
    parser.add_argument("--seed", type=int, default=72000)
    parser.add_argument("--calibrate", action="store_true", help="fit the iris habit's gains on seeds 71000+")
    parser.add_argument(
        "--identity",
        choices=("true", "mean"),
        default="mean",
        help="fit with the render's identity or the mean head's (as uncertain as a photo's)",
    )
    args = parser.parse_args()
    tools, corr = demo_fit_tools()
    tools["identity"] = args.identity
    if args.calibrate:
        calibrate(gaze_renders(71000, args.renders, tools, corr), tools["head"], corr)
        return
    plain = calibrate_correspondence(tools["head"], tools["faces"].plain_face_mesh)
    network = SecondNetwork(partial(tools["faces"].plain_face_mesh, depth=True), lambda: plain)
    evaluate(gaze_renders(args.seed, args.renders, tools, corr), tools["head"], corr, network)


if __name__ == "__main__":
    main()
