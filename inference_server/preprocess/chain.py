"""The MediaPipe detection chain: every detector and variant consulted before giving up.

Steps, each tried only when the ones before found no face:

1. ``face_mesh``: the face mesh (478 landmarks) on the image (its outline reaches past the border of a
   face cut by the frame; measuring such a face again on a padded copy made its box worse, so it is not
   done: docs/preprocessing.md);
2. the face detectors, short **and** full range (both always: one answering does not silence the
   other), then on overlapping tiles when neither sees anything (small faces in large photos);
3. ``face_mesh_on_detector_box``: the face mesh on an enlarged crop around each detector hit: a hit the
   mesh confirms is accepted at any detector score; when none is confirmed, mirrored, contrast-normalised
   and rotated crops of the hits that both detector models see;
4. ``face_mesh_on_variant``: the face mesh on padded, mirrored, CLAHE and rotated (±30°, ±45°) copies of
   the whole image (bowed and tilted heads, dark photos, faces cut by the frame), kept where both
   detector models see the face on that copy too;
5. ``face_mesh_on_mtcnn_box``: the second detector, MTCNN (mtcnn.py; when its weights are installed),
   on the image; the face mesh on the enlarged crop of each MTCNN hit must confirm it, as in step 3;
6. ``detector_keypoints``: the detector's own keypoints, for a confident hit only;
7. ``mtcnn``: MTCNN's own five points, for a confident hit (score ≥ 0.95) only.

Every step returns all the faces it found, nearest the target first.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from .alignment import ARCFACE_TEMPLATE_112, apply_affine, fit_similarity, invert_affine
from .face_box import crossed_edges
from .mediapipe_faces import MESH_POINTS5, DetectorFace, MediaPipeFaces
from .mtcnn import Mtcnn, MtcnnFace
from .regions import distance, extent, merge_duplicates, overlap, square_crop, tile_origins, tile_sides
from .variants import DEFAULT_VARIANTS, ImageVariant, iter_variants, make_variant

DetectionMethod = Literal[
    "points",
    "face_mesh",
    "face_mesh_on_box",
    "face_mesh_on_detector_box",
    "face_mesh_on_variant",
    "face_mesh_on_mtcnn_box",
    "detector_keypoints",
    "mtcnn",
    "scrfd",
]

#: The chain's steps, in order (``run`` can leave some out for measurements).
ALL_STEPS = (
    "face_mesh",
    "detector",
    "detector_on_tiles",
    "face_mesh_on_detector_box",
    "face_mesh_on_variant",
    "face_mesh_on_mtcnn_box",
    "detector_keypoints",
    "mtcnn",
)
#: The MediaPipe chain alone, before the second detector (the baseline of docs/preprocessing.md).
STEPS_WITHOUT_MTCNN = tuple(step for step in ALL_STEPS if step not in ("face_mesh_on_mtcnn_box", "mtcnn"))
#: The chain before test-time variants (the measurement baseline in docs/preprocessing.md).
STEPS_WITHOUT_VARIANTS = (
    "face_mesh",
    "detector",
    "detector_on_tiles",
    "face_mesh_on_detector_box",
    "detector_keypoints",
)
#: A detector hit the face mesh cannot confirm is used alone only above this score: the short-range
#: detector scores noise and textures up to ~0.65 (docs/preprocessing.md).
MIN_UNCONFIRMED_SCORE = 0.75
#: An MTCNN hit the face mesh cannot confirm is used alone (its own five points) only above this score.
MIN_UNCONFIRMED_MTCNN_SCORE = 0.95
#: How many detector hits, nearest the target first, the face mesh tries to confirm.
MAX_CONFIRMATIONS = 4
#: Accepted detector-box side / mesh eye distance when the mesh confirms a detector hit (frontal faces
#: measure ~2.6; turned faces have a shorter eye distance, so the upper bound is generous).
MESH_BOX_RATIO = (1.5, 6.0)
#: Side of the square crop the face mesh sees around a detector box / a user box, in pixels.
CROP_SIDE = 384
#: Crop side around a box as a multiple of the box's longer side: the face mesh's own detector is
#: trained on faces that fill roughly half the frame.
CROP_CONTEXT = 2.0
#: Variants of a detector-box crop tried when the plain crop gives no mesh.
BOX_VARIANTS = ("flip", "clahe", "rotate-30", "rotate+30", "clahe-flip")
#: Mirror-image mesh indices of the five points (the mesh labels a mirrored face's eyes the other way).
MIRRORED_POINTS5 = (MESH_POINTS5[1], MESH_POINTS5[0], MESH_POINTS5[2], MESH_POINTS5[4], MESH_POINTS5[3])


@dataclass(frozen=True)
class Candidate:
    """A face found on a working copy; coordinates in that copy. ``mirrored``: the landmarks came from a
    mirror image (indices name the other side of the face); ``variant``: the image variant that found it;
    ``depth`` (478,): the face mesh's relative depth of the landmarks, in the copy's pixels (the fit uses
    it, fit/pose_batch.py)."""

    points5: np.ndarray
    landmarks: np.ndarray | None
    found_box: np.ndarray
    method: DetectionMethod
    score: float | None = None
    detector_model: str | None = None
    variant: str | None = None
    mirrored: bool = False
    depth: np.ndarray | None = None

    def mapped(self, to_photo: np.ndarray) -> Candidate:
        """The same face with coordinates sent through the 2×3 affine ``to_photo``."""
        corners = apply_affine(to_photo, _box_corners(self.found_box))
        return replace(
            self,
            points5=apply_affine(to_photo, self.points5),
            landmarks=None if self.landmarks is None else apply_affine(to_photo, self.landmarks),
            # Depth is a length: it scales with the map's scale (rotations and flips keep it).
            depth=None if self.depth is None else self.depth * math.sqrt(abs(np.linalg.det(to_photo[:, :2]))),
            found_box=np.concatenate([corners.min(axis=0), corners.max(axis=0)]),
        )


def is_cut_by_frame(landmarks: np.ndarray, width: int, height: int) -> bool:
    """Whether a face mesh's outline reaches past the image border (by ``face_box.CUT_FRACTION`` of its
    size): the same rule that extends such a face's box past the frame."""
    return bool(crossed_edges(landmarks, width, height))


