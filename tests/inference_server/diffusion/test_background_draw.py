"""BackgroundDraw: one chain in a background thread, same samples, threads handed back, errors and cancel."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest
import torch

from inference_server.diffusion import sample
from inference_server.diffusion.background_draw import (
    CONCURRENT_ENV,
    BackgroundDraw,
    concurrent_requested,
    split_threads,
    work_share,
)
from inference_server.errors import BadRequestError, CancelledError
from inference_server.nets.denoiser import Denoiser, DenoiserConfig

CONFIG = DenoiserConfig(feature_dim=53, dims=(53, 25, 10), context_dim=64, time_dim=32, n_tokens=4, heads=2, head_dim=8)


@pytest.fixture(autouse=True)
def two_threads() -> Iterator[int]:
    """The caller runs with 2+ intra-op threads (a background draw needs one to give away)."""
    before = torch.get_num_threads()
    torch.set_num_threads(max(2, before))
    yield max(2, before)
    torch.set_num_threads(before)


def _draw(seed: int, steps: int = 30) -> Callable[..., torch.Tensor]:
    torch.manual_seed(0)
    net = Denoiser(CONFIG).eval()
    context = torch.randn(1, CONFIG.context_dim, generator=torch.Generator().manual_seed(1))

    def draw(progress: Callable[[int, int], None], should_cancel: Callable[[], bool]) -> torch.Tensor:
        with torch.no_grad():
            return sample(net, context, 16, CONFIG.feature_dim, sampler="ddpm", steps=steps, seed=seed,
                          progress=progress, should_cancel=should_cancel)  # fmt: skip

    return draw


def test_the_background_draw_gives_the_inline_samples_and_hands_the_threads_back(two_threads: int) -> None:
    inline = BackgroundDraw(_draw(5), concurrent=False, progress=lambda d, t: None, should_cancel=lambda: False)
    assert not inline.concurrent
    with inline:
        want = inline.result()
    seen: dict[str, object] = {}
    reports: list[tuple[int, int, str]] = []

    def draw(progress: Callable[[int, int], None], should_cancel: Callable[[], bool]) -> torch.Tensor:
        seen["thread"], seen["threads"] = threading.current_thread().name, torch.get_num_threads()
        return _draw(5)(progress, should_cancel)

    def report(done: int, total: int) -> None:
        reports.append((done, total, threading.current_thread().name))

    with BackgroundDraw(draw, concurrent=True, progress=report, should_cancel=lambda: False) as background:
        assert background.concurrent and torch.get_num_threads() == two_threads - 1
        got = background.result()
        assert torch.get_num_threads() == two_threads  # balanced once the background is done
    assert torch.equal(got, want)
    assert seen == {"thread": "background-draw", "threads": 1}
    assert reports == [(30, 30, threading.current_thread().name)]  # the last progress, from the caller's thread
    assert torch.get_num_threads() == two_threads
    # torch's default for threads started later is the caller's count again, not the background's 1
    later: list[int] = []
    thread = threading.Thread(target=lambda: later.append(torch.get_num_threads()))
    thread.start()
    thread.join()
    assert later == [two_threads]


def test_one_thread_runs_the_draw_inline() -> None:
    torch.set_num_threads(1)
    draw = BackgroundDraw(_draw(5, steps=3), concurrent=True, progress=lambda d, t: None, should_cancel=lambda: False)
    assert not draw.concurrent


def test_an_error_in_the_background_reaches_the_caller() -> None:
    def failing(progress: Callable[[int, int], None], should_cancel: Callable[[], bool]) -> torch.Tensor:
        raise RuntimeError("out of memory in the background")

    draw = BackgroundDraw(failing, concurrent=True, progress=lambda d, t: None, should_cancel=lambda: False)
    with draw, pytest.raises(RuntimeError, match="background"):
        draw.result()


def test_cancel_and_a_failing_caller_stop_the_background_chain() -> None:
    steps: list[int] = []
    started = threading.Event()

    def draw(progress: Callable[[int, int], None], should_cancel: Callable[[], bool]) -> torch.Tensor:
        def count(done: int, total: int) -> None:
            steps.append(done)
            started.set()

        return _draw(5, steps=1000)(count, should_cancel)

    background = BackgroundDraw(draw, concurrent=True, progress=lambda d, t: None, should_cancel=lambda: False)
    with pytest.raises(ValueError, match="caller failed"), background:
        started.wait(30)
        raise ValueError("caller failed")
    assert 0 < len(steps) < 1000  # stopped early, and joined before the caller's error went on
    cancelled = BackgroundDraw(
        _draw(5, steps=1000), concurrent=True, progress=lambda d, t: None, should_cancel=lambda: True
    )
    with cancelled, pytest.raises(CancelledError):
        cancelled.result()


def test_the_switch_is_on_by_default_and_rejects_a_misspelt_value() -> None:
    assert concurrent_requested({}) is True and concurrent_requested({CONCURRENT_ENV: ""}) is True
    assert concurrent_requested({CONCURRENT_ENV: "off"}) is False
    assert concurrent_requested({CONCURRENT_ENV: "0"}) is False
    assert concurrent_requested({CONCURRENT_ENV: " 1 "}) is True and concurrent_requested({CONCURRENT_ENV: "on"})
    with pytest.raises(BadRequestError, match=CONCURRENT_ENV):
        concurrent_requested({CONCURRENT_ENV: "both"})


def test_threads_are_split_by_work_and_each_side_keeps_one() -> None:
    assert split_threads(2, 0.16) == 1 and split_threads(2, 0.9) == 1
    assert split_threads(16, 0.16) == 3 and split_threads(16, 0.5) == 8 and split_threads(16, 0.99) == 15
    assert split_threads(3, 0.0) == 1
    with pytest.raises(ValueError):
        split_threads(4, 1.5)


class _Runner:
    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module


class _Model:
    def __init__(self, module: torch.nn.Module) -> None:
        self.runner = _Runner(module)


def test_the_work_share_weighs_parameters_by_rows() -> None:
    small, large = torch.nn.Linear(10, 10), torch.nn.Linear(30, 10)  # 110 and 310 parameters
    assert work_share(_Model(small), 100, _Model(large), 100) == pytest.approx(110 / 420)
    assert work_share(_Model(small), 300, _Model(large), 100) == pytest.approx(330 / 640)
    assert work_share(object(), 100, _Model(large), 100) == 0.5  # no torch parameters to weigh: even


def test_threads_go_by_share_and_the_background_takes_them_all_once_the_caller_waits() -> None:
    torch.set_num_threads(4)
    want = _draw(7, steps=40)(lambda d, t: None, lambda: False)
    counts: list[int] = []

    def draw(progress: Callable[[int, int], None], should_cancel: Callable[[], bool]) -> torch.Tensor:
        def watched() -> bool:
            stop = should_cancel()  # may widen this thread first
            counts.append(torch.get_num_threads())
            return stop

        return _draw(7, steps=40)(progress, watched)

    draw_in_background = BackgroundDraw(
        draw, concurrent=True, progress=lambda d, t: None, should_cancel=lambda: False, background_share=0.25
    )
    with draw_in_background:
        assert draw_in_background.background_threads == 1 and torch.get_num_threads() == 3
        got = draw_in_background.result()  # the caller has nothing to do: it waits at once
    assert torch.equal(got, want)  # widening mid-chain changes no sample
    assert counts[-1] == 4 and set(counts) <= {1, 4}
    assert torch.get_num_threads() == 4
