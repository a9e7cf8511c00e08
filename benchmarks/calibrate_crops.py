"""Calibrate and measure the crops against the official preprocessing (docs/preprocessing.md, section 5).

For each photo of ``shared/fixtures/official-preprocessing`` the official ArcFace blob and 224 crop are
located in the photo (SIFT matches + RANSAC similarity, ``preprocess/placement.py``), which gives the
official transforms and so the official (SCRFD) box's centre and mean side. Then:

1. the SCRFD-equivalent box model (``face_box.BoxModel``) is fitted to the face meshes the project finds,
   with its leave-one-out error (each photo predicted by a model fitted on the others);
2. the template-frame box for faces without a mesh (``SCRFD_TEMPLATE_BOX_112``);
3. the table: found, method, ArcFace placement (mean displacement over the 112 crop, pixels), 224
   placement (crop centre offset, of 224) and scale (our side / official side), before and after.

Run: ``.venv/bin/python benchmarks/calibrate_crops.py [--fixtures DIR]`` (about 15 s).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from inference_server.errors import NoFaceError
from inference_server.preprocess.alignment import box_from_points5
from inference_server.preprocess.chain import ALL_STEPS, STEPS_WITHOUT_VARIANTS
from inference_server.preprocess.crops import farl_transform
from inference_server.preprocess.detect import FaceDetection, FaceDetector
from inference_server.preprocess.face_box import (
    DEFAULT_BOX_MODEL,
    fit_box_model,
    fit_template_box,
    scrfd_box_from_mesh,
)
from inference_server.preprocess.official_reference import (
    OfficialCrops,
    find_fixtures,
    load_official_crops,
    placement,
)
from inference_server.preprocess.placement import centre_offset

#: Chain ablation on the fixtures (docs/preprocessing.md).
STEP_SETS = {
    "face mesh alone": ("face_mesh",),
    "+ both detectors, mesh confirmation of their boxes, keypoints": STEPS_WITHOUT_VARIANTS,
    "+ variants of the detector-box crops and of the whole photo": ALL_STEPS,
}


@dataclass(frozen=True)
class Row:
    name: str
    method: str
    arcface_px: float
    farl_px: float
    scale: float


def measure(official: OfficialCrops, detection: FaceDetection, box: np.ndarray) -> Row:
    where = placement(official, detection.points5, box)
    method = detection.method + (f"/{detection.variant}" if detection.variant else "")
    return Row(official.name, method, where.arcface_px, where.farl_px, where.farl_scale)


def run_rows(
    officials: list[OfficialCrops],
    detect: Callable[[np.ndarray], FaceDetection],
    box_of: Callable[[FaceDetection], np.ndarray],
) -> list[Row | None]:
    rows: list[Row | None] = []
    for official in officials:
        try:
            detection = detect(official.rgb)
        except NoFaceError:
            rows.append(None)
            continue
        rows.append(measure(official, detection, box_of(detection)))
    return rows


def leave_one_out(officials: list[OfficialCrops], meshes: dict[str, np.ndarray]) -> list[tuple[str, float, float]]:
    names = [o.name for o in officials if o.name in meshes]
    by_name = {o.name: o for o in officials}
    out = []
    for held in names:
        rest = [n for n in names if n != held]
        model = fit_box_model(
            [meshes[n] for n in rest], [by_name[n].centre for n in rest], [by_name[n].side / 1.6 for n in rest]
        )
        box = scrfd_box_from_mesh(meshes[held], model)
        ours, side = farl_transform(box)
        official = by_name[held]
        out.append((held, centre_offset(official.farl_transform, ours, 224), side / official.side))
    return out


def print_table(title: str, rows: list[Row | None], names: list[str]) -> None:
    print(f"\n{title}\n")
    print("| photo | method | ArcFace px | 224 px | 224 scale |")
    print("|---|---|---|---|---|")
    for name, row in zip(names, rows, strict=True):
        if row is None:
            print(f"| {name[:28]} | not found | | | |")
        else:
            print(f"| {name[:28]} | {row.method} | {row.arcface_px:.1f} | {row.farl_px:.1f} | {row.scale:.3f} |")
    found = [r for r in rows if r is not None]
    if found:
        print(
            f"| **mean ({len(found)}/{len(rows)} found)** | | **{np.mean([r.arcface_px for r in found]):.2f}** "
            f"| **{np.mean([r.farl_px for r in found]):.2f}** "
            f"| {min(r.scale for r in found):.3f}–{max(r.scale for r in found):.3f} "
            f"(mean abs {np.mean([abs(r.scale - 1) for r in found]) * 100:.1f} %) |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fixtures", type=Path, default=None)
    args = parser.parse_args()
    folder = args.fixtures or find_fixtures(Path(__file__))
    if folder is None:
        raise SystemExit("official-preprocessing fixtures not found; pass --fixtures DIR")
    officials = load_official_crops(folder)
    names = [o.name for o in officials]
    with FaceDetector() as detector:
        detections = {}
        for official in officials:
            with contextlib.suppress(NoFaceError):
                detections[official.name] = detector.detect(official.rgb)
        # Faces cut by the frame are left out of the fit: the mesh squeezes them into the visible part.
        meshes = {n: d.landmarks for n, d in detections.items() if d.landmarks is not None and not d.cut_by_frame}
        print("cut by the frame:", [n for n, d in detections.items() if d.cut_by_frame])
        used = [o for o in officials if o.name in meshes]
        model = fit_box_model([meshes[o.name] for o in used], [o.centre for o in used], [o.side / 1.6 for o in used])
        print(f"box model fitted on {len(used)} meshes: {dataclasses.asdict(model)}")
        print(f"box model in use:              {dataclasses.asdict(DEFAULT_BOX_MODEL)}")
        template = fit_template_box([o.arcface_transform for o in officials], [o.centre for o in officials],
                                    [o.side / 1.6 for o in officials])  # fmt: skip
        print(f"SCRFD box in the ArcFace template frame: {np.round(template, 1).tolist()}")
        print("\nleave-one-out (box model fitted on the other meshes): photo, 224 px, scale")
        for name, px, scale in leave_one_out(officials, meshes):
            print(f"  {name[:32]:32s} {px:5.1f} {scale:.3f}")

        def before(rgb: np.ndarray) -> FaceDetection:
            height, width = rgb.shape[:2]
            found = detector.chain.run(rgb, np.array([width / 2.0, height / 2.0]), STEPS_WITHOUT_VARIANTS)
            if not found:
                raise NoFaceError("none", "")
            c = found[0]
            return FaceDetection(box_from_points5(c.points5), c.points5, c.landmarks, c.method, len(found), c.found_box)

        print_table("Before (chain without variants; box from five points):",
                    run_rows(officials, before, lambda d: d.box), names)  # fmt: skip
        print("\nFaces found by each set of steps (right face: 224 crop centre within 56 px of the official):")
        for label, steps in STEP_SETS.items():
            found = 0
            for official in officials:
                height, width = official.rgb.shape[:2]
                hit = detector.run_chain(official.rgb, np.array([width / 2.0, height / 2.0]), steps)
                if hit is not None and placement(official, hit.points5, hit.found_box).farl_px < 56.0:
                    found += 1
            print(f"  {label}: {found}/{len(officials)}")
        print_table("After (this chain; SCRFD-equivalent box):",
                    run_rows(officials, lambda rgb: detector.detect(rgb), lambda d: d.box), names)  # fmt: skip


if __name__ == "__main__":
    main()
