"""A batch's rows split into blocks, one block per thread: the fused denoiser step on CPU.

Torch's own intra-op threads do not pay on the denoiser step at batch 100: it is some 130 kernels, most of them
small, each ending at an OpenMP barrier, and on the quiet 2-core EPYC the fused IdGen step took 24.7 ms on one
thread and 24.1 ms on two (benchmarks/README.md). The step's rows are independent of one another (one shared
time and condition), so the batch can be cut instead: two blocks of 50 rows, each on a single thread of its
own, cost 13.3-13.9 ms each (IdGen; ExpGen 4.5-4.8 ms against 7.2-8.2 ms for 100 rows), and run side by side.

A block's GEMMs see fewer rows, so its last bits may differ from the whole batch's (measured 4.9e-7 of the
output's scale for IdGen, 3.1e-7 for ExpGen): the same float tolerance as any change of thread count. The plan
depends only on the rows and the caller's thread count, so the same request repeats bit for bit.

Switch: ``OFER_CPU_ROW_SPLIT`` (``row_split_requested``), on when unset; ``0`` runs the batch whole on the
caller's threads.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor

import torch

from ..env_switch import read_switch

__all__ = ["MIN_BLOCK_ROWS", "ROW_SPLIT_ENV", "RowLanes", "plan_blocks", "row_split_requested"]

ROW_SPLIT_ENV = "OFER_CPU_ROW_SPLIT"
#: Fewest rows per block. Halving pays (a step at batch 50 costs 55 % of one at batch 100 on one thread);
#: smaller blocks were not measured: with 16 threads and 100 rows this gives 4 blocks of 25, 4 threads each.
MIN_BLOCK_ROWS = 25

Step = Callable[[torch.Tensor], torch.Tensor]


def row_split_requested(environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``OFER_CPU_ROW_SPLIT`` leaves the row split on (on when unset); other values are errors."""
    return read_switch(ROW_SPLIT_ENV, environ) is not False


def plan_blocks(rows: int, threads: int, min_rows: int = MIN_BLOCK_ROWS) -> list[tuple[slice, int]]:
    """(rows of the block, its intra-op threads) per block: as many blocks as threads allow with at least
    ``min_rows`` rows each, rows and threads shared out evenly (the first blocks take the remainders)."""
    blocks = max(1, min(threads, rows // max(min_rows, 1)))
    if blocks == 1:
        return [(slice(0, rows), max(threads, 1))]
    plan, start = [], 0
    for i in range(blocks):
        size = rows // blocks + (1 if i < rows % blocks else 0)
        plan.append((slice(start, start + size), threads // blocks + (1 if i < threads % blocks else 0)))
        start += size
    return plan


def _on_threads(threads: int, step: Step, rows: torch.Tensor) -> torch.Tensor:
    """``step(rows)`` in a lane thread: its thread count and grad mode are its own, set here."""
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    with torch.no_grad():
        return step(rows)


class RowLanes:
    """Runs a row-wise step over blocks of a batch on lane threads kept for the life of the object; the caller
    runs the first block itself, on its share of its own threads, and gets them back afterwards."""

    def __init__(self, min_rows: int = MIN_BLOCK_ROWS) -> None:
        self.min_rows = min_rows
        self._pool: ThreadPoolExecutor | None = None
        self._workers = 0
        self.last_blocks = 0  # blocks of the last call (0: none yet), for the result's meta

    def _lanes(self, workers: int) -> ThreadPoolExecutor:
        if self._pool is None or self._workers != workers:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
            self._pool = ThreadPoolExecutor(workers, thread_name_prefix="ofer-rows")
            self._workers = workers
        return self._pool

    def run(self, step: Step, x: torch.Tensor) -> torch.Tensor:
        """``step(x)`` with x's rows (dim 0) split by :func:`plan_blocks` over the caller's thread count."""
        threads = torch.get_num_threads()
        plan = plan_blocks(x.shape[0], threads, self.min_rows)
        self.last_blocks = len(plan)
        if len(plan) == 1:
            return step(x)
        pool = self._lanes(len(plan) - 1)
        futures: list[Future[torch.Tensor]] = [pool.submit(_on_threads, n, step, x[rows]) for rows, n in plan[1:]]
        try:
            torch.set_num_threads(plan[0][1])
            first = step(x[plan[0][0]])
        finally:
            try:  # every block is collected, also when the caller's failed: none may outlive the call
                outputs = [future.result() for future in futures]
            finally:
                # Last, after the lanes' own settings: torch's default for threads started later (the
                # server's next job) follows the latest call of any thread.
                torch.set_num_threads(threads)
        return torch.cat([first, *outputs])

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
