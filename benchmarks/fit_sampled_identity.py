"""The head pose with the identity and expressions the DEMO weights sample, not the render's own (issue 17).

The fit benchmarks measure the pose with the renders' true identity and expression. A user gets what IdGen
and ExpGen sample from the photo, and the pose fitted to that head inherits their error. This benchmark
renders held-out DEMO cases with a known pose (seeds 24000+), runs ``pipeline.Reconstructor.run`` on each
(DEMO weights, fast preset), keeps what the fit stage was given and IdGen's samples, and fits again to the
same detector runs with other heads in place of the worker's:

- ``before: ranked first``: the worker's fit (the ranked first identity, each ExpGen sample);
- ``pose on the samples' mean`` / ``... the kept samples' mean``: the pose fitted to the mean identity of
  all (of the ``top_k`` kept) IdGen samples, the ranked first head shown with it;
- ``top k rotations``: the chordal mean of the k best-fitting expressions' rotations, turned about the face;
- ``floor: ...``: the render's own identity (and expression) in place of the samples.

Two errors per render: the angle of the rotation between the fitted and the true head rotation (degrees),
and the overlay: the median distance between the shown head's 68 landmarks, projected with the fitted pose
and camera, and the render's own landmarks (% of the eye distance) — what an artist sees in camera view.

    python benchmarks/fit_sampled_identity.py --renders 30 [--occluder mouth] [--cache /tmp/fsi]
"""

from __future__ import annotations

import argparse
import math
import pickle
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fit_extra_points import demo_fit_tools
from PIL import Image

from inference_server import draw_stage, pipeline
from inference_server.fit.camera import project, rotation_matrix
from inference_server.fit.synthetic import render_case

SEED = 24000


def rotation_error_deg(a: np.ndarray, b: np.ndarray) -> float:
    """The angle of the rotation between two axis-angle head poses' rotations, in degrees."""
    relative = rotation_matrix(np.asarray(a[:3], np.float64)) @ rotation_matrix(np.asarray(b[:3], np.float64)).T
    return math.degrees(math.acos(float(np.clip((np.trace(relative) - 1.0) / 2.0, -1.0, 1.0))))


def capture(renders: int, occluder: str | None, folder: Path) -> list[dict[str, Any]]:
    """Run the worker's pipeline on each render; keep what its fit was given and the IdGen samples."""
    from inference_server.assets_config import resolve_assets
    from inference_server.backends import configure_cpu_threads
    from inference_server.presets import apply_preset
    from inference_server.protocol import ReconstructArgs

    tools, _ = demo_fit_tools()
    seen: dict[str, Any] = {}
    fit_photo, rank = pipeline.fit_photo, draw_stage.sample_and_rank_identities

    def recording_fit(*args: Any, **kwargs: Any) -> Any:
        seen["fit"] = (args, kwargs)
        return fit_photo(*args, **kwargs)

    def recording_rank(*args: Any, **kwargs: Any) -> Any:
        seen["ranked"] = rank(*args, **kwargs)
        return seen["ranked"]

    pipeline.fit_photo, draw_stage.sample_and_rank_identities = recording_fit, recording_rank
    configure_cpu_threads(None)
    reconstructor = pipeline.Reconstructor(resolve_assets({}), device="cpu")
    rows = []
    for i in range(renders):
        rng = np.random.default_rng(SEED + i)
        case = render_case(tools["head"], tools["layer"], tools["texture"], rng, occluder=occluder)
        path = folder / f"render{i}.png"
        Image.fromarray(case.image).save(path)
        args = apply_preset(ReconstructArgs(
            image=str(path), output=str(folder / f"render{i}.npz"), n_shapes=100, n_expressions=100, top_k=10,
            sampler="ddpm", steps=None, seed=0, device="cpu", extra={"preset": "fast"},
        ))  # fmt: skip
        reconstructor.run(args, lambda *a: None, lambda: False)
        with np.load(folder / f"render{i}.npz") as result:
            head_pose = result["head_pose"].copy() if "head_pose" in result.files else None
        fit_args, fit_kwargs = seen["fit"]
        ranked = seen["ranked"]
        # The detector and the second network hold native graphs: picklable rows leave them out (tools()).
        rows.append({
            "case_pose": case.pose, "case_shape": case.shape, "head_pose": head_pose,
            "fit_args": (*fit_args[:8], None, None), "fit_kwargs": fit_kwargs,
            "shapes": ranked.shapes.cpu().numpy(), "keep": np.asarray(ranked.keep).copy(),
        })  # fmt: skip
    pipeline.fit_photo, draw_stage.sample_and_rank_identities = fit_photo, rank
    return rows


