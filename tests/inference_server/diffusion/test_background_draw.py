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


def test_the_background_draw_gives_the_inline_samples_and_restores_the_threads(two_threads: int) -> None:
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
        assert torch.get_num_threads() == two_threads  # the caller's own count once the result is in
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


def test_each_side_keeps_its_share_for_the_whole_draw_so_runs_repeat_bit_for_bit() -> None:
    """A hand-back timed by whichever chain ends first made runs differ where a step's last bits depend on the
    thread count (batch 6 or 10 here): the split is fixed, and the same request draws the same samples."""
    torch.set_num_threads(4)
    background_counts: list[int] = []
    caller_counts: list[int] = []
    background_chain, caller_chain = _draw(7, steps=12), _draw(8, steps=40)  # built here: torch's global RNG

    def background(progress: Callable[[int, int], None], should_cancel: Callable[[], bool]) -> torch.Tensor:
        def watched() -> bool:
            background_counts.append(torch.get_num_threads())
            return should_cancel()

        return background_chain(progress, watched)

    def run() -> tuple[torch.Tensor, torch.Tensor]:
        draw = BackgroundDraw(
            background, concurrent=True, progress=lambda d, t: None, should_cancel=lambda: False, background_share=0.25
        )
        with draw:
            assert draw.background_threads == 1

            def caller_check() -> bool:
                caller_counts.append(torch.get_num_threads())
                return False

            mine = caller_chain(lambda d, t: None, caller_check)
            return mine, draw.result()

    first, again = run(), run()
    assert set(background_counts) == {1} and set(caller_counts) == {3}
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert torch.get_num_threads() == 4


def test_a_caller_whose_steps_split_their_rows_keeps_all_its_threads(two_threads: int) -> None:
    """With ``caller_keeps_threads`` (the pipeline's default where the fused steps cut their rows into
    single-thread blocks) the background chain still gets its share, the caller keeps its count for its blocks,
    and both get the samples they draw alone."""
    chain = _draw(9, steps=8)
    alone = BackgroundDraw(chain, concurrent=False, progress=lambda d, t: None, should_cancel=lambda: False)
    want = alone.result()
    counts: list[int] = []

    def background(progress: Callable[[int, int], None], should_cancel: Callable[[], bool]) -> torch.Tensor:
        counts.append(torch.get_num_threads())
        return chain(progress, should_cancel)

    draw = BackgroundDraw(background, concurrent=True, progress=lambda d, t: None, should_cancel=lambda: False,
                          background_share=0.2, caller_keeps_threads=True)  # fmt: skip
    with draw:
        assert draw.caller_threads == two_threads and torch.get_num_threads() == two_threads
        got = draw.result()
    assert counts == [split_threads(two_threads, 0.2)] and torch.get_num_threads() == two_threads
    # Within rounding: a step's last bits may depend on the thread count it runs with.
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5 * float(want.abs().max()))
