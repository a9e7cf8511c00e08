"""Did a landmark fall on an occluder? Evidence from the photo, not from the landmarks alone.

A detector places eyes and mouth corners even where a hand, a mask, sunglasses or hair covers them (its
guess is what the crops are aligned with). Each of the five-point landmarks except the nose is checked
against the face's **own skin**, in the face's own frame (the ArcFace-aligned crop, drawn at twice its
size so that small faces get a few hundred pixels per patch):

- the skin reference is the median colour (CIE Lab) of four patches: both cheeks below the eyes, the
  nose bridge and the nose side — places a hand over the mouth or sunglasses rarely all cover;
- around a real eye or mouth corner there is **skin** (lids, cheek, lip skin) **and** something that is
  not skin (iris, sclera, lashes, lip red, the dark mouth crease). A patch with almost no skin-coloured
  pixels lies on a non-skin occluder (sunglasses, a mask, a bar, hair, an object); a patch that is
  almost all skin and nothing else lies on skin without features: a hand or fingers.

- a point inside a hand that MediaPipe's hand detector found in the photo (:mod:`.hands`) lies on a
  hand, whatever its colours say: fingers on a mouth corner can keep lip colour and creases in the patch.

The thresholds are in ``OcclusionThresholds`` (measured in docs/preprocessing.md, section 6). On a black
and white photo only lightness differs: the test still sees dark lashes and creases and non-skin occluders
of another grey, but a hand in the same grey as the face is not told from a closed eye as reliably.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .alignment import ARCFACE_TEMPLATE_112, fit_similarity
from .hands import find_hands, hand_mask

#: The points that are tested, by their place in the ArcFace five points (the nose tip is left out: the
#: nose is skin with little structure, so "featureless skin" is its normal state).
TESTED_POINTS = {0: "left_eye", 1: "right_eye", 3: "left_mouth_corner", 4: "right_mouth_corner"}
#: Skin reference patch centres in the 112 template frame: cheeks below the eyes, nose bridge, nose side.
SKIN_PATCHES_112 = ((36.0, 74.0), (76.0, 74.0), (56.0, 54.0), (48.0, 68.0))
#: Range of a* and of b* (each) of skin of every complexion in CIE Lab; a patch outside it is not skin.
SKIN_HUE = (3.0, 40.0)
#: Upscaling of the aligned crop the patches are read from.
SCALE = 2.0


@dataclass(frozen=True)
class OcclusionThresholds:
    """``chroma``: a pixel is skin-coloured when its (a*, b*) is within this of the reference and its
    lightness within ``lightness`` (shading varies more than hue over a face). ``min_skin``: fewer
    skin-coloured pixels around a point than this fraction → a non-skin occluder. ``min_feature``: fewer
    clearly non-skin pixels (``feature_chroma`` away in hue, or ``feature_dark`` darker) → featureless skin.
    ``radius``: the patch radius as a fraction of the template eye distance. ``min_sharpness``: below this
    ``face_sharpness`` blur has flattened lips and lids too, so "featureless" is not judged."""

    chroma: float = 9.0
    lightness: float = 35.0
    min_skin: float = 0.2
    feature_chroma: float = 12.0
    feature_dark: float = 30.0
    min_feature: float = 0.03
    radius: float = 0.2
    min_sharpness: float = 0.17


DEFAULT_THRESHOLDS = OcclusionThresholds()


@dataclass(frozen=True)
class PointEvidence:
    """What the patch around one landmark shows: ``skin`` and ``feature`` fractions (see the module notes)
    and the verdict ``occluder`` (None when the point is on skin-and-feature, as a face should be; "hand"
    when it lies inside a detected hand, "not_skin", "featureless_skin" or "outside_frame")."""

    name: str
    skin: float
    feature: float
    occluder: str | None


def point_evidence(
    rgb: np.ndarray, points5: np.ndarray, thresholds: OcclusionThresholds = DEFAULT_THRESHOLDS,
    hands: np.ndarray | None = None,
) -> list[PointEvidence]:  # fmt: skip
    """The evidence for the eyes and mouth corners of ``points5`` (photo pixels) in ``rgb`` (H, W, 3).
    ``hands``: (H, W) bool mask of detected hands (:func:`hand_mask_near`); None: colour evidence only."""
    verdicts = _colour_evidence(rgb, points5, thresholds)
    if hands is None:
        return verdicts
    height, width = hands.shape
    out = []
    for evidence, index in zip(verdicts, TESTED_POINTS, strict=True):
        x, y = (int(np.floor(v)) for v in points5[index])
        if 0 <= x < width and 0 <= y < height and hands[y, x]:
            evidence = PointEvidence(evidence.name, evidence.skin, evidence.feature, "hand")
        out.append(evidence)
    return out


def hand_mask_near(rgb: np.ndarray, points5: np.ndarray, sharp: bool = True) -> np.ndarray:
    """(H, W) bool mask of the hands in the photo (:mod:`.hands`; a crop around the face when the whole
    photo shows none); all False when there are none or the hand models are missing. On a face that is not
    ``sharp`` the face crop's hands are left out: there the palm detector takes a blurred jaw for a palm."""
    found = find_hands(rgb, np.asarray(points5, np.float64)).hands
    return hand_mask([h for h in found if sharp or h.variant != "face_crop"], *rgb.shape[:2])


