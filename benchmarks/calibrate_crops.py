"""Calibrate and measure the crops against the official preprocessing (docs/preprocessing.md, section 5).

For each photo of ``shared/fixtures/official-preprocessing`` the official ArcFace blob and 224 crop are
located in the photo (SIFT matches + RANSAC similarity, ``preprocess/placement.py``), which gives the
official transforms and so the official (SCRFD) box's centre and mean side. Then:

1. the SCRFD-equivalent box model (``face_box.BoxModel``) is fitted to the face meshes the project finds,
   with its leave-one-out error (each photo predicted by a model fitted on the others);
2. the template-frame box for faces without a mesh (``SCRFD_TEMPLATE_BOX_112``);
3. the table: found, method, ArcFace placement (mean displacement over the 112 crop, pixels), 224
   placement (crop centre offset, of 224) and scale (our side / official side), before and after;
4. ArcFace: two calibrated corrections of the five-point alignment in the face's own frame (a mean
   similarity, and per-point offsets of the five points), each measured leave-one-out; the face mesh's
   own jitter (the same photo rescaled);
5. the 224 box from the face mesh on every image variant, for the faces the mesh does not find whole and
   as they are (what the best variant could reach);
6. the second detector, MTCNN (``preprocess/mtcnn.py``): on the whole photo (found, ArcFace from its five
   points, the 224 box from its box through a 3-number map fitted leave-one-out), and O-Net on the box the
   chain found, combined with the face mesh's points (``refine_points.py``): every rule of a small grid,
   and the rule chosen on nine photos measured on the tenth (leave-one-out);
7. faces cut by the frame, made from the fixtures (the photo cut 0.3 eye distances above, through and 0.3
   below the eyes; the official transform moved with it): the mesh's points, O-Net's and their mean;
8. the 224 box of a face cut by the frame (``face_box.FrameCutModel``): the fixtures the mesh finds whole,
   cut at the top, bottom, left and right at nine depths around the eyes / mouth (the official transform
   moved with the cut), the correction fitted on six photos and measured on the seventh (leave-one-out),
   and the fit on all seven (the shipped numbers); the real face cut by the frame is never in the fit.

Sections 1–5 use the face mesh's own points (``FaceDetector(mtcnn=False)``); the "after" table uses the
chain as shipped (points refined by O-Net).

Run: ``.venv/bin/python benchmarks/calibrate_crops.py [--fixtures DIR]`` (a few minutes on a shared 2-core
machine; section 8 runs the face mesh on 300 cut photos).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from scipy.optimize import minimize

from inference_server.errors import NoFaceError
from inference_server.preprocess import mtcnn as mtcnn_module
from inference_server.preprocess.alignment import (
    ARCFACE_TEMPLATE_112,
    apply_affine,
    box_from_points5,
    fit_similarity,
    invert_affine,
)
from inference_server.preprocess.chain import ALL_STEPS, STEPS_WITHOUT_VARIANTS
from inference_server.preprocess.crops import farl_transform
from inference_server.preprocess.detect import FaceDetection, FaceDetector
from inference_server.preprocess.face_box import (
    DEFAULT_BOX_MODEL,
    DEFAULT_FRAME_CUT,
    BoxModel,
    CutSample,
    fit_box_model,
    fit_frame_cut_model,
    fit_template_box,
    scrfd_box_from_mesh,
)
from inference_server.preprocess.mtcnn import BoxLandmarks, Mtcnn
from inference_server.preprocess.official_reference import (
    OfficialCrops,
    find_fixtures,
    load_official_crops,
    placement,
)
from inference_server.preprocess.placement import centre_offset, mean_displacement
from inference_server.preprocess.refine_points import RefinedPoints, refine_points5
from inference_server.preprocess.variants import DEFAULT_VARIANTS, make_variant

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


def _similarity_params(m: np.ndarray) -> np.ndarray:
    return np.array([np.log(np.hypot(m[0, 0], m[1, 0])), np.arctan2(m[1, 0], m[0, 0]), m[0, 2], m[1, 2]])


def _similarity(p: np.ndarray) -> np.ndarray:
    c, s = np.exp(p[0]) * np.cos(p[1]), np.exp(p[0]) * np.sin(p[1])
    return np.array([[c, -s, p[2]], [s, c, p[3]]])


def _compose(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (np.vstack([a, [0, 0, 1]]) @ np.vstack([b, [0, 0, 1]]))[:2]


def _with_offsets(points5: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """The alignment after moving each of the five points by ``offsets`` (5×2, template pixels) in the face's
    own frame: where the official detector would put that point relative to ours."""
    to_template = fit_similarity(points5, ARCFACE_TEMPLATE_112)
    moved = apply_affine(to_template, points5) + offsets.reshape(5, 2)
    return fit_similarity(apply_affine(invert_affine(to_template), moved), ARCFACE_TEMPLATE_112)


def arcface_corrections(officials: list[OfficialCrops], points: dict[str, np.ndarray]) -> None:
    """Leave-one-out of two calibrated corrections of the five-point alignment (docs section 5)."""
    names = [o.name for o in officials if o.name in points]
    by_name = {o.name: o for o in officials}
    ours = {n: fit_similarity(points[n], ARCFACE_TEMPLATE_112) for n in names}
    error = {n: mean_displacement(by_name[n].arcface_transform, ours[n], 112) for n in names}
    relative = {n: _similarity_params(_compose(by_name[n].arcface_transform, invert_affine(ours[n]))) for n in names}
    mean_fix, offset_fix = [], []
    for held in names:
        rest = [n for n in names if n != held]
        correction = _similarity(np.median([relative[n] for n in rest], axis=0))
        mean_fix.append(mean_displacement(by_name[held].arcface_transform, _compose(correction, ours[held]), 112))

        def loss(offsets: np.ndarray, rest: list[str] = rest) -> float:
            moved = [_with_offsets(points[n], offsets) for n in rest]
            errors = [mean_displacement(by_name[n].arcface_transform, m, 112) for n, m in zip(rest, moved, strict=True)]
            return float(np.mean(errors) + 0.01 * np.sum(offsets**2))

        fitted = minimize(loss, np.zeros(10), method="Powell", options={"xtol": 1e-2, "ftol": 1e-3}).x
        offset_fix.append(mean_displacement(by_name[held].arcface_transform, _with_offsets(points[held], fitted), 112))
    print("\nArcFace, leave-one-out (photo: as is / mean similarity correction / per-point offsets):")
    for name, a, b in zip(names, mean_fix, offset_fix, strict=True):
        print(f"  {name[:32]:32s} {error[name]:5.1f} {a:5.1f} {b:5.1f}")
    print(f"  {'mean':32s} {np.mean(list(error.values())):5.2f} {np.mean(mean_fix):5.2f} {np.mean(offset_fix):5.2f}")


def mesh_jitter(detector: FaceDetector, official: OfficialCrops, points5: np.ndarray) -> list[float]:
    """ArcFace placement change when the same photo is found again rescaled (the mesh's own noise)."""
    base = fit_similarity(points5, ARCFACE_TEMPLATE_112)
    out = []
    height, width = official.rgb.shape[:2]
    for scale, shift in ((0.8, 0.5), (0.9, 0.3), (1.1, 0.6), (1.25, 0.0)):
        warp = np.array([[scale, 0.0, shift], [0.0, scale, shift]])
        size = (int(width * scale) + 1, int(height * scale) + 1)
        rescaled = cv2.warpAffine(official.rgb, warp, size, flags=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        with contextlib.suppress(NoFaceError):
            again = apply_affine(invert_affine(warp), detector.detect(rescaled).points5)
            out.append(mean_displacement(base, fit_similarity(again, ARCFACE_TEMPLATE_112), 112))
    return out


def variant_boxes(detector: FaceDetector, official: OfficialCrops) -> None:
    """The 224 placement from the face mesh on each whole-photo variant (what the best could reach)."""
    cells = []
    for name in (*DEFAULT_VARIANTS, "rotate-15", "rotate+15"):
        variant = make_variant(official.rgb, name)
        for landmarks in detector.mediapipe.face_mesh(variant.rgb):
            mapped = apply_affine(variant.to_original, landmarks)
            ours, side = farl_transform(scrfd_box_from_mesh(mapped))
            offset = centre_offset(official.farl_transform, ours, 224)
            if offset < 56.0:
                cells.append(f"{name} {offset:.1f} px ×{side / official.side:.2f}")
    print(f"  {official.name[:32]:32s} " + ("; ".join(cells) or "no variant finds it"))


def mtcnn_whole_photo(officials: list[OfficialCrops], model: Mtcnn) -> None:
    """MTCNN alone on each photo: the hit nearest the official box centre (within 56 px of 224), ArcFace
    from its points, and the 224 box from its box: centre + (a_x, a_y) × side, side × k, fitted on the
    other photos it finds."""
    hits = {}
    for official in officials:
        faces = model.detect(official.rgb)
        near = [f for f in faces if np.linalg.norm((f.box[:2] + f.box[2:]) / 2 - official.centre) < official.side / 4]
        if near:
            hits[official.name] = near[0]
    by_name = {o.name: o for o in officials}

    def fitted(names: list[str]) -> tuple[np.ndarray, float]:
        sides = {n: float((hits[n].box[2:] - hits[n].box[:2]).mean()) for n in names}
        offsets = [(by_name[n].centre - (hits[n].box[:2] + hits[n].box[2:]) / 2) / sides[n] for n in names]
        return np.mean(offsets, axis=0), float(np.mean([by_name[n].side / 1.6 / sides[n] for n in names]))

    print(f"\nMTCNN on the whole photo: found {len(hits)}/{len(officials)}")
    print("(photo, score, ArcFace px from its points, 224 px and scale from its box, leave-one-out)")
    for name, hit in hits.items():
        shift, k = fitted([n for n in hits if n != name])
        side = float((hit.box[2:] - hit.box[:2]).mean())
        centre = (hit.box[:2] + hit.box[2:]) / 2 + shift * side
        where = placement(by_name[name], hit.points5, np.concatenate([centre - k * side / 2, centre + k * side / 2]))
        print(f"  {name[:32]:32s} {hit.score:.3f} {where.arcface_px:5.1f} {where.farl_px:5.1f} {where.farl_scale:.3f}")


#: The rules tried for combining the mesh's and O-Net's points: (O-Net weight, minimum O-Net score,
#: O-Net alone on a face cut by the frame).
RULES = list(itertools.product((0.0, 0.25, 0.5, 0.75, 1.0), (0.8, 0.9, 0.95), (False, True)))
#: O-Net's test-time jitter: (scales, shifts) — one patch and its mirror, the shipped 16, 54.
JITTERS = {"1 box": ((1.0,), (0.0,)), "8 boxes": ((0.95, 1.05), (-0.03, 0.03)),
           "27 boxes": ((0.9, 1.0, 1.1), (-0.05, 0.0, 0.05))}  # fmt: skip


def _rule(rule: tuple[float, float, bool], mesh: FaceDetection, onet: BoxLandmarks) -> RefinedPoints:
    weight, min_score, cut_alone = rule
    if onet.score < min_score:
        return RefinedPoints(mesh.points5, "mesh")
    if cut_alone and mesh.cut_by_frame:
        return RefinedPoints(onet.points5, "mtcnn")
    return RefinedPoints((1 - weight) * mesh.points5 + weight * onet.points5, "mesh+mtcnn")


def onet_refinement(officials: list[OfficialCrops], meshes: dict[str, FaceDetection], model: Mtcnn) -> None:
    """O-Net on the chain's box, alone and combined with the mesh (docs/preprocessing.md section 5)."""
    names = [o.name for o in officials if o.name in meshes]
    by_name = {o.name: o for o in officials}

    def arcface(name: str, points5: np.ndarray) -> float:
        return placement(by_name[name], points5, meshes[name].box).arcface_px

    onets: dict[str, BoxLandmarks] = {}
    print("\nO-Net on the chain's box (photo, score, ArcFace px: mesh / O-Net per jitter / shipped rule):")
    saved = (mtcnn_module.REFINE_SCALES, mtcnn_module.REFINE_SHIFTS)
    for label, (scales, shifts) in JITTERS.items():
        mtcnn_module.REFINE_SCALES, mtcnn_module.REFINE_SHIFTS = scales, shifts
        onet_px, shipped_px = [], []
        for name in names:
            onet = model.landmarks_in_box(by_name[name].rgb, meshes[name].box)
            shipped = refine_points5(meshes[name].points5, onet)
            onet_px.append(arcface(name, onet.points5))
            shipped_px.append(arcface(name, shipped.points5))
            if scales == saved[0] and shifts == saved[1]:
                onets[name] = onet
        print(f"  {label:9s} O-Net alone {np.round(onet_px, 1).tolist()} mean {np.mean(onet_px):.2f}; "
              f"shipped rule {np.round(shipped_px, 1).tolist()} mean {np.mean(shipped_px):.2f}")  # fmt: skip
    mtcnn_module.REFINE_SCALES, mtcnn_module.REFINE_SHIFTS = saved
    for name in names:
        print(f"  {name[:32]:32s} {onets[name].score:.3f} mesh {arcface(name, meshes[name].points5):5.1f}")
    errors = np.array([[arcface(n, _rule(rule, meshes[n], onets[n]).points5) for n in names] for rule in RULES])
    best = int(errors.mean(axis=1).argmin())
    print(f"  best rule on all {len(names)}: {RULES[best]} -> {errors[best].mean():.2f} px")
    held_out = []
    for i, name in enumerate(names):
        rest = [j for j in range(len(names)) if j != i]
        choice = int(errors[:, rest].mean(axis=1).argmin())
        held_out.append(errors[choice, i])
        print(f"  leave-one-out {name[:32]:32s} rule {RULES[choice]} -> {errors[choice, i]:5.1f}")
    print(f"  leave-one-out mean {np.mean(held_out):.2f} px, median {np.median(held_out):.2f}")


def cut_faces(officials: list[OfficialCrops], detector: FaceDetector, model: Mtcnn) -> None:
    """Section 7: the fixtures cut by the frame at three heights around the eyes (module notes)."""
    print("\nFaces cut by the frame (photo, cut line in eye distances below the eyes, ArcFace px: mesh / O-Net / mean,")
    print("O-Net score); only faces the mesh finds (right face), flagged cut_by_frame:")
    rows = []
    for official in officials:
        reference = apply_affine(invert_affine(official.arcface_transform), ARCFACE_TEMPLATE_112)
        eye_distance = float(np.linalg.norm(reference[1] - reference[0]))
        for fraction in (-0.3, 0.0, 0.3):
            top = int(reference[:2, 1].mean() + fraction * eye_distance)
            rgb = np.ascontiguousarray(official.rgb[top:])
            moved = official.arcface_transform.copy()
            moved[:, 2] += moved[:, :2] @ np.array([0.0, top])
            try:
                found = detector.detect(rgb)
            except NoFaceError:
                continue
            if np.linalg.norm(found.points5.mean(axis=0) - (reference - [0.0, top]).mean(axis=0)) > eye_distance:
                continue  # another face
            onet = model.landmarks_in_box(rgb, found.box)
            errors = [
                mean_displacement(moved, fit_similarity(points, ARCFACE_TEMPLATE_112), 112)
                for points in (found.points5, onet.points5, (found.points5 + onet.points5) / 2)
            ]
            if found.cut_by_frame:
                rows.append([*errors, onet.score])
            print(f"  {official.name[:32]:32s} {fraction:+.1f} " + " ".join(f"{e:5.1f}" for e in errors)
                  + f" {onet.score:.2f}{'' if found.cut_by_frame else ' (not flagged cut)'}")  # fmt: skip
    table = np.array(rows)
    for label, mask in (("all", table[:, 3] >= 0), ("O-Net score >= 0.95", table[:, 3] >= 0.95)):
        mesh, onet_px, mean = table[mask, :3].mean(axis=0)
        print(f"  {label}: n={int(mask.sum())} mesh {mesh:.2f} / O-Net {onet_px:.2f} / mean {mean:.2f} px")


#: Section 8: where the photo is cut, in eye distances from the eye line (top), the mouth line (bottom) or
#: the near eye (left, right); negative: short of it.
CUT_DEPTHS = (-1.2, -0.9, -0.6, -0.45, -0.3, -0.15, 0.0, 0.15, 0.3)


@dataclass(frozen=True)
class CutFace:
    name: str
    edge: str
    sample: CutSample
    farl_transform: np.ndarray
    side: float


def _cut(official: OfficialCrops, edge: str, depth: float) -> tuple[np.ndarray, np.ndarray] | None:
    """The photo cut at ``edge`` and the photo → cut-photo shift; None when the cut misses the photo."""
    reference = apply_affine(invert_affine(official.arcface_transform), ARCFACE_TEMPLATE_112)
    eye_distance = float(np.linalg.norm(reference[1] - reference[0]))
    height, width = official.rgb.shape[:2]
    line = {"top": reference[:2, 1].mean() + depth * eye_distance,
            "bottom": reference[3:, 1].mean() - depth * eye_distance,
            "left": reference[0, 0] + depth * eye_distance,
            "right": reference[1, 0] - depth * eye_distance}[edge]  # fmt: skip
    at = int(line)
    if edge in ("top", "left") and at > 0:
        shift = np.array([at, 0.0]) if edge == "left" else np.array([0.0, at])
        return np.ascontiguousarray(official.rgb[at:] if edge == "top" else official.rgb[:, at:]), shift
    if edge == "bottom" and at < height:
        return np.ascontiguousarray(official.rgb[:at]), np.zeros(2)
    if edge == "right" and at < width:
        return np.ascontiguousarray(official.rgb[:, :at]), np.zeros(2)
    return None


def cut_face_samples(officials: list[OfficialCrops], detector: FaceDetector) -> list[CutFace]:
    """Section 8's synthetic cuts that the mesh still finds (the right face, flagged cut by the frame)."""
    out = []
    for official in officials:
        for edge, depth in itertools.product(("top", "bottom", "left", "right"), CUT_DEPTHS):
            cut = _cut(official, edge, depth)
            if cut is None:
                continue
            rgb, shift = cut
            farl = official.farl_transform.copy()
            farl[:, 2] += farl[:, :2] @ shift
            with contextlib.suppress(NoFaceError):
                found = detector.detect(rgb)
                ours, _ = farl_transform(found.box)
                if found.landmarks is not None and found.cut_by_frame and centre_offset(farl, ours, 224) < 56.0:
                    sample = CutSample(found.landmarks, (rgb.shape[1], rgb.shape[0]), official.centre - shift,
                                       official.side / 1.6)  # fmt: skip
                    out.append(CutFace(official.name, edge, sample, farl, official.side))
    return out


def frame_cut_box(officials: list[OfficialCrops], meshes: dict[str, np.ndarray], detector: FaceDetector) -> None:
    """Section 8 (module notes): the box of a face cut by the frame, leave-one-out by photo."""
    faces = cut_face_samples([o for o in officials if o.name in meshes], detector)
    by_name = {o.name: o for o in officials}
    print(f"\nFaces cut by the frame, the 224 box ({len(faces)} cuts the mesh finds and flags; leave-one-out):")
    results: dict[str, list[tuple[float, float, float, float]]] = {}
    for held in meshes:
        rest = [n for n in meshes if n != held]
        box_model = fit_box_model([meshes[n] for n in rest], [by_name[n].centre for n in rest],
                                  [by_name[n].side / 1.6 for n in rest])  # fmt: skip
        cut_model = fit_frame_cut_model([f.sample for f in faces if f.name != held], box_model)
        for face in (f for f in faces if f.name == held):
            row = []
            for model in (None, cut_model):
                frame = None if model is None else face.sample.frame
                box = scrfd_box_from_mesh(face.sample.landmarks, box_model, frame=frame, cut_model=model)
                ours, side = farl_transform(box)
                row += [centre_offset(face.farl_transform, ours, 224), abs(side / face.side - 1) * 100]
            results.setdefault(face.edge, []).append((row[0], row[1], row[2], row[3]))
    print("| edge | cuts | 224 px before | after | mean abs scale error before | after |")
    print("|---|---|---|---|---|---|")
    everything = [row for rows in results.values() for row in rows]
    for edge, rows in [*results.items(), ("all", everything)]:
        a = np.array(rows).mean(axis=0)
        print(f"| {edge} | {len(rows)} | {a[0]:.2f} | {a[2]:.2f} | {a[1]:.1f} % | {a[3]:.1f} % |")
    on_all = fit_frame_cut_model([f.sample for f in faces], _box_model(meshes, by_name))
    print(f"fitted on all: {dataclasses.asdict(on_all)}")
    print(f"in use:        {dataclasses.asdict(DEFAULT_FRAME_CUT)}")


def _box_model(meshes: dict[str, np.ndarray], by_name: dict[str, OfficialCrops]) -> BoxModel:
    names = list(meshes)
    return fit_box_model([meshes[n] for n in names], [by_name[n].centre for n in names],
                         [by_name[n].side / 1.6 for n in names])  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fixtures", type=Path, default=None)
    args = parser.parse_args()
    folder = args.fixtures or find_fixtures(Path(__file__))
    if folder is None:
        raise SystemExit("official-preprocessing fixtures not found; pass --fixtures DIR")
    officials = load_official_crops(folder)
    names = [o.name for o in officials]
    with FaceDetector(mtcnn=False) as detector, FaceDetector() as shipped:
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
        print_table("Face mesh chain (SCRFD-equivalent box, the mesh's points):",
                    run_rows(officials, lambda rgb: detector.detect(rgb), lambda d: d.box), names)  # fmt: skip
        print_table("After (the chain as shipped: points refined by MTCNN's O-Net):",
                    run_rows(officials, lambda rgb: shipped.detect(rgb), lambda d: d.box), names)  # fmt: skip
        print("points:", [shipped.detect(o.rgb).points_source for o in officials])
        second = shipped.mtcnn_model()
        if second is not None:
            mtcnn_whole_photo(officials, second)
            onet_refinement(officials, detections, second)
            cut_faces(officials, detector, second)
        frame_cut_box(officials, meshes, detector)
        points = {n: d.points5 for n, d in detections.items()}
        arcface_corrections(officials, points)
        print("\nFace mesh jitter (ArcFace px when the photo is rescaled ×0.8, ×0.9, ×1.1, ×1.25):")
        for official in officials:
            if official.name in points:
                jitter = mesh_jitter(detector, official, points[official.name])
                print(f"  {official.name[:32]:32s} " + " ".join(f"{j:5.1f}" for j in jitter))
        print("\n224 placement from the mesh on each variant (faces not found whole and as they are):")
        for official in officials:
            first = detections.get(official.name)
            if first is None or first.method != "face_mesh" or first.cut_by_frame:
                variant_boxes(detector, official)


if __name__ == "__main__":
    main()
