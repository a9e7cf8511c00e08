"""Closed eyes in the texture (texture/skin_cover.py's ``closed_eyes_x``): docs/texture.md, "Closed eyes".

An eye zone that shows no lashes, iris or sclera seeds a skin-coloured occluder. Closed lids show exactly
that, so a face with closed eyes lost the skin around them (and, grown by colour, cheeks) as "a hand". The fit
reads each eye's lids (fit/gaze.py); an eye it reads as closed no longer seeds. Each case is reconstructed as
the CLI does (DEMO assets, fast preset), and its texture made before (every eye zone may seed) and after:

1. DEMO renders with both eyes closed (ICT's ``eyeBlink_L`` and ``_R`` on top of a random expression): texels
   left out as occluder, texels from the photo;
2. a real hand of the face's tone pasted over one eye (benchmarks/fit_hand_over_eye.py's renders, seeds
   60000+): how often the fit reads the covered eye as closed, and the hand's texels taken from the photo;
3. the shared fixture photos: texels from the photo and left out, and the eyes the fit reads closed.

Run: ``nice -n 10 .venv/bin/python benchmarks/texture_closed_eyes.py [--cases 8]`` (~3 minutes on 2 free cores).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from inference_server.fit.camera import project
from inference_server.fit.synthetic import closed_eyes_expression, ground_truth_texture, render_case, with_pasted_hand
from inference_server.flame.layer import FlameLayer
from inference_server.flame.model_data import FlameModelData
from inference_server.preprocess.official_reference import find_fixtures
from inference_server.texture import stage
from inference_server.texture.stage import Texture, TextureInputs, make_texture

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "inference_server" / "texture"))
sys.path.insert(0, str(ROOT / "benchmarks"))
from test_hands_in_texture import _from_inside  # noqa: E402
from texture_hue import captured_texture_inputs, fixture_table  # noqa: E402

HAND = ROOT / "tests" / "inference_server" / "texture" / "despair_hand_annotation.json"


@contextmanager
def every_eye_seeds() -> Iterator[None]:
    """The texture as it was: an eye the fit reads as closed seeds a skin-coloured occluder like any other."""
    saved = stage.closed_eyes_x
    stage.closed_eyes_x = lambda head: ()
    try:
        yield
    finally:
        stage.closed_eyes_x = saved


def before_after(rgb: np.ndarray, head: TextureInputs) -> tuple[Texture, Texture]:
    with every_eye_seeds():
        old = make_texture(rgb, head)
    return old, make_texture(rgb, head)


def reconstructed(reconstructor: Any, image: np.ndarray, tmp: Path) -> tuple[np.ndarray, TextureInputs] | None:
    photo = tmp / "photo.png"
    cv2.imwrite(str(photo), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return captured_texture_inputs(reconstructor, photo, tmp / "r.npz")


def closed_eye_table(reconstructor: Any, head: FlameModelData, layer: FlameLayer, cases: int, tmp: Path) -> None:
    truth = ground_truth_texture(head)
    print("closed eyes (DEMO renders) | eyes read closed | left out before → after | from the photo before → after")
    for i in range(cases):
        case = render_case(head, layer, truth, np.random.default_rng(800 + i), max_yaw=20,
                           add_expression=closed_eyes_expression(head))  # fmt: skip
        got = reconstructed(reconstructor, case.image, tmp)
        if got is None:
            print(f"  seed {800 + i}: no texture (the fit is not trusted)")
            continue
        rgb, inputs = got
        old, new = before_after(rgb, inputs)
        print(f"  seed {800 + i}: {sum(inputs.eyes_closed)} | {100 * old.occluded.mean():5.1f} → "
              f"{100 * new.occluded.mean():5.1f} % | {100 * old.from_photo.mean():5.1f} → "
              f"{100 * new.from_photo.mean():5.1f} %")  # fmt: skip


def hand_over_eye_table(reconstructor: Any, head: FlameModelData, layer: FlameLayer, cases: int, tmp: Path) -> None:
    fixtures = find_fixtures()
    if fixtures is None:
        print("no shared fixtures on this machine: no hand")
        return
    note = json.loads(HAND.read_text())
    source = cv2.cvtColor(cv2.imread(str(fixtures / "images" / note["image"])), cv2.COLOR_BGR2RGB)
    truth = ground_truth_texture(head)
    print("hand over one eye | covered eye read closed | hand texels taken before → after, of those under it")
    for i in range(cases):
        case = render_case(head, layer, truth, np.random.default_rng(60000 + i), max_yaw=25)
        xy = project(case.landmarks, case.pose, case.camera)[:, :2]
        covered = (range(36, 42), range(42, 48))[i % 2]
        eye = xy[list(covered)].mean(axis=0)
        iod = float(np.linalg.norm(xy[36:42].mean(axis=0) - xy[42:48].mean(axis=0)))
        image, inside = with_pasted_hand(case, source, np.asarray(note["polygon"], np.float64),
                                         eye + np.array([0.0, 0.5 * iod]))  # fmt: skip
        got = reconstructed(reconstructor, image, tmp)
        if got is None:
            print(f"  seed {60000 + i}: no texture (the fit is not trusted)")
            continue
        rgb, inputs = got
        read = stage.closed_eyes_x(inputs)
        hand_closed = any(abs(x - eye[0]) < 0.5 * iod for x in read)
        old, new = before_after(rgb, inputs)
        (taken_old, under), (taken_new, _) = _from_inside(old, inputs, inside), _from_inside(new, inputs, inside)
        print(
            f"  seed {60000 + i}: {'yes' if hand_closed else 'no '} ({len(read)} closed) | "
            f"{taken_old} → {taken_new} of {under}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(2)
    from inference_server.assets_config import resolve_assets
    from inference_server.demo.head import generate_demo_head
    from inference_server.pipeline import Reconstructor

    reconstructor = Reconstructor(resolve_assets({}), device="cpu")
    head = generate_demo_head()
    layer = FlameLayer(head, dtype=torch.float64)
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        closed_eye_table(reconstructor, head, layer, args.cases, tmp)
        hand_over_eye_table(reconstructor, head, layer, args.cases, tmp)
    with tempfile.TemporaryDirectory() as folder:  # the fixture photos, with the eyes the fit reads closed
        fixture_table(Path(folder), every_eye_seeds, None, column=lambda inputs: f"{sum(inputs.eyes_closed)} closed")


if __name__ == "__main__":
    main()
