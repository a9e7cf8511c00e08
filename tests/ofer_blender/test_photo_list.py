"""Which chosen files join the extra-photo list, and what a request sends (no bpy)."""

from __future__ import annotations

import importlib
from types import ModuleType

import pytest

from inference_server.protocol import MAX_EXTRA_PHOTOS, Request, parse_reconstruct_args


@pytest.fixture
def photo_list(addon: ModuleType) -> ModuleType:
    return importlib.import_module(addon.__name__ + ".photo_list")


def test_images_join_once_and_never_the_main_photo(photo_list: ModuleType) -> None:
    change = photo_list.add_photos(
        ["/p/a.jpg"],
        ["/p/b.PNG", "/p/a.jpg", "/p/./b.PNG", "/p/main.jpg", "/p/notes.txt", "/p/c.webp"],
        main="/p/main.jpg",
    )
    assert change.added == ["/p/b.PNG", "/p/c.webp"]
    assert dict(change.skipped) == {
        "/p/a.jpg": "already in the list",
        "/p/./b.PNG": "already in the list",
        "/p/main.jpg": "it is the main photo",
        "/p/notes.txt": change.skipped[3][1],
    }
    assert "not a photo file" in change.skipped[3][1]
    assert change.summary().startswith("Added 2 photos; skipped a.jpg: already in the list")


def test_the_list_stops_at_the_workers_limit(photo_list: ModuleType) -> None:
    existing = [f"/p/{i}.jpg" for i in range(MAX_EXTRA_PHOTOS - 1)]
    change = photo_list.add_photos(existing, ["/p/x.jpg", "/p/y.jpg"], main=None)
    assert change.added == ["/p/x.jpg"] and "list is full" in change.skipped[0][1]


def test_the_request_drops_the_main_photo_and_repeats_and_the_worker_accepts_it(photo_list: ModuleType) -> None:
    photos = photo_list.request_photos(["/p/a.jpg", "/p/main.jpg", "/p/a.jpg", "", "/p/b.jpg"], main="/p/main.jpg")
    assert photos == ["/p/a.jpg", "/p/b.jpg"]
    args = parse_reconstruct_args(Request("1", "reconstruct", {"image": "/p/main.jpg", "output": "/tmp/r.npz",
                                                               "photos": photos}))  # fmt: skip
    assert args.photos == ("/p/a.jpg", "/p/b.jpg")
