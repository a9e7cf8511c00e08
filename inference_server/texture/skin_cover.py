"""Skin-coloured occluders (a hand over the mouth or an eye): evidence a skin-colour model cannot see.

A hand is skin to :mod:`.occluder`. What gives it away is what it hides: a mouth zone without any lip
colour or mouth opening, an eye zone without lashes, iris or sclera. Such a *covered feature* is the
seed; the occluder's own colour is read there, the face's colour on the skin away from it, and the
photo pixels closer to the occluder's colour than to the face's, connected to the seed, are the
occluder. When the two colours are too close to tell apart (a hand exactly the face's tone and light)
only the covered zone itself, widened, is left out: the feature is at least not baked from the hand.

The zones come from the model's landmarks but only say where to *look*; whether something covers them
is read in the photo, and the mask's extent comes from the photo's colours.
"""

from __future__ import annotations

import cv2
import numpy as np

from .occluder import LIP_RADIUS, SKIN_RADIUS, FeatureZones, SkinModel, channel_max, chromaticity, cie_lab

#: Share of a zone's visible texels that must show the feature for the feature to count as seen:
#: measured on clean DEMO-head renders, lips 0.2-0.5 of the mouth zone, eye details 0.3-0.9 of the
#: eye opening; under a hand both are ~0.
MIN_FEATURE_SHARE = 0.04
#: Fewer visible texels in a zone than this: nothing to judge (turned away, or a tiny face).
MIN_ZONE_TEXELS = 30
#: Below this fraction of the skin's brightness a pixel is dark (mouth opening, lashes, pupil).
DARK_FRACTION = 0.55
#: Skin texels nearer than this (eye distances, in the photo) to the seed do not describe the face.
FACE_REFERENCE_GAP_IOD = 0.5
#: Occluder and face colours closer than this (CIE Lab ΔE, lightness at half weight) are not told apart.
MIN_CONTRAST = 6.0
#: Share of the shown features' texels a grown occluder region may cover before it counts as the face itself.
MAX_SHOWN_SWALLOWED = 0.25
#: The seed zone is widened by this (eye distances) when the colours cannot delimit the occluder.
FALLBACK_GROW_IOD = 0.25
#: Gaps narrower than this (eye distances) inside the occluder (creases between fingers) are closed.
CLOSE_IOD = 0.06
#: A face whose skin chromaticity is closer than this to grey (a black-and-white photo, an untextured
#: render) shows no lip colour at all: the test is not made there.
MIN_SKIN_CHROMA = 0.03
#: The colour split tried in turn: a pixel is occluder when its distance to the occluder's colour is below this
#: times its distance to the face's (1: plain nearer; smaller: only colours close to the occluder's own).
COLOUR_RATIOS: tuple[float, ...] = (1.0, 0.5, 0.3)
#: Thin bridges between the occluder and face parts of similar colour are cut by an opening this wide.
OPEN_IOD = 0.04


def _feature_share(colors: np.ndarray, skin: SkinModel, kind: str) -> float:
    """Share of ``colors`` (N, 3) that show the feature: dark, or off the skin colour (lips: redder)."""
    x = np.asarray(colors, dtype=np.float64)
    dark = channel_max(x) < DARK_FRACTION * skin.brightness
    distance = skin.distance(x)
    if kind == "mouth":
        redder = chromaticity(x)[:, 0] >= skin.mean[0] - 0.01
        feature = (distance > SKIN_RADIUS) & (redder | (distance > LIP_RADIUS))
    else:
        feature = distance > SKIN_RADIUS
    return float((feature | dark).mean())


def covered_features(colors: np.ndarray, seen: np.ndarray, zones: FeatureZones, skin: SkinModel,
                     pixel_x: np.ndarray, eyes_seed: bool = True,
                     closed_eyes_x: tuple[float, ...] = ()) -> np.ndarray:  # fmt: skip
    """(S, S) bool: texels of feature zones (mouth, each eye unless not ``eyes_seed``) that the photo shows
    as plain skin. ``closed_eyes_x``: the photo x of eyes the photo shows closed, whose zone shows their lids
    (skin) and seeds nothing."""
    seeds = np.zeros(seen.shape, bool)
    eyes = zones.eye_opening & seen
    split = float(np.median(pixel_x[eyes])) if eyes.any() else 0.0
    candidates = [(zones.mouth & seen, "mouth")]
    if eyes_seed:
        if not any(x < split for x in closed_eyes_x):
            candidates.append((eyes & (pixel_x < split), "eye"))
        if not any(x >= split for x in closed_eyes_x):
            candidates.append((eyes & (pixel_x >= split), "eye"))
    for zone, kind in candidates:
        if int(zone.sum()) >= MIN_ZONE_TEXELS and _feature_share(colors[zone], skin, kind) < MIN_FEATURE_SHARE:
            seeds |= zone
    return seeds


