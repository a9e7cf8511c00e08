"""Is a fitted pose to be trusted? Checks a small residual cannot make (numpy + OpenCV).

A detector's mesh of a hidden face part is a guess, and a pose fitted to a guess agrees with it: the
residual stays small while the pose is wrong. Two situations are caught from evidence the residual does
not use:

- **a profile fitted as a smaller turn.** Past ~60° MediaPipe's mesh collapses towards a 45-50° face;
  the eyes, brows, nose and mouth lie in a shallow slab and fit that turn well. Only the jaw line spans
  the head's depth (ear to chin), and on these photos it is always contradicted (group consensus) or
  hidden. So past TURNED_YAW_DEG a pose needs MIN_JAW_TURNED trusted jaw landmarks.
- **eyes drawn on plain skin.** Where an eye is hidden (turned away, under a bar or a hand) the detector
  still draws it, often onto the cheek. A real eye region holds lashes, iris and sclera; a guessed one is
  skin. Such an eye's landmarks are not trusted; a pose that shows that eye facing the camera, or a face
  with fewer than MIN_EYE_LANDMARKS visible eye landmarks, is not trusted (the eyes are the detector's
  most precise landmarks, and its mesh follows its guess of them).

Measured on renders of the DEMO head across yaw −90..90° (docs/texture.md, "Trust").
"""

from __future__ import annotations

import cv2
import numpy as np

from ..texture.occluder import SKIN_RADIUS, SkinModel, face_skin
from .landmarks68 import GROUPS

#: Past this yaw (degrees) the turn must be confirmed by the jaw line.
TURNED_YAW_DEG = 35.0
MIN_JAW_TURNED = 3
#: Fewer visible eye landmarks (of 12) than this: the pose follows the detector's guess of the eyes.
MIN_EYE_LANDMARKS = 4
#: An eye region (its six landmarks widened EYE_REGION_SCALE × about their centre) with less than this
#: share of non-skin pixels shows no eye; below EYE_DARK_FRACTION of the skin's brightness is dark there.
#: Measured on the DEMO head: open eyes 0.2-0.9; eyes guessed onto the cheek below a bar 0.0-0.03.
MIN_EYE_FEATURE = 0.05
EYE_REGION_SCALE = 1.3
#: The test only judges a face whose skin has colour: its chromaticity at least this far from grey
#: (DEMO head renders: 0.08; the sequence test's untextured grey renders, and black-and-white photos, ~0,
#: where eyes without dark lashes at small sizes look like plain skin).
MIN_SKIN_CHROMA = 0.03
EYE_DARK_FRACTION = 0.6
#: A hidden eye whose landmarks face the camera at least this much (0..1) under the fitted pose
#: contradicts the pose.
FACING_EYE = 0.5
#: The first solve (every landmark by its photo evidence) and the final one (after the facing test and the
#: group consensus reweighed them) agree on the yaw within this many degrees when the landmarks fix it.
MAX_YAW_DISAGREEMENT = 10.0
#: Where the photo shows an object over both eyes (fit/cover.py: dark lenses, a bar), the eyes-hidden rule
#: gives way: the pose rests on the nose, mouth and jaw the object leaves (benchmarks/fit_sunglasses.py) ...
COVERED_EYES_POSE = True
#: ... while the head is turned at most this far (degrees), and so is a head with one eye behind such an
#: object. Beyond it the rest of the face let turned heads through: a bar over both eyes, yaw ±60°, 4 of 34
#: fits 13-30° off (0 of 24 up to 35°); sunglasses at 40-50°, one lens covering its eye, 2 of 5 fits 10-12°
#: off (benchmarks/fit_trust.py).
COVERED_EYES_MAX_YAW_DEG = 35.0
#: The trust level of a landmark (as in stage.TRUSTED_WEIGHT).
TRUSTED = 0.5
EYES = (range(36, 42), range(42, 48))


