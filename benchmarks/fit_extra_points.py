"""Extra MediaPipe points (forehead, nose bridge, cheeks, temples) in the fit's pose solve, with a bar over
the mouth: docs/texture.md, "More points (tried, not kept)". A measurement harness, not a feature: the
stage's pose solves are wrapped so that each call also gets the extra model-vertex / detector-point pairs.

Each extra detector point is matched to the model vertex that lands nearest to it over the clean renders
(seeds 20000+), with a precision measured as the 68's (inverse variance relative to the eyes'). Then the
bar sets (dev 21000+, held out 23000+, ``test_stage``'s seed 5) and the clean held-out set (24000+) are
fitted without and with the extras. Prints median rotation error and median reprojection of the visible
68 landmarks (% of the eye distance, against the true projection).

Group ``ears``: not face-mesh points but the face detector's two ear keypoints (BlazeFace's tragions, far
behind the eyes: a lever for pitch that the face mesh's near-planar points lack), appended to the mesh rows.

Run: ``.venv/bin/python benchmarks/fit_extra_points.py [--weight 0.3] [--groups cheek,temple|ears] [--cover]``
(~3 minutes on 2 free cores).
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import torch

from inference_server.demo.head import generate_demo_head
from inference_server.fit import cover, stage
from inference_server.fit.calibration import Correspondence, calibrate_correspondence
from inference_server.fit.camera import project, rotation_angle_deg, rotation_matrix
from inference_server.fit.pose import PoseFit, eye_distance
from inference_server.fit.synthetic import SyntheticCase, ground_truth_texture, render_case
from inference_server.flame.layer import FlameLayer
from inference_server.preprocess.mediapipe_faces import MediaPipeFaces
from inference_server.texture.occluder import face_skin

MESH_ROWS = 478
GROUPS = {  # MediaPipe indices; none on the face oval, whose points follow the silhouette
    "forehead": [151, 9, 108, 337, 69, 299, 104, 333, 107, 336, 66, 296],
    "bridge": [168, 6, 197, 195],
    "cheek": [50, 280, 101, 330, 117, 346, 118, 347, 123, 352, 116, 345, 100, 329, 36, 266, 205, 425],
    "temple": [71, 301, 139, 368, 63, 293, 143, 372, 34, 264],
    "ears": [MESH_ROWS + 4, MESH_ROWS + 5],  # the short-range detector's keypoints 4, 5, after the mesh rows
}
SETS = {"dev bar": (21000, "mouth"), "held-out bar": (23000, "mouth"), "held-out clean": (24000, None)}
Case = tuple[SyntheticCase, np.ndarray]


def render_set(seed: int, occluder: str | None, n: int, tools: dict[str, Any], sequential: bool = False) -> list[Case]:
    """Renders (one generator per render from ``seed + i``, or one for all like test_stage) and their meshes."""
    out, rng = [], np.random.default_rng(seed)
    for i in range(n):
        if not sequential:
            rng = np.random.default_rng(seed + i)
        case = render_case(tools["head"], tools["layer"], tools["texture"], rng, occluder=occluder)
        found = tools["faces"].face_mesh(case.image)
        if not found:
            continue
        mesh = np.asarray(found[0], dtype=np.float64)
        if tools.get("ears"):  # the detector's keypoints as rows MESH_ROWS.. (z 0), or NaN without a face
            hits = tools["faces"].face_detector(case.image, "short")
            keypoints = hits[0].keypoints if hits else np.full((6, 2), np.nan)
            mesh = np.concatenate([mesh, np.column_stack([keypoints, np.zeros(6)])[:, : mesh.shape[1]]])
        out.append((case, mesh))
    return out


def match_vertices(cases: list[Case], points: list[int], corr: Any) -> tuple[np.ndarray, np.ndarray]:
    """(vertex per extra point, precision relative to the eyes' median variance)."""
    total = 0.0
    for case, mesh in cases:
        xy, truth = project(case.vertices, case.pose, case.camera), project(case.landmarks, case.pose, case.camera)
        gap = np.nan_to_num(np.linalg.norm(xy[None] - mesh[points, None, :2], axis=2), nan=0.0)
        total = total + gap / eye_distance(truth)
    vertex = np.argmin(total, axis=1)
    miss, eyes = [], []
    for case, mesh in cases:
        xy, truth = project(case.vertices, case.pose, case.camera), project(case.landmarks, case.pose, case.camera)
        iod = eye_distance(truth)
        miss.append((mesh[points, :2] - xy[vertex]) / iod)
        eyes.append(((corr.matrix @ mesh[:MESH_ROWS, :2])[36:48] - truth[36:48]) / iod)
    reference = np.median((np.array(eyes) ** 2).sum(axis=2).mean(axis=0))
    return vertex, np.clip(reference / np.nanmean((np.array(miss) ** 2).sum(axis=2), axis=0), 0.0, 1.0)


def extra_cover(case: SyntheticCase, mesh: np.ndarray, image: np.ndarray, corr: Any) -> np.ndarray:
    """fit/cover.py's weight at the extra points."""
    import cv2

    mesh = mesh[:MESH_ROWS]
    landmarks = corr.matrix @ mesh[:, :2]
    mask, scale = cover.occluder_mask(case.image, mesh, landmarks, face_skin(case.image, mesh))
    if not mask.any():
        return np.ones(len(image))
    distance = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, 5)
    xy = np.clip(np.round(image * scale).astype(int), 0, np.array(mask.shape[::-1]) - 1)
    d = distance[xy[:, 1], xy[:, 0]] / scale / (cover.REACH_IOD * eye_distance(landmarks))
    return np.clip(cover.CLOSE_WEIGHT + (1.0 - cover.CLOSE_WEIGHT) * d, cover.CLOSE_WEIGHT, 1.0)


