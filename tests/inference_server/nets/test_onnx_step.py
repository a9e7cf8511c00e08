"""The fused step by ONNX Runtime: the plain Denoiser's function, a cache that survives damage and stale graphs,
torch where ONNX Runtime is missing or disagrees, and a switch that refuses what it does not know."""

from __future__ import annotations

import importlib.util
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from inference_server.errors import BadRequestError
from inference_server.nets import onnx_step
from inference_server.nets.denoiser import Denoiser
from inference_server.nets.fused_denoiser import FusedDenoiser
from inference_server.nets.onnx_step import CACHE_FOLDER, requested_step_runtime, step_key
from tests.inference_server.nets.test_fused_denoiser import _assert_close, random_official_denoiser

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnx") is None,
    reason="onnxruntime / onnx not installed (the worker's onnx extra)",
)


def _graphs(cache: Path) -> list[Path]:
    folder = cache / CACHE_FOLDER
    return sorted(folder.glob("*.onnx")) if folder.is_dir() else []


def _inputs(net: Denoiser, batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, net.config.feature_dim, generator=g) * 2.0, torch.randn(
        1, net.config.context_dim, generator=g
    )


@pytest.mark.parametrize("name", ["idgen", "expgen"])
@pytest.mark.parametrize("row_split", [False, True])
def test_the_onnx_step_computes_the_plain_denoiser(name: str, row_split: bool, tmp_path: Path) -> None:
    """Official-size networks, every parameter random; batch 1 and 100 (in row blocks on two threads too)."""
    net = random_official_denoiser(name, 11)
    fused = FusedDenoiser(net, row_split=row_split)
    runtime = fused.use_onnx_step(tmp_path, name)
    assert runtime.step is not None and runtime.note == "exported" and fused.onnx_step
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for batch in (1, 100):
            x, context = _inputs(net, batch, batch)
            for step in (999, 500, 37, 0):
                t = torch.tensor([step])
                with torch.no_grad():
                    want = net(x, t.expand(batch), context.expand(batch, -1))
                _assert_close(fused(x, t.expand(batch), context.expand(batch, -1)), want)
    finally:
        torch.set_num_threads(threads)
    assert row_split is (fused.row_lanes is not None and fused.row_lanes.last_blocks == 2)
    assert set(runtime.step.sessions) <= {1, 2} and runtime.step.sessions  # sessions follow the thread count


def test_a_second_open_reuses_the_graph_and_other_weights_get_their_own(tmp_path: Path) -> None:
    net = random_official_denoiser("expgen", 3)
    assert FusedDenoiser(net).use_onnx_step(tmp_path, "expgen").note == "exported"
    (graph,) = _graphs(tmp_path)
    stamp = graph.stat().st_mtime_ns
    assert FusedDenoiser(net).use_onnx_step(tmp_path, "expgen").note == "reused"
    assert graph.stat().st_mtime_ns == stamp
    with torch.no_grad():  # one weight one step away: another key, another graph
        weight = net.init_conv.weight
        weight[0, 0, 0] = torch.nextafter(weight[0, 0, 0], torch.tensor(1.0))
    assert step_key(net) not in graph.name
    assert FusedDenoiser(net).use_onnx_step(tmp_path, "expgen").note == "exported"
    assert len(_graphs(tmp_path)) == 2


def test_a_damaged_or_stale_graph_is_exported_again(tmp_path: Path) -> None:
    """Garbage bytes, or another network's graph under this key (a copied cache): found at open, replaced."""
    net, other = random_official_denoiser("expgen", 4), random_official_denoiser("expgen", 5)
    FusedDenoiser(other).use_onnx_step(tmp_path, "expgen")
    (other_graph,) = _graphs(tmp_path)
    graph = other_graph.with_name(f"expgen-{step_key(net)}.onnx")
    x, context = _inputs(net, 6, 0)
    with torch.no_grad():
        want = net(x, torch.tensor([250]), context)
    for planted in (b"not a graph", other_graph.read_bytes()):
        graph.write_bytes(planted)
        fused = FusedDenoiser(net)
        assert fused.use_onnx_step(tmp_path, "expgen").note == "exported"
        assert graph.read_bytes() != planted
        _assert_close(fused(x, torch.tensor([250]), context), want)


