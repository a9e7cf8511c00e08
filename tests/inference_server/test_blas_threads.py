"""numpy's OpenBLAS on one thread inside the fit and texture stages, restored afterwards."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from inference_server.blas_threads import blas_threads, one_blas_thread

pytestmark = pytest.mark.skipif(blas_threads() is None, reason="numpy's OpenBLAS is not found in this build")


def test_one_thread_inside_and_the_previous_count_after_even_on_error() -> None:
    before = blas_threads()
    with one_blas_thread():
        assert blas_threads() == 1
        with one_blas_thread():  # nested (the texture inside a fit, a stage calling another)
            assert blas_threads() == 1
        assert blas_threads() == 1
    assert blas_threads() == before
    with pytest.raises(RuntimeError), one_blas_thread():
        raise RuntimeError("a failing stage")
    assert blas_threads() == before


def test_concurrent_stages_restore_the_count_once_the_last_leaves() -> None:
    before = blas_threads()
    inside, release = threading.Barrier(3), threading.Event()
    seen: list[int | None] = []

    def stage() -> None:
        with one_blas_thread():
            inside.wait(timeout=10)
            release.wait(timeout=10)
            seen.append(blas_threads())

    workers = [threading.Thread(target=stage) for _ in range(2)]
    for w in workers:
        w.start()
    inside.wait(timeout=10)
    assert blas_threads() == 1
    release.set()
    for w in workers:
        w.join(timeout=10)
    assert seen == [1, 1] and blas_threads() == before


def test_decorated_solves_give_lapack_s_answers() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(100, 6, 6))
    a = a @ a.transpose(0, 2, 1) + 6 * np.eye(6)
    b = rng.normal(size=(100, 6, 1))

    @one_blas_thread()
    def solve() -> np.ndarray:
        assert blas_threads() == 1
        return np.asarray(np.linalg.solve(a, b))

    np.testing.assert_allclose(np.einsum("bij,bjk->bik", a, solve()), b, rtol=0, atol=1e-10)