def with_extras(original: Any, extra: dict[str, np.ndarray]) -> Any:
    """``stage.fit_poses`` that appends the extra pairs to every solve and reports on the 68 only."""

    def fit_poses(model: np.ndarray, image: np.ndarray, weights: np.ndarray, intr: Any, **kw: Any) -> list[PoseFit]:
        if not extra:
            return original(model, image, weights, intr, **kw)
        model = np.asarray(model, dtype=np.float64)
        b, k = len(model), len(extra["image"])
        model = np.concatenate([model, np.broadcast_to(extra["model"], (b, k, 3))], axis=1)
        w = np.concatenate([np.broadcast_to(np.asarray(weights, float), (b, 68)),
                            np.broadcast_to(extra["weight"], (b, k))], axis=1)  # fmt: skip
        precision = np.ones(68) if kw.get("precision") is None else np.asarray(kw["precision"])
        kw["precision"] = np.concatenate([precision, extra["precision"]])
        fits = original(model, np.concatenate([image, extra["image"]]), w, intr, **kw)
        return [PoseFit(f.pose, f.focal, f.residuals[:68], f.robust_weights[:68], f.cost) for f in fits]

    return fit_poses


def evaluate(cases: list[Case], corr: Any, extra: dict[str, np.ndarray], plan: dict[str, Any] | None) -> str:
    rotation, reprojection = [], []
    for case, mesh in cases:
        extra.clear()
        if plan is not None:
            image = mesh[plan["points"], :2]
            weight = plan["weight"] * (extra_cover(case, mesh, image, corr) if plan["cover"] else 1.0)
            weight = np.where(np.isfinite(image).all(axis=1), weight, 0.0)  # no detector hit: no extra point
            image = np.nan_to_num(image)
            extra.update(model=case.vertices[plan["vertex"]], image=image, weight=np.broadcast_to(weight, len(image)),
                         precision=plan["precision"])  # fmt: skip
        fit = stage.fit_head(case.image, None, mesh[:MESH_ROWS], case.landmarks[None], case.landmark_normals,
                             correspondence=corr)  # fmt: skip
        if not fit.trusted or fit.expression_poses is None or fit.camera is None or fit.weights is None:
            continue
        pose = fit.expression_poses[0]
        rotation.append(rotation_angle_deg(rotation_matrix(pose[:3]), rotation_matrix(case.pose[:3])))
        truth = project(case.landmarks, case.pose, case.camera)
        miss = np.linalg.norm(project(case.landmarks, pose, fit.camera) - truth, axis=1)
        reprojection.append(float(np.median(miss[fit.weights >= 0.5])) / eye_distance(truth))
    return f"{np.median(rotation):.2f}°, {100 * np.median(reprojection):.2f} % ({len(rotation)}/{len(cases)} ok)"


def demo_fit_tools() -> tuple[dict[str, Any], Correspondence]:
    """The DEMO head, its float64 layer, its ground-truth texture, a face-mesh detector and the head's
    landmark calibration: what the fit benchmarks render and fit with."""
    head = generate_demo_head()
    tools: dict[str, Any] = {"head": head, "layer": FlameLayer(head, dtype=torch.float64),
                             "texture": ground_truth_texture(head), "faces": MediaPipeFaces()}  # fmt: skip
    corr = calibrate_correspondence(head, tools["faces"].face_mesh)
    assert corr is not None
    return tools, corr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--weight", type=float, default=0.3)
    parser.add_argument("--groups", default="cheek,temple")
    parser.add_argument("--cover", action="store_true", help="times fit/cover.py's weight at each extra point")
    parser.add_argument("--renders", type=int, default=40)
    parser.add_argument("--precision", type=float, help="instead of the measured precision of the extra points")
    args = parser.parse_args()
    tools, corr = demo_fit_tools()
    tools["ears"] = "ears" in args.groups.split(",")
    points = [j for g in args.groups.split(",") for j in GROUPS[g]]
    vertex, precision = match_vertices(render_set(20000, None, args.renders, tools), points, corr)
    if args.precision is not None:
        precision = np.full(len(points), args.precision)
    plan = {"points": points, "vertex": vertex, "precision": precision, "weight": args.weight, "cover": args.cover}
    extra: dict[str, np.ndarray] = {}
    stage.fit_poses = with_extras(stage.fit_poses, extra)
    sets = {name: render_set(seed, occ, args.renders, tools) for name, (seed, occ) in SETS.items()}
    sets["test_stage bar"] = render_set(5, "mouth", 10, tools, sequential=True)
    print(f"extra points {args.groups} ({len(points)}), weight {args.weight}, cover {args.cover}; "
          f"precision relative to the eyes' {np.round(precision, 3).tolist()}")  # fmt: skip
    for name, cases in sets.items():
        print(f"{name:16s} without {evaluate(cases, corr, extra, None)}   with {evaluate(cases, corr, extra, plan)}")


if __name__ == "__main__":
    main()
