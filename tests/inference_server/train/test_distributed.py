"""Two CPU processes under torchrun (gloo, DistributedDataParallel) run a few steps of each trainer."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from inference_server.checkpoints import load_networks


def _torchrun(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[3]))
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "inference_server", "train", *args,
        "--size", "tiny", "--batch-size", "2", "--device", "cpu", "--no-progress", "--log-every", "1",
    ]  # fmt: skip
    # Own session, so a hang can be ended with every worker torchrun started (no orphans left behind).
    process = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


@pytest.fixture(scope="module")
def generator(synthetic_set: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ddp_idgen")
    done = _torchrun(["idgen", "--data", str(synthetic_set), "--out", str(out), "--steps", "3"], out)
    assert done.returncode == 0, done.stderr[-3000:]
    return out / "idgen.safetensors"


def _check_run(out: Path, kind: str, steps: int) -> None:
    log = [json.loads(line) for line in (out / f"{kind}.log.jsonl").read_text().splitlines()]
    logged = [entry["step"] for entry in log if "encoder_warmup_step" not in entry]
    assert logged == list(range(1, steps + 1))  # rank 0 logs once per step
    assert load_networks(out / f"{kind}.safetensors").kind == kind


def test_idgen_under_torchrun(generator: Path) -> None:
    _check_run(generator.parent, "idgen", 3)


def test_expgen_under_torchrun(synthetic_set: Path, tmp_path: Path) -> None:
    done = _torchrun(["expgen", "--data", str(synthetic_set), "--out", str(tmp_path), "--steps", "3"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    _check_run(tmp_path, "expgen", 3)


def test_idrank_under_torchrun(synthetic_set: Path, generator: Path, tmp_path: Path) -> None:
    args = ["idrank", "--data", str(synthetic_set), "--out", str(tmp_path), "--steps", "2",
            "--generator", str(generator), "--n-samples", "4", "--sampler", "ddim", "--sampler-steps", "3"]  # fmt: skip
    done = _torchrun(args, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    _check_run(tmp_path, "idrank", 2)


def test_an_encoder_warm_up_then_frozen_encoders_under_torchrun(synthetic_set: Path, tmp_path: Path) -> None:
    """The warm-up averages gradients and BatchNorm statistics over the processes, then the cached-context
    steps run under DistributedDataParallel."""
    args = ["idgen", "--data", str(synthetic_set), "--out", str(tmp_path), "--steps", "2", "--freeze", "all",
            "--encoder-warmup-steps", "3", "--noise-repeats", "2", "--max-records", "12"]  # fmt: skip
    done = _torchrun(args, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    _check_run(tmp_path, "idgen", 2)
    provenance = load_networks(tmp_path / "idgen.safetensors").metadata["provenance"]
    assert len(provenance["encoder_warmup_mse_first_last"]) == 2
    assert provenance["config"]["max_records"] == 12 and provenance["config"]["freeze"] == "all"
