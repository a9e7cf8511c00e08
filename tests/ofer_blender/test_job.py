from __future__ import annotations

import importlib

import numpy as np
import pytest


@pytest.fixture
def mods(addon):
    job = importlib.import_module(addon.__name__ + ".job")
    wc = importlib.import_module(addon.__name__ + ".worker_client")
    res = importlib.import_module(addon.__name__.rpartition(".")[0] + ".inference_server.result")
    return job, wc, res


def _runner(mods, fake_worker, tmp_path, mode, **kwargs):
    job, wc, _ = mods
    client = wc.WorkerClient(fake_worker(mode), tmp_path / "logs")
    return job.JobRunner(client, **kwargs)


def _args(tmp_path, **extra):
    return {"image": str(tmp_path / "photo.png"), "output": str(tmp_path / "out" / "result.npz"), **extra}


def test_normal_run_succeeds_with_a_valid_result(mods, fake_worker, tmp_path) -> None:
    job_mod, _, res = mods
    runner = _runner(mods, fake_worker, tmp_path, "normal")
    points = [[10.0, 20.0], [30.0, 20.0], [20.0, 30.0], [12.0, 40.0], [28.0, 40.0]]
    runner.start(_args(tmp_path, points=points, top_k=3, n_expressions=2))
    job = runner.run_sync()
    assert job.state is job_mod.JobState.SUCCEEDED, job.failure
    result = res.read_result(job.result_path)
    assert result.meta["request"]["points"] == points
    assert result.identity_vertices.shape[0] == 3 and result.expression_vertices.shape[0] == 2
    assert job.stage == "write" and job.fraction == 1.0
    # the worker stays warm: a second job runs on the same process
    pid = runner.client.pid
    runner.start(_args(tmp_path))
    assert runner.run_sync().state is job_mod.JobState.SUCCEEDED
    assert runner.client.pid == pid
    runner.client.stop()


@pytest.mark.parametrize(
    ("mode", "code", "text"),
    [
        ("crash", "worker_exited", "exit code 1"),
        ("garbage", "garbage", "not protocol"),
        ("error", "no_face", "No face"),
    ],
)
def test_failures_are_clear_and_carry_the_log(mods, fake_worker, tmp_path, mode, code, text) -> None:
    job_mod, _, _ = mods
    runner = _runner(mods, fake_worker, tmp_path, mode)
    runner.start(_args(tmp_path))
    job = runner.run_sync()
    assert job.state is job_mod.JobState.FAILED
    assert job.failure.code == code and text in job.failure.message
    if mode == "crash":
        assert "simulated crash" in job.failure.log_tail
    if mode == "garbage":
        assert not runner.client.running  # a babbling worker is stopped
    runner.client.stop()


def test_hung_worker_times_out_and_is_stopped(mods, fake_worker, tmp_path) -> None:
    job_mod, _, _ = mods
    runner = _runner(mods, fake_worker, tmp_path, "hang", inactivity_timeout=1.0)
    runner.start(_args(tmp_path))
    job = runner.run_sync()
    assert job.state is job_mod.JobState.FAILED and job.failure.code == "timeout"
    assert not runner.client.running


@pytest.mark.parametrize("mode", ["slow", "deaf"])
def test_cancel_ends_the_job_cooperative_or_not(mods, fake_worker, tmp_path, mode) -> None:
    job_mod, _, _ = mods
    runner = _runner(mods, fake_worker, tmp_path, mode, cancel_grace=1.0)
    job = runner.start(_args(tmp_path))
    while job.stage != "sample_shapes":
        message = runner.client.get(timeout=10)
        assert message is not None
        runner.pump([message])
    runner.cancel()
    assert runner.run_sync().state is job_mod.JobState.CANCELLED
    assert runner.client.running == (mode == "slow")  # a worker ignoring cancel is terminated
    runner.client.stop()


def test_second_start_while_busy_is_refused(mods, fake_worker, tmp_path) -> None:
    _, wc, _ = mods
    runner = _runner(mods, fake_worker, tmp_path, "slow")
    runner.start(_args(tmp_path))
    with pytest.raises(wc.WorkerUnavailableError, match="already running"):
        runner.start(_args(tmp_path))
    runner.client.kill()


def test_state_machine_events(mods) -> None:
    job_mod, _, _ = mods
    job = job_mod.ReconstructJob("r1", {})
    job.apply_event({"id": "other", "event": "result", "path": "x"})
    assert job.state is job_mod.JobState.RUNNING
    job.apply_event({"id": "r1", "event": "progress", "stage": "rank", "done": 3, "total": 4})
    assert job.fraction == 0.75 and job.status_text == "rank 3/4"
    job.apply_event({"id": "r1", "event": "error", "code": "busy", "message": "one job at a time", "fix": ""})
    assert job.state is job_mod.JobState.FAILED and "busy" in job.failure.message and job.failure.fix
    job.apply_event({"id": "r1", "event": "result", "path": "late"})
    assert job.result_path is None  # a job ends exactly once
    np.testing.assert_equal(job.fraction, 0.75)
