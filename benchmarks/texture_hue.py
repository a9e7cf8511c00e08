"""Objects of the skin's own hue, more saturated (an egg, an orange), in the texture (texture/occluder.py's
``off_skin_hue``): docs/texture.md, "Objects of skin's hue".

1. The shared fixture photos, reconstructed as the CLI does (DEMO assets, fast preset): share of the head's
   texels taken from the photo, and of the texels under the hand-annotated egg of ``girl-crafty``, before
   (chromaticity only) → after (chromaticity and CIE a*b*).
2. Synthetic renders (DEMO head, true pose, yaw ±20°) with a disc of the face's hue at twice its saturation
   over the mouth (``--cases`` renders), then benchmarks/hands.py's table of the project's occluders, clean
   renders and the pasted real hand, before → after.

Run: ``nice -n 10 .venv/bin/python benchmarks/texture_hue.py [--cases 4]`` (~5 minutes on 2 free cores).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inference_server.demo.head import generate_demo_head
from inference_server.fit.synthetic import SyntheticCase, ground_truth_texture, render_case, with_saturated_disc
from inference_server.flame.layer import FlameLayer
from inference_server.flame.model_data import FlameModelData
from inference_server.preprocess.official_reference import find_fixtures
from inference_server.texture import bake, stage
from inference_server.texture.stage import Texture, TextureInputs, make_texture

ROOT = Path(__file__).resolve().parents[1]
ANNOTATION = ROOT / "tests" / "inference_server" / "texture" / "girl_egg_annotation.json"
sys.path.insert(0, str(ROOT / "tests" / "inference_server" / "texture"))
sys.path.insert(0, str(ROOT / "benchmarks"))
from hands import _inputs, _shares, texture_table  # noqa: E402
from test_hands_in_texture import _from_inside, _polygon_mask  # noqa: E402


@contextmanager
def chromaticity_only() -> Iterator[None]:
    """The texture as it was: no (a*, b*) test."""
    saved = bake._off_skin_hue
    bake._off_skin_hue = lambda colors, skin, zones: np.zeros(len(colors), bool)
    try:
        yield
    finally:
        bake._off_skin_hue = saved


def captured_texture_inputs(reconstructor: Any, photo: Path, out: Path) -> tuple[np.ndarray, TextureInputs] | None:
    """The photo and the fitted head the CLI's reconstruction (fast preset) hands the texture stage."""
    from inference_server.presets import apply_preset
    from inference_server.protocol import ReconstructArgs

    captured: list[tuple[np.ndarray, TextureInputs]] = []
    real = stage.make_texture

    def spy(rgb: np.ndarray, head: TextureInputs, *args: Any, **kw: Any) -> Texture:
        captured.append((rgb, head))
        return real(rgb, head, *args, **kw)

    stage.make_texture = spy
    try:
        args = apply_preset(
            ReconstructArgs(
                image=str(photo),
                output=str(out),
                n_shapes=100,
                n_expressions=100,
                top_k=10,
                sampler="ddpm",
                steps=None,
                seed=0,
                extra={"preset": "fast"},
            )
        )
        reconstructor.run(args, lambda *a, **k: None, lambda: False)
    finally:
        stage.make_texture = real
    return captured[0] if captured else None