def test_a_graph_that_keeps_disagreeing_leaves_the_step_to_torch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    net, other = random_official_denoiser("expgen", 6), random_official_denoiser("expgen", 7)
    export = onnx_step._export
    monkeypatch.setattr(onnx_step, "_export", lambda _net, path: export(other, path))  # a broken exporter
    fused = FusedDenoiser(net)
    runtime = fused.use_onnx_step(tmp_path, "expgen")
    assert runtime.step is None and "disagrees" in runtime.note and not fused.onnx_step
    assert _graphs(tmp_path) == []  # nothing wrong is left for the next open
    x, context = _inputs(net, 6, 1)
    with torch.no_grad():
        want = net(x, torch.tensor([40]), context)
    _assert_close(fused(x, torch.tensor([40]), context), want)


def test_a_cache_that_cannot_be_written_leaves_the_step_to_torch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(_net: Denoiser, path: Path) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(onnx_step, "_export", refuse)
    fused = FusedDenoiser(random_official_denoiser("expgen", 10))
    runtime = fused.use_onnx_step(tmp_path, "expgen")
    assert runtime.step is None and "PermissionError" in runtime.note and "could not be made" in runtime.note
    x, context = _inputs(fused.net, 3, 2)
    with torch.no_grad():
        want = fused.net(x, torch.tensor([7]), context)
    _assert_close(fused(x, torch.tensor([7]), context), want)


def test_without_onnxruntime_torch_runs_the_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else find_spec(name, *a)
    )
    fused = FusedDenoiser(random_official_denoiser("expgen", 8))
    assert fused.use_onnx_step(tmp_path, "expgen").note == "onnxruntime or onnx is not installed"
    assert not fused.onnx_step and _graphs(tmp_path) == []


def test_the_compiled_step_and_bf16_gemms_stay_on_torch(tmp_path: Path) -> None:
    fused = FusedDenoiser(random_official_denoiser("expgen", 9), compile_step=True)
    runtime = fused.use_onnx_step(tmp_path, "expgen")
    assert runtime.step is None and "torch" in runtime.note and _graphs(tmp_path) == []


def test_idgen_and_expgen_opened_at_once_both_export(tmp_path: Path) -> None:
    """The two samplers build their steps on two threads; the exporter's process-wide state is locked."""
    nets = {"idgen": random_official_denoiser("idgen", 12), "expgen": random_official_denoiser("expgen", 13)}
    barrier = threading.Barrier(2)

    def open_one(kind: str) -> str:
        fused = FusedDenoiser(nets[kind])
        barrier.wait()
        return fused.use_onnx_step(tmp_path, kind).note

    with ThreadPoolExecutor(2) as pool:
        assert list(pool.map(open_one, ["idgen", "expgen"])) == ["exported", "exported"]
    assert [p.name.split("-")[0] for p in _graphs(tmp_path)] == ["expgen", "idgen"]


def test_the_switch_reads_onnxruntime_or_torch_and_refuses_anything_else() -> None:
    assert requested_step_runtime({}) == "onnxruntime"
    assert requested_step_runtime({"OFER_CPU_DENOISER_RUNTIME": " Torch "}) == "torch"
    assert requested_step_runtime({"OFER_CPU_DENOISER_RUNTIME": "onnxruntime"}) == "onnxruntime"
    with pytest.raises(BadRequestError, match="OFER_CPU_DENOISER_RUNTIME='tensorrt'"):
        requested_step_runtime({"OFER_CPU_DENOISER_RUNTIME": "tensorrt"})


def test_the_cache_folder_can_be_deleted_between_opens(tmp_path: Path) -> None:
    net = random_official_denoiser("expgen", 14)
    FusedDenoiser(net).use_onnx_step(tmp_path, "expgen")
    shutil.rmtree(tmp_path / CACHE_FOLDER)
    assert FusedDenoiser(net).use_onnx_step(tmp_path, "expgen").note == "exported"