def cached_runs(renders: int, occluder: str | None, cache_dir: Path | None) -> list[dict[str, Any]]:
    """:func:`capture`'s rows, kept in ``cache_dir`` (when given) and read back from there on later runs."""
    cache = None if cache_dir is None else cache_dir / f"runs-{renders}-{occluder}.pkl"
    if cache is not None and cache.exists():
        rows: list[dict[str, Any]] = pickle.loads(cache.read_bytes())
        return rows
    # The fit reads the photo's EXIF from its path: with a cache the renders stay beside it.
    folder = Path(tempfile.mkdtemp()) if cache is None else cache.with_suffix("")
    folder.mkdir(parents=True, exist_ok=True)
    rows = capture(renders, occluder, folder)
    if cache is not None:
        cache.write_bytes(pickle.dumps(rows))
    return rows


def networks() -> tuple[Any, Any]:
    """The face mesh and the second network as the pipeline passes them to the fit stage."""
    from inference_server.assets_config import resolve_assets

    reconstructor = pipeline.Reconstructor(resolve_assets({}), device="cpu")
    bundle = reconstructor.bundle(torch.device("cpu"))
    return partial(reconstructor.detector().mediapipe.face_mesh, depth=True), reconstructor.second_network(bundle)


def landmarks_on(layer: Any, shape: np.ndarray, params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(vertices (M, V, 3), landmarks (M, 68, 3)) of identity ``shape`` with every expression of ``params``."""
    beta = np.zeros((1, 300))
    beta[0, : min(300, len(shape))] = shape[:300]
    with torch.no_grad():
        out = layer.with_expression(torch.as_tensor(beta), torch.as_tensor(params[:, :-3]),
                                    torch.as_tensor(params[:, -3:]))  # fmt: skip
    return out.vertices.numpy(), out.landmarks.numpy()


def refit(
    row: dict[str, Any],
    layer: Any,
    nets: tuple[Any, Any],
    displayed: np.ndarray,
    fitted: np.ndarray | None,
    params: np.ndarray | None = None,
    top: int = 1,
) -> dict[str, float]:
    """The fit stage run again on the row's detector runs with ``displayed`` (300,) as the result's identity
    and the pose fitted on identity ``fitted`` (None: the displayed one), ``params`` (M, 53) the expressions
    and jaw (else the sampled ones): the display-first pose's rotation error (degrees) and how far the
    displayed head's 68 landmarks land from the render's own (median, in % of the eye distance)."""
    args = list(row["fit_args"])
    args[8], args[9] = nets
    params = np.asarray(args[5] if params is None else params, np.float64)
    args[5] = params
    args[3], args[4] = landmarks_on(layer, displayed if fitted is None else fitted, params)
    photo_fit = pipeline.fit_photo(*args, **row["fit_kwargs"])
    arrays = photo_fit.arrays()
    if arrays["head_pose"] is None or arrays["camera"] is None:
        return {"rotation": math.nan, "overlay": math.nan}
    pose, camera = np.asarray(arrays["head_pose"], np.float64), np.asarray(arrays["camera"], np.float64)
    first = landmarks_on(layer, displayed, params)[1][int(photo_fit.order[0])]
    if top > 1:  # the chordal mean of the best-fitting expressions' rotations, turned about the face's centre
        from inference_server.fit.camera import axis_angle

        rotations = [rotation_matrix(p[:3]) for p in np.asarray(arrays["expression_head_pose"], np.float64)[:top]]
        u, _, vt = np.linalg.svd(sum(rotations))
        mean = u @ np.diag([1.0, 1.0, np.linalg.det(u @ vt)]) @ vt
        centre = first.mean(axis=0)
        pose = np.concatenate([axis_angle(mean), pose[3:] + (rotations[0] - mean) @ centre])
    shown = project(first, pose, camera)
    truth = project(row["case_landmarks"], row["case_pose"], row["case_camera"])
    iod = float(np.linalg.norm(truth[36:42].mean(axis=0) - truth[42:48].mean(axis=0)))
    return {"rotation": rotation_error_deg(pose, row["case_pose"]),
            "overlay": 100.0 * float(np.median(np.linalg.norm(shown - truth, axis=1))) / iod}  # fmt: skip


def variants(row: dict[str, Any]) -> dict[str, tuple[Any, ...]]:
    """Name: (displayed identity, identity the pose is fitted on or None, expressions or None)."""
    first, mean = row["shapes"][row["keep"][0]], row["shapes"].mean(axis=0)
    return {
        "before: ranked first": (first, None, None),
        "pose on the samples' mean": (first, mean, None),
        "pose on the kept samples' mean": (first, row["shapes"][row["keep"]].mean(axis=0), None),
        "top 5 rotations": (first, None, None, 5),
        "top 10 rotations": (first, None, None, 10),
        "samples' mean, top 5 rotations": (first, mean, None, 5),
        "floor: true identity": (row["case_shape"], None, None),
        "floor: true identity, true expr.": (row["case_shape"], None, row["case_params"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--renders", type=int, default=12)
    parser.add_argument("--occluder", choices=["mouth", "eyes"])
    parser.add_argument("--cache", type=Path, help="keep the pipeline runs here and reuse them")
    args = parser.parse_args()
    tools, _ = demo_fit_tools()
    rows = cached_runs(args.renders, args.occluder, args.cache)
    for i, row in enumerate(rows):  # the true expression: the same draws again
        case = render_case(tools["head"], tools["layer"], tools["texture"], np.random.default_rng(SEED + i),
                           occluder=args.occluder)  # fmt: skip
        row["case_params"] = np.concatenate([case.expression, case.jaw])[None]
        row["case_landmarks"], row["case_camera"] = case.landmarks, case.camera
    nets = networks()
    results: dict[str, list[dict[str, float]]] = {}
    for row in rows:
        for name, (displayed, fitted, params, *more) in variants(row).items():
            results.setdefault(name, []).append(refit(row, tools["layer"], nets, displayed, fitted, params, *more))
    pipeline_errors = [math.nan if r["head_pose"] is None else rotation_error_deg(r["head_pose"], r["case_pose"])
                       for r in rows]  # fmt: skip
    print(f"{len(rows)} renders, occluder {args.occluder}: median / mean / max of each render's error")
    print(f"  {'the worker (as captured)':34s} rotation {summary(pipeline_errors)}")
    for name, values in results.items():
        rotation, overlay = [v["rotation"] for v in values], [v["overlay"] for v in values]
        print(f"  {name:34s} rotation {summary(rotation)}  overlay (% eye distance) {summary(overlay)}")


def summary(values: list[float]) -> str:
    v = np.asarray(values)
    ok = v[np.isfinite(v)]
    untrusted = int((~np.isfinite(v)).sum())
    text = f"{np.median(ok):5.2f} / {ok.mean():5.2f} / {ok.max():5.2f}"
    return text + (f" ({untrusted} untrusted)" if untrusted else "")


if __name__ == "__main__":
    main()
