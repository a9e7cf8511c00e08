"""``ofer-worker convert``: official OFER ``.tar`` files → the project's safetensors + JSON format."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from .errors import WorkerError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert official OFER checkpoints (.tar) to safetensors + JSON (no pickles afterwards)",
        description="Reads each file with torch.load(weights_only=True), checks every key, and writes "
        "<name>.safetensors and <name>.json into the output folder.",
    )
    parser.add_argument("sources", nargs="+", type=Path, metavar="SRC.tar", help="official model file(s)")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="OUTDIR", help="output folder")
    parser.set_defaults(run=run_convert)


def run_convert(args: argparse.Namespace) -> int:
    from .checkpoints import load_official_checkpoint, save_project_checkpoint

    status = 0
    for source in args.sources:
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                networks = load_official_checkpoint(source)
            for warning in caught:
                print(f"warning: {warning.message}", file=sys.stderr)
            written = save_project_checkpoint(args.output, networks, name=Path(source).stem)
        except WorkerError as error:
            print(f"error: {error}", file=sys.stderr)
            status = 1
            continue
        print(f"{source} -> {written} (+ {written.with_suffix('.json').name}) [{networks.kind}]")
    return status