def fixture_table(
    tmp: Path, as_before: Callable[[], AbstractContextManager[None]] = chromaticity_only,
    annotation: Path | None = ANNOTATION, photos: list[Path] | None = None,
    column: Callable[[TextureInputs], str] | None = None,
) -> None:  # fmt: skip
    """The fixture photos (or ``photos``) reconstructed as the CLI does: texels from the photo and texels left
    out, before (inside ``as_before``) → after; ``column``: one more value per photo; the texels under the
    ``annotation``'s object (on its photo) taken before → after."""
    from inference_server.assets_config import resolve_assets
    from inference_server.pipeline import Reconstructor

    fixtures = find_fixtures()
    if fixtures is None:
        print("no shared fixtures on this machine")
        return
    reconstructor = Reconstructor(resolve_assets({}), device="cpu")
    note = json.loads(annotation.read_text()) if annotation is not None else {"image": ""}
    print("photo | texels from the photo before → after | left out before → after | under the object, taken")
    for path in photos if photos is not None else sorted((fixtures / "images").glob("*.jpg")):
        got = captured_texture_inputs(reconstructor, path, tmp / "r.npz")
        if got is None:
            print(f"  {path.name[:28]:28s} no texture (the fit is not trusted)")
            continue
        rgb, head = got
        with as_before():
            old = make_texture(rgb, head)
        new = make_texture(rgb, head)
        line = f"  {path.name[:28]:28s} " + (f"{column(head)} | " if column is not None else "")
        line += " | ".join(
            f"{100 * old_v:5.1f} → {100 * new_v:5.1f} %"
            for old_v, new_v in (
                (old.from_photo.mean(), new.from_photo.mean()),
                (old.occluded.mean(), new.occluded.mean()),
            )
        )
        if path.name == note["image"]:
            region = _polygon_mask(np.asarray(note["polygon"], np.float64), *rgb.shape[:2])
            (before, under), (after, _) = _from_inside(old, head, region), _from_inside(new, head, region)
            line += f" | {before} → {after} of {under}"
        print(line)


def object_table(
    head: FlameModelData, layer: FlameLayer, cases: int, label: str, first_seed: int,
    draw: Callable[[SyntheticCase, np.random.Generator], tuple[np.ndarray, np.ndarray]],
    as_before: Callable[[], AbstractContextManager[None]],
) -> None:  # fmt: skip
    """DEMO renders (true pose, seeds ``first_seed``+) with the object ``draw`` puts over them: its texels left
    out, its share of the photo texels, and the photo texels, before (inside ``as_before``) → after."""
    truth = ground_truth_texture(head)
    values = []
    for i in range(cases):
        rng = np.random.default_rng(first_seed + i)
        case = render_case(head, layer, truth, rng, max_yaw=20)
        image, region = draw(case, rng)
        values.append(_shares(head, image, _inputs(head, case), region, as_before))
    m = 100 * np.mean(values, axis=0)
    print("occluder | covered texels left out before → after | occluder share of photo texels | photo texels")
    print(f"  {label:26s} {m[0]:5.1f} → {m[3]:5.1f} % | {m[1]:5.2f} → {m[4]:5.2f} % | "
          f"{m[2]:4.1f} → {m[5]:4.1f} %")  # fmt: skip


def run_tables(
    description: str, as_before: Callable[[], AbstractContextManager[None]], label: str, first_seed: int,
    draw: Callable[[SyntheticCase, np.random.Generator], tuple[np.ndarray, np.ndarray]],
    annotation: Path = ANNOTATION, extra_photos: tuple[Path, ...] = (),
) -> None:  # fmt: skip
    """A texture benchmark's command line (``--cases``, ``--no-fixtures``) and its three tables, before (inside
    ``as_before``) → after: the fixture photos (and ``extra_photos``) with ``annotation``'s object, DEMO renders
    with the object ``draw`` puts over them, and benchmarks/hands.py's occluders."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--cases", type=int, default=4)
    parser.add_argument("--no-fixtures", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(2)
    if not args.no_fixtures:
        fixtures = find_fixtures()
        photos = None if fixtures is None else [*sorted((fixtures / "images").glob("*.jpg")), *extra_photos]
        with tempfile.TemporaryDirectory() as tmp:
            fixture_table(Path(tmp), as_before, annotation, photos)
    head = generate_demo_head()
    layer = FlameLayer(head, dtype=torch.float64)
    object_table(head, layer, args.cases, label, first_seed, draw, as_before)
    texture_table(head, layer, args.cases, as_before)


def main() -> None:
    run_tables(__doc__.splitlines()[0], chromaticity_only, "saturated disc of skin hue", 700, with_saturated_disc)


if __name__ == "__main__":
    main()
