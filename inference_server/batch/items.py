"""What a batch works on: one :class:`BatchItem` per photo, from a folder, a file list or a manifest.

Inputs (``ofer-worker batch INPUT``):

- a **folder**: every photo directly in it (by suffix), sorted by name;
- a **file list** (``.txt`` / ``.lst``): one photo path a line; blank lines and ``#`` comments ignored;
- a **manifest** (``.csv`` / ``.parquet``): a column ``image`` (or ``path`` / ``photo``) and optionally ``id``.

Relative paths in a list or manifest are relative to the file that names them. Each item's id names its
output sub-folder, so it must be stable between runs (resuming depends on it) and unique: ids default to the
photo's file stem; stems that clash get ``-2``, ``-3``… in the order the input lists them. A manifest's own
``id`` column is taken as given (and must be unique).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..errors import BadRequestError

#: Photo suffixes a folder input picks up.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp"})
LIST_SUFFIXES = frozenset({".txt", ".lst"})
MANIFEST_SUFFIXES = frozenset({".csv", ".parquet", ".pq"})
#: Manifest columns accepted for the photo path, in order of preference.
IMAGE_COLUMNS = ("image", "path", "photo")
#: A safe output sub-folder name: no separators, no leading dot.
_ID_PATTERN = re.compile(r"^\w[\w.\- ]{0,199}$")

_INPUT_FIX = (
    "Give a folder of photos, a .txt file list (one path a line), or a .csv / .parquet manifest with an 'image' column."
)


@dataclass(frozen=True)
class BatchItem:
    """One photo of a batch and the name of its output sub-folder."""

    id: str
    image: str

    def to_row(self) -> dict[str, str]:
        return {"id": self.id, "image": self.image}


def discover_items(source: Path) -> list[BatchItem]:
    """The items named by ``source`` (folder, list or manifest), or a ``bad_request`` error saying why not."""
    if source.is_dir():
        photos = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not photos:
            raise BadRequestError(f"no photos ({', '.join(sorted(IMAGE_SUFFIXES))}) in {source}", _INPUT_FIX)
        return _with_stem_ids([str(p) for p in photos])
    if not source.is_file():
        raise BadRequestError(f"{source} does not exist", _INPUT_FIX)
    suffix = source.suffix.lower()
    if suffix in LIST_SUFFIXES:
        items = _with_stem_ids(_read_list(source))
    elif suffix == ".csv":
        items = _manifest_items(source, _read_csv(source))
    elif suffix in (".parquet", ".pq"):
        items = _manifest_items(source, _read_parquet(source))
    else:
        raise BadRequestError(f"{source} is neither a folder, a file list nor a manifest", _INPUT_FIX)
    if not items:
        raise BadRequestError(f"{source} names no photos", _INPUT_FIX)
    return items


def _resolve(base: Path, value: str) -> str:
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else base / path)


def _read_list(source: Path) -> list[str]:
    text = _read_text(source)
    lines = (line.strip() for line in text.splitlines())
    return [_resolve(source.parent, line) for line in lines if line and not line.startswith("#")]


def _read_text(source: Path) -> str:
    try:
        return source.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise BadRequestError(f"{source} is not a UTF-8 text file", _INPUT_FIX) from None


def _read_csv(source: Path) -> list[dict[str, str]]:
    reader = csv.DictReader(_read_text(source).splitlines())
    return [{(k or "").strip().lower(): (v or "").strip() for k, v in row.items()} for row in reader]


def _read_parquet(source: Path) -> list[dict[str, str]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise BadRequestError(
            f"reading {source} needs pyarrow, which this worker does not have",
            "Install the Ray extra (`pip install 'ofer-blender-worker[ray]'`) or give a .csv manifest.",
        ) from None
    try:
        table = pq.read_table(source)
    except Exception as exc:  # pyarrow raises its own error types for files that are not Parquet
        raise BadRequestError(f"{source} is not a readable Parquet file ({exc})", _INPUT_FIX) from None
    columns = {name.strip().lower(): name for name in table.column_names}
    return [
        {key: "" if row[name] is None else str(row[name]) for key, name in columns.items()} for row in table.to_pylist()
    ]


def _manifest_items(source: Path, rows: list[dict[str, str]]) -> list[BatchItem]:
    if not rows:
        return []
    column = next((c for c in IMAGE_COLUMNS if c in rows[0]), None)
    if column is None:
        raise BadRequestError(
            f"{source} has no photo column (columns: {', '.join(sorted(rows[0])) or 'none'})",
            f"Name the column of photo paths one of: {', '.join(IMAGE_COLUMNS)}.",
        )
    for line, row in enumerate(rows, start=2):
        if not row.get(column):
            raise BadRequestError(f"{source}, row {line}: the {column!r} cell is empty", "Fill in or delete the row.")
    images = [_resolve(source.parent, row[column]) for row in rows]
    if "id" not in rows[0]:
        return _with_stem_ids(images)
    ids = [row["id"] for row in rows]
    for line, item_id in enumerate(ids, start=2):
        _check_id(item_id, f"{source}, row {line}")
    seen: set[str] = set()
    for item_id in ids:
        if item_id in seen:
            raise BadRequestError(f"{source}: the id {item_id!r} appears twice", "Give every row its own id.")
        seen.add(item_id)
    return [BatchItem(item_id, image) for item_id, image in zip(ids, images, strict=True)]


def _check_id(item_id: str, where: str) -> None:
    if not _ID_PATTERN.match(item_id) or item_id in (".", ".."):
        raise BadRequestError(
            f"{where}: the id {item_id!r} cannot name an output folder",
            "Start with a letter or digit; then letters, digits, '_', '-', '.' and spaces (no '/'), 200 at most.",
        )


def _with_stem_ids(images: Iterable[str]) -> list[BatchItem]:
    items: list[BatchItem] = []
    used: set[str] = set()
    for image in images:
        stem = _safe_stem(Path(image).stem)
        item_id, count = stem, 1
        while item_id in used:
            count += 1
            item_id = f"{stem}-{count}"
        used.add(item_id)
        items.append(BatchItem(item_id, image))
    return items


def _safe_stem(stem: str) -> str:
    cleaned = re.sub(r"[^\w.\- ]", "_", stem).lstrip(".") or "photo"
    return cleaned[:200]
