"""``ofer-worker batch --engine ray`` on a local Ray started by the test: two warm actors, one bad photo."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from inference_server.__main__ import main
from inference_server.batch.records import ITEM_FILE
from inference_server.result import read_result

from .conftest import SMALL, sha256

ray = pytest.importorskip("ray", reason="the [ray] extra is not installed")
pytestmark = pytest.mark.slow


@pytest.fixture
def local_ray() -> Iterator[None]:
    # Two CPUs whatever the machine: the pool below is two one-CPU actors.
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=150 * 1024**2, logging_level="WARNING")
    try:
        yield
    finally:
        ray.shutdown()


def _summary(out: Path) -> dict[str, dict[str, str]]:
    with (out / "summary.csv").open(newline="", encoding="utf-8") as handle:
        return {row["id"]: row for row in csv.DictReader(handle)}


def test_ray_batch_two_actors_one_bad_photo_then_resume(
    local_ray: None, photo_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    args = ["batch", str(photo_folder), "-o", str(out), "--engine", "ray", "--actors", "2", "--cpus-per-actor", "1"]
    args += ["--no-contact-sheet", *SMALL]
    assert main(args) == 1
    printed = capsys.readouterr()
    assert "3 of 4 photos reconstructed" in printed.out
    assert "broken.jpg: error (bad_image)" in printed.err

    summary = _summary(out)
    assert sorted(summary) == ["broken", "face_a", "face_b", "face_c"]
    assert (summary["broken"]["status"], summary["broken"]["error_code"]) == ("failed", "bad_image")
    good = ["face_a", "face_b", "face_c"]
    workers = {summary[i]["worker"] for i in summary}
    assert 1 <= len(workers) <= 2 and not any(w.endswith(f":{os.getpid()}") for w in workers)  # done by the actors
    for item_id in good:
        row = summary[item_id]
        assert row["status"] == "ok" and float(row["seconds_total"]) > 0
        result = read_result(out / item_id / "result.npz")
        assert result.meta["image"]["sha256"] == sha256(Path(row["image"]))
        assert result.identity_params.shape == (2, 300) and len(result.expression_params) == 4
        assert np.isfinite(result.expression_vertices).all() and (out / item_id / "expression_004.ply").is_file()

    # The same photo through the local engine gives the same hypotheses (the actors ran the same pipeline).
    local = tmp_path / "local"
    (photo_folder / "broken.jpg").rename(tmp_path / "broken.jpg")
    for other in ("face_b.png", "face_c.jpg"):
        (photo_folder / other).rename(tmp_path / other)
    assert main(["batch", str(photo_folder), "-o", str(local), "--no-contact-sheet", *SMALL]) == 0
    np.testing.assert_allclose(
        read_result(local / "face_a" / "result.npz").identity_params,
        read_result(out / "face_a" / "result.npz").identity_params,
        rtol=1e-4,
        atol=1e-4,
    )
    for name in ("broken.jpg", "face_b.png", "face_c.jpg"):
        (tmp_path / name).rename(photo_folder / name)
    capsys.readouterr()

    # Resume: only the failed photo is tried again; the finished ones are not touched.
    stamps = {i: ((out / i / "result.npz").stat().st_mtime_ns, (out / i / ITEM_FILE).read_text()) for i in good}
    assert main(args) == 1
    printed = capsys.readouterr()
    assert "3 of 4 photos were done by an earlier run: skipped" in printed.out
    assert "[1/4]" not in printed.out and "[4/4]" in printed.out  # one item ran, counted after the three
    assert {i: ((out / i / "result.npz").stat().st_mtime_ns, (out / i / ITEM_FILE).read_text()) for i in good} == stamps
    summary = _summary(out)
    assert [summary[i]["status"] for i in good] == ["skipped"] * 3
    assert summary["broken"]["status"] == "failed"


@pytest.mark.parametrize(
    ("resources", "device", "given", "expected"),
    [
        ({"CPU": 16.0, "GPU": 4.0}, "auto", {}, (4, 4.0, 1.0)),  # one actor per GPU
        ({"CPU": 16.0, "GPU": 4.0}, "cpu", {}, (1, 16.0, 0.0)),  # GPUs ignored for a CPU job
        ({"CPU": 16.0}, "auto", {"actors": 4}, (4, 4.0, 0.0)),  # N actors share the node's CPUs
        ({"CPU": 16.0, "GPU": 2.0}, "cuda", {"gpus": 0.5}, (4, 4.0, 0.5)),  # two actors per GPU
        ({"CPU": 2.0}, "cpu", {"actors": 2, "cpus": 1.0}, (2, 1.0, 0.0)),
    ],
)
def test_pool_defaults(
    monkeypatch: pytest.MonkeyPatch,
    resources: dict[str, float],
    device: str,
    given: dict[str, float],
    expected: tuple[int, float, float],
) -> None:
    from inference_server.batch.ray_engine import pool_options

    monkeypatch.setattr(ray, "cluster_resources", lambda: resources)
    actors = given.get("actors")
    pool = pool_options(
        actors=None if actors is None else int(actors), cpus=given.get("cpus"), gpus=given.get("gpus"), address=None,
        device=device,
    )  # fmt: skip
    assert (pool.actors, pool.cpus, pool.gpus) == expected


def test_cuda_on_a_cluster_without_gpus_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from inference_server.batch.ray_engine import pool_options
    from inference_server.errors import BadRequestError

    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 8.0})
    with pytest.raises(BadRequestError, match="no GPU"):
        pool_options(actors=None, cpus=None, gpus=None, address=None, device="cuda")


def test_the_actors_run_with_the_switches_of_the_shell_that_started_the_batch(
    local_ray: None, one_photo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Set after Ray started (as on a cluster, whose nodes never saw this shell): the actor still runs the
    denoiser steps with torch, as ``OFER_CPU_DENOISER_RUNTIME=torch`` asks, and the result file says so."""
    monkeypatch.setenv("OFER_CPU_DENOISER_RUNTIME", "torch")
    out = tmp_path / "out"
    args = ["batch", str(one_photo), "-o", str(out), "--engine", "ray", "--actors", "1", "--cpus-per-actor", "1"]
    assert main([*args, "--no-contact-sheet", *SMALL]) == 0
    summary = _summary(out)
    assert summary["face"]["status"] == "ok" and not summary["face"]["worker"].endswith(f":{os.getpid()}")
    runtimes = read_result(out / "face" / "result.npz").meta["denoiser_runtimes"]
    assert runtimes == {"idgen": "torch fp32 fused", "expgen": "torch fp32 fused"}
