"""A whole batch: skip what is done, run the rest on an engine, report each item, write the summary."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from .items import BatchItem
from .records import ItemOutcome, write_summary
from .runner import JobOptions, run_local, split_done

Engine = Callable[[list[BatchItem], JobOptions, Path], Iterator[ItemOutcome]]


@dataclass
class BatchReport:
    """Every item's outcome in input order, and the summary files written."""

    outcomes: list[ItemOutcome]
    summary: list[Path] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(outcome.status == status for outcome in self.outcomes)

    @property
    def failed(self) -> int:
        return self.count("failed") + self.count("pending")


def run_batch_job(
    items: list[BatchItem],
    options: JobOptions,
    out_root: Path,
    *,
    engine: Engine = run_local,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> BatchReport:
    """Run the items not done yet on ``engine`` and write ``summary.csv`` — also when the engine stops
    half-way (the items it never reached are ``pending`` there, and the next run does them)."""
    out, err = out or sys.stdout, err or sys.stderr
    pending, skipped = split_done(items, out_root, options.fingerprint())
    if options.switches:
        switches = ", ".join(f"{name}={value}" for name, value in options.switches.items())
        print(f"every photo runs with {switches}", file=out)
    if skipped:
        print(f"{len(skipped)} of {len(items)} photos were done by an earlier run: skipped", file=out)
    finished: dict[str, ItemOutcome] = {outcome.id: outcome for outcome in skipped}
    report = BatchReport([])
    try:
        if pending:
            for outcome in engine(pending, options, out_root):
                finished[outcome.id] = outcome
                _print_outcome(outcome, len(finished), len(items), out, err)
    finally:
        report.outcomes = [finished.get(item.id) or _not_run(item, out_root) for item in items]
        report.summary = write_summary(report.outcomes, out_root)
    done = report.count("ok") + report.count("skipped")
    print(f"{done} of {len(items)} photos reconstructed into {out_root}; summary: {report.summary[0]}", file=out)
    return report


def _print_outcome(outcome: ItemOutcome, index: int, total: int, out: TextIO, err: TextIO) -> None:
    if outcome.status == "ok":
        print(f"[{index}/{total}] {outcome.image} -> {outcome.output} ({outcome.seconds_total:.2f} s)", file=out)
    else:
        print(f"[{index}/{total}] {outcome.image}: failed", file=out)
        message = f"{outcome.image}: error ({outcome.error_code}): {outcome.error_message}"
        print(f"\n{message}\n  fix: {outcome.fix}", file=err)


def _not_run(item: BatchItem, out_root: Path) -> ItemOutcome:
    return ItemOutcome(id=item.id, image=item.image, status="pending", output=str(out_root / item.id),
                       error_message="not run: the batch stopped before this item")  # fmt: skip