def _colour_evidence(
    rgb: np.ndarray, points5: np.ndarray, thresholds: OcclusionThresholds = DEFAULT_THRESHOLDS
) -> list[PointEvidence]:
    """The colour evidence (skin and feature shares) for the tested points."""
    lab, scale = _aligned_lab(rgb, np.asarray(points5, np.float64))
    eye_distance = float(np.linalg.norm(ARCFACE_TEMPLATE_112[1] - ARCFACE_TEMPLATE_112[0])) * scale
    radius = thresholds.radius * eye_distance
    references = _skin_references(lab, scale, radius)
    sharp = face_sharpness(lab) >= thresholds.min_sharpness
    out = []
    for index, name in TESTED_POINTS.items():
        pixels = _patch(lab, ARCFACE_TEMPLATE_112[index] * scale, radius)
        if len(pixels) < 0.5 * np.pi * radius**2 or len(references) == 0:
            # Mostly outside the photo (or no skin to compare with): there is nothing to test.
            out.append(PointEvidence(name, 0.0, 0.0, "outside_frame"))
            continue
        # Distances to the nearest skin reference: a hand over the mouth is skin too, but of other patches.
        chroma = np.min([np.linalg.norm(pixels[:, 1:] - r[1:], axis=1) for r in references], axis=0)
        lightness = np.array([pixels[:, 0] - r[0] for r in references])
        near = np.argmin([np.linalg.norm(pixels[:, 1:] - r[1:], axis=1) for r in references], axis=0)
        lightness = lightness[near, np.arange(len(pixels))]
        skin = float(np.mean((chroma < thresholds.chroma) & (np.abs(lightness) < thresholds.lightness)))
        feature = float(np.mean((chroma > thresholds.feature_chroma) | (lightness < -thresholds.feature_dark)))
        verdict = None
        if skin < thresholds.min_skin:
            verdict = "not_skin"
        elif feature < thresholds.min_feature and sharp:
            verdict = "featureless_skin"
        out.append(PointEvidence(name, skin, feature, verdict))
    return out


def occluded_points(
    rgb: np.ndarray, points5: np.ndarray, thresholds: OcclusionThresholds = DEFAULT_THRESHOLDS
) -> tuple[str, ...]:
    """Names of the landmarks that lie on an occluder (empty when the face looks uncovered there), by
    their colours and by the hands detected in the photo."""
    lab, _ = _aligned_lab(rgb, np.asarray(points5, np.float64))
    hands = hand_mask_near(rgb, points5, sharp=face_sharpness(lab) >= thresholds.min_sharpness)
    return tuple(e.name for e in point_evidence(rgb, points5, thresholds, hands) if e.occluder is not None)


