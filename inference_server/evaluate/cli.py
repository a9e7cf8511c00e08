"""``ofer-worker evaluate {synthetic,sequence,multiview,now}``: the occlusion benchmark, the temporal path on a
rendered clip, pooled identities from several photos, the NoW distances."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from ..progress_bar import ProgressBar


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("evaluate", help="synthetic occlusion benchmark, NoW scan-to-mesh metric")
    jobs = parser.add_subparsers(dest="job", metavar="JOB", required=True)
    synthetic = jobs.add_parser("synthetic", help="ranked / average / oracle error and spread on a synthetic set")
    synthetic.add_argument("--data", type=Path, required=True, help="folder with index.json (train synth)")
    synthetic.add_argument(
        "--weights", type=Path, help="folder with idgen/expgen/idrank(.safetensors or DEMO_*); default: DEMO"
    )
    synthetic.add_argument("--n-samples", type=int, default=32)
    synthetic.add_argument("--sampler", default="ddim")
    synthetic.add_argument("--steps", type=int, default=50)
    synthetic.add_argument("--seed", type=int, default=0)
    synthetic.add_argument("--limit", type=int, help="evaluate only the first N images")
    synthetic.add_argument("--json", type=Path, help="also write the full result here")
    synthetic.set_defaults(run=run_synthetic)
    seq = jobs.add_parser("sequence", help="a rendered clip: the temporal path against each frame's first sample")
    seq.add_argument("--frames", type=int, default=48, help="frames of the rendered clip")
    seq.add_argument("--clips", type=int, default=1, help="clips (seeds 0..clips-1)")
    seq.add_argument("-m", "--n-expressions", type=int, default=32)
    seq.add_argument("-n", "--n-shapes", type=int, default=32)
    seq.add_argument("--identity-frames", type=int, default=4)
    seq.add_argument("--sampler", default="dpmsolver", choices=("ddpm", "ddim", "dpmsolver"))
    seq.add_argument("--steps", type=int, default=20)
    seq.add_argument("--smoothness", type=float, default=0.1)
    seq.add_argument("--smoothing", type=float, default=1.0)
    seq.add_argument(
        "--work",
        type=Path,
        default=None,
        help="keep the rendered frames and results in this folder (default: a temporary folder, removed at the end)",
    )
    seq.add_argument("--json", type=Path)
    seq.set_defaults(run=run_sequence_evaluation)
    multiview = jobs.add_parser(
        "multiview", help="several photos of one person: pooled vs single-photo identity error on synthetic triples"
    )
    multiview.add_argument("--triples", type=int, default=30, help="synthetic people (default 30)")
    multiview.add_argument("--views", type=int, default=3, help="photos per person (default 3)")
    multiview.add_argument("--n-samples", type=int, default=32, help="IdGen samples per photo")
    multiview.add_argument("--sampler", choices=("ddpm", "ddim", "dpmsolver"), default="ddim")
    multiview.add_argument("--steps", type=int, default=50)
    multiview.add_argument("--seed", type=int, default=0)
    multiview.add_argument("--device", choices=("auto", "cuda", "cpu"), default="cpu")
    multiview.add_argument("--json", type=Path, help="also write the full result here")
    multiview.set_defaults(run=run_multiview_job)
    now = jobs.add_parser("now", help="NoW: 7-landmark similarity + rigid scan-to-mesh refinement (mm)")
    now.add_argument("--mesh", required=True, help="predicted mesh (.obj or .npz with vertices/faces), mm")
    now.add_argument("--landmarks", required=True, help="its 7 landmarks (.npy/.txt 7x3), mm")
    now.add_argument("--scan", required=True, help="the scan (.obj or .npz), mm")
    now.add_argument("--scan-landmarks", required=True, help="the scan's 7 landmarks (.pp/.npy/.txt)")
    now.add_argument("--json", type=Path)
    now.set_defaults(run=run_now)


def _weights(folder: Path | None) -> dict[str, Path]:
    from ..demo.weights import ensure_demo_weights

    if folder is None:
        return ensure_demo_weights()
    found = {}
    for kind in ("idgen", "expgen", "idrank"):
        for name in (f"{kind}.safetensors", f"DEMO_{kind}.safetensors"):
            if (folder / name).is_file():
                found[kind] = folder / name
    missing = {"idgen", "expgen", "idrank"} - set(found)
    if missing:
        raise SystemExit(f"error: {folder} lacks {sorted(missing)} (.safetensors in the project format)")
    return found


def run_synthetic(args: argparse.Namespace) -> int:
    from .benchmark import BenchmarkSettings, run_benchmark

    bar = ProgressBar()
    settings = BenchmarkSettings(n_samples=args.n_samples, sampler=args.sampler, steps=args.steps, seed=args.seed)
    result = run_benchmark(_weights(args.weights), args.data, settings, limit=args.limit,
                           progress=lambda done, total: bar("evaluated", done, total))  # fmt: skip
    print(f"{result.images} images ({result.occluded_images} with occluded front-face vertices), N = {args.n_samples}")
    print(result.table())
    if args.json:
        args.json.write_text(json.dumps(result.to_dict(), indent=1) + "\n", encoding="utf-8")
    return 0


#: (smoothness, smoothing) pairs ``evaluate sequence`` also scores on the same per-frame work.
SWEEP = [(0.0, 0.0), (0.0, 1.0), (0.1, 0.0), (0.1, 1.0), (0.1, 2.0), (1.0, 1.0)]


def run_sequence_evaluation(args: argparse.Namespace) -> int:
    import torch

    from ..assets_config import resolve_assets
    from ..pipeline import Reconstructor

    reconstructor = Reconstructor(resolve_assets({}), device="cpu")
    head = reconstructor.bundle(torch.device("cpu")).flame
    with contextlib.ExitStack() as stack:
        work = args.work or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ofer-sequence-eval-")))
        rows = _evaluate_clips(args, reconstructor, head, work)
    if args.work:
        print(f"frames and results kept in {args.work}", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    return 0


def _evaluate_clips(args: argparse.Namespace, reconstructor: Any, head: Any, work: Path) -> list[dict[str, Any]]:
    from ..protocol import SequenceArgs
    from ..sequence.run import SequenceOutput, run_sequence
    from .sequence import evaluate_sequence

    rows = []
    for seed in range(args.clips):
        folder = work / f"clip_{seed}"

        def run(frames: Path, folder: Path = folder, seed: int = seed) -> SequenceOutput:
            request = SequenceArgs(
                source=str(frames), output=str(folder / "sequence.npz"), n_shapes=args.n_shapes,
                n_expressions=args.n_expressions, identity_frames=args.identity_frames, sampler=args.sampler,
                steps=args.steps, seed=seed, smoothness=args.smoothness, smoothing=args.smoothing, device="cpu",
            )  # fmt: skip
            bar = ProgressBar()

            def show(stage: str, done: int, total: int, message: str = "") -> None:
                bar(f"clip {seed}: {stage}", done, total, message)

            return run_sequence(reconstructor, request, show, lambda: False)

        scores, swept = evaluate_sequence(run, head, folder, n_frames=args.frames, seed=seed, settings=SWEEP)
        print(f"clip {seed}\n{scores.table()}\n")
        for row in swept:
            print("  smoothness {smoothness:g}, smoothing {smoothing:g}: error {error_mm:.3f} mm, "
                  "jitter − truth's {jitter_mm:.3f} mm".format(**row))  # fmt: skip
        rows.append(scores.to_dict() | {"sweep": swept})
    return rows


def run_multiview_job(args: argparse.Namespace) -> int:
    """The models the worker would use (DEMO unless your files are configured) on synthetic triples."""
    from ..assets_config import resolve_assets
    from ..pipeline import SAMPLER_VARIANTS, Reconstructor, choose_device
    from .multiview import MultiviewSettings, run_multiview

    bar = ProgressBar()
    device = choose_device(args.device)
    reconstructor = Reconstructor(resolve_assets({}), device=str(device))
    bundle = reconstructor.bundle(device)
    settings = MultiviewSettings(triples=args.triples, views=args.views, n_per_photo=args.n_samples,
                                 sampler=SAMPLER_VARIANTS[args.sampler], steps=args.steps, seed=args.seed)  # fmt: skip
    result = run_multiview(bundle, reconstructor.flame_layer(bundle, device), settings, device=device,
                           progress=lambda done, total: bar("people evaluated", done, total))  # fmt: skip
    demo = " (DEMO head and weights)" if bundle.demo else ""
    print(f"{result.triples} people × {result.views} views{demo}, N = {args.n_samples} per view, "
          f"{args.sampler} {args.steps} steps")  # fmt: skip
    print(result.table())
    if args.json:
        args.json.write_text(json.dumps(result.to_dict(), indent=1) + "\n", encoding="utf-8")
    return 0


def run_now(args: argparse.Namespace) -> int:
    from .now import now_distances, read_mesh, read_points

    vertices, faces = read_mesh(args.mesh)
    scan, _ = read_mesh(args.scan)
    result = now_distances(vertices, faces, read_points(args.landmarks), scan, read_points(args.scan_landmarks))
    summary = {"median_mm": result.median, "mean_mm": result.mean, "std_mm": result.std, "points": len(scan)}
    print(json.dumps(summary))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    return 0
