"""Sub-commands that run reconstructions: ``serve``, ``reconstruct``, ``batch`` and ``doctor``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import CancelledError, WorkerError
from .progress_bar import ProgressBar

if TYPE_CHECKING:
    from .assets_config import AssetConfig
    from .batch.command import Engine
    from .batch.runner import JobOptions
    from .pipeline import Reconstructor
    from .protocol import ReconstructArgs


def _add_asset_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("your model files (default: environment variables, then the config file)")
    group.add_argument("--flame-model", metavar="PKL", help="FLAME 2020 generic_model.pkl (or .npz)")
    group.add_argument("--checkpoint-dir", metavar="DIR", help="folder with the OFER checkpoints")
    group.add_argument("--front-face-indices", metavar="NPY", help="frontindices.npy (1785 vertex ids)")
    group.add_argument("--landmark-embedding", metavar="FILE", help="FLAME landmark embedding (optional)")
    group.add_argument("--config", metavar="TOML", type=Path, help="config file with an [assets] table")


def _add_run_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    parser.add_argument("--backend", choices=("torch", "onnxruntime"), default="torch")
    parser.add_argument("--precision", choices=("fp32", "fp16", "bf16"), default="fp32",
                        help="the networks' dtype: fp16/bf16 are for a GPU (on a CPU they run, slowly; there "
                        "OFER_CPU_PRECISION=bf16 is the faster path, README)")  # fmt: skip
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: the physical cores)")


def _add_job_flags(parser: argparse.ArgumentParser) -> None:
    from .mesh_export import MESH_CHOICES

    parser.add_argument("-n", "--n-shapes", type=int, default=100, help="identity samples drawn by IdGen")
    parser.add_argument("-m", "--n-expressions", type=int, default=100, help="expression samples by ExpGen")
    parser.add_argument("-k", "--top-k", type=int, default=10, help="identities kept, best first")
    parser.add_argument(
        "--preset",
        choices=("fast", "fidelity"),
        default=None,
        help="fast: DPM-Solver++ 20 steps; fidelity: 1000-step DDPM as the paper (default: --sampler/--steps)",
    )
    parser.add_argument("--sampler", choices=("ddpm", "ddim", "dpmsolver"), default="ddpm")
    parser.add_argument("--steps", type=int, default=None, help="sampler steps (default: 1000 DDPM, 50 DDIM, 20 DPM)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jaw-scale", type=float, default=0.5)
    parser.add_argument("--order", choices=("best_fit", "typical", "diverse", "sampled"), default="best_fit",
                        help="expression display order")  # fmt: skip
    parser.add_argument("--box", type=float, nargs=4, metavar=("X0", "Y0", "X1", "Y1"), help="face box in pixels")
    parser.add_argument("--points", type=float, nargs=10, metavar="XY",
                        help="five points x y: left eye, right eye, nose tip, left, right mouth corner")  # fmt: skip
    parser.add_argument("--face", type=int, default=None, metavar="N",
                        help="which detected face: 0 is nearest the centre (ofer-worker faces PHOTO)")  # fmt: skip
    parser.add_argument(
        "--flame-controls",
        action="store_true",
        help="add FLAME's shape, expression and pose bases to the result (Blender's FLAME controls)",
    )
    parser.add_argument(
        "--refine-expression",
        action="store_true",
        help="put first a copy of the best-fitting expression refined to the photo's visible eyes and mouth "
        "(M + 1 expressions; the samples follow unchanged)",
    )
    parser.add_argument("--no-fit", action="store_true",
                        help="no head pose, camera, gaze or texture on the photo, for a data set that needs the "
                        "meshes only (~0.3 s less a photo on 2 CPU cores); expressions in typical order")  # fmt: skip
    parser.add_argument("--millimetres", action="store_true", help="write PLY files in mm (default metres)")
    parser.add_argument("--meshes", choices=MESH_CHOICES, default="all",
                        help="PLY files written: all (every kept identity and expression), first (identity 1 and "
                        "expression 1), none (params.json and the result file hold them all; ~65 MB less per photo "
                        "with the DEMO head at 100 expressions)")  # fmt: skip
    parser.add_argument("--no-contact-sheet", action="store_true")


def _add_engine_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("engine (finished items are always skipped: run again to resume)")
    group.add_argument("--engine", choices=("local", "ray"), default="local",
                       help="local: one process, one photo after another; ray: an actor pool on Ray Data")  # fmt: skip
    group.add_argument("--address", help="Ray cluster address (auto, ray://HOST:10001; default: a local Ray)")
    group.add_argument("--actors", type=int, help="reconstructors in the pool (default: one per GPU, else 1)")
    group.add_argument("--cpus-per-actor", type=float, help="CPUs each actor holds and uses as threads")
    group.add_argument("--gpus-per-actor", type=float, help="GPUs each actor holds (default: 1 when there are GPUs)")


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    serve = subparsers.add_parser("serve", help="JSON Lines server for the Blender add-on (stdin/stdout)")
    _add_asset_flags(serve)
    _add_run_flags(serve)
    serve.set_defaults(run=run_serve)

    rec = subparsers.add_parser("reconstruct", help="reconstruct one photo into a folder of results")
    rec.add_argument("photo", type=Path)
    rec.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    rec.add_argument("--photos", type=Path, nargs="+", default=[], metavar="PHOTO",
                     help="more photos of the same person: the identity is pooled over all photos; expressions, "
                     "fit, texture and camera come from PHOTO")  # fmt: skip
    _add_asset_flags(rec)
    _add_run_flags(rec)
    _add_job_flags(rec)
    rec.set_defaults(run=run_reconstruct)

    batch = subparsers.add_parser("batch", help="reconstruct many photos (resumable; locally or on Ray)")
    batch.add_argument(
        "folder", type=Path, metavar="INPUT", help="a folder of photos, a .txt list, or a .csv / .parquet manifest"
    )
    batch.add_argument("-o", "--output", type=Path, required=True, help="output folder (one sub-folder per photo)")
    _add_asset_flags(batch)
    _add_run_flags(batch)
    _add_job_flags(batch)
    batch.add_argument("--all-faces", action="store_true", help="one result per detected face (PHOTO/face_N)")
    _add_engine_flags(batch)
    batch.set_defaults(run=run_batch)

    doctor = subparsers.add_parser("doctor", help="show which model files were found and what is missing")
    _add_asset_flags(doctor)
    doctor.add_argument("--json", action="store_true", help="machine-readable output")
    doctor.set_defaults(run=run_doctor)


def _asset_config(args: argparse.Namespace) -> AssetConfig:
    from .assets_config import resolve_assets

    flags = {
        "flame_model": args.flame_model,
        "checkpoint_dir": args.checkpoint_dir,
        "front_face_indices": args.front_face_indices,
        "landmark_embedding": args.landmark_embedding,
    }
    return resolve_assets(flags, config_file=args.config)


def _reconstructor(args: argparse.Namespace) -> Reconstructor:
    from .backends import configure_cpu_threads
    from .pipeline import Reconstructor

    configure_cpu_threads(args.threads)
    return Reconstructor(_asset_config(args), device=args.device, backend=args.backend, precision=args.precision)


def run_serve(args: argparse.Namespace) -> int:
    from .sequence.jobs import WorkerJobs
    from .server import serve_stdio

    return serve_stdio(WorkerJobs(_reconstructor(args)))


def run_doctor(args: argparse.Namespace) -> int:
    from .assets_config import doctor_report

    config = _asset_config(args)
    if args.json:
        found = {
            name: {"path": str(c.path) if c.path else None, "source": c.source, "exists": c.exists}
            for name, c in config.choices.items()
        }
        print(json.dumps(found | {"demo": config.use_demo, "missing": config.missing()}, indent=1))
    else:
        print("\n".join(doctor_report(config)))
        try:
            import torch

            cuda = "available: " + torch.cuda.get_device_name(0) if torch.cuda.is_available() else "not available"
            print(f"torch {torch.__version__}; CUDA {cuda}")
        except ImportError:
            print("torch is not installed in this Python: install the worker with `pip install ofer-blender-worker`")
    return 0 if config.use_demo or not config.missing() else 1


def _job_request(args: argparse.Namespace, photo: Path, out_dir: Path, face: int | None = None) -> ReconstructArgs:
    from .errors import BadRequestError
    from .protocol import ReconstructArgs

    if args.no_fit and args.refine_expression:
        raise BadRequestError(
            "--refine-expression refines an expression to the head's fit on the photo, and --no-fit skips the fit",
            "Drop one of the two.",
        )
    points = None
    if args.points:
        p = args.points
        points = tuple((p[2 * i], p[2 * i + 1]) for i in range(5))
    return ReconstructArgs(
        image=str(photo),
        output=str(out_dir / "result.npz"),
        box=tuple(args.box) if args.box else None,
        points=points,
        face=args.face if face is None else face,
        photos=tuple(str(p) for p in getattr(args, "photos", ())),
        n_shapes=args.n_shapes,
        n_expressions=args.n_expressions,
        top_k=min(args.top_k, args.n_shapes),
        sampler=args.sampler,
        steps=args.steps,
        seed=args.seed,
        jaw_scale=args.jaw_scale,
        device=args.device,
        extra={"expression_order": args.order}
        | ({"preset": args.preset} if args.preset else {})
        | ({"flame_controls": True} if args.flame_controls else {})
        | ({"refine_expression": True} if args.refine_expression else {})
        | ({"fit": False} if args.no_fit else {}),
    )


def _reconstruct_one(
    reconstructor: Any, args: argparse.Namespace, photo: Path, out_dir: Path, face: int | None = None
) -> None:
    from .atomic_io import io_failure
    from .faces_cli import face_lines
    from .mesh_export import export_hypotheses
    from .result_summary import fit_line, gaze_line, identity_line, texture_line

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise io_failure(exc, out_dir, "create the output folder") from None
    output = reconstructor.run(_job_request(args, photo, out_dir, face), ProgressBar(), lambda: False)
    result = output.result
    export_hypotheses(result, out_dir, millimetres=args.millimetres, meshes=args.meshes)
    if not args.no_contact_sheet:
        from .contact_sheet import write_contact_sheet

        write_contact_sheet(out_dir / "contact_sheet.png", output)
    print(f"{photo} -> {out_dir}")
    print(f"  result file:   {output.path}")
    print(f"  identities:    {identity_line(result.identity_scores, result.meta['n_shapes'])}")
    refined = "; expression 1 refined to the photo's eyes and mouth" if "refined_expression" in result.meta else ""
    order = result.meta.get("expression_order", "sampled")
    print(f"  expressions:   {len(result.expression_params)} ({order} order{refined})")
    _print_photo_scores(result.meta)
    print("\n".join(face_lines(output.detection, result.meta.get("warnings") or [])))
    print(f"  head on photo: {fit_line(result.meta, result.head_pose, result.camera)}")
    gaze = gaze_line(result.meta)
    if gaze:
        print(f"  eyes:          {gaze}")
    texture = texture_line(result.meta)
    if texture:
        print(f"  texture:       {texture}")
    if not args.no_contact_sheet:
        print(f"  contact sheet: {out_dir / 'contact_sheet.png'}")
    if result.demo:
        print("  NOTE: DEMO assets were used (the ICT Face Model DEMO head and demo weights, not FLAME/OFER).")


def _print_photo_scores(meta: dict[str, Any]) -> None:
    """With several photos: each photo's own score of the chosen identity (how well it fits that view)."""
    photos = meta.get("photos") or []
    if len(photos) < 2:
        return
    print(f"  identity pooled over {len(photos)} photos; each photo's score of the chosen identity:")
    for i, photo in enumerate(photos):
        name, score, rank = Path(photo["path"]).name, photo["identity_score"], photo["identity_rank"]
        print(f"    {i + 1}. {name:<32} p={score:.3f}, rank {rank} for this photo alone ({photo['role']})")