def face_sharpness(lab: np.ndarray) -> float:
    """Fine detail over coarse detail of the lightness in the middle of the aligned face (brows to chin):
    mean |L − blur σ 1.5 px| / mean |L − blur σ 6 px| at ``SCALE`` × 112. Sharp photos measure 0.2–0.55,
    the same faces blurred by 5 % of the eye distance 0.10–0.14 (docs/preprocessing.md, section 6)."""
    import cv2

    window = lab[round(30 * SCALE) : round(100 * SCALE), round(20 * SCALE) : round(92 * SCALE), 0]
    inside = np.isfinite(window).astype(np.float32)
    lightness = np.nan_to_num(window, nan=0.0).astype(np.float32)

    def detail(sigma: float) -> np.ndarray:
        # Blur of the photo's pixels only (normalised convolution): the photo's border is not an edge.
        blurred = cv2.GaussianBlur(lightness, (0, 0), sigma) / np.maximum(cv2.GaussianBlur(inside, (0, 0), sigma), 1e-6)
        return np.abs(lightness - blurred)

    counted = cv2.erode(inside, np.ones((5, 5), np.uint8)) > 0
    if counted.sum() < 0.25 * counted.size:
        return 0.0
    fine, coarse = detail(1.5)[counted].mean(), detail(6.0)[counted].mean()
    return float(fine / max(coarse, 1e-6))


def _skin_references(lab: np.ndarray, scale: float, radius: float) -> list[np.ndarray]:
    """Median Lab colour of each skin patch inside the photo; patches whose colour is not skin-hued (a mask,
    sunglasses) are left out unless none is (a black and white photo has no hue at all)."""
    medians = []
    for centre in SKIN_PATCHES_112:
        pixels = _patch(lab, np.array(centre) * scale, radius)
        if len(pixels) > 0.5 * np.pi * radius**2:
            medians.append(np.median(pixels, axis=0))
    hued = [m for m in medians if SKIN_HUE[0] <= m[1] <= SKIN_HUE[1] and SKIN_HUE[0] <= m[2] <= SKIN_HUE[1]]
    colourless = all(np.hypot(m[1], m[2]) < 4.0 for m in medians)
    return medians if colourless else hued


def _aligned_lab(rgb: np.ndarray, points5: np.ndarray) -> tuple[np.ndarray, float]:
    """The face warped into the ArcFace frame at ``SCALE`` × 112, as float Lab (L 0–100, a* b* signed);
    pixels outside the photo are NaN so they count as neither skin nor feature."""
    import cv2

    side = round(112 * SCALE)
    to_crop = fit_similarity(points5, ARCFACE_TEMPLATE_112 * SCALE)
    image = np.ascontiguousarray(rgb[:, :, :3]).astype(np.float32) / 255.0
    warped = cv2.warpAffine(image, to_crop, (side, side), flags=cv2.INTER_LINEAR, borderValue=(-1, -1, -1))
    inside = warped[:, :, 0] >= 0
    lab = cv2.cvtColor(np.clip(warped, 0, 1), cv2.COLOR_RGB2LAB).astype(np.float64)
    lab[~inside] = np.nan
    return lab, SCALE


def _patch(lab: np.ndarray, centre: np.ndarray, radius: float) -> np.ndarray:
    """The (N, 3) Lab pixels of the disc around ``centre`` that lie inside the photo."""
    height, width = lab.shape[:2]
    ys, xs = np.mgrid[0:height, 0:width]
    disc = (xs - centre[0]) ** 2 + (ys - centre[1]) ** 2 <= radius**2
    pixels = lab[disc]
    return pixels[~np.isnan(pixels).any(axis=1)]
