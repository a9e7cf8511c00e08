"""Photos per second of ``ofer-worker batch``: the local engine, then Ray Data with 1, 2, … actors.

Run: ``.venv/bin/python benchmarks/batch_scaling.py [--photos 12] [--actors 1 2] [--preset fast] [--no-fit]
[--meshes first]``
(numbers in benchmarks/README.md). Needs the ``[ray]`` extra.

Every configuration reconstructs the same photos (distinct re-framings of the bundled sample, so no two
items are the same job) into a fresh folder with the DEMO assets. Reported per configuration:

- **wall**: from starting the engine to the last result (Ray: actor start-up and model loading included);
- **steady**: photos per second once every actor delivered its first photo — ``(n - k) / (t_last - t_k)``
  with ``k`` the number of actors (local: k = 1) — the rate a long batch runs at;
- the per-photo time each actor itself measured (median), which shows how much the actors slow each other.

Ray itself is started once before the Ray configurations (its start-up is printed, not in the rates).
"""

from __future__ import annotations

import os

# Before torch loads OpenMP (it reads this once), as `ofer-worker` does: spinning OpenMP threads on a shared
# machine made the local engine 27x slower than the same work in a Ray actor (which inherits this setting).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import dataclasses
import io
import json
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from PIL import Image

from inference_server.assets_config import resolve_assets
from inference_server.backends import configure_cpu_threads
from inference_server.batch.command import run_batch_job
from inference_server.batch.items import BatchItem, discover_items
from inference_server.batch.records import ItemOutcome
from inference_server.batch.runner import JobOptions, run_local
from inference_server.protocol import ReconstructArgs

SAMPLE = Path(__file__).resolve().parents[1] / "inference_server" / "assets" / "sample_occluded_face.jpg"


def make_photos(folder: Path, count: int) -> list[BatchItem]:
    """``count`` different crops of the sample photo (the face stays whole in each)."""
    folder.mkdir(parents=True, exist_ok=True)
    image = Image.open(SAMPLE).convert("RGB")
    w, h = image.size
    for i in range(count):
        dx, dy = (i * 7) % 40, (i * 11) % 40
        image.crop((dx, dy, w - (i * 5) % 30, h - (i * 3) % 30)).save(folder / f"photo_{i:03d}.jpg", quality=92)
    return discover_items(folder)


def measure(name: str, engine: Any, k: int, items: list[BatchItem], options: JobOptions, out: Path) -> dict[str, Any]:
    start = time.perf_counter()
    report = run_batch_job(items, options, out, engine=engine, out=io.StringIO(), err=sys.stderr)
    wall = time.perf_counter() - start
    ok = [o for o in report.outcomes if o.status == "ok"]
    # When each item finished, by the clock of the process that made it (Ray hands results over in bursts).
    finished = sorted(datetime.fromisoformat(o.finished_at).timestamp() for o in ok)
    n = len(finished)
    steady = (n - k) / (finished[-1] - finished[k - 1]) if n > k else float("nan")
    row = {
        "engine": name,
        "photos": len(items),
        "ok": len(ok),
        "wall_s": round(wall, 2),
        "photos_per_s_wall": round(len(items) / wall, 3),
        "photos_per_s_steady": round(steady, 3),
        "per_photo_median_s": round(statistics.median(o.seconds_total for o in ok), 3) if ok else None,
        "workers": len({o.worker for o in ok}),
    }
    print(json.dumps(row), flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=12)
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--preset", choices=("fast", "fidelity"), default="fast")
    parser.add_argument("-n", "--n-shapes", type=int, default=100)
    parser.add_argument("-m", "--n-expressions", type=int, default=100)
    parser.add_argument("--contact-sheet", action="store_true", help="also draw each contact sheet")
    parser.add_argument("--no-local", action="store_true", help="skip the local-engine baseline")
    parser.add_argument("--no-fit", action="store_true", help="no pose, camera or texture (ofer-worker --no-fit)")
    parser.add_argument("--meshes", choices=("all", "first", "none"), default="all", help="PLY files written")
    parser.add_argument("--json", type=Path, help="write the rows here")
    args = parser.parse_args(argv)

    cpus = os.cpu_count() or 1
    request = ReconstructArgs(image="", output="", n_shapes=args.n_shapes, n_expressions=args.n_expressions,
                              top_k=min(10, args.n_shapes), device="cpu",
                              extra={"preset": args.preset} | ({"fit": False} if args.no_fit else {}))  # fmt: skip
    options = JobOptions(request, resolve_assets({}), device="cpu", contact_sheet=args.contact_sheet,
                         meshes=args.meshes)  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory(prefix="ofer-batch-bench-") as tmp:
        items = make_photos(Path(tmp) / "photos", args.photos)
        if not args.no_local:
            configure_cpu_threads(None)
            local = dataclasses.replace(options, threads=None)
            rows.append(measure("local (1 process)", run_local, 1, items, local, Path(tmp) / "local"))
        import ray

        from inference_server.batch.ray_engine import run_ray

        start = time.perf_counter()
        ray.init(num_cpus=cpus, include_dashboard=False, logging_level=logging.WARNING)
        print(f"ray start-up: {time.perf_counter() - start:.2f} s ({cpus} CPUs)", flush=True)
        try:
            for actors in args.actors:
                cpus_each = max(1.0, float(cpus // actors))

                def engine(items: list[BatchItem], opts: JobOptions, out: Path, a: int = actors, c: float = cpus_each
                           ) -> Iterator[ItemOutcome]:  # fmt: skip
                    return run_ray(items, opts, out, actors=a, cpus_per_actor=c)

                name = f"ray, {actors} actor{'s' if actors > 1 else ''} × {int(cpus_each)} CPU"
                rows.append(measure(name, engine, actors, items, options, Path(tmp) / f"ray{actors}"))
        finally:
            ray.shutdown()
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
