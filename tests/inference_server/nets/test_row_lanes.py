"""The batch's rows in blocks on threads of their own (nets/row_lanes.py), alone and in the fused step."""

from __future__ import annotations

import threading

import pytest
import torch

from inference_server.errors import BadRequestError
from inference_server.nets.fused_denoiser import FusedDenoiser
from inference_server.nets.row_lanes import RowLanes, plan_blocks, row_split_requested
from tests.inference_server.nets.test_fused_denoiser import random_official_denoiser


@pytest.mark.parametrize(("rows", "threads"), [(100, 2), (101, 3), (100, 16), (50, 2), (49, 2), (100, 1), (7, 4)])
def test_plan_covers_every_row_once_with_every_thread(rows: int, threads: int) -> None:
    plan = plan_blocks(rows, threads, min_rows=25)
    covered = [i for block, _ in plan for i in range(rows)[block]]
    assert covered == list(range(rows))
    assert sum(n for _, n in plan) == threads
    sizes = [block.stop - block.start for block, _ in plan]
    assert len(plan) == 1 or min(sizes) >= 25
    assert max(sizes) - min(sizes) <= 1
    assert len(plan) == max(1, min(threads, rows // 25))


def test_a_step_in_blocks_is_the_whole_step_and_each_block_runs_on_its_own_thread() -> None:
    weight = torch.randn(64, 300)
    seen: list[tuple[str, int]] = []  # (thread, its intra-op threads) per block
    lock = threading.Lock()

    def step(rows: torch.Tensor) -> torch.Tensor:
        with lock:
            seen.append((threading.current_thread().name, torch.get_num_threads()))
        return torch.tanh(rows @ weight.T)

    x = torch.randn(100, 300)
    before = torch.get_num_threads()
    torch.set_num_threads(4)
    try:
        lanes = RowLanes(min_rows=25)
        got = lanes.run(step, x)
        first_call = list(seen)
        again = lanes.run(step, x)
        assert torch.get_num_threads() == 4  # the caller gets its threads back
        later: list[int] = []  # a thread started afterwards begins with the caller's count, not a lane's 1
        thread = threading.Thread(target=lambda: later.append(torch.get_num_threads()))
        thread.start()
        thread.join()
        assert later == [4]
    finally:
        torch.set_num_threads(before)
    torch.testing.assert_close(got, step(x), rtol=1e-5, atol=1e-6)
    assert torch.equal(got, again)
    assert lanes.last_blocks == 4 and len(first_call) == 4 and {n for _, n in first_call} == {1}
    names = [name for name, _ in first_call]
    # The caller runs one block itself; the others run on the lane threads (an idle lane may take two).
    assert names.count(threading.current_thread().name) == 1 and len(set(names)) >= 2
    lanes.close()


def test_one_thread_or_few_rows_run_whole_in_the_caller() -> None:
    calls: list[tuple[str, int]] = []

    def step(rows: torch.Tensor) -> torch.Tensor:
        calls.append((threading.current_thread().name, len(rows)))
        return rows * 2

    lanes = RowLanes(min_rows=25)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        lanes.run(step, torch.ones(100, 3))
        torch.set_num_threads(2)
        lanes.run(step, torch.ones(49, 3))
    finally:
        torch.set_num_threads(before)
    me = threading.current_thread().name
    assert calls == [(me, 100), (me, 49)] and lanes.last_blocks == 1


def test_a_failing_block_raises_in_the_caller_and_the_threads_are_restored() -> None:
    def step(rows: torch.Tensor) -> torch.Tensor:
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("lane failed")
        return rows

    lanes = RowLanes(min_rows=25)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with pytest.raises(RuntimeError, match="lane failed"):
            lanes.run(step, torch.ones(100, 3))
        assert torch.get_num_threads() == 2
        assert torch.equal(lanes.run(lambda rows: rows + 1, torch.zeros(100, 3)), torch.ones(100, 3))
    finally:
        torch.set_num_threads(before)
        lanes.close()


@pytest.mark.parametrize("name", ["idgen", "expgen"])
def test_the_fused_step_in_row_blocks_matches_the_plain_module(name: str) -> None:
    """Official sizes, batch 100 on two threads: the split step is the plain module's within the fused step's
    own bound (1e-5 of the scale), repeats bit for bit, and says how it ran."""
    net = random_official_denoiser(name, 3)
    config = net.config
    x = torch.randn(100, config.feature_dim)
    context = torch.randn(1, config.context_dim).expand(100, -1)
    t = torch.tensor([421]).expand(100)
    split, whole = FusedDenoiser(net, row_split=True), FusedDenoiser(net, row_split=False)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with torch.no_grad():
            want = net(x, t, context)
            got, again, unsplit = split(x, t, context), split(x, t, context), whole(x, t, context)
    finally:
        torch.set_num_threads(before)
    scale = float(want.abs().max())
    assert float((got - want).abs().max()) <= 1e-5 * scale
    assert float((got - unsplit).abs().max()) <= 1e-5 * scale
    assert torch.equal(got, again)
    assert split.row_lanes is not None and split.row_lanes.last_blocks == 2 and whole.row_lanes is None


def test_the_switch_reads_on_off_and_refuses_anything_else() -> None:
    assert row_split_requested({}) is True
    assert row_split_requested({"OFER_CPU_ROW_SPLIT": "0"}) is False
    assert row_split_requested({"OFER_CPU_ROW_SPLIT": "on"}) is True
    with pytest.raises(BadRequestError, match="OFER_CPU_ROW_SPLIT"):
        row_split_requested({"OFER_CPU_ROW_SPLIT": "sometimes"})
