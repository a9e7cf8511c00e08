"""Honesty about the input: what a user should know about the face a reconstruction was made from.

``input_warnings`` turns a ``FaceDetection`` into the result file's ``meta["warnings"]`` entries
(``{"code", "message"}``; other stages append their own to the same list), which the CLI, the contact
sheet and the Blender panel show.
"""

from __future__ import annotations

import numpy as np

from .alignment import ARCFACE_TEMPLATE_112, apply_affine, fit_similarity, template_interocular
from .detect import FaceDetection

#: Below this face-detector score a face is reported as a low-confidence detection (MediaPipe's
#: short-range detector scores noise and textures up to ~0.65, docs/preprocessing.md).
LOW_CONFIDENCE = 0.75
#: Nose tip off the midline by this fraction of the eye distance (in the aligned crop) means a head turned
#: by roughly 35° or more: a nose ~0.6 eye distances in front of the eyes, seen at an angle a, moves
#: 0.6 sin a / cos a of the projected eye distance (0.42 at 35°). On the official-preprocessing fixtures it
#: ranges over 0.02–0.46 (the clearest three-quarter view).
STRONG_TURN = 0.4
#: Human-readable names of the image variants (chain.py) that can find a face.
VARIANT_NAMES = {
    "flip": "the mirror image",
    "clahe": "a contrast-normalised copy",
    "clahe-flip": "a contrast-normalised mirror image",
    "pad": "a copy with a border added",
}


def head_turn(points5: np.ndarray) -> float:
    """Signed horizontal offset of the nose tip from the eyes' and mouth's midline in the aligned crop, as
    a fraction of the template eye distance (0 for a frontal face; the sign says which way)."""
    to_template = fit_similarity(np.asarray(points5, np.float64), ARCFACE_TEMPLATE_112)
    aligned = apply_affine(to_template, np.asarray(points5, np.float64))
    midline = (aligned[[0, 1, 3, 4], 0]).mean()
    return float((aligned[2, 0] - midline) / template_interocular())


def input_warnings(detection: FaceDetection) -> list[dict[str, str]]:
    """The warnings about the chosen face, most important first."""
    warnings: list[dict[str, str]] = []

    def add(code: str, message: str) -> None:
        warnings.append({"code": code, "message": message})

    box = ", ".join(str(round(float(v))) for v in detection.box)
    if detection.n_faces > 1:
        add(
            "several_faces",
            f"{detection.n_faces} faces were found; this is face {detection.index} (box {box}), nearest the "
            "centre first. List them with `ofer-worker faces PHOTO` and choose one with --face N.",
        )
    if detection.method == "points":
        return warnings  # the user placed the points: nothing was detected to doubt
    if detection.method in ("detector_keypoints", "mtcnn"):
        which = "MTCNN's five points" if detection.method == "mtcnn" else "the face detector's keypoints"
        add(
            "low_confidence",
            f"Only {which} were found (score {detection.score or 0:.2f}); the face mesh "
            "could not confirm the face, so the crops are coarse. Draw a box or click the five points.",
        )
    elif detection.confidence is None:
        where = _variant_name(detection.variant)
        add(
            "low_confidence",
            f"No face detector saw this face; only the face mesh found it{where}. Check the face marks.",
        )
    elif detection.confidence < LOW_CONFIDENCE:
        add(
            "low_confidence",
            f"The face detector scored this face {detection.confidence:.2f} (below {LOW_CONFIDENCE}); "
            "check the face marks.",
        )
    if detection.cut_by_frame:
        add(
            "cut_by_frame",
            "The face reaches past the photo's border: the part outside is guessed, and the crops are less "
            "like the ones the networks were trained on.",
        )
    if detection.occluded_points:
        names = ", ".join(name.replace("_", " ") for name in detection.occluded_points)
        add(
            "landmarks_on_occluder",
            f"The photo shows something other than a face under these landmarks: {names} (a hand, a mask, "
            "hair, sunglasses or the frame's edge). They are guessed, so the crops may be misaligned; click "
            "the five points if you can see where they are.",
        )
    turn = head_turn(detection.points5)
    if abs(turn) >= STRONG_TURN:
        add(
            "strong_head_turn",
            f"The head is turned strongly (nose {abs(turn):.0%} of the eye distance off the midline, about 35° "
            "or more): the far side of the face is guessed.",
        )
    return warnings


def _variant_name(variant: str | None) -> str:
    if variant is None:
        return ""
    if variant.startswith("rotate"):
        return f" on a copy rotated by {variant[len('rotate') :]}°"
    return f" on {VARIANT_NAMES.get(variant, variant)}"
