"""The occluder filled before the face mesh runs again (issue 17, stop 28): docs/texture.md, "The occluder
filled before re-detection (tried, not kept)". A measurement harness, not a feature: the stage's evidence
(skin, visibility, cover weights, all on the original photo) is wrapped so that its pose solves fit the
landmarks of the face mesh's runs on the filled photo instead of (or averaged with) the original runs'.

Where fit/cover.py's ``occluder_mask`` finds a blob, it is taken to the photo's size, grown over the
occluder-coloured pixels within an eye distance of it (the blob is only what lies inside the face region; a
bar goes on past the silhouette), dilated by ``--dilate`` eye distances and filled by OpenCV's Telea
inpainting; with ``mouth``, lips are drawn into the filled hole where the model's mouth lands under the
original fit (the pose being measured, so this variant confirms the fit it starts from rather than testing
the picture alone). The face mesh then runs on the filled photo and its mirror. Variants, each with the
mirrored run and the depth, as the worker:

- ``fill``: both runs from the filled photo;
- ``fill, mean``: the 68 of each filled run averaged with the original run's;
- ``fill+mouth`` and ``fill+mouth, mean``: the same with the lips drawn.

Prints per set the median rotation error, the median reprojection of the visible landmarks (% of the eye
distance, against the true projection), the median |pitch| and |yaw| errors, how many renders had a blob;
the nose base's mean vertical bias (eye distances, + down, relative to the eyes) of the direct run before
and after the fill; then the plain fill's extra time per photo on the fit stage, alternated.

Run: ``.venv/bin/python benchmarks/fit_refill.py [--sets "dev bar"] [--renders 40] [--start 0]``
(~6 minutes for the default sets, ~4 for the two sets of 80, on the shared 2-core machine).
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

import numpy as np
from fit_extra_points import demo_fit_tools
from fit_landmark_averaging import DEFAULT_SETS, SETS, alternated_ms, pose_errors

from inference_server.fit import stage
from inference_server.fit.calibration import Correspondence
from inference_server.fit.camera import project
from inference_server.fit.cover import occluder_mask
from inference_server.fit.landmark_averaging import Detector, To68, mirrored_landmarks
from inference_server.fit.pose import eye_distance
from inference_server.fit.synthetic import SyntheticCase, render_case
from inference_server.texture.occluder import face_skin

#: Occluder-coloured pixels within this many eye distances of the blob and this RGB distance of its median
#: colour are filled too.
EXTEND_IOD, EXTEND_RGB = 1.0, 30.0
VARIANTS = ("fill", "fill, mean", "fill+mouth", "fill+mouth, mean")
#: What the wrapped evidence hands the solves: (68, 3) landmarks, or None for the original ones.
SOLVE: dict[str, np.ndarray | None] = {"points": None}


def _with_solve_points(original: Any) -> Any:
    """``stage._evidence`` whose landmarks (not their trust) are replaced by ``SOLVE["points"]``."""

    def evidence(*args: Any, **kwargs: Any) -> Any:
        found = original(*args, **kwargs)
        points = SOLVE["points"]
        if points is None or isinstance(found, stage.HeadFit):
            return found
        return dataclasses.replace(found, image=points[:, :2], depth=points[:, 2] if found.depth is not None else None)

    return evidence


def hole_of(rgb: np.ndarray, mesh: np.ndarray, landmarks: np.ndarray, dilate_iod: float) -> np.ndarray | None:
    """(H, W) bool, the pixels to fill, or None where fit/cover.py finds no occluder blob."""
    import cv2

    mask, _ = occluder_mask(rgb, mesh[:, :2], landmarks, face_skin(rgb, mesh[:, :2]))
    if not mask.any():
        return None
    iod, (height, width) = eye_distance(landmarks), rgb.shape[:2]
    full = cv2.resize(mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST) > 0
    disk = lambda r: cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))  # noqa: E731
    reach = cv2.dilate(full.astype(np.uint8), disk(max(1, round(EXTEND_IOD * iod)))) > 0
    colour = np.median(rgb[full].astype(np.float64), axis=0)
    near = reach & (np.linalg.norm(rgb.astype(np.float64) - colour, axis=2) < EXTEND_RGB)
    _, labels = cv2.connectedComponents((near | full).astype(np.uint8), connectivity=8)
    keep = np.unique(labels[full])
    grown = np.isin(labels, keep[keep > 0]).astype(np.uint8)
    return np.asarray(cv2.dilate(grown, disk(max(1, round(dilate_iod * iod)))), bool)


def filled(rgb: np.ndarray, hole: np.ndarray, iod: float, mouth: np.ndarray | None) -> np.ndarray:
    """``rgb`` with ``hole`` inpainted (Telea, in a crop around it); with ``mouth`` (68, 2), lips drawn there."""
    import cv2

    rows, cols = np.nonzero(hole)
    m = round(0.3 * iod)
    top, left = max(0, rows.min() - m), max(0, cols.min() - m)
    bottom, right = min(rgb.shape[0], rows.max() + m + 1), min(rgb.shape[1], cols.max() + m + 1)
    out, inner = rgb.copy(), hole[top:bottom, left:right]
    done = cv2.inpaint(
        rgb[top:bottom, left:right], inner.astype(np.uint8), max(3, round(0.05 * iod)), cv2.INPAINT_TELEA
    )
    out[top:bottom, left:right][inner] = np.asarray(done)[inner]
    if mouth is None:
        return out
    layer = out.copy()
    lip = tuple(float(c) for c in np.median(out[hole].astype(np.float64), axis=0) * [0.85, 0.55, 0.55])
    dark = tuple(0.45 * c for c in lip)
    cv2.fillPoly(layer, [np.round(mouth[48:60] * 16).astype(np.int32)], lip, lineType=cv2.LINE_AA, shift=4)
    cv2.fillPoly(layer, [np.round(mouth[60:68] * 16).astype(np.int32)], dark, lineType=cv2.LINE_AA, shift=4)
    layer = np.asarray(cv2.GaussianBlur(layer, (0, 0), 1.0))
    out[hole] = layer[hole]
    return out


def redetect(
    photo: np.ndarray, direct: np.ndarray, detect: Detector, to68: To68
) -> tuple[np.ndarray, np.ndarray | None]:
    """(direct 68, mirrored 68) of the face mesh on ``photo``, the run nearest ``direct`` (68, 3); where a run
    finds nothing there, the original's."""
    best, miss = direct, np.inf
    for points in detect(photo):
        landmarks = to68(np.asarray(points, np.float64))
        d = float(np.median(np.linalg.norm(landmarks[:, :2] - direct[:, :2], axis=1)))
        if d < miss and d < 0.15 * eye_distance(direct[:, :2]):
            best, miss = landmarks, d
    return best, mirrored_landmarks(photo, best, detect, to68)


