"""``kill -9`` real reconstructions at random moments, then check that no final file is partial.

Every run is a whole ``ofer-worker reconstruct`` job (the sample photo, tiny settings, the same code path
as the CLI: result file, PLYs, ``params.json``, contact sheet) into ONE shared folder. To afford many
kills on a small machine the runs are forked from one warm process (torch imported, DEMO models loaded,
one thread, the five face points given so no detector thread is needed in the child); each child is
killed with SIGKILL at a moment drawn uniformly over the length of a whole warm run. After every kill
each file at a final name must be whole: the result passes ``read_result``, every PLY loads in trimesh
with the model's vertex count, ``params.json`` parses, the contact sheet decodes in Pillow. Finally a
fresh ``ofer-worker reconstruct`` process runs into the same folder: afterwards no ``.part`` file may
be left there.

Run: ``nice -n 19 .venv/bin/python benchmarks/kill_during_write.py --kills 50`` (a few minutes on 2 cores).
tests/benchmarks/test_kill_during_write.py runs it with 10 kills.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "inference_server" / "assets" / "sample_occluded_face.jpg"
TINY = ["-n", "4", "-m", "3", "-k", "2", "--sampler", "ddim", "--steps", "2", "--device", "cpu", "--threads", "1"]


@dataclass
class KillReport:
    kills: int = 0
    killed_running: int = 0
    finished_before_kill: int = 0
    warm_run_s: float = 0.0
    write_stage_seen: int = 0
    killed_in_write_phase: int = 0
    parts_left_by_kills: int = 0
    partial_files: list[str] = field(default_factory=list)
    parts_after_kills: int = 0
    parts_after_next_run: int = -1
    final_run_exit: int | None = None
    seconds: float = 0.0


def _cli_args(folder: Path, points: list[float] | None = None) -> Any:
    from inference_server.__main__ import build_parser

    extra = ["--points", *map(str, points)] if points else []
    return build_parser().parse_args(["reconstruct", str(SAMPLE), "-o", str(folder), *TINY, *extra])


def _fork_run(reconstructor: Any, args: Any, folder: Path) -> tuple[int, int]:
    """A child process that runs one whole job from the warm state; returns its pid and a pipe that
    carries its progress output (the parent watches it for the write stage)."""
    from inference_server.worker_cli import _reconstruct_one

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: one job, exit without running the parent's cleanup
        os.close(read_end)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(write_end, 2)
        code = 0
        try:
            _reconstruct_one(reconstructor, args, SAMPLE, folder)
        except BaseException:
            code = 1
        os._exit(code)
    os.close(write_end)
    return pid, read_end


def _wait_for_write_stage(pipe: int, timeout: float) -> bool:
    """True once the child's progress bar shows the write stage (the result file is being written)."""
    deadline = time.monotonic() + timeout
    seen = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([pipe], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            return False
        chunk = os.read(pipe, 4096)
        if not chunk:
            return False
        seen = (seen + chunk)[-512:]
        if b"write " in seen:
            return True
    return False


def partial_files(folder: Path) -> list[str]:
    """Files at final names that another tool cannot read whole."""
    import numpy as np
    import trimesh
    from PIL import Image

    from inference_server.result import ResultFileError, read_result

    bad: list[str] = []
    n_vertices = None
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        try:
            if path.suffix == ".npz":
                n_vertices = read_result(path).template.shape[0]
            elif path.suffix == ".json":
                json.loads(path.read_text(encoding="utf-8"))
            elif path.suffix == ".png":
                with Image.open(path) as image:
                    image.load()
            elif path.suffix == ".ply":
                mesh: Any = trimesh.load(path, process=False)
                if n_vertices is not None and len(mesh.vertices) != n_vertices:
                    raise ValueError(f"{len(mesh.vertices)} vertices, expected {n_vertices}")
                if not np.isfinite(mesh.vertices).all():
                    raise ValueError("non-finite vertices")
        except (ResultFileError, ValueError, OSError, KeyError, IndexError) as exc:
            bad.append(f"{path.name}: {exc}")
    return bad


def part_files(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.endswith(".part")]


def run(kills: int, seed: int, folder: Path) -> KillReport:
    from inference_server.backends import configure_cpu_threads
    from inference_server.worker_cli import _job_request, _reconstructor

    report = KillReport()
    t0 = time.monotonic()
    configure_cpu_threads(1)
    args = _cli_args(folder)
    reconstructor = _reconstructor(args)
    output = reconstructor.run(_job_request(args, SAMPLE, folder), lambda *a: None, lambda: False)
    points = [float(v) for xy in output.detection.points5 for v in xy]
    args = _cli_args(folder, points)
    started = time.monotonic()  # a whole warm run into the folder: every kill has whole files to replace
    pid, pipe = _fork_run(reconstructor, args, folder)
    os.waitpid(pid, 0)
    os.close(pipe)
    report.warm_run_s = time.monotonic() - started
    rng = random.Random(seed)
    run_s = [report.warm_run_s]  # how long whole runs take now (the machine's load changes)
    for i in range(kills):
        pid, pipe = _fork_run(reconstructor, args, folder)
        started = time.monotonic()
        if i % 2 == 0:  # anywhere in the run
            time.sleep(rng.uniform(0.0, statistics.median(run_s)))
        else:  # inside the result file's write (a few tens of ms), or the files written right after it
            report.write_stage_seen += int(_wait_for_write_stage(pipe, 600.0))
            time.sleep(rng.uniform(0.0, 0.05))
        done, _status = os.waitpid(pid, os.WNOHANG)
        if done == 0:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        else:
            run_s.append(time.monotonic() - started)
        os.close(pipe)
        report.kills += 1
        report.killed_running += int(done == 0)
        report.killed_in_write_phase += int(done == 0 and i % 2 == 1)
        report.finished_before_kill += int(done != 0)
        report.partial_files += partial_files(folder)
        report.parts_left_by_kills = max(report.parts_left_by_kills, len(part_files(folder)))
    report.parts_after_kills = len(part_files(folder))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "inference_server", "reconstruct", str(SAMPLE), "-o", str(folder), *TINY]
    report.final_run_exit = subprocess.run(command, capture_output=True, timeout=900, env=env, cwd=ROOT).returncode
    report.parts_after_next_run = len(part_files(folder))
    report.partial_files += partial_files(folder)
    report.seconds = time.monotonic() - t0
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--json", type=Path, help="also write the report as JSON here")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ofer-kill-") as tmp:
        report = run(args.kills, args.seed, Path(tmp) / "out")
    for key, value in report.__dict__.items():
        print(f"{key:>22}: {value}")
    if args.json:
        args.json.write_text(json.dumps(report.__dict__, indent=1))
    ok = not report.partial_files and report.parts_after_next_run == 0 and report.final_run_exit == 0
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