class MediaPipeChain:
    """The chain over one ``MediaPipeFaces`` (not thread-safe, as the graphs)."""

    def __init__(self, faces: MediaPipeFaces, mtcnn: Callable[[], Mtcnn | None] | None = None) -> None:
        self.faces = faces
        # Called only when the MediaPipe steps found nothing: loads the second detector on first use.
        self.mtcnn = mtcnn

    def run(self, rgb: np.ndarray, target: np.ndarray, steps: Sequence[str] = ALL_STEPS) -> list[Candidate]:
        """All faces of the first step that finds any, nearest ``target`` first (see the module notes)."""
        found: list[Candidate] = []
        if "face_mesh" in steps:
            found = self._meshes(rgb, variant=None)
        hits: list[DetectorFace] = []
        if not found and "detector" in steps:
            hits = self.detector_faces(rgb, tiles="detector_on_tiles" in steps)
            hits.sort(key=lambda h: distance(h.box, target))
            if "face_mesh_on_detector_box" in steps:
                # Variants of the crops only when no hit is confirmed as it is: a mirrored or rotated crop of
                # a textured false positive is more easily taken for a face than a real face is missed.
                found = self._confirmed(rgb, hits, with_variants=False)
                if not found and "face_mesh_on_variant" in steps:
                    found = self._confirmed(rgb, hits, with_variants=True)
        if not found and "face_mesh_on_variant" in steps:
            for variant in iter_variants(rgb, DEFAULT_VARIANTS):
                candidates = self._meshes(variant.rgb, variant=variant)
                found = [c.mapped(variant.to_original) for c in candidates if self.detectors_agree(variant.rgb, c)]
                if found:
                    break
        mtcnn_hits: list[MtcnnFace] = []
        if not found and ("face_mesh_on_mtcnn_box" in steps or "mtcnn" in steps):
            model = self.mtcnn() if self.mtcnn is not None else None
            mtcnn_hits = sorted(model.detect(rgb), key=lambda h: distance(h.box, target)) if model else []
            if "face_mesh_on_mtcnn_box" in steps:
                found = self._confirmed_mtcnn(rgb, mtcnn_hits)
        if not found and "detector_keypoints" in steps:
            found = [_from_keypoints(h) for h in hits if h.score >= MIN_UNCONFIRMED_SCORE]
        if not found and "mtcnn" in steps:
            found = [_from_mtcnn(h) for h in mtcnn_hits if h.score >= MIN_UNCONFIRMED_MTCNN_SCORE]
        return sorted(found, key=lambda c: distance(c.found_box, target))

    def _meshes(self, rgb: np.ndarray, variant: ImageVariant | None) -> list[Candidate]:
        mirrored = variant is not None and variant.mirrored
        indices = list(MIRRORED_POINTS5 if mirrored else MESH_POINTS5)
        return [
            Candidate(
                points5=points[indices, :2],
                landmarks=points[:, :2],
                depth=points[:, 2],
                found_box=extent(points[:, :2]),
                method="face_mesh" if variant is None else "face_mesh_on_variant",
                variant=None if variant is None else variant.name,
                mirrored=mirrored,
            )
            for points in self.faces.face_mesh(rgb, depth=True)
        ]

    def detector_faces(self, rgb: np.ndarray, tiles: bool) -> list[DetectorFace]:
        """Detector hits of both models on the whole image, else (``tiles``) on overlapping tiles of
        decreasing size — the bundled detectors squash the whole image to 128 or 192 pixels, so a face
        under ~10 % of a large photo is invisible to them without tiling."""
        hits = [face for model in ("short", "full") for face in self.faces.face_detector(rgb, model)]
        if hits or not tiles:
            return merge_duplicates(hits)
        height, width = rgb.shape[:2]
        for side in tile_sides(width, height):
            for x, y in tile_origins(width, height, side):
                shift = np.array([x, y], dtype=np.float64)
                for model in ("short", "full"):
                    for face in self.faces.face_detector(rgb[y : y + side, x : x + side], model):
                        hits.append(
                            DetectorFace(
                                box=face.box + np.tile(shift, 2),
                                keypoints=face.keypoints + shift,
                                score=face.score,
                                model=f"{face.model}/tiles",
                            )
                        )
            if hits:
                return merge_duplicates(hits)
        return []

    def _confirmed(self, rgb: np.ndarray, hits: list[DetectorFace], with_variants: bool) -> list[Candidate]:
        """Detector hits the face mesh confirms (nearest the target first; a hit it cannot confirm may be
        a false positive, so a farther confirmed face is preferred to it)."""
        confirmed = []
        for hit in hits[:MAX_CONFIRMATIONS]:
            # A hit the mesh sees only on a mirrored or contrast-normalised crop must be a hit of both
            # detector models: single-model hits on texture gave wrong faces (docs/preprocessing.md).
            if with_variants and not self.both_detectors_see(rgb, hit.box):
                continue
            found = self._mesh_confirms(rgb, hit.box, hit.score, hit.model, "face_mesh_on_detector_box", with_variants)
            if found is not None:
                confirmed.append(found)
        return confirmed

    def _confirmed_mtcnn(self, rgb: np.ndarray, hits: list[MtcnnFace]) -> list[Candidate]:
        """MTCNN hits the face mesh confirms on the plain enlarged crop (as detector hits in step 3)."""
        found = (self._mesh_confirms(rgb, hit.box, hit.score, "mtcnn", "face_mesh_on_mtcnn_box", False)
                 for hit in hits[:MAX_CONFIRMATIONS])  # fmt: skip
        return [candidate for candidate in found if candidate is not None]

    def _mesh_confirms(
        self, rgb: np.ndarray, box: np.ndarray, score: float, model: str, method: DetectionMethod, with_variants: bool
    ) -> Candidate | None:
        """The face mesh on a detector's box, labelled with that detector's hit; None when it sees no face."""
        found = self.mesh_on_box(rgb, box, with_variants=with_variants)
        if found is None:
            return None
        return replace(found, found_box=box, method=method, score=score, detector_model=model)

    def mesh_on_box(self, rgb: np.ndarray, box: np.ndarray, *, with_variants: bool) -> Candidate | None:
        """The face mesh on an enlarged crop around ``box`` (or on its variants), mapped back; it must
        describe the box's face: eyes inside the box, the box a face's size for that eye distance."""
        crop, to_photo = square_crop(rgb, box, CROP_CONTEXT, CROP_SIDE)
        centre = np.array([CROP_SIDE / 2.0, CROP_SIDE / 2.0])
        names = BOX_VARIANTS if with_variants else ("plain",)
        for name in names:
            variant = make_variant(crop, name)
            meshes = self._meshes(variant.rgb, variant=None if name == "plain" else variant)
            if not meshes:
                continue
            best = min(meshes, key=lambda c: distance(c.mapped(variant.to_original).found_box, centre))
            found = best.mapped(variant.to_original).mapped(to_photo)
            if _fits_box(found, box):
                return found
        return None

    def detectors_agree(self, rgb: np.ndarray, found: Candidate) -> bool:
        """Whether both face detectors, short and full range, see ``found`` (its eyes inside a box of
        each) on the same image. A face the mesh finds only on a mirrored, rotated or contrast-normalised
        copy is kept on that condition: texture taken for a face in one copy (the wrong faces of
        docs/preprocessing.md, section 3) is rarely a face to both detectors as well."""
        eyes = found.points5[:2].mean(axis=0)
        return self.both_detectors_see(rgb, np.concatenate([eyes, eyes]))

    def both_detectors_see(self, rgb: np.ndarray, region: np.ndarray) -> bool:
        """Whether each detector model has a hit on ``rgb`` overlapping ``region`` [x0, y0, x1, y1]."""
        for model in ("short", "full"):
            boxes = [hit.box for hit in self.faces.face_detector(rgb, model)]
            if not any(overlap(box, region) > 0.0 or _contains(box, region[:2]) for box in boxes):
                return False
        return True


