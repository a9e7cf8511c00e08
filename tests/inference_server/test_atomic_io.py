"""Atomic writes: a failing disk gives io_error with the path and free space; leftovers are cleaned."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pytest

from inference_server.atomic_io import atomic_write, atomic_write_text, remove_stale_parts
from inference_server.errors import IOFailedError
from inference_server.mesh_export import export_hypotheses
from inference_server.npy_guard import write_npz
from inference_server.result import read_result, write_result
from tests.inference_server.test_result import make_result

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "inference_server" / "assets" / "sample_occluded_face.jpg"


class FullDisk:
    """A file wrapper that fails like a full disk after ``room`` bytes (ENOSPC on write)."""

    def __init__(self, handle: BinaryIO, room: int) -> None:
        self.handle, self.room = handle, room

    def write(self, data: bytes) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self.handle.write(data)

    def __getattr__(self, name: str):
        return getattr(self.handle, name)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")  # no "seek of closed file" later
def test_a_full_disk_during_an_npz_write_is_an_io_error_naming_the_path_and_free_space(tmp_path: Path) -> None:
    target = tmp_path / "result.npz"
    target.write_bytes(b"the previous result")
    with pytest.raises(IOFailedError) as info:
        atomic_write(target, lambda handle: write_npz(FullDisk(handle, 5000), {"a": np.zeros(10_000)}))  # type: ignore[arg-type]
    message = str(info.value)
    assert info.value.code == "io_error"
    assert str(target) in message and "No space left" in message and "MB free" in message
    assert target.read_bytes() == b"the previous result"  # the old file is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["result.npz"]  # and no temporary file is left
    del info
    import gc

    gc.collect()  # a half-written archive left open would complain now, on a closed file


def test_other_errors_in_the_writer_pass_through_and_leave_nothing(tmp_path: Path) -> None:
    def broken(handle: BinaryIO) -> None:
        handle.write(b"half")
        raise KeyError("a bug, not an I/O failure")

    with pytest.raises(KeyError):
        atomic_write(tmp_path / "x.json", broken)
    assert list(tmp_path.iterdir()) == []


def test_a_folder_that_cannot_be_created_is_an_io_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(IOFailedError, match="could not create the folder"):
        atomic_write_text(blocker / "sub" / "params.json", "{}")


def test_leftovers_of_killed_writers_are_removed_by_the_next_write(tmp_path: Path) -> None:
    dead, alive = _dead_pid(), os.getppid()
    stale = tmp_path / f".result.npz.{dead}.0123abcd.part"
    in_flight = tmp_path / f".result.npz.{alive}.89abcdef.part"
    unrelated = [tmp_path / "notes.part", tmp_path / ".hidden", tmp_path / "result.npz.part"]
    for path in [stale, in_flight, *unrelated]:
        path.write_bytes(b"x")
    write_result(tmp_path / "result.npz", make_result(np.random.default_rng(0)))
    assert not stale.exists()
    assert in_flight.exists()  # another live process may still be writing it
    assert all(p.exists() for p in unrelated)
    assert remove_stale_parts(tmp_path) == []


def test_mesh_export_writes_every_file_through_the_atomic_writer(tmp_path: Path) -> None:
    result = make_result(np.random.default_rng(1))
    stale = tmp_path / f".params.json.{_dead_pid()}.0123abcd.part"
    stale.write_text("{")
    written = export_hypotheses(result, tmp_path)
    assert {p.name for p in written} == {p.name for p in tmp_path.iterdir()}  # the leftover is gone
    assert (tmp_path / "params.json").read_text().startswith("{")


# ---------------------------------------------------------------------------------------------------
# A real full disk: a small tmpfs, where this machine lets the test mount one


@pytest.fixture
def small_tmpfs(tmp_path: Path):
    mount = tmp_path / f"tmpfs-{uuid.uuid4().hex[:6]}"
    mount.mkdir()
    if not shutil.which("mount") or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; the fault-injecting tests above cover the writer")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1200k", "tmpfs", str(mount)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"tmpfs cannot be mounted here ({proc.stderr.decode().strip()})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_reconstruct_onto_a_full_disk_ends_with_io_error_and_no_traceback(small_tmpfs: Path) -> None:
    out = small_tmpfs / "out"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_WAIT_POLICY="PASSIVE")
    proc = subprocess.run(
        [sys.executable, "-m", "inference_server", "reconstruct", str(SAMPLE), "-o", str(out),
         "-n", "4", "-m", "3", "-k", "2", "--sampler", "ddim", "--steps", "2", "--device", "cpu", "--threads", "1"],
        capture_output=True, text=True, timeout=600, cwd=ROOT, env=env,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "seek of closed file" not in proc.stderr
    assert "error (io_error)" in proc.stderr and str(out) in proc.stderr and "MB free" in proc.stderr
    assert not [p for p in out.iterdir() if p.name.endswith(".part")]
    if (out / "result.npz").exists():  # whatever was finished before the disk filled up is whole
        read_result(out / "result.npz")


def test_serve_onto_a_full_disk_answers_io_error_and_stays_alive(small_tmpfs: Path, tmp_path: Path) -> None:
    from benchmarks.fuzz_worker import ServeProcess

    (small_tmpfs / "filler").write_bytes(b"\0" * (1100 * 1024))  # leave about 100 KB: less than a result file
    worker = ServeProcess(tmp_path)
    try:
        request = {"image": str(SAMPLE), "output": str(small_tmpfs / "r.npz"), "n_shapes": 4, "n_expressions": 3,
                   "top_k": 2, "sampler": "ddim", "steps": 2, "seed": 1}  # fmt: skip
        answer = worker.ask(json.dumps({"id": "full", "op": "reconstruct", "args": request}).encode())
        assert answer is not None and answer["event"] == "error", answer
        # The first file that does not fit is named: the texture PNG or the result file itself.
        assert answer["code"] == "io_error" and str(small_tmpfs / "r") in answer["message"], answer
        assert "MB free" in answer["message"] and answer["fix"]
        assert worker.ask(b'{"id":"h","op":"hello"}')["event"] == "hello"  # type: ignore[index]
    finally:
        worker.close()
    assert sorted(p.name for p in small_tmpfs.iterdir()) == ["filler"]
