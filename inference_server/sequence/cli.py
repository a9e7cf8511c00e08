"""``ofer-worker sequence VIDEO_OR_FOLDER -o OUT.npz``: a clip → one animation (sequence result file)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import CancelledError, WorkerError
from ..protocol import MAX_SEQUENCE_FRAMES, ProtocolError, Request, SequenceArgs, parse_sequence_args


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    from ..worker_cli import _add_asset_flags, _add_run_flags

    seq = subparsers.add_parser("sequence", help="a video or a folder of frames → one animated head (resumable)")
    seq.add_argument("source", metavar="VIDEO_OR_FOLDER", help="a video file (OpenCV) or a folder of images")
    seq.add_argument("-o", "--output", type=Path, required=True, help="the sequence result file (.npz)")
    seq.add_argument("--fps", type=float, help="video: frames per second kept (default all); folder: its frame rate")
    seq.add_argument("--max-frames", type=int, default=MAX_SEQUENCE_FRAMES,
                     help=f"refuse a clip with more frames (at most {MAX_SEQUENCE_FRAMES})")  # fmt: skip
    again = seq.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="require the earlier work of this clip (error if none)")
    again.add_argument("--restart", action="store_true", help="discard earlier work of this output and start over")
    seq.add_argument("-n", "--n-shapes", type=int, default=100, help="identity samples drawn (over all frames used)")
    seq.add_argument("-m", "--n-expressions", type=int, default=32, help="ExpGen hypotheses per frame")
    seq.add_argument("--identity-frames", type=int, default=8, help="frames the identity is pooled from")
    seq.add_argument("--preset", choices=("fast", "fidelity"), default=None,
                     help="default: fast (DPM-Solver++ 20 steps), unless --sampler or --steps is given")  # fmt: skip
    seq.add_argument("--sampler", choices=("ddpm", "ddim", "dpmsolver"), default=None, help="default: ddpm")
    seq.add_argument("--steps", type=int, default=None)
    seq.add_argument("--seed", type=int, default=0)
    seq.add_argument("--jaw-scale", type=float, default=0.5)
    seq.add_argument("--smoothness", type=float, default=0.1, help="weight of the change between frames in the path")
    seq.add_argument("--smoothing", type=float, default=1.0, help="Gaussian smoothing after the path (frames; 0: off)")
    seq.add_argument("--no-hypotheses", action="store_true", help="leave every frame's hypotheses out of the file")
    _add_asset_flags(seq)
    _add_run_flags(seq)
    seq.set_defaults(run=run_sequence_command)


def sequence_args(args: argparse.Namespace) -> SequenceArgs:
    """The command line as a ``sequence`` request, checked by the protocol's own table."""
    fields = {
        "source": str(args.source), "output": str(args.output), "fps": args.fps, "max_frames": args.max_frames,
        "resume": "require" if args.resume else "restart" if args.restart else "auto", "n_shapes": args.n_shapes,
        "n_expressions": args.n_expressions, "identity_frames": args.identity_frames, "sampler": args.sampler,
        "steps": args.steps, "seed": args.seed, "jaw_scale": args.jaw_scale, "smoothness": args.smoothness,
        "smoothing": args.smoothing, "keep_hypotheses": not args.no_hypotheses, "device": args.device,
        "preset": args.preset or (None if args.sampler or args.steps else "fast"),
    }  # fmt: skip
    return parse_sequence_args(Request("cli", "sequence", {k: v for k, v in fields.items() if v is not None}))


def run_sequence_command(args: argparse.Namespace) -> int:
    from ..progress_bar import ProgressBar
    from ..worker_cli import _reconstructor

    try:
        request = sequence_args(args)
        from .run import run_sequence

        output = run_sequence(_reconstructor(args), request, ProgressBar(), lambda: False)
    except ProtocolError as exc:
        print(f"error (bad_request): {exc}", file=sys.stderr)
        return 2
    except WorkerError as exc:
        print(f"\nerror ({exc.code}): {exc.message}\n  fix: {exc.fix}", file=sys.stderr)
        return 1
    except (CancelledError, KeyboardInterrupt):
        print("\ncancelled (finished frames are kept: run the same command again to resume)", file=sys.stderr)
        return 130
    result = output.result
    frames = result.meta["frames"]
    counts: dict[str, int] = {}
    for frame in frames:
        counts[frame["status"]] = counts.get(frame["status"], 0) + 1
    print(f"{args.source} -> {output.path}")
    print(f"  frames: {len(frames)} ({', '.join(f'{n} {s}' for s, n in sorted(counts.items()))})"
          + (f"; {output.resumed_frames} resumed" if output.resumed_frames else ""))  # fmt: skip
    print(f"  identity pooled from frames {result.meta['identity']['frames']}")
    print(f"  camera: f = {float(result.camera[0]):.0f} px ({result.meta['camera']['focal_source']})")
    if result.demo:
        print("  NOTE: DEMO assets were used (the ICT Face Model DEMO head and demo weights, not FLAME/OFER).")
    return 0
