"""The distinct encoders on two lanes: the same embeddings bit for bit (at the thread count each pass ran on),
balanced lanes, errors, threads, switch."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from inference_server.encoder_bf16 import Bf16Encoder, native_bf16
from inference_server.encoder_lanes import (
    LANES_ENV,
    EncoderJob,
    LaneRun,
    encoder_macs,
    estimated_cost,
    lanes_by_default,
    lanes_requested,
    partition,
    run_encoders,
)
from inference_server.encoder_runtime import onnxruntime_available, open_session
from inference_server.errors import BadRequestError
from inference_server.nets.arcface import ArcFaceConfig, ArcFaceEncoder
from inference_server.nets.clip_visual import ClipImageEncoder, ClipVisionConfig


@pytest.fixture(autouse=True)
def two_threads() -> Iterator[None]:
    """Lanes need ≥ 2 intra-op threads; the caller's count is put back after each test."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


Encode = Callable[[torch.Tensor], torch.Tensor]


def _as_float(run: Encode, x: torch.Tensor) -> torch.Tensor:
    return run(x).float()


def _jobs(encoders: dict[str, torch.nn.Module], runners: Mapping[str, Encode] | None = None) -> list[EncoderJob]:
    inputs = {112: torch.rand(1, 3, 112, 112) * 2 - 1, 224: torch.rand(1, 3, 224, 224) * 2 - 1}
    jobs = []
    for slot, module in encoders.items():
        size = 112 if isinstance(module, ArcFaceEncoder) else 224
        run = (runners or {}).get(slot, module)
        jobs.append(EncoderJob(slot, functools.partial(_as_float, run, inputs[size]), float(encoder_macs(module))))
    return jobs


@pytest.mark.parametrize(
    "module, size",
    [
        (ArcFaceEncoder(ArcFaceConfig(layers=(1, 2, 1), widths=(8, 16, 32), input_size=32)), 32),
        (ClipImageEncoder(ClipVisionConfig(width=64, layers=2, heads=4, patch_size=8, image_size=48)), 48),
    ],
)
def test_the_cost_estimate_is_the_multiply_accumulates_torch_counts(module: torch.nn.Module, size: int) -> None:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        module.eval()(torch.zeros(1, 3, size, size))
    assert encoder_macs(module) == counter.get_total_flops() // 2  # a FLOP count is 2 per multiply-add


def test_official_sizes_cost_what_the_literature_says() -> None:
    with torch.device("meta"):  # no weights: the estimate reads the configuration only
        arcface, farl = ArcFaceEncoder(), ClipImageEncoder(ClipVisionConfig())
    assert round(encoder_macs(arcface) / 1e9, 1) == 12.1  # iresnet100: 24.2 GFLOPs
    assert round(encoder_macs(farl) / 1e9, 1) == 17.6  # ViT-B/16 at 224: 17.6 GMACs


def _job(slot: str, cost: float) -> EncoderJob:
    return EncoderJob(slot, lambda: torch.zeros(1), cost)


def test_lanes_split_the_cost_as_evenly_as_possible() -> None:
    # Three ArcFace (12.1) and two FaRL (17.6): 36.3 against 35.2; any other split puts ≥ 41.8 on one lane.
    official = [_job("a1", 12.1), _job("a2", 12.1), _job("a3", 12.1), _job("f1", 17.6), _job("f2", 17.6)]
    first, second = partition(official)
    assert [j.slot for j in first] == ["a1", "a2", "a3"] and [j.slot for j in second] == ["f1", "f2"]
    # 5 + 4 against 3 + 3 + 3: greedy (largest first onto the lighter lane) would give 5 + 3 + 3 = 11.
    first, second = partition([_job("c3", 3), _job("c5", 5), _job("d3", 3), _job("c4", 4), _job("e3", 3)])
    assert sorted(j.slot for j in first + second) == ["c3", "c4", "c5", "d3", "e3"]
    assert sorted([sum(j.cost for j in first), sum(j.cost for j in second)]) == [9, 9]