def run_reconstruct(args: argparse.Namespace) -> int:
    try:
        reconstructor = _reconstructor(args)
        _reconstruct_one(reconstructor, args, args.photo, args.output)
    except WorkerError as exc:
        print(f"\nerror ({exc.code}): {exc.message}\n  fix: {exc.fix}", file=sys.stderr)
        return 1
    except OSError as exc:  # an I/O failure outside the atomic writers (a library's own file access)
        fix = f"check the disk space and permissions of {args.output}"
        print(f"\nerror (io_error): {exc}\n  fix: {fix}", file=sys.stderr)
        return 1
    except (CancelledError, KeyboardInterrupt):
        print("\ncancelled", file=sys.stderr)
        return 130
    return 0


def run_batch(args: argparse.Namespace) -> int:
    from .batch.command import run_batch_job
    from .batch.items import discover_items

    try:
        items = discover_items(args.folder)
        options = _batch_options(args)
        report = run_batch_job(items, options, args.output, engine=_batch_engine(args))
    except WorkerError as exc:
        print(f"error ({exc.code}): {exc.message}\n  fix: {exc.fix}", file=sys.stderr)
        return 1 if exc.code != "bad_request" else 2
    except KeyboardInterrupt:
        print("\ncancelled (finished photos are kept: run the same command again to resume)", file=sys.stderr)
        return 130
    return 1 if report.failed else 0


def _batch_options(args: argparse.Namespace) -> JobOptions:
    from .batch.runner import JobOptions
    from .speed_switches import captured_switches, check_switches

    check_switches()  # a misspelt switch: one error now, not every item failing on the actors
    assets = _asset_config(args)
    if not assets.use_demo:
        assets.require_complete()  # before any engine starts: a missing file fails every item the same way
    request = _job_request(args, Path(""), Path(""))
    return JobOptions(
        request, assets, device=args.device, backend=args.backend, precision=args.precision, threads=args.threads,
        millimetres=args.millimetres, meshes=args.meshes, contact_sheet=not args.no_contact_sheet,
        all_faces=args.all_faces,
        switches=captured_switches(),
    )  # fmt: skip


def _batch_engine(args: argparse.Namespace) -> Engine:
    if args.engine == "local":
        from .batch.runner import run_local

        return run_local
    from functools import partial

    from .batch.ray_engine import run_ray

    return partial(run_ray, actors=args.actors, cpus_per_actor=args.cpus_per_actor,
                   gpus_per_actor=args.gpus_per_actor, address=args.address)  # fmt: skip
