"""How far the meshes of result files lie from a reference result of the same photo, seed and networks.

Run: ``.venv/bin/python benchmarks/result_distance.py REFERENCE.npz OTHER.npz [...]`` (result files written by
``benchmarks/reconstruction.py --save-result``, e.g. fp32 eager on one device against fp16 + CUDA graphs).

A faster path may reorder samples (IdRank scores or the best-fit order move by a rounding step), so each
sample is matched to its nearest reference sample: for every identity (expression) mesh of OTHER, the largest
vertex distance to the closest identity (expression) mesh of REFERENCE, in millimetres; reported as the
median and the maximum over samples, with whether the order was kept.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from inference_server.result import read_result


def nearest_mesh_mm(meshes: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each of ``meshes`` (N, V, 3), the largest vertex distance (mm) to its nearest ``reference`` mesh
    (M, V, 3) and that mesh's index."""
    worst = np.empty((len(meshes), len(reference)), dtype=np.float64)
    for i, mesh in enumerate(meshes):
        worst[i] = np.linalg.norm(reference - mesh[None], axis=-1).max(axis=-1)
    return worst.min(axis=1) * 1000.0, worst.argmin(axis=1)


def distances(reference_path: Path, other_path: Path) -> dict[str, object]:
    reference, other = read_result(reference_path), read_result(other_path)
    report: dict[str, object] = {"file": str(other_path)}
    for name in ("identity_vertices", "expression_vertices"):
        ours, ref = getattr(other, name), getattr(reference, name)
        if ours.shape[1:] != ref.shape[1:]:
            raise SystemExit(f"{other_path}: {name} has shape {ours.shape}, the reference {ref.shape}: not comparable")
        mm, nearest = nearest_mesh_mm(ours.astype(np.float64), ref.astype(np.float64))
        report[name] = {
            "median mm": round(float(np.median(mm)), 4),
            "max mm": round(float(mm.max()), 4),
            "same order": bool(len(ours) == len(ref) and np.array_equal(nearest, np.arange(len(ref)))),
        }
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reference", type=Path)
    parser.add_argument("others", type=Path, nargs="+")
    opts = parser.parse_args(argv)
    for other in opts.others:
        print(json.dumps(distances(opts.reference, other)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