@dataclasses.dataclass
class Row:
    case: SyntheticCase
    direct: np.ndarray  # (68, 3) the original run's landmarks with depth
    mesh: np.ndarray  # (478, 3)
    mirrored: np.ndarray | None
    solves: dict[str, tuple[np.ndarray, np.ndarray | None]]  # variant: (direct 68, mirrored 68)


def fit(row: Row, corr: Correspondence, solve: tuple[np.ndarray, np.ndarray | None] | None) -> stage.HeadFit:
    SOLVE["points"] = None if solve is None else solve[0]
    mirrored = row.mirrored if solve is None else solve[1]
    try:
        return stage.fit_head(row.case.image, None, row.mesh, row.case.landmarks[None], row.case.landmark_normals,
                              correspondence=corr, mirrored=mirrored)  # fmt: skip
    finally:
        SOLVE["points"] = None


def _mean(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    return a if b is None else b if a is None else (a + b) / 2


def make_row(case: SyntheticCase, mesh: np.ndarray, tools: dict[str, Any], corr: Correspondence, dilate: float) -> Row:
    detect: Detector = lambda rgb: tools["faces"].face_mesh(rgb, depth=True)  # noqa: E731
    to68: To68 = lambda points: stage.to_68(points, corr)  # noqa: E731
    direct = to68(mesh)
    row = Row(case, direct, mesh, mirrored_landmarks(case.image, direct, detect, to68), {})
    hole = hole_of(case.image, mesh, direct[:, :2], dilate)
    if hole is None:
        return row
    iod = eye_distance(direct[:, :2])
    first = fit(row, corr, None)
    mouth = None if first.camera is None or first.expression_poses is None else (
        project(case.landmarks, first.expression_poses[0], first.camera))  # fmt: skip
    for name, lips in (("fill", None), ("fill+mouth", mouth)):
        if name == "fill+mouth" and lips is None:
            continue
        d68, m68 = redetect(filled(case.image, hole, iod, lips), direct, detect, to68)
        m68 = row.mirrored if m68 is None else m68
        row.solves[name] = (d68, m68)
        row.solves[f"{name}, mean"] = ((d68 + direct) / 2, _mean(m68, row.mirrored))
    return row


def render_set(name: str, n_default: int, start: int, tools: dict[str, Any], corr: Correspondence,
               dilate: float) -> list[Row]:  # fmt: skip
    seed, occluder, n, sequential = SETS[name]
    rows, rng = [], np.random.default_rng(seed)
    for i in range(start, start + (n or n_default)):
        if not sequential:
            rng = np.random.default_rng(seed + i)
        case = render_case(tools["head"], tools["layer"], tools["texture"], rng, occluder=occluder)
        found = tools["faces"].face_mesh(case.image, depth=True)
        if found:
            rows.append(make_row(case, np.asarray(found[0], np.float64), tools, corr, dilate))
    return rows


def nose_bias(rows: list[Row], variant: str | None) -> float:
    """Mean vertical miss of the nose base 31-35 (eye distances, + down, the eyes' mean miss removed)."""
    out = []
    for row in rows:
        if variant is not None and variant not in row.solves:
            continue
        points = row.direct if variant is None else row.solves[variant][0]
        truth = project(row.case.landmarks, row.case.pose, row.case.camera)
        across = (truth[45] - truth[36]) / np.linalg.norm(truth[45] - truth[36])
        miss = points[:, :2] - truth
        miss -= miss[36:48].mean(axis=0)
        out.append(float((miss[31:36] @ np.array([-across[1], across[0]])).mean()) / eye_distance(truth))
    return float(np.mean(out)) if out else float("nan")


def evaluate(rows: list[Row], corr: Correspondence, variant: str | None) -> str:
    rotation, reprojection, pitch, yaw = [], [], [], []
    for row in rows:
        errors = pose_errors(fit(row, corr, None if variant is None else row.solves.get(variant)), row.case)
        if errors is None:
            continue
        rotation.append(errors[0])
        pitch.append(abs(errors[1]))
        yaw.append(abs(errors[2]))
        reprojection.append(errors[3])
    blobs = sum(bool(row.solves) for row in rows)
    return (f"{np.median(rotation):.2f}°, {100 * np.median(reprojection):.2f} % ({len(rotation)}/{len(rows)} ok, "
            f"blob {blobs}; |pitch| {np.median(pitch):.2f}°, |yaw| {np.median(yaw):.2f}°)")  # fmt: skip


def fit_cost(tools: dict[str, Any], rows: list[Row], corr: Correspondence, rounds: int, dilate: float) -> None:
    """ms per photo of fit/step.py's work (mirrored face mesh run, fit of 20 expressions), without and with
    the plain fill's work (mask, fill, two face mesh runs), alternated, median of ``rounds``."""
    detect: Detector = lambda rgb: tools["faces"].face_mesh(rgb, depth=True)  # noqa: E731
    to68: To68 = lambda points: stage.to_68(points, corr)  # noqa: E731

    def one(with_fill: bool, i: int) -> None:
        row = rows[i]
        mirrored, solve = mirrored_landmarks(row.case.image, row.direct, detect, to68), None
        hole = hole_of(row.case.image, row.mesh, row.direct[:, :2], dilate) if with_fill else None
        if hole is not None:
            photo = filled(row.case.image, hole, eye_distance(row.direct[:, :2]), None)
            solve = redetect(photo, row.direct, detect, to68)
        SOLVE["points"] = None if solve is None else solve[0]
        stage.fit_head(row.case.image, None, row.mesh, np.repeat(row.case.landmarks[None], 20, axis=0),
                       row.case.landmark_normals, correspondence=corr,
                       mirrored=mirrored if solve is None else solve[1])  # fmt: skip
        SOLVE["points"] = None

    before, after = alternated_ms(one, len(rows[:8]), rounds)
    print(f"fit stage, 20 expressions, median of {rounds} alternated rounds: {before:.0f} ms, with the fill "
          f"{after:.0f} ms per photo (x{after / before:.2f})")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--renders", type=int, default=40)
    parser.add_argument("--start", type=int, default=0, help="first seed offset (dev: 40 for seeds 21040+)")
    parser.add_argument("--sets", default=DEFAULT_SETS, help=f"comma-separated, of {', '.join(SETS)}")
    parser.add_argument("--dilate", type=float, default=0.02, help="eye distances")
    parser.add_argument("--rounds", type=int, default=5, help="timing rounds (0: no timing)")
    args = parser.parse_args()
    stage._evidence = _with_solve_points(stage._evidence)
    tools, corr = demo_fit_tools()
    for i, name in enumerate(args.sets.split(",")):
        rows = render_set(name, args.renders, args.start, tools, corr, args.dilate)
        if i == 0 and args.rounds:
            fit_cost(tools, rows, corr, args.rounds, args.dilate)
        print(f"{name:16s} without          {evaluate(rows, corr, None)}; nose base {nose_bias(rows, None):+.3f}")
        for variant in VARIANTS:
            print(f"{name:16s} {variant:17s}{evaluate(rows, corr, variant)}; nose base "
                  f"{nose_bias(rows, variant):+.3f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