def skin_coloured_cover(
    rgb: np.ndarray, colors: np.ndarray, seen: np.ndarray, pixel: np.ndarray, zones: FeatureZones,
    skin: SkinModel, iod_px: float, ratios: tuple[float, ...] | None = None, fallback: bool = True,
    eyes_seed: bool = True, closed_eyes_x: tuple[float, ...] = (),
) -> np.ndarray:  # fmt: skip
    """(H, W) bool photo mask of skin-coloured occluders over a covered feature (all False when every
    feature shows). ``colors`` (S, S, 3) the photo at each texel, ``seen`` (S, S) visible texels,
    ``pixel`` (S, S, 2) their photo positions (any array shape works: photo pixels as one row of "texels").
    ``ratios``: the colour splits tried in turn (None: COLOUR_RATIOS); ``fallback`` False: nothing (instead
    of the covered zone widened) where the colours cannot delimit the occluder; ``eyes_seed`` False: only a
    mouth without lips seeds an occluder (the eyes still count as features the photo shows);
    ``closed_eyes_x``: the photo x of eyes the photo shows closed (their lids are skin, not a hand)."""
    height, width = rgb.shape[:2]
    if float(np.linalg.norm(skin.mean - 1.0 / 3.0)) < MIN_SKIN_CHROMA:  # grey face: lips look like skin
        return np.zeros((height, width), bool)
    seeds = covered_features(colors, seen, zones, skin, pixel[..., 0], eyes_seed, closed_eyes_x)
    if not seeds.any():
        return np.zeros((height, width), bool)
    seed_mask = np.zeros((height, width), np.uint8)
    xy = np.clip(np.round(pixel[seeds] - 0.5).astype(np.int64), 0, [width - 1, height - 1])
    seed_mask[xy[:, 1], xy[:, 0]] = 1
    seed_mask = np.asarray(cv2.dilate(seed_mask, _disk(max(1, round(0.03 * iod_px)))), dtype=np.uint8)
    # The face's colour: skin texels well away from the covered zone (all per-texel work on the seen texels).
    gap = cv2.dilate(seed_mask, _disk(max(1, round(FACE_REFERENCE_GAP_IOD * iod_px))))
    sxy = np.clip(np.round(pixel[seen] - 0.5).astype(np.int64), 0, [width - 1, height - 1])
    seen_colors = colors[seen]
    far = gap[sxy[:, 1], sxy[:, 0]] == 0
    far[far] = skin.distance(seen_colors[far]) <= SKIN_RADIUS  # measured where it can matter only

    def widened() -> np.ndarray:
        if not fallback:
            return np.zeros((height, width), bool)
        return np.asarray(cv2.dilate(seed_mask, _disk(max(1, round(FALLBACK_GROW_IOD * iod_px)))) > 0)

    if int(far.sum()) < MIN_ZONE_TEXELS:
        return widened()
    occluder_lab = np.median(cie_lab(colors[seeds]), axis=0)
    face_lab = np.median(cie_lab(seen_colors[far]), axis=0)
    if float(np.linalg.norm(occluder_lab - face_lab)) < MIN_CONTRAST:
        return widened()
    # Pixels nearer the occluder's colour than the face's, on the face's bounding box, connected to the seed.
    x0, y0 = sxy.min(axis=0)
    x1, y1 = sxy.max(axis=0) + 1
    lab = cie_lab(rgb[y0:y1, x0:x1].reshape(-1, 3))
    to_occluder = np.linalg.norm(lab - occluder_lab, axis=1).reshape(y1 - y0, x1 - x0)
    to_face = np.linalg.norm(lab - face_lab, axis=1).reshape(y1 - y0, x1 - x0)
    shown = ((zones.eye_opening | zones.mouth) & ~seeds)[seen]
    shown_xy = sxy[shown]
    seed_box = seed_mask[y0:y1, x0:x1] > 0
    # A region that swallows the features the photo does show (an eye with its iris, the other eye) is the face
    # itself, of the hand's tone: the colour split is tightened (an occluder much nearer its own colour than the
    # face's: a flat-coloured one) until it does not; if none does, only the widened zone is left out.
    for ratio in COLOUR_RATIOS if ratios is None else ratios:
        region = _grown(to_occluder < ratio * to_face, seed_box, iod_px)
        mask = np.zeros((height, width), bool)
        mask[y0:y1, x0:x1] = region
        if len(shown_xy) < MIN_ZONE_TEXELS or float(mask[shown_xy[:, 1], shown_xy[:, 0]].mean()) <= MAX_SHOWN_SWALLOWED:
            return mask | (seed_mask > 0)
    return widened() | (seed_mask > 0) if fallback else widened()


def _grown(nearer: np.ndarray, seed: np.ndarray, iod_px: float) -> np.ndarray:
    """The pixels of ``nearer`` (bool, the face's box) connected to ``seed`` after closing the creases and
    shadows between fingers (they would split the hand) and opening thin bridges to the face."""
    closed = cv2.morphologyEx(nearer.astype(np.uint8), cv2.MORPH_CLOSE, _disk(max(1, round(CLOSE_IOD * iod_px))))
    candidate = np.asarray(cv2.morphologyEx(closed, cv2.MORPH_OPEN, _disk(max(1, round(OPEN_IOD * iod_px)))), np.uint8)
    _, labels = cv2.connectedComponents(candidate, connectivity=8)
    touching = np.unique(labels[seed & (candidate > 0)])
    return np.isin(labels, touching[touching > 0])


def _disk(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
