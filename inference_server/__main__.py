"""``ofer-worker`` command line: one sub-command per job.

Each sub-command lives in its own module that exposes ``add_parser(subparsers)``; the module is only
imported when listed here, so ``ofer-worker --help`` stays fast and torch is imported only by the
commands that need it.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from . import __version__

#: Modules that contribute sub-commands, in the order ``--help`` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "inference_server.worker_cli",
    "inference_server.sequence.cli",
    "inference_server.faces_cli",
    "inference_server.demo.cli",
    "inference_server.checkpoints_cli",
    "inference_server.onnx_cli",
    "inference_server.train.cli",
    "inference_server.evaluate.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ofer-worker",
        description="OFER face reconstruction worker: photo in, ranked FLAME hypotheses out.",
    )
    parser.add_argument("--version", action="version", version=f"ofer-worker {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # Spinning OpenMP workers steal the CPU from each other on busy machines (3-5x slower sampler steps
    # measured on 2 shared cores); torch reads this when it loads OpenMP, so it is set before any import.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
