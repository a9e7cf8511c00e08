"""Measure the face-detection fallback chain on occluded variants of real photos (docs/preprocessing.md).

Real faces that ship with installed packages: scikit-image's astronaut (Eileen Collins, NASA, public
domain), matplotlib's Grace Hopper (US Navy, public domain) and the 100 face crops of scikit-image's
LFW subset (25×25, used only for the nose-index and face-box calibration). Every photo gets synthetic
occluders, scales, cuts, rotations and blurs; each variant is run through the chain and through the
face mesh alone, and the step that found the face is counted. A face counts as found when the five
points lie within one eye distance (mean) of the clean photo's points moved the same way, and as
imprecise when they are more than 30 % of the eye distance off.

``--speed`` times ``detect`` with and without MTCNN (alternated, median of 5).

``--occlusion`` measures instead whether the landmarks an occluder covers are flagged (occlusion.py), on
the same variants, with the points where the clean photo's features are.

Run: ``.venv/bin/python benchmarks/detection_chain.py [--calibration | --occlusion]`` (about a minute on
2 cores).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from inference_server.errors import NoFaceError
from inference_server.preprocess.alignment import ARCFACE_TEMPLATE_112, apply_affine, fit_similarity
from inference_server.preprocess.chain import ALL_STEPS, STEPS_WITHOUT_VARIANTS
from inference_server.preprocess.detect import FaceDetector
from inference_server.preprocess.mediapipe_faces import MESH_POINTS5
from inference_server.preprocess.occlusion import TESTED_POINTS, occluded_points
from inference_server.preprocess.synthetic_occluders import OCCLUDERS

#: A mean point error above this fraction of the eye distance means another face (or no face) was taken.
WRONG_FACE_FRACTION = 1.0
#: Found faces whose mean point error exceeds this fraction are counted as imprecise.
IMPRECISE_FRACTION = 0.3


def real_faces() -> dict[str, np.ndarray]:
    """The public-domain face photos available from installed packages."""
    import matplotlib.cbook
    from PIL import Image
    from skimage import data

    hopper_path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    with Image.open(hopper_path) as hopper:
        hopper_rgb = np.asarray(hopper.convert("RGB"))
    return {"astronaut": data.astronaut(), "grace_hopper": hopper_rgb}


def lfw_faces() -> list[np.ndarray]:
    """The 100 LFW face crops of scikit-image, upscaled ×8 and framed (grayscale as RGB)."""
    import os

    import cv2
    import skimage.data

    crops = np.load(os.path.join(os.path.dirname(skimage.data.__file__), "lfw_subset.npy"))[:100]
    out = []
    for crop in crops:
        gray = cv2.resize((crop * 255).astype(np.uint8), (200, 200), interpolation=cv2.INTER_CUBIC)
        gray = cv2.copyMakeBorder(gray, 60, 60, 60, 60, cv2.BORDER_REPLICATE)
        out.append(np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2)))
    return out


# -- geometric variants: each returns the new image and the 2×3 affine old → new pixels -------------


def as_is(rgb: np.ndarray, points5: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return rgb.copy(), np.array([[1.0, 0, 0], [0, 1.0, 0]])


def _in_large_photo(rgb: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """The photo scaled by ``scale`` and pasted, off centre, into a 1600×1200 photo of a coffee cup
    (scikit-image's ``coffee``, public domain): a face that fills a small part of a large photo."""
    import cv2
    from skimage import data

    canvas = cv2.resize(data.coffee(), (1600, 1200), interpolation=cv2.INTER_LINEAR)
    small = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    x, y = 900, 150
    canvas[y : y + small.shape[0], x : x + small.shape[1]] = small
    return canvas, np.array([[scale, 0, x], [0, scale, y]])


def in_large_photo(rgb: np.ndarray, points5: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return _in_large_photo(rgb, 1.0)


def small_in_large_photo(rgb: np.ndarray, points5: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return _in_large_photo(rgb, 0.5)


def cut_by_frame(rgb: np.ndarray, points5: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The frame cuts the face just outside the image-right eye and above the eyebrows."""
    eye_distance = float(np.linalg.norm(points5[1] - points5[0]))
    right = int(points5[1, 0] + 0.35 * eye_distance)
    top = max(0, int(points5[:2, 1].min() - 0.6 * eye_distance))
    return np.ascontiguousarray(rgb[top:, :right]), np.array([[1.0, 0, 0], [0, 1.0, -top]])


def rotated(rgb: np.ndarray, points5: np.ndarray, degrees: float = 40.0) -> tuple[np.ndarray, np.ndarray]:
    import cv2

    centre = points5.mean(axis=0)
    M = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), degrees, 1.0)
    out = cv2.warpAffine(rgb, M, (rgb.shape[1], rgb.shape[0]), borderMode=cv2.BORDER_REFLECT)
    return out, M


GEOMETRIES: dict[str, Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]] = {
    "as_is": as_is,
    "in_large_photo": in_large_photo,
    "small_in_large_photo": small_in_large_photo,
    "cut_by_frame": cut_by_frame,
    "rotated_40deg": rotated,
}
#: Gaussian blur sigma as a fraction of the (transformed) eye distance.
BLURS = {"sharp": 0.0, "blur_0.05": 0.05, "blur_0.1": 0.1}


@dataclass(frozen=True)
class Variant:
    face: str
    occluder: str
    geometry: str
    blur: str
    rgb: np.ndarray
    truth: np.ndarray


def variants(faces: dict[str, np.ndarray], detector: FaceDetector) -> Iterator[Variant]:
    import cv2

    for face_name, clean in faces.items():
        height, width = clean.shape[:2]
        # The face mesh's own points on the clean photo (not refined by MTCNN: the reference stays the same).
        mesh = detector.run_chain(clean, np.array([width / 2.0, height / 2.0]), steps=("face_mesh",))
        assert mesh is not None
        truth_clean = mesh.points5
        for occluder_name, draw in OCCLUDERS.items():
            occluded = draw(clean, truth_clean)
            for geometry_name, geometry in GEOMETRIES.items():
                moved, M = geometry(occluded, truth_clean)
                truth = apply_affine(M, truth_clean)
                eye_distance = float(np.linalg.norm(truth[1] - truth[0]))
                for blur_name, fraction in BLURS.items():
                    rgb = moved
                    if fraction > 0:
                        rgb = cv2.GaussianBlur(moved, (0, 0), fraction * eye_distance)
                    yield Variant(face_name, occluder_name, geometry_name, blur_name, rgb, truth)


def classify(detector: FaceDetector, variant: Variant, steps: tuple[str, ...]) -> tuple[str, float]:
    """(step that found the face or "missed"/"wrong_face", mean point error in % of the eye distance)."""
    height, width = variant.rgb.shape[:2]
    found = detector.run_chain(variant.rgb, np.array([width / 2.0, height / 2.0]), steps=steps)
    if found is None:
        return "missed", float("nan")
    eye_distance = float(np.linalg.norm(variant.truth[1] - variant.truth[0]))
    error = float(np.linalg.norm(found.points5 - variant.truth, axis=1).mean()) / eye_distance
    if error > WRONG_FACE_FRACTION:
        step = found.method + (f"/{found.variant}" if found.variant else "")
        print(f"wrong face: {variant.face} {variant.occluder} {variant.geometry} {variant.blur} by {step}")
        return "wrong_face", 100 * error
    return found.method, 100 * error


def measure_chain() -> None:
    detector = FaceDetector()
    columns = [
        "face_mesh",
        "face_mesh_on_detector_box",
        "face_mesh_on_variant",
        "face_mesh_on_mtcnn_box",
        "detector_keypoints",
        "mtcnn",
        "missed",
        "wrong_face",
        "imprecise",
    ]
    by_group: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    mesh_only: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    no_variants: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    errors: dict[str, list[float]] = collections.defaultdict(list)
    for variant in variants(real_faces(), detector):
        outcome, error = classify(detector, variant, ALL_STEPS)
        alone, _ = classify(detector, variant, ("face_mesh",))
        without, _ = classify(detector, variant, STEPS_WITHOUT_VARIANTS)
        for group in (
            f"occluder={variant.occluder}",
            f"geometry={variant.geometry}",
            f"blur={variant.blur}",
            "ALL",
        ):
            by_group[group][outcome] += 1
            if outcome in columns[:6] and error > 100 * IMPRECISE_FRACTION:
                by_group[group]["imprecise"] += 1
            mesh_only[group][alone] += 1
            no_variants[group]["found" if without not in ("missed", "wrong_face") else without] += 1
        if outcome in columns[:6]:
            errors[outcome].append(error)
    print(
        "| variants | n | mesh alone finds | chain without variants finds | "
        + " | ".join(columns)
        + " (of those found) |"
    )
    print("|---|" + "---|" * (len(columns) + 3))
    for group, counts in sorted(by_group.items(), key=lambda item: (item[0] == "ALL", item[0])):
        n = sum(counts.values()) - counts["imprecise"]
        mesh_alone = mesh_only[group]["face_mesh"]
        before = no_variants[group]["found"]
        print(f"| {group} | {n} | {mesh_alone} | {before} | " + " | ".join(str(counts[c]) for c in columns) + " |")
    print()
    for method, values in errors.items():
        print(
            f"{method}: n={len(values)} mean point error {np.mean(values):.1f} % of eye distance, "
            f"median {np.median(values):.1f} %"
        )
    no_face = 0
    for rgb in (
        np.full((480, 640, 3), 128, np.uint8),
        np.random.default_rng(1).integers(0, 255, (480, 640, 3), dtype=np.uint8),
    ):
        try:
            detector.detect(rgb)
        except NoFaceError:
            no_face += 1
    print(f"no-face images correctly refused: {no_face}/2")


def measure_calibration() -> None:
    """Nose-tip index and the detector face box, in the ArcFace template frame."""
    detector = FaceDetector()
    template = ARCFACE_TEMPLATE_112
    eye_distance = float(np.linalg.norm(template[1] - template[0]))
    images = list(real_faces().values()) + lfw_faces()
    offsets: dict[int, list[np.ndarray]] = {i: [] for i in (1, 4, 5, 19, 195)}
    boxes, residuals = [], []
    for rgb in images:
        meshes = detector.mediapipe.face_mesh(rgb)
        if not meshes:
            continue
        landmarks = meshes[0]
        four = landmarks[[MESH_POINTS5[i] for i in (0, 1, 3, 4)]]
        M4 = fit_similarity(four, template[[0, 1, 3, 4]])
        residuals.append(np.linalg.norm(apply_affine(M4, four) - template[[0, 1, 3, 4]], axis=1) / eye_distance)
        for index in offsets:
            offsets[index].append(apply_affine(M4, landmarks[[index]])[0] - template[2])
        faces = detector.mediapipe.face_detector(rgb, "full")
        if faces:
            M5 = fit_similarity(landmarks[list(MESH_POINTS5)], template)
            boxes.append(apply_affine(M5, faces[0].box.reshape(2, 2)).reshape(4))
    print(f"faces measured: {len(residuals)} of {len(images)}")
    r = np.array(residuals) * 100
    print(
        "4-point fit (eyes, mouth corners) residual, % eye distance: "
        f"mean {r.mean():.1f}, per point {r.mean(0).round(1)}"
    )
    for index, values in offsets.items():
        v = np.array(values)
        print(
            f"nose candidate {index}: mean offset from template nose {v.mean(0).round(2)} px, "
            f"mean distance {np.linalg.norm(v, axis=1).mean() / eye_distance * 100:.1f} % eye distance"
        )
    b = np.array(boxes)
    print(f"detector box in template frame (n={len(b)}): mean {b.mean(0).round(1)}, std {b.std(0).round(1)}")


#: The landmarks each synthetic occluder covers.
COVERED = {
    "none": (),
    "hand_over_mouth": ("left_mouth_corner", "right_mouth_corner"),
    "bar_over_eyes": ("left_eye", "right_eye"),
    "bar_over_mouth": ("left_mouth_corner", "right_mouth_corner"),
    "surgical_mask": ("left_mouth_corner", "right_mouth_corner"),
    "sunglasses": ("left_eye", "right_eye"),
    "sunglasses_and_hand": ("left_eye", "right_eye", "left_mouth_corner", "right_mouth_corner"),
}


def measure_occlusion() -> None:
    """Covered landmarks flagged (recall) and uncovered ones flagged (false alarms), per variant group."""
    counts: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    with FaceDetector() as detector:
        for variant in variants(real_faces(), detector):
            flagged = set(occluded_points(variant.rgb, variant.truth))
            for group in (
                f"occluder={variant.occluder}",
                f"blur={variant.blur}",
                f"geometry={variant.geometry}",
                "ALL",
            ):
                for name in TESTED_POINTS.values():
                    is_covered = name in COVERED[variant.occluder]
                    counts[group][
                        ("covered" if is_covered else "uncovered") + ("_flagged" if name in flagged else "")
                    ] += 1
    print("| variants | covered points | flagged | uncovered points | flagged (false alarm) |")
    print("|---|---|---|---|---|")
    for group in sorted(counts):
        c = counts[group]
        covered, uncovered = c["covered"] + c["covered_flagged"], c["uncovered"] + c["uncovered_flagged"]
        print(f"| {group} | {covered} | {c['covered_flagged']} | {uncovered} | {c['uncovered_flagged']} |")


def measure_speed(repeats: int = 5) -> None:
    """Time of ``detect`` with and without MTCNN (refinement of the mesh's points, second detector),
    alternated in the same process: the common case, faces found only late, no face."""
    import time

    import cv2
    from skimage import data

    from inference_server.preprocess.official_reference import find_fixtures

    faces = real_faces()
    cases = {"astronaut (mesh at once)": faces["astronaut"], "grace_hopper (mesh at once)": faces["grace_hopper"]}
    fixtures = find_fixtures()
    if fixtures is not None:
        for name in ("despair-alone-being-alone-archetype-thumb", "rope-model-exposure-hands-thumb"):
            cases[f"{name[:20]} (late step)"] = cv2.cvtColor(cv2.imread(str(fixtures / "images" / f"{name}.jpg")), 4)
    cases["flat grey 640x480 (no face)"] = np.full((480, 640, 3), 128, np.uint8)
    cases["noise 640x480 (no face)"] = np.random.default_rng(1).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    cases["coffee 1600x1200 (no face)"] = cv2.resize(data.coffee(), (1600, 1200))
    with FaceDetector(mtcnn=False) as without, FaceDetector() as with_mtcnn:
        for detector in (without, with_mtcnn):  # warm up (graphs, weights)
            detector.detect(faces["astronaut"])
        print("| photo | without MTCNN (ms) | with MTCNN (ms) | ratio |")
        print("|---|---|---|---|")
        for label, rgb in cases.items():
            times: dict[bool, list[float]] = {False: [], True: []}
            for _ in range(repeats):
                for use, detector in ((False, without), (True, with_mtcnn)):
                    start = time.perf_counter()
                    with contextlib.suppress(NoFaceError):
                        detector.detect(rgb)
                    times[use].append(1000 * (time.perf_counter() - start))
            before, after = np.median(times[False]), np.median(times[True])
            print(f"| {label} | {before:.0f} | {after:.0f} | {after / before:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calibration", action="store_true", help="also measure the nose index and face box")
    parser.add_argument("--occlusion", action="store_true", help="measure the landmarks-on-an-occluder test only")
    parser.add_argument("--speed", action="store_true", help="time detection with and without MTCNN only")
    args = parser.parse_args()
    if args.speed:
        measure_speed()
        return
    if args.occlusion:
        measure_occlusion()
        return
    if args.calibration:
        measure_calibration()
    measure_chain()


if __name__ == "__main__":
    main()
