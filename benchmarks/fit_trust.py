"""The fit's trust checks (inference_server/fit/trust.py) across yaw −90..90°, and skin-coloured hands in
the texture (texture/skin_cover.py): docs/texture.md, "Trust" and "Texture".

Fit: perspective renders of the DEMO head (fit/synthetic.py) at every 5° of yaw (±2° jitter), clean or
with a strongly coloured bar over the mouth or the eyes, through MediaPipe and the measured
correspondence. Each is fitted with the trust checks and with ``pose_doubt`` switched off; a fit is
*wrong* when its rotation is more than ``--wrong`` degrees off, *correct* when at most 5°.

Texture: renders (yaw ±20°) with the training occluders (train/synthetic.py) baked with the true pose,
with and without the skin-coloured-cover test: the share of occluder-covered texels left out, and the
occluder's share of the texels taken from the photo.

Run: ``.venv/bin/python benchmarks/fit_trust.py [--seeds 3] [--texture-cases 4]`` (~6 minutes on 2 free cores;
``--texture-cases 0`` runs the fit part only).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import torch

from inference_server.demo.head import generate_demo_head
from inference_server.fit import cover, stage, trust
from inference_server.fit.calibration import Correspondence, calibrate_correspondence
from inference_server.fit.camera import project, rotation_angle_deg, rotation_matrix
from inference_server.fit.landmark_averaging import mirrored_landmarks
from inference_server.fit.pose import eye_distance
from inference_server.fit.second_network import SecondNetwork, second_network_runs
from inference_server.fit.synthetic import SyntheticCase, ground_truth_texture, render_case, with_training_occluder
from inference_server.flame.layer import FlameLayer
from inference_server.flame.model_data import FlameModelData
from inference_server.preprocess.mediapipe_faces import MESH_POINTS5, MediaPipeFaces
from inference_server.preprocess.occlusion import occluded_points
from inference_server.texture import bake
from inference_server.texture.stage import TextureInputs, make_texture


def _fit(
    case: SyntheticCase, mesh: np.ndarray, correspondence: Correspondence, mirrored: np.ndarray | None,
    second: SecondNetwork | None,
) -> tuple[bool, float, float]:  # fmt: skip
    """(ok, rotation error °, median reprojection of the visible landmarks / eye distance); ``second``: the
    second network where the photo shows an occluder, asked as fit/step.py asks it."""
    runs = None if second is None else partial(second_network_runs, case.image, network=second)
    covered = second is not None and bool(occluded_points(case.image, mesh[list(MESH_POINTS5), :2]))
    fit = stage.fit_head(case.image, None, mesh, case.landmarks[None], case.landmark_normals,
                         correspondence=correspondence, mirrored=mirrored, occluded_runs=runs,
                         occluder_seen=covered)  # fmt: skip
    if not fit.trusted or fit.expression_poses is None or fit.camera is None or fit.weights is None:
        return False, float("nan"), float("nan")
    pose = fit.expression_poses[0]
    rotation = rotation_angle_deg(rotation_matrix(pose[:3]), rotation_matrix(case.pose[:3]))
    truth = project(case.landmarks, case.pose, case.camera)
    back = project(case.landmarks, pose, fit.camera)
    seen = fit.weights >= stage.TRUSTED_WEIGHT
    return True, rotation, float(np.median(np.linalg.norm(back - truth, axis=1)[seen]) / eye_distance(truth))


def fit_sweep(head: FlameModelData, layer: FlameLayer, texture: np.ndarray, faces: MediaPipeFaces,
              occluder: str | None, seeds: int, max_yaw: int, wrong: float, mirror: bool = True,
              depth: bool = True, second_network: bool = True) -> None:  # fmt: skip
    correspondence = calibrate_correspondence(head, faces.face_mesh)
    assert correspondence is not None
    second = None
    if second_network:
        plain = calibrate_correspondence(head, faces.plain_face_mesh)
        second = SecondNetwork(partial(faces.plain_face_mesh, depth=True), lambda: plain)
    rows: list[tuple[tuple[bool, float, float], tuple[bool, float, float]]] = []
    for seed in range(seeds):
        rng = np.random.default_rng(1000 + seed)
        for yaw in range(-max_yaw, max_yaw + 1, 5):
            bar = occluder if occluder in ("mouth", "eyes") else None
            case = render_case(head, layer, texture, rng, yaw=yaw + rng.uniform(-2, 2), occluder=bar)
            if occluder is not None and bar is None:  # a training renders' occluder (train/synthetic.py)
                case = dataclasses.replace(case, image=with_training_occluder(case, occluder, rng)[0])
            detect = lambda rgb: faces.face_mesh(rgb, depth=depth)  # noqa: E731
            found = detect(case.image)
            if not found:
                continue
            to68 = lambda points: stage.to_68(points, correspondence)  # noqa: E731
            # The worker's path (fit/step.py): the mirrored photo's run beside the direct one, both with the
            # face mesh's relative depth.
            mirrored = mirrored_landmarks(case.image, to68(found[0]), detect, to68) if mirror else None
            doubt = stage.pose_doubt
            stage.pose_doubt = lambda *args: ""
            try:
                off = _fit(case, found[0], correspondence, mirrored, second)
            finally:
                stage.pose_doubt = doubt
            rows.append((off, _fit(case, found[0], correspondence, mirrored, second)))
    n = len(rows)
    for label, k in (("without the checks", 0), ("with the checks", 1)):
        ok = [r[k] for r in rows if r[k][0]]
        bad = sum(r[1] > wrong for r in ok)
        print(f"  {label:18s}: ok {len(ok)}/{n}, wrong but ok {bad} ({100 * bad / max(n, 1):.1f} %), "
              f"median rotation {np.median([r[1] for r in ok]):.2f}°, "
              f"reprojection {100 * np.median([r[2] for r in ok]):.2f} % IOD")  # fmt: skip
    correct = [r for r in rows if r[0][0] and r[0][1] <= 5.0]
    flagged = sum(not r[1][0] for r in correct)
    print(f"  correct fits (≤ 5°) flagged by the checks: {flagged}/{len(correct)}")


def _texel_pixels(
    head: FlameModelData, case: SyntheticCase, raster: Any, rows: np.ndarray, cols: np.ndarray
) -> np.ndarray:
    tri = raster.triangle[rows, cols]
    points = np.einsum("nk,nkc->nc", raster.barycentric[rows, cols], case.vertices[np.asarray(head.faces)[tri]])
    return project(points, case.pose, case.camera)


def texture_leaks(head: FlameModelData, layer: FlameLayer, texture: np.ndarray, cases: int) -> None:
    from inference_server.train.synthetic import OCCLUDERS

    assert head.uv is not None and head.uv_faces is not None
    raster = bake.rasterize_uv(head.uv, np.asarray(head.uv_faces), 512)
    original: Callable[..., np.ndarray] = bake.skin_coloured_cover
    for name in OCCLUDERS:
        shares: dict[str, list[tuple[float, float]]] = {"before": [], "after": []}
        for i in range(cases):
            rng = np.random.default_rng(100 + i + sum(map(ord, name)))
            case = render_case(head, layer, texture, rng, max_yaw=20)
            image, alpha = with_training_occluder(case, name, rng)
            inputs = TextureInputs(case.vertices, head.v_template, head.faces, head.uv, head.uv_faces,
                                   case.landmarks, case.pose, case.camera)  # fmt: skip
            for label in shares:
                bake.skin_coloured_cover = (
                    original if label == "after" else (lambda rgb, *a, **k: np.zeros(rgb.shape[:2], bool))
                )
                tex = make_texture(image, inputs)
                rows, cols = np.nonzero(tex.from_photo | tex.occluded)
                pixel = _texel_pixels(head, case, raster, rows, cols)
                h, w = alpha.shape
                under = (
                    alpha[np.clip(pixel[:, 1].astype(int), 0, h - 1), np.clip(pixel[:, 0].astype(int), 0, w - 1)] > 0.5
                )
                kept = tex.from_photo[rows, cols]
                shares[label].append((1.0 - float(kept[under].mean()), float((under & kept).sum() / kept.sum())))
        bake.skin_coloured_cover = original
        b, a = np.mean(shares["before"], axis=0), np.mean(shares["after"], axis=0)
        print(f"  {name:22s} covered texels left out {100 * b[0]:5.1f} → {100 * a[0]:5.1f} %, "
              f"occluder share of photo texels {100 * b[1]:5.2f} → {100 * a[1]:5.2f} %")  # fmt: skip


#: The fit sweeps: name → (occluder: a bar "mouth" / "eyes", a training renders' occluder, or None; renders
#: per 5° of yaw (the clean sweep's is --seeds); largest yaw).
SWEEPS: dict[str, tuple[str | None, int, int]] = {
    "clean": (None, 3, 90),
    "mouth": ("mouth", 2, 60),
    "eyes": ("eyes", 2, 60),
    "hand_over_mouth": ("hand_over_mouth", 2, 60),
    "sunglasses": ("sunglasses", 2, 60),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="renders per yaw (clean sweep)")
    parser.add_argument("--wrong", type=float, default=10.0, help="rotation error (°) that makes a fit wrong")
    parser.add_argument("--texture-cases", type=int, default=4)
    parser.add_argument("--no-mirror", action="store_true", help="the direct run alone (before the mirrored run)")
    parser.add_argument("--no-depth", action="store_true", help="without the face mesh's depth (before stop 27)")
    parser.add_argument(
        "--no-second-network",
        action="store_true",
        help="without the second face mesh network under an occluder (before stop 32)",
    )
    parser.add_argument(
        "--no-skin-cover", action="store_true", help="without fit/cover.py's skin-coloured mask (before stop 33)"
    )
    parser.add_argument("--no-dark-cover", action="store_true",
                        help="dark lenses not an occluder, covered eyes refused (before stop 36)")  # fmt: skip
    parser.add_argument("--min-trusted", type=int, help="stage.MIN_TRUSTED_LANDMARKS instead of its value")
    parser.add_argument("--sweeps", default=",".join(SWEEPS), help=f"comma-separated, of {', '.join(SWEEPS)}")
    args = parser.parse_args()
    cover.SKIN_COVER = not args.no_skin_cover
    cover.DARK_COVER = trust.COVERED_EYES_POSE = not args.no_dark_cover
    if args.min_trusted is not None:
        stage.MIN_TRUSTED_LANDMARKS = args.min_trusted
    head = generate_demo_head()
    layer = FlameLayer(head, dtype=torch.float64)
    texture = ground_truth_texture(head)
    faces = MediaPipeFaces()
    for name in args.sweeps.split(","):
        occluder, seeds, max_yaw = SWEEPS[name]
        seeds = args.seeds if occluder is None else seeds
        print(f"fit, {name} renders, yaw ±{max_yaw}°, {seeds} per 5°:")
        fit_sweep(head, layer, texture, faces, occluder, seeds, max_yaw, args.wrong, mirror=not args.no_mirror,
                  depth=not args.no_depth, second_network=not args.no_second_network)  # fmt: skip
    if args.texture_cases > 0:  # the texture part does not depend on the fit (true pose)
        print(f"texture, {args.texture_cases} renders per occluder, true pose:")
        texture_leaks(head, layer, texture, args.texture_cases)


if __name__ == "__main__":
    main()
