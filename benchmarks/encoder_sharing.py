"""The encode stage with identical encoder copies run once (shared) or every time (separate), A/B in one run.

Run: ``.venv/bin/python benchmarks/encoder_sharing.py [--repeats 5]`` (numbers in benchmarks/README.md).

Official-size networks (``benchmarks/reconstruction.py``'s random files) with every ArcFace copy given
IdGen's weights and IdRank's FaRL given ExpGen's — checkpoints whose encoders were frozen or handed over.
Two bundles from the same files, one sharing, one not; the encode stage of the bundled sample photo is timed
alternately (so both see the same machine load), median of ``--repeats``. Also: the time the bundle spends
finding the identical copies at load, and that both bundles give the same contexts bit for bit.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP, as `ofer-worker` does

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from inference_server.assets_config import default_cache_dir
from inference_server.backends import configure_cpu_threads
from inference_server.encoder_sharing import ENCODER_SLOTS, find_identical
from inference_server.pipeline import encode
from inference_server.preprocess.crops import arcface_crop, farl_crop
from inference_server.preprocess.detect import FaceDetector
from inference_server.preprocess.image import load_image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_setup import FULL, SAMPLE, load_bundle, model_files  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int)
    opts = parser.parse_args(argv)
    configure_cpu_threads(opts.threads)
    files = model_files(FULL, default_cache_dir() / "benchmark_full_size")
    bundles = {
        "shared": load_bundle(files, "fp32", identical_encoders=True),
        "separate": load_bundle(files, "fp32", identical_encoders=True, share_encoders=False),
    }
    separate = bundles["separate"]
    modules = [(slot, getattr(getattr(separate, slot.split(".")[0]), slot.split(".")[1])) for slot in ENCODER_SLOTS]
    start = time.perf_counter()
    found = find_identical(modules)  # what the bundle does at load
    find_seconds = time.perf_counter() - start

    image = load_image(SAMPLE)
    detection = FaceDetector().detect(image)
    arc, far = arcface_crop(image.rgb, detection.points5, "BGR"), farl_crop(image.rgb, detection.box)
    device = torch.device("cpu")
    times: dict[str, list[float]] = {name: [] for name in bundles}
    outputs = {}
    for i in range(opts.repeats + 1):
        for name, bundle in bundles.items():
            t = time.perf_counter()
            outputs[name] = encode(bundle, arc, far, device)
            if i:  # the first round warms caches
                times[name].append(time.perf_counter() - t)
    same = all(
        torch.equal(getattr(outputs["shared"], k), getattr(outputs["separate"], k))
        for k in ("idgen", "expgen", "idrank")
    )
    report = {
        "encode shared (s)": round(statistics.median(times["shared"]), 3),
        "encode separate (s)": round(statistics.median(times["separate"]), 3),
        "passes shared / separate": f"{len(bundles['shared'].encoder_sharing.groups)} / 5",
        "find identical copies at load (s)": round(find_seconds, 2),
        "groups": found.groups,
        "contexts identical": same,
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
