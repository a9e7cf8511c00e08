"""Batch inputs as a researcher gives them: a folder, a file list, a CSV or Parquet manifest."""

from __future__ import annotations

from pathlib import Path

import pytest

from inference_server.batch.items import BatchItem, discover_items
from inference_server.errors import BadRequestError


def _touch(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"x")


def test_folder_lists_photos_by_name_and_ignores_other_files(tmp_path: Path) -> None:
    _touch(tmp_path, "b.JPG", "a.png", "notes.txt", "c.webp")
    (tmp_path / "sub.jpg").mkdir()  # a folder with a photo suffix is not a photo
    items = discover_items(tmp_path)
    assert [i.id for i in items] == ["a", "b", "c"]
    assert items[1].image == str(tmp_path / "b.JPG")


def test_same_stem_gets_numbered_ids_in_input_order(tmp_path: Path) -> None:
    _touch(tmp_path, "face.jpg", "face.png")
    assert [i.id for i in discover_items(tmp_path)] == ["face", "face-2"]


def test_file_list_resolves_relative_paths_and_skips_comments(tmp_path: Path) -> None:
    listing = tmp_path / "lists" / "photos.txt"
    listing.parent.mkdir()
    listing.write_text("# studio day 1\n../shots/one.jpg\n\n/data/two.png\n../other/one.jpg\n", encoding="utf-8")
    items = discover_items(listing)
    assert items == [
        BatchItem("one", str(listing.parent / "../shots/one.jpg")),
        BatchItem("two", "/data/two.png"),
        BatchItem("one-2", str(listing.parent / "../other/one.jpg")),
    ]


def test_csv_manifest_with_and_without_ids(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("ID,Image\nsubject 01,a.jpg\nsubject_02,/abs/b.jpg\n", encoding="utf-8")
    assert discover_items(manifest) == [
        BatchItem("subject 01", str(tmp_path / "a.jpg")),
        BatchItem("subject_02", "/abs/b.jpg"),
    ]
    manifest.write_text("path,label\nx/a.jpg,1\ny/a.jpg,2\n", encoding="utf-8")
    assert [i.id for i in discover_items(manifest)] == ["a", "a-2"]


def test_parquet_manifest(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    manifest = tmp_path / "m.parquet"
    pq.write_table(pa.table({"photo": ["p/1.jpg", "/q/2.jpg"], "frame": [1, 2]}), manifest)
    assert discover_items(manifest) == [BatchItem("1", str(tmp_path / "p/1.jpg")), BatchItem("2", "/q/2.jpg")]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("file,label\na.jpg,1\n", "no photo column"),
        ("image\na.jpg\n\n", None),  # a blank line at the end is not a row
        ("image,id\na.jpg,x\nb.jpg,x\n", "appears twice"),
        ("image,id\na.jpg,../escape\n", "cannot name an output folder"),
        ("image,id\n,x\n", "row 2: the 'image' cell is empty"),
        ("image\n", "names no photos"),
    ],
)
def test_bad_manifests_say_what_is_wrong(tmp_path: Path, text: str, words: str | None) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text(text, encoding="utf-8")
    if words is None:
        assert len(discover_items(manifest)) == 1
        return
    with pytest.raises(BadRequestError) as info:
        discover_items(manifest)
    assert words in info.value.message and info.value.fix


def test_missing_empty_and_unknown_inputs(tmp_path: Path) -> None:
    for source, words in [
        (tmp_path / "nowhere", "does not exist"),
        (tmp_path, "no photos"),
        (tmp_path / "photos.zip", "neither a folder"),
    ]:
        if source.suffix == ".zip":
            source.write_bytes(b"PK")
        with pytest.raises(BadRequestError, match=words):
            discover_items(source)
    binary = tmp_path / "list.txt"
    binary.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(BadRequestError, match="not a UTF-8"):
        discover_items(binary)
