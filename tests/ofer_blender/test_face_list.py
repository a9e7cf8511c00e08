"""The face list shown in Blender before Reconstruct (face_list.py), with the REAL worker's faces command."""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from PIL import Image

from inference_server.preprocess.official_reference import find_fixtures

FIXTURES = find_fixtures()
LEFT, RIGHT = "model-fashion-beauty-black-thumb", "smoke-young-human-model-thumb"
WORKER = [sys.executable, "-u", "-m", "inference_server", "serve"]


class ImageStandIn(dict[str, Any]):
    """An Image datablock's custom properties behave as a mapping."""


@pytest.fixture
def face_list(addon: ModuleType) -> ModuleType:
    return importlib.import_module(addon.__name__ + ".face_list")


@pytest.fixture
def face_marks(addon: ModuleType) -> ModuleType:
    return importlib.import_module(addon.__name__ + ".face_marks")


def test_the_faces_command_is_the_workers_own_command_line(face_list: ModuleType) -> None:
    assert face_list.faces_command(WORKER, "/p/a b.jpg") == [*WORKER[:-1], "faces", "/p/a b.jpg", "--json"]
    conda = ["conda", "run", "-n", "ofer", "ofer-worker", "serve"]
    assert face_list.faces_command(conda, "x.png")[-4:] == ["ofer-worker", "faces", "x.png", "--json"]
    with pytest.raises(face_list.FaceListError, match="'serve'"):
        face_list.faces_command(["my-worker"], "x.png")


@pytest.mark.skipif(FIXTURES is None, reason="shared/fixtures/official-preprocessing is not on this machine")
def test_two_faces_listed_by_the_real_worker_and_one_chosen(
    face_list: ModuleType, face_marks: ModuleType, tmp_path: Path
) -> None:
    assert FIXTURES is not None
    left = np.asarray(Image.open(FIXTURES / "images" / f"{LEFT}.jpg").convert("RGB"))
    right = np.asarray(Image.open(FIXTURES / "images" / f"{RIGHT}.jpg").convert("RGB"))
    photo = tmp_path / "two faces.png"
    Image.fromarray(np.concatenate([left, right], axis=1)).save(photo)

    faces = face_list.find_faces(WORKER, dict(os.environ), str(photo))
    assert [f.index for f in faces] == [0, 1]
    centres = [(f.box[0] + f.box[2]) / 2 for f in faces]
    assert centres[0] > left.shape[1] > centres[1]  # nearest the centre first: the right-hand portrait
    assert all("several_faces" in f.warnings for f in faces)
    assert faces[0].label().startswith("Face 0 (") and "several_faces" in faces[0].label()

    image: Any = ImageStandIn()
    face_list.store(image, faces)
    assert face_list.stored(image) == faces and face_list.chosen(image) is None
    assert face_marks.request_marks(image) == {}  # face 0 by default
    image["ofer_box"] = [1.0, 2.0, 3.0, 4.0]
    face_list.choose(image, 1)
    assert face_marks.request_marks(image) == {"face": 1}  # the box that would override it is gone
    with pytest.raises(face_list.FaceListError, match="no face 2"):
        face_list.choose(image, 2)
    face_list.store(image, faces[:1])  # listing again forgets the old choice
    assert face_list.chosen(image) is None


def test_a_photo_without_a_face_gives_the_workers_reason(face_list: ModuleType, tmp_path: Path) -> None:
    photo = tmp_path / "grey.png"
    Image.fromarray(np.full((200, 200, 3), 128, np.uint8)).save(photo)
    with pytest.raises(face_list.FaceListError, match="no_face"):
        face_list.find_faces(WORKER, dict(os.environ), str(photo))
    not_an_image = tmp_path / "notes.jpg"
    not_an_image.write_text("hello")
    with pytest.raises(face_list.FaceListError, match="bad_image"):
        face_list.find_faces(WORKER, dict(os.environ), str(not_an_image))


def test_a_damaged_list_is_ignored_and_bad_output_is_reported(face_list: ModuleType) -> None:
    image: Any = ImageStandIn(ofer_faces="{not json")
    assert face_list.stored(image) == []
    with pytest.raises(face_list.FaceListError, match="could not be read"):
        face_list.parse_faces(json.dumps({"faces": [{"box": [1, 2]}]}))
