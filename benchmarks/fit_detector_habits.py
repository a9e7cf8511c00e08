"""Two ideas against the pitch scatter under a bar over the mouth (docs/texture.md, "Detector habits under
the bar: averaged warps, a bias correction"), neither kept; the worker is unchanged.

* **Warps** (test-time augmentation): the face mesh run on rolled and scaled copies of the photo (and of its
  mirror), mapped back and averaged with the direct (and mirrored) run, then fitted as the worker fits.
* **Bias correction**: the mean miss of each of the 68 landmarks in the face's frame (eye axis, eye
  distances) measured on the dev bar renders, subtracted from every observation of the other sets.

Prints per set the median rotation error, reprojection, |pitch| and |yaw| (``fit_depth.evaluate``) without
and with the idea, and for the warps the RMS landmark miss of eyes, brows, nose and jaw (0-47).

Run: ``.venv/bin/python benchmarks/fit_detector_habits.py [--sets "test_stage bar,dev bar"] [--warps 7]``
(100 s for the default sets, 200 s for the two 80-render bar sets and the three clean ones, on 2 free cores).
"""

from __future__ import annotations

import argparse
from typing import Any

import cv2
import numpy as np
from fit_depth import Row, evaluate, render_set
from fit_extra_points import demo_fit_tools

from inference_server.fit import stage
from inference_server.fit.calibration import Correspondence
from inference_server.fit.camera import project
from inference_server.fit.landmark_averaging import MIRROR, unmirror
from inference_server.fit.pose import eye_distance

#: (roll in degrees, scale) of the warped copies; the first is the photo itself.
WARPS = ((0.0, 1.0), (8.0, 1.0), (-8.0, 1.0), (0.0, 0.8), (0.0, 1.25), (4.0, 0.9), (-4.0, 1.1))


def warped_mesh(tools: dict[str, Any], rgb: np.ndarray, roll: float, scale: float, centre: np.ndarray,
                near: np.ndarray, to68: Any) -> np.ndarray | None:  # fmt: skip
    """The face mesh (478, 3) found on ``rgb`` turned by ``roll`` and scaled about ``centre``, in ``rgb``'s
    pixels (depth rescaled), the face whose 68 land nearest ``near``."""
    warp = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), roll, scale)
    image = cv2.warpAffine(rgb, warp, (rgb.shape[1], rgb.shape[0]), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE)  # fmt: skip
    back = cv2.invertAffineTransform(warp)
    best, best_miss = None, np.inf
    for found in tools["faces"].face_mesh(image, depth=True):
        points = np.array(found, dtype=np.float64)
        points[:, :2] = points[:, :2] @ back[:, :2].T + back[:, 2]
        points[:, 2] /= scale
        miss = float(np.median(np.linalg.norm(to68(points[:, :2]) - near, axis=1)))
        if miss < best_miss:
            best, best_miss = points, miss
    return best


def averaged_row(tools: dict[str, Any], row: Row, corr: Correspondence, warps: int) -> Row:
    """``row`` with its direct mesh and mirrored 68 each averaged over the warped copies' runs."""
    case, _, mirrored, mesh = row
    to68 = lambda points: stage.to_68(points, corr)  # noqa: E731
    near = to68(mesh[:, :2])
    centre = near.mean(axis=0)
    width = case.image.shape[1]
    flipped = np.ascontiguousarray(case.image[:, ::-1])
    meshes, mirrors = [mesh], [] if mirrored is None else [mirrored]
    for roll, scale in WARPS[1:warps]:
        direct = warped_mesh(tools, case.image, roll, scale, centre, near, to68)
        if direct is not None:
            meshes.append(direct)
        flip_centre = np.array([width - centre[0], centre[1]])
        other = warped_mesh(tools, flipped, roll, scale, flip_centre, unmirror(near, width)[MIRROR], to68)
        if other is not None:
            mirrors.append(to68(unmirror(other, width))[MIRROR])
    average = np.mean(meshes, axis=0)
    return case, average[:, :2], np.mean(mirrors, axis=0) if mirrors else None, average


def landmark_rms(rows: list[Row], corr: Correspondence) -> float:
    """RMS miss (eye distances) of landmarks 0-47 of the direct runs against the true projection."""
    misses = []
    for case, flat, _, _ in rows:
        truth = project(case.landmarks, case.pose, case.camera)
        misses.append(np.linalg.norm(stage.to_68(flat, corr) - truth, axis=1)[:48] / eye_distance(truth))
    return float(np.sqrt(np.mean(np.square(misses))))


def face_frame(landmarks: np.ndarray) -> tuple[np.ndarray, float]:
    """(2, 2) rows: the eye axis and its normal (image down), and the eye distance."""
    axis = landmarks[42:48, :2].mean(axis=0) - landmarks[36:42, :2].mean(axis=0)
    iod = float(np.linalg.norm(axis))
    axis = axis / iod
    return np.array([axis, [-axis[1], axis[0]]]), iod


def measured_bias(rows: list[Row], corr: Correspondence) -> np.ndarray:
    """(68, 2) mean miss of the direct runs in the face frame, in eye distances."""
    misses = []
    for case, flat, _, _ in rows:
        truth = project(case.landmarks, case.pose, case.camera)
        frame, iod = face_frame(truth)
        misses.append((stage.to_68(flat, corr) - truth) @ frame.T / iod)
    return np.asarray(np.mean(misses, axis=0))


def evaluate_corrected(rows: list[Row], corr: Correspondence, bias: np.ndarray) -> str:
    """``fit_depth.evaluate`` with ``bias`` subtracted from both runs' 68 landmarks."""

    def corrected(landmarks: np.ndarray) -> np.ndarray:
        out = np.array(landmarks, dtype=np.float64)
        frame, iod = face_frame(out)
        out[:, :2] -= (bias * iod) @ frame
        return out

    plain = stage.to_68

    def shifted(mesh_points: np.ndarray, correspondence: Correspondence | None) -> np.ndarray:
        return corrected(plain(mesh_points, correspondence))

    stage.to_68 = shifted
    try:
        fixed = [(case, flat, None if m is None else corrected(m), mesh) for case, flat, m, mesh in rows]
        return evaluate(fixed, corr, True)
    finally:
        stage.to_68 = plain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sets", default="test_stage bar,dev bar,held-out bar")
    parser.add_argument("--renders", type=int, default=40)
    parser.add_argument("--warps", type=int, default=len(WARPS), help="copies, the photo itself included")
    args = parser.parse_args()
    tools, corr = demo_fit_tools()
    bias = measured_bias(render_set("dev bar", args.renders, tools, corr), corr)
    for name in args.sets.split(","):
        rows = render_set(name, args.renders, tools, corr)
        warped = [averaged_row(tools, row, corr, args.warps) for row in rows]
        print(f"{name}: main {evaluate(rows, corr, True)}, landmarks 0-47 RMS {landmark_rms(rows, corr):.4f}")
        print(f"  {args.warps} warps averaged: {evaluate(warped, corr, True)}, RMS {landmark_rms(warped, corr):.4f}")
        note = " (the set the bias was measured on)" if name == "dev bar" else ""
        print(f"  dev bar bias subtracted{note}: {evaluate_corrected(rows, corr, bias)}", flush=True)


if __name__ == "__main__":
    main()
