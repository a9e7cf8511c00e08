"""``ofer-worker export-onnx``: model files → ONNX graphs for the onnxruntime back end."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from .errors import MissingAssetError, WorkerError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export-onnx",
        help="export the networks of OFER model files to ONNX (denoisers, ranker, encoders)",
        description="Each SOURCE is a model file (official .tar or converted .safetensors) or a folder "
        "holding them under their official names. Writes <kind>_<network>.onnx per network and "
        "onnx_manifest.json into OUTDIR, and checks every graph against torch on fresh inputs.",
    )
    parser.add_argument("sources", nargs="+", type=Path, metavar="CHECKPOINT_OR_DIR")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="OUTDIR", help="output folder")
    parser.add_argument(
        "--tolerance",
        type=float,
        default=1e-4,
        help="largest accepted |torch - onnxruntime| on the check inputs (default 1e-4)",
    )
    parser.set_defaults(run=run_export)


def model_files(source: Path) -> list[Path]:
    """``source`` itself, or the model files a folder holds under their official names."""
    from .assets_config import CHECKPOINT_NAMES, find_checkpoint

    if source.is_file():
        return [source]
    if source.is_dir():
        found = [find_checkpoint(source, stem) for stem in CHECKPOINT_NAMES.values()]
        files = [path for path in found if path is not None]
        if files:
            return files
        names = ", ".join(f"{stem}.tar/.safetensors" for stem in CHECKPOINT_NAMES.values())
        raise MissingAssetError(f"no OFER model file in {source}", f"The folder should hold {names}.")
    raise MissingAssetError(f"{source} does not exist", "Give a model file or the folder that holds them.")


def run_export(args: argparse.Namespace) -> int:
    from .checkpoints import load_networks
    from .onnx_export import export_loaded_networks, write_manifest

    status = 0
    try:
        files = [path for source in args.sources for path in model_files(source)]
    except WorkerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for path in files:
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                networks = load_networks(path)
            for warning in caught:
                if issubclass(warning.category, UserWarning):
                    print(f"warning: {warning.message}", file=sys.stderr)
            graphs = export_loaded_networks(networks, args.output)
            write_manifest(args.output, networks, graphs)
        except WorkerError as error:
            print(f"error: {error}", file=sys.stderr)
            status = 1
            continue
        for graph in graphs:
            verdict = "ok" if graph.max_abs_difference <= args.tolerance else "MISMATCH"
            difference = f"max |torch - onnx| {graph.max_abs_difference:.2e}"
            print(f"{path.name} -> {graph.path} ({difference}, {verdict})")
            if verdict != "ok":
                status = 1
    return status
