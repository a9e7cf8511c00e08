"""A real hand of the face's tone over one eye (fit/synthetic.py's ``with_pasted_hand``; docs/texture.md,
"A hand over one eye"). The hand annotated in the fixture photo ``despair-alone…`` is pasted over the image-left
or image-right eye and cheek of DEMO renders (yaw ±25°), its colour moved to the face's, and each render is
fitted as the worker fits a photo (mirrored run, depth, the second network where an occluder shows). Prints
how many fits are trusted, how many of those are wrong (rotation error above ``--wrong``), the median rotation
and reprojection, and why the others were refused; ``--hand-mask`` adds a run with MediaPipe Hands' mask
(preprocess/hands.py) as one more occluder in fit/cover.py, to see what a found hand would change, and
``--true-hand-mask`` one with the pasted hand's own pixels (what a perfect hand detector would give).

    .venv/bin/python benchmarks/fit_hand_over_eye.py [--renders 30] [--hand-mask] [--true-hand-mask]

(~3 minutes on 2 free cores; needs shared/fixtures/official-preprocessing for the hand.)
"""

from __future__ import annotations

import argparse
import json
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from fit_depth import Row
from fit_extra_points import demo_fit_tools
from fit_landmark_averaging import pose_errors
from fit_second_network import fit

from inference_server.fit import cover, stage
from inference_server.fit.calibration import Correspondence, calibrate_correspondence
from inference_server.fit.camera import project
from inference_server.fit.landmark_averaging import mirrored_landmarks
from inference_server.fit.second_network import SecondNetwork
from inference_server.fit.synthetic import render_case, with_pasted_hand
from inference_server.preprocess.hands import find_hands
from inference_server.preprocess.official_reference import find_fixtures

ANNOTATION = Path(__file__).resolve().parents[1] / "tests/inference_server/texture/despair_hand_annotation.json"
EYES = (range(36, 42), range(42, 48))


def hand_renders(
    n: int, tools: dict[str, Any], corr: Correspondence, hand_masks: dict[bytes, np.ndarray] | None = None
) -> list[Row]:
    """Renders (seeds 60000+) with the annotated hand over one eye, alternately left and right, and the
    face mesh's runs on them; ``hand_masks`` (when given) receives each render's true hand pixels, keyed by
    the render's bytes."""
    fixtures = find_fixtures()
    if fixtures is None:
        raise SystemExit("shared/fixtures/official-preprocessing is not on this machine (the hand comes from it)")
    note = json.loads(ANNOTATION.read_text())
    source = cv2.cvtColor(cv2.imread(str(fixtures / "images" / note["image"])), cv2.COLOR_BGR2RGB)
    polygon = np.asarray(note["polygon"], np.float64)
    detect = lambda rgb: tools["faces"].face_mesh(rgb, depth=True)  # noqa: E731
    to68 = lambda points: stage.to_68(points, corr)  # noqa: E731
    rows: list[Row] = []
    for i in range(n):
        case = render_case(
            tools["head"], tools["layer"], tools["texture"], np.random.default_rng(60000 + i), max_yaw=25
        )
        xy = project(case.landmarks, case.pose, case.camera)[:, :2]
        eye = xy[list(EYES[i % 2])].mean(axis=0)
        iod = float(np.linalg.norm(xy[36:42].mean(axis=0) - xy[42:48].mean(axis=0)))
        case.image, inside = with_pasted_hand(case, source, polygon, eye + np.array([0.0, 0.5 * iod]))
        if hand_masks is not None:
            hand_masks[case.image.tobytes()] = inside
        found = detect(case.image)
        if found:
            mesh = np.asarray(found[0], np.float64)
            rows.append((case, mesh[:, :2], mirrored_landmarks(case.image, to68(mesh), detect, to68), mesh))
    return rows


def with_hand_mask(plain_mask: Any, true_masks: dict[bytes, np.ndarray] | None = None) -> Any:
    """fit/cover.py's occluder mask plus MediaPipe Hands' mask, or (``true_masks``) the pasted hand's own
    pixels: what a perfect hand detector would give."""

    def occluder_mask(rgb: np.ndarray, mesh_points: np.ndarray, landmarks: np.ndarray, skin: Any) -> Any:
        mask, scale = plain_mask(rgb, mesh_points, landmarks, skin)
        if true_masks is None:
            hands = find_hands(rgb).mask(rgb.shape[0], rgb.shape[1]).astype(np.uint8)
        else:  # the mirrored photo's run finds no entry and keeps the plain mask
            hands = true_masks.get(rgb.tobytes(), np.zeros(rgb.shape[:2], bool)).astype(np.uint8)
        return mask | (cv2.resize(hands, mask.shape[::-1], interpolation=cv2.INTER_NEAREST) > 0), scale

    return occluder_mask


def evaluate(rows: list[Row], corr: Correspondence, network: SecondNetwork, wrong: float) -> str:
    errors: list[tuple[float, ...]] = []
    refused: dict[str, int] = {}
    for row in rows:
        found = fit(row, corr, network)
        e = pose_errors(found, row[0])
        if e is None:
            reason = found.reason.split(":")[0]
            refused[reason] = refused.get(reason, 0) + 1
        else:
            errors.append(e)
    if not errors:
        return f"no trusted fit; refused: {refused}"
    table = np.asarray(errors)
    return (f"trusted {len(table)}/{len(rows)}, wrong but trusted {int((table[:, 0] > wrong).sum())}, median "
            f"{np.median(table[:, 0]):.2f}°, {100 * np.median(table[:, 3]):.2f} %; refused: {refused}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--renders", type=int, default=30)
    parser.add_argument("--wrong", type=float, default=10.0, help="rotation error (°) that makes a fit wrong")
    parser.add_argument("--hand-mask", action="store_true", help="also with MediaPipe Hands' mask as an occluder")
    parser.add_argument("--true-hand-mask", action="store_true", help="also with the pasted hand's own pixels")
    args = parser.parse_args()
    tools, corr = demo_fit_tools()
    plain = calibrate_correspondence(tools["head"], tools["faces"].plain_face_mesh)
    network = SecondNetwork(partial(tools["faces"].plain_face_mesh, depth=True), lambda: plain)
    true_masks: dict[bytes, np.ndarray] = {}
    rows = hand_renders(args.renders, tools, corr, true_masks)
    print(f"{len(rows)} renders with a face found; MediaPipe Hands finds the hand on "
          f"{sum(bool(find_hands(row[0].image).hands) for row in rows)}", flush=True)  # fmt: skip
    print(f"as the worker fits : {evaluate(rows, corr, network, args.wrong)}", flush=True)
    if args.hand_mask:
        plain_mask = cover.occluder_mask
        cover.occluder_mask = with_hand_mask(plain_mask)
        print(f"with the hand mask : {evaluate(rows, corr, network, args.wrong)}", flush=True)
        cover.occluder_mask = plain_mask
    if args.true_hand_mask:
        plain_mask = cover.occluder_mask
        cover.occluder_mask = with_hand_mask(plain_mask, true_masks)
        print(f"the true hand mask : {evaluate(rows, corr, network, args.wrong)}", flush=True)
        cover.occluder_mask = plain_mask


if __name__ == "__main__":
    main()
