"""Hands as occluder evidence (preprocess/hands.py, texture/bake.py, texture/skin_cover.py): docs/texture.md
and docs/preprocessing.md, section 6.

1. The shared fixture photos: hands found by each try (whole photo, mirrored, face crop) and the cost.
2. The texture on the project's synthetic occluders (train/synthetic.py, 4 renders each, yaw ±20°, true
   pose), on clean renders and on a real hand (annotated in a fixture photo, recoloured to the face's tone)
   pasted over the cheek and nose: before (no hand detector, one colour split in skin_cover) → after.

Run: ``nice -n 10 .venv/bin/python benchmarks/hands.py [--texture-cases 4]`` (~4 minutes on 2 free cores).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator, Sized
from contextlib import AbstractContextManager, contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from inference_server.demo.head import generate_demo_head
from inference_server.fit.synthetic import ground_truth_texture, render_case, with_training_occluder
from inference_server.flame.layer import FlameLayer
from inference_server.flame.model_data import FlameModelData
from inference_server.preprocess.detect import FaceDetector
from inference_server.preprocess.hands import FACE_BOX_IOD, HandEvidence, HandFinder
from inference_server.preprocess.official_reference import find_fixtures
from inference_server.texture import bake, skin_cover
from inference_server.texture.stage import TextureInputs, make_texture

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "inference_server" / "texture"))
from test_hands_in_texture import _annotation, _from_inside, _paste_hand  # noqa: E402


def fixture_hands() -> None:
    fixtures = find_fixtures()
    if fixtures is None:
        print("no shared fixtures on this machine")
        return
    detector, finder = FaceDetector(), HandFinder()
    print("photo | hands: photo / mirrored / face crop | ms each (median of 3, after a first run)")
    for path in sorted((fixtures / "images").glob("*.jpg")):
        rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        points = detector.detect_all(rgb)[0].points5
        half = 0.5 * FACE_BOX_IOD * float(np.linalg.norm(points[1] - points[0]))
        box = np.concatenate([points.mean(axis=0) - half, points.mean(axis=0) + half])  # as find_hands makes it
        tries: dict[str, Callable[[], Sized]] = {
            "photo": partial(finder.run, rgb),
            "mirrored": partial(finder.run, np.ascontiguousarray(rgb[:, ::-1])),
            "crop": partial(finder.find_in_face_crop, rgb, box),
        }
        counts, costs = [], []
        for run in tries.values():
            counts.append(len(run()))
            times = []
            for _ in range(3):
                start = time.perf_counter()
                run()
                times.append(time.perf_counter() - start)
            costs.append(1000 * float(np.median(times)))
        print(f"  {path.stem[:34]:34s} {counts[0]} / {counts[1]} / {counts[2]} | "
              + " / ".join(f"{c:.0f}" for c in costs))  # fmt: skip


@contextmanager
def before() -> Iterator[None]:
    """The texture as it was: no hand detector, the single colour split of skin_cover."""
    saved: tuple[Any, tuple[float, ...]] = (bake.find_hands, skin_cover.COLOUR_RATIOS)
    bake.find_hands = lambda rgb, box=None: HandEvidence()  # type: ignore[assignment]
    skin_cover.COLOUR_RATIOS = (1.0,)
    try:
        yield
    finally:
        bake.find_hands, skin_cover.COLOUR_RATIOS = saved


def _inputs(head: FlameModelData, case: object) -> TextureInputs:
    assert head.uv is not None and head.uv_faces is not None
    return TextureInputs(case.vertices, head.v_template, head.faces, head.uv, head.uv_faces,  # type: ignore[attr-defined]
                         case.landmarks, case.pose, case.camera)  # type: ignore[attr-defined]  # fmt: skip


Before = Callable[[], AbstractContextManager[None]]


def _shares(
    head: FlameModelData, image: np.ndarray, inputs: TextureInputs, covered: np.ndarray, as_before: Before
) -> list[float]:
    """[occluder-covered texels left out, occluder share of the photo texels, photo texels of the head], before
    (inside ``as_before``) and after."""
    out = []
    for label in ("before", "after"):
        if label == "before":
            with as_before():
                tex = make_texture(image, inputs)
        else:
            tex = make_texture(image, inputs)
        leaked, under = _from_inside(tex, inputs, covered)
        kept = int(tex.from_photo.sum())
        out += [1.0 - leaked / max(under, 1), leaked / max(kept, 1), kept / max(int(tex.covered.sum()), 1)]
    return out


def texture_table(head: FlameModelData, layer: FlameLayer, cases: int, as_before: Before = before) -> None:
    from inference_server.train.synthetic import OCCLUDERS

    truth = ground_truth_texture(head)
    print("occluder | covered texels left out before → after | occluder share of photo texels | photo texels")
    rows: dict[str, list[list[float]]] = {}
    for name in OCCLUDERS:
        for i in range(cases):
            rng = np.random.default_rng(100 + i + sum(map(ord, name)))
            case = render_case(head, layer, truth, rng, max_yaw=20)
            image, alpha = with_training_occluder(case, name, rng)
            rows.setdefault(name, []).append(_shares(head, image, _inputs(head, case), alpha > 0.5, as_before))
    for i in range(cases):  # clean renders: what is flagged though nothing covers the face
        case = render_case(head, layer, truth, np.random.default_rng(500 + i), max_yaw=20)
        nothing = np.zeros(case.image.shape[:2], bool)
        rows.setdefault("clean", []).append(_shares(head, case.image, _inputs(head, case), nothing, as_before))
    fixtures = find_fixtures()
    if fixtures is not None:
        note = _annotation("despair_hand_annotation.json")
        source = cv2.cvtColor(cv2.imread(str(fixtures / "images" / note["image"])), cv2.COLOR_BGR2RGB)
        for seed in range(6):
            case = render_case(head, layer, truth, np.random.default_rng(seed), max_yaw=20)
            region = _paste_hand(case, source, np.asarray(note["polygon"], np.float64))
            shares = _shares(head, case.image, _inputs(head, case), region, as_before)
            rows.setdefault("real hand, face tone (6)", []).append(shares)
    for name, values in rows.items():
        m = 100 * np.mean(values, axis=0)
        print(f"  {name:26s} {m[0]:5.1f} → {m[3]:5.1f} % | {m[1]:5.2f} → {m[4]:5.2f} % | {m[2]:4.1f} → {m[5]:4.1f} %")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texture-cases", type=int, default=4)
    args = parser.parse_args()
    fixture_hands()
    head = generate_demo_head()
    texture_table(head, FlameLayer(head, dtype=torch.float64), args.texture_cases)


if __name__ == "__main__":
    main()
