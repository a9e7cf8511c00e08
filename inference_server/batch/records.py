"""What a batch remembers: one ``item.json`` per item (what resuming reads) and the summary table.

An item is *done* when its folder holds ``item.json`` with status ``ok``, the same job fingerprint (the
reconstruction settings and the speed switches that change the samples, ``speed_switches.py``; other settings
mean other results) and every result file it lists (``result.npz``,
or ``face_N/result.npz`` with ``--all-faces``). ``item.json`` is written
last and atomically, after the result file and its exports, so a run killed half-way leaves the item not
done. Failed items are recorded too (code, message, fix) and are tried again by the next run.

The summary (``summary.csv``, plus ``summary.parquet`` where pyarrow is installed) has one row per item of
the input: ``ok`` and ``failed`` for this run's work, ``skipped`` for items done by an earlier run (their
timings are that run's).
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ITEM_FILE = "item.json"
ITEM_FORMAT = "ofer-batch-item/1"
RESULT_FILE = "result.npz"
SUMMARY_CSV = "summary.csv"
SUMMARY_PARQUET = "summary.parquet"
#: Pipeline stages first, in their order, then the batch's own export step.
STAGE_ORDER = ("load", "detect", "encode", "sample_shapes", "rank", "sample_expressions", "decode", "write", "export")
BASE_COLUMNS = ("id", "image", "status", "error_code", "error_message", "output", "results", "seconds_total")
TAIL_COLUMNS = ("worker", "finished_at")


@dataclass
class ItemOutcome:
    """How one item went. ``status``: ``ok``, ``failed`` or ``skipped`` (done by an earlier run)."""

    id: str
    image: str
    status: str
    output: str
    error_code: str = ""
    error_message: str = ""
    fix: str = ""
    seconds_total: float = 0.0
    seconds: dict[str, float] = field(default_factory=dict)
    worker: str = ""
    finished_at: str = ""
    fingerprint: str = ""
    #: Result files relative to ``output`` (one per face with ``--all-faces``).
    results: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps({"format": ITEM_FORMAT} | asdict(self), ensure_ascii=False, indent=1)

    @classmethod
    def from_json(cls, text: str) -> ItemOutcome:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("format") != ITEM_FORMAT:
            raise ValueError("not an ofer batch item record")
        data.pop("format")
        return cls(**data)

    def table_row(self, stages: tuple[str, ...]) -> dict[str, Any]:
        row: dict[str, Any] = {name: getattr(self, name) for name in BASE_COLUMNS}
        row["results"] = ";".join(self.results)
        row["seconds_total"] = round(self.seconds_total, 4)
        for stage in stages:
            row[f"seconds_{stage}"] = round(self.seconds[stage], 4) if stage in self.seconds else None
        return row | {name: getattr(self, name) for name in TAIL_COLUMNS}


def write_item_record(outcome: ItemOutcome) -> None:
    """``item.json`` in the item's folder, atomically (temporary file, then rename)."""
    folder = Path(outcome.output)
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".item-", suffix=".json", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(outcome.to_json())
        os.replace(tmp, folder / ITEM_FILE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_done(folder: Path, fingerprint: str) -> ItemOutcome | None:
    """The earlier outcome when the item in ``folder`` is done with these settings, else None."""
    try:
        outcome = ItemOutcome.from_json((folder / ITEM_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):  # absent, half-written by another tool, or another format
        return None
    if outcome.status != "ok" or outcome.fingerprint != fingerprint:
        return None
    if not outcome.results or not all((folder / name).is_file() for name in outcome.results):
        return None
    return outcome


def summary_stages(outcomes: list[ItemOutcome]) -> tuple[str, ...]:
    seen = {stage for outcome in outcomes for stage in outcome.seconds}
    known = [stage for stage in STAGE_ORDER if stage in seen]
    return tuple(known + sorted(seen - set(STAGE_ORDER)))


def write_summary(outcomes: list[ItemOutcome], folder: Path) -> list[Path]:
    """The summary table in ``folder`` (CSV always, Parquet when pyarrow is importable); returns the paths."""
    stages = summary_stages(outcomes)
    rows = [outcome.table_row(stages) for outcome in outcomes]
    columns = [*BASE_COLUMNS, *(f"seconds_{s}" for s in stages), *TAIL_COLUMNS]
    folder.mkdir(parents=True, exist_ok=True)
    paths = [_write_csv(folder / SUMMARY_CSV, columns, rows)]
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return paths
    table = pa.Table.from_pylist(rows, schema=_arrow_schema(pa, columns))
    tmp = folder / f".{SUMMARY_PARQUET}.tmp"
    pq.write_table(table, tmp)
    os.replace(tmp, folder / SUMMARY_PARQUET)
    return [*paths, folder / SUMMARY_PARQUET]


def _write_csv(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
    os.replace(tmp, path)
    return path


def _arrow_schema(pa: Any, columns: list[str]) -> Any:
    def kind(name: str) -> Any:
        return pa.float64() if name.startswith("seconds_") else pa.string()

    return pa.schema([(name, kind(name)) for name in columns])