def _contains(box: np.ndarray, point: np.ndarray) -> bool:
    return bool(box[0] <= point[0] <= box[2] and box[1] <= point[1] <= box[3])


def _fits_box(found: Candidate, box: np.ndarray) -> bool:
    eyes_mid = found.points5[:2].mean(axis=0)
    x0, y0, x1, y1 = box
    if not (x0 <= eyes_mid[0] <= x1 and y0 <= eyes_mid[1] <= y1):
        return False
    eye_distance = float(np.linalg.norm(found.points5[1] - found.points5[0]))
    ratio = max(x1 - x0, y1 - y0) / max(eye_distance, 1e-6)
    return MESH_BOX_RATIO[0] <= ratio <= MESH_BOX_RATIO[1]


def _from_keypoints(hit: DetectorFace) -> Candidate:
    return Candidate(
        points5=points5_from_detector_keypoints(hit.keypoints),
        landmarks=None,
        found_box=hit.box,
        method="detector_keypoints",
        score=hit.score,
        detector_model=hit.model,
    )


def _from_mtcnn(hit: MtcnnFace) -> Candidate:
    return Candidate(
        points5=hit.points5,
        landmarks=None,
        found_box=hit.box,
        method="mtcnn",
        score=hit.score,
        detector_model="mtcnn",
    )


def points5_from_detector_keypoints(keypoints: np.ndarray) -> np.ndarray:
    """ArcFace's five points from MediaPipe's detector keypoints (eyes, nose tip, mouth centre, ears).

    The detector gives one mouth point; the corners are read off the template: fit the similarity
    that maps the eyes, nose and mouth centre onto their template positions (the mouth centre is the
    midpoint of the template's corners) and send the template's corners back through its inverse.
    """
    keypoints = np.asarray(keypoints, dtype=np.float64)
    template_mouth_centre = ARCFACE_TEMPLATE_112[3:5].mean(axis=0)
    template4 = np.vstack([ARCFACE_TEMPLATE_112[:3], template_mouth_centre])
    to_template = fit_similarity(keypoints[:4], template4)
    corners = apply_affine(invert_affine(to_template), ARCFACE_TEMPLATE_112[3:5])
    return np.vstack([keypoints[:3], corners])


def _box_corners(box: np.ndarray) -> np.ndarray:
    x0, y0, x1, y1 = box
    return np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]], dtype=np.float64)