def eye_feature_share(rgb: np.ndarray, eye: np.ndarray, skin: SkinModel) -> float:
    """Share of the pixels inside an eye's six landmarks (6, 2) that are not plain skin: dark (lashes,
    iris, pupil) or off the skin colour (sclera, iris, an occluder)."""
    centre = eye.mean(axis=0)
    polygon = np.round(centre + EYE_REGION_SCALE * (eye - centre)).astype(np.int32)
    mask = np.zeros(rgb.shape[:2], np.uint8)
    cv2.fillPoly(mask, [polygon], (1,))
    pixels = rgb[mask > 0].astype(np.float64)
    if len(pixels) < 3:
        return 0.0
    dark = pixels.max(axis=1) < EYE_DARK_FRACTION * skin.brightness
    return float((dark | (skin.distance(pixels) > SKIN_RADIUS)).mean())


def plain_eyes(
    rgb: np.ndarray, mesh_points: np.ndarray, landmarks: np.ndarray, skin: SkinModel | None = None
) -> np.ndarray:
    """(2,) bool, for the eyes 36-41 and 42-47 of ``landmarks`` (68, 2): the photo shows plain skin there
    (never on a grey face, MIN_SKIN_CHROMA). ``skin``: the face's skin model when the caller has it
    (learnt inside the mesh outline otherwise). Raises SkinModelError when the face shows no usable skin."""
    if skin is None:
        skin = face_skin(rgb, mesh_points)
    if float(np.linalg.norm(skin.mean - 1.0 / 3.0)) < MIN_SKIN_CHROMA:  # a grey face: colour cannot judge
        return np.array([False, False])
    return np.array([eye_feature_share(rgb, landmarks[list(eye)], skin) < MIN_EYE_FEATURE for eye in EYES])


def pose_doubt(
    weights: np.ndarray, yaw: float, plain: np.ndarray, facing: np.ndarray, first_yaw: float | None = None,
    eyes_covered: int = 0,
) -> str:  # fmt: skip
    """Why a fitted pose with an acceptable residual is still not to be trusted, or "". ``weights`` (68,)
    the landmarks' trust, ``yaw`` of the pose in degrees, ``plain`` (2,) from :func:`plain_eyes`,
    ``facing`` (68,) how far each landmark faces the camera under the pose, ``first_yaw`` the yaw of the
    first solve (before the facing test and the group consensus), ``eyes_covered``: how many eyes the photo
    shows an object over (fit/cover.py's :func:`~.cover.eyes_covered`); with both, their landmarks are known
    to be hidden and the pose may rest on the rest of the face (COVERED_EYES_POSE) while the head faces the
    camera."""
    trusted = weights >= TRUSTED
    if first_yaw is not None and abs(first_yaw - yaw) > MAX_YAW_DISAGREEMENT:
        return (f"two poses fit the landmarks, turned {abs(first_yaw):.0f}° and {abs(yaw):.0f}°: the detector's "
                "points do not fix the turn")  # fmt: skip
    for eye, hidden in zip(EYES, plain, strict=True):
        if hidden and float(facing[list(eye)].mean()) >= FACING_EYE:
            return ("an eye the pose shows facing the camera is plain skin in the photo: the detector guessed "
                    "it (a turned-away or covered eye), so the pose is a guess too")  # fmt: skip
    eyes = int(trusted[list(GROUPS["eyes"])].sum())
    if eyes_covered and COVERED_EYES_POSE and abs(yaw) > COVERED_EYES_MAX_YAW_DEG:
        return (f"{'the eyes are' if eyes_covered == 2 else 'an eye is'} behind something the photo shows "
                f"(sunglasses, a bar) and the head is turned {abs(yaw):.0f}°: the rest of the face does not fix "
                f"such a turn (at most {COVERED_EYES_MAX_YAW_DEG:.0f}°)")  # fmt: skip
    if eyes < MIN_EYE_LANDMARKS and not (eyes_covered == 2 and COVERED_EYES_POSE):
        return f"the eyes are hidden (only {eyes} of 12 eye landmarks visible): the detector guesses them, and the pose"
    jaw = int(trusted[list(GROUPS["jaw"])].sum())
    if abs(yaw) >= TURNED_YAW_DEG and jaw < MIN_JAW_TURNED:
        return (f"the head is turned {abs(yaw):.0f}° and the jaw line that fixes such a turn is hidden or contradicts "
                f"the face ({jaw} of 17 jaw landmarks trusted): likely a profile fitted as a smaller turn")  # fmt: skip
    return ""