def test_the_cost_follows_the_form_each_encoder_runs_in() -> None:
    with torch.device("meta"):
        arcface, farl = ArcFaceEncoder(), ClipImageEncoder(ClipVisionConfig())
    assert estimated_cost(arcface, "torch fp32") == encoder_macs(arcface) == estimated_cost(arcface, "unknown")
    # OFER_ENCODER_PRECISION=auto on a bf16 CPU: ArcFace torch bf16, FaRL ONNX Runtime int8 (4.15× torch fp32).
    # By multiply-accumulates alone the three ArcFace passes would be one lane and the two FaRL the other;
    # int8 FaRL costs a third of a bf16 ArcFace pass, so one ArcFace joins the FaRL lane.
    jobs = [EncoderJob(f"arcface{i}", lambda: torch.zeros(1), estimated_cost(arcface, "torch bf16")) for i in range(3)]
    jobs += [EncoderJob(f"farl{i}", lambda: torch.zeros(1), estimated_cost(farl, "onnxruntime int8")) for i in range(2)]
    first, second = partition(jobs)
    assert [j.slot for j in first] == ["arcface2", "farl0", "farl1"]
    assert [j.slot for j in second] == ["arcface0", "arcface1"]


def _official_encoders() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    return {"a1": ArcFaceEncoder().eval(), "a2": ArcFaceEncoder().eval(), "f1": ClipImageEncoder().eval()}


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_lanes_give_the_sequential_embeddings_bit_for_bit(precision: str) -> None:
    if precision == "bf16" and not native_bf16():
        pytest.skip("this CPU has no native bf16 (the bundle would not use bf16 encoders)")
    encoders = _official_encoders()
    runners = {slot: Bf16Encoder(m) for slot, m in encoders.items()} if precision == "bf16" else None
    jobs = _jobs(encoders, runners)
    threads = torch.get_num_threads()
    with torch.no_grad():
        sequential = run_encoders(jobs, lanes=False)
        record = LaneRun([], [])
        laned = run_encoders(jobs, lanes=True, record=record)
        # A lane's pass runs on its share of the threads, or on all of them once the other lane is done. Some
        # CPUs' kernels round differently by thread count (the ViT's on an AVX-512/AMX Xeon, ~5e-7 relative;
        # none on the AVX2 EPYC): each pass must be bit for bit the sequential pass at one of those counts.
        by_count = {}
        for count in {threads - threads // 2, threads // 2, threads} - {0}:
            torch.set_num_threads(count)
            by_count[count] = run_encoders(jobs, lanes=False)
        torch.set_num_threads(threads)
    assert record.lanes == [["a1", "a2"], ["f1"]]  # 2 × 12.1 G against 17.6 G: the costlier lane first
    assert list(laned) == ["a1", "a2", "f1"]
    for slot in sequential:
        assert any(torch.equal(run[slot], laned[slot]) for run in by_count.values()), slot
        if all(torch.equal(run[slot], sequential[slot]) for run in by_count.values()):
            assert torch.equal(sequential[slot], laned[slot]), slot
        rounding = 1e-5 if precision == "fp32" else 1e-2  # bf16 keeps 8 bits of mantissa
        scale = float(sequential[slot].abs().max())
        torch.testing.assert_close(laned[slot], sequential[slot], rtol=0.0, atol=rounding * scale)
    assert not torch.equal(laned["a1"], laned["a2"])  # distinct encoders, not one result copied


@pytest.mark.skipif(not onnxruntime_available(), reason="onnxruntime is not installed")
def test_onnxruntime_sessions_on_lanes_give_the_sequential_embeddings(tmp_path: Path) -> None:
    from inference_server.onnx_export import export_arcface

    torch.manual_seed(1)
    config = ArcFaceConfig(layers=(1, 2, 2, 1))
    encoders = {"a1": ArcFaceEncoder(config).eval(), "a2": ArcFaceEncoder(config).eval()}
    runners = {}
    for slot, module in encoders.items():
        export_arcface(module, tmp_path / f"{slot}.onnx")
        runners[slot] = open_session(tmp_path / f"{slot}.onnx", tmp_path / f"{slot}.opt.onnx")[0]
    blob = torch.rand(1, 3, 112, 112) * 2 - 1
    jobs = [EncoderJob(slot, functools.partial(runner, blob), 1.0) for slot, runner in runners.items()]
    sequential = run_encoders(jobs, lanes=False)
    for _ in range(3):
        record = LaneRun([], [])
        laned = run_encoders(jobs, lanes=True, record=record)
        assert len(record.lanes) == 2
        assert all(torch.equal(sequential[slot], laned[slot]) for slot in sequential)
    with torch.no_grad():  # and the same function as torch (the sessions are not stubs)
        for slot, module in encoders.items():
            assert torch.allclose(module(blob), sequential[slot], atol=1e-4), slot


def test_each_lane_has_its_share_of_threads_and_the_caller_gets_its_count_back() -> None:
    seen: dict[str, tuple[str, int]] = {}

    def probe(slot: str) -> torch.Tensor:
        seen[slot] = (threading.current_thread().name, torch.get_num_threads())
        time.sleep(0.05)  # both lanes are running at once
        return torch.zeros(1)

    jobs = [EncoderJob(slot, functools.partial(probe, slot), 1.0) for slot in ("a", "b")]
    run_encoders(jobs, lanes=True)
    assert {name for name, _ in seen.values()} == {threading.current_thread().name, "encoder-lane"}
    assert [count for _, count in seen.values()] == [1, 1]
    assert torch.get_num_threads() == 2
    later: list[int] = []  # a thread started afterwards begins with torch's process-wide default
    worker = threading.Thread(target=lambda: later.append(torch.get_num_threads()))
    worker.start()
    worker.join()
    assert later == [2]


def test_a_lane_that_starts_after_the_other_finished_takes_every_thread() -> None:
    other_done = threading.Event()
    counts: dict[str, int] = {}

    def slow() -> torch.Tensor:  # the caller's first pass outlasts the helper's only pass
        other_done.wait(5)
        time.sleep(0.3)  # the helper lane has returned and marked itself done
        return torch.zeros(1)

    def record(slot: str) -> torch.Tensor:
        counts[slot] = torch.get_num_threads()
        if slot == "helper":
            other_done.set()
        return torch.zeros(1)

    jobs = [EncoderJob("slow", slow, 10), EncoderJob("helper", lambda: record("helper"), 10),
            EncoderJob("after", lambda: record("after"), 1)]  # fmt: skip
    out = LaneRun([], [])
    run_encoders(jobs, lanes=True, record=out)
    assert out.lanes == [["slow", "after"], ["helper"]]
    assert counts == {"helper": 1, "after": 2}


@pytest.mark.parametrize("failing_cost", [7.0, 5.0])  # 7: the caller's own lane; 5: the helper lane
def test_an_error_in_either_lane_reaches_the_caller_stops_the_other_and_leaves_no_thread(failing_cost: float) -> None:
    ran: list[str] = []

    def fail() -> torch.Tensor:
        raise ValueError("broken encoder")

    def ok(slot: str) -> torch.Tensor:
        time.sleep(0.2)
        ran.append(slot)
        return torch.zeros(1)

    # The other lane holds "slow" then "next" (cost 6); the failing pass is alone in its lane.
    jobs = [EncoderJob("broken", fail, failing_cost), EncoderJob("slow", lambda: ok("slow"), 3.0),
            EncoderJob("next", lambda: ok("next"), 3.0)]  # fmt: skip
    before = threading.active_count()
    with pytest.raises(ValueError, match="broken encoder"):
        run_encoders(jobs, lanes=True)
    assert threading.active_count() == before
    assert torch.get_num_threads() == 2
    assert "next" not in ran  # the other lane stopped at its next pass instead of running on


def test_the_callers_grad_mode_holds_in_the_helper_lane() -> None:
    torch.manual_seed(2)
    layers = {"a": torch.nn.Linear(4, 4), "b": torch.nn.Linear(4, 4)}
    x = torch.ones(1, 4)
    jobs = [EncoderJob(slot, functools.partial(m, x), 1.0) for slot, m in layers.items()]
    with torch.no_grad():
        out = run_encoders(jobs, lanes=True)
    assert not any(t.requires_grad for t in out.values())
    out = run_encoders(jobs, lanes=True)
    assert all(t.requires_grad for t in out.values())


def test_one_thread_or_one_encoder_runs_in_sequence_here() -> None:
    names: list[str] = []

    def record_thread() -> torch.Tensor:
        names.append(threading.current_thread().name)
        return torch.zeros(1)

    jobs = [EncoderJob(slot, record_thread, 1.0) for slot in ("a", "b")]
    torch.set_num_threads(1)
    record = LaneRun([], [])
    run_encoders(jobs, lanes=True, record=record)
    assert record.lanes == [["a", "b"]] and set(names) == {threading.current_thread().name}
    torch.set_num_threads(2)
    run_encoders(jobs[:1], lanes=True, record=record)
    assert record.lanes == [["a"]]


def test_the_switch_reads_on_off_or_unset_and_rejects_a_misspelt_value() -> None:
    assert lanes_requested({}) is None and lanes_requested({LANES_ENV: " "}) is None
    assert lanes_requested({LANES_ENV: "0"}) is False and lanes_requested({LANES_ENV: " Off "}) is False
    assert lanes_requested({LANES_ENV: "1"}) is True and lanes_requested({LANES_ENV: "yes"}) is True
    with pytest.raises(BadRequestError, match=LANES_ENV):
        lanes_requested({LANES_ENV: "two"})


def test_unset_lanes_are_used_where_an_encoder_runs_a_form_that_measured_faster() -> None:
    assert not lanes_by_default(["torch fp32", "torch fp32"])
    assert not lanes_by_default(["onnxruntime fp32"])  # not measured: left as it was
    assert lanes_by_default(["torch bf16", "torch bf16", "onnxruntime int8"])  # auto
    assert lanes_by_default(["torch fp32", "torch bf16"])


def test_the_bundle_runs_its_distinct_encoders_on_lanes_with_the_same_contexts(monkeypatch: pytest.MonkeyPatch) -> None:
    from inference_server.assets_config import resolve_assets
    from inference_server.model_bundle import load_model_bundle

    bundle = load_model_bundle(resolve_assets({}))  # DEMO: three distinct encoders (IdRank shares two)
    torch.manual_seed(3)
    blob, image = torch.rand(1, 3, 112, 112) * 2 - 1, torch.rand(1, 3, 224, 224) * 2 - 1
    distinct = sorted(set(bundle.encoder_sharing.canonical.values()))
    results = {}
    for setting in ("0", "1"):  # read from the environment at every call (encoder_lanes None)
        monkeypatch.setenv(LANES_ENV, setting)
        with torch.no_grad():
            results[setting] = bundle.contexts(blob, image)
        ran = bundle.last_lanes.lanes
        assert len(ran) == (2 if setting == "1" else 1) and sorted(slot for lane in ran for slot in lane) == distinct
    for lanes, sequential in zip(results["1"], results["0"], strict=True):
        assert torch.equal(lanes, sequential)
    bundle.encoder_lanes = False  # the bundle's own setting wins over the environment
    bundle.contexts(blob, image)
    assert len(bundle.last_lanes.lanes) == 1
    bundle.encoder_lanes = None
    monkeypatch.delenv(LANES_ENV)  # unset: torch fp32 encoders run one after the other
    bundle.contexts(blob, image)
    assert len(bundle.last_lanes.lanes) == 1
    monkeypatch.setenv(LANES_ENV, "sometimes")
    with pytest.raises(BadRequestError, match=LANES_ENV):
        bundle.contexts(blob, image)


@pytest.mark.skipif(not native_bf16(), reason="this CPU has no native bf16: the bundle keeps its fp32 encoders")
def test_the_bundles_bf16_encoders_on_lanes_give_the_sequential_contexts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from inference_server.assets_config import resolve_assets
    from inference_server.model_bundle import load_model_bundle

    bundle = load_model_bundle(resolve_assets({}))
    bundle.use_encoder_runtime(tmp_path, "bf16")
    assert "torch bf16" in bundle.encoder_runtimes().values()
    blob, image = torch.rand(1, 3, 112, 112) * 2 - 1, torch.rand(1, 3, 224, 224) * 2 - 1
    monkeypatch.delenv(LANES_ENV, raising=False)
    with torch.no_grad():
        bundle.contexts(blob, image)
    assert len(bundle.last_lanes.lanes) == 2  # unset: bf16 encoders run on lanes
    results = {}
    for lanes in (True, False):
        bundle.encoder_lanes = lanes
        with torch.no_grad():
            results[lanes] = bundle.contexts(blob, image)
        assert len(bundle.last_lanes.lanes) == (2 if lanes else 1)
    assert all(torch.equal(a, b) for a, b in zip(results[True], results[False], strict=True))
