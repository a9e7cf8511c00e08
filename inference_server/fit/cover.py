"""How close each landmark lies to an occluder the photo shows (numpy + OpenCV; no torch).

A detector does not only guess the landmarks *on* an occluder: it bends its whole mesh around it. With a bar
over the mouth MediaPipe draws the nostrils 5-15 % of the eye distance too high and the chin far too high,
points whose own neighbourhood is plain skin, so the per-landmark colour test of
:func:`.stage.landmark_visibility` keeps them, and with the mouth gone the pitch rests on exactly them. The
photo says where the occluder is: pixels of the face region that are neither skin nor the facial feature
allowed there (:func:`..texture.occluder.occluded`, each pixel in the zone of its nearest landmark; zones
only permit colours, so the landmarks never mark a pixel as occluder), kept where they form a blob too large
to be a nostril, a pupil or a brow. A landmark's weight then falls with its distance to that blob, in eye
distances.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..texture.occluder import FeatureZones, SkinModel, ZoneParts, occluded, solid_dark, zone_parts
from ..texture.skin_cover import skin_coloured_cover
from .landmarks68 import GROUPS, N_LANDMARKS
from .pose import eye_distance

#: Landmarks closer than this to the occluder (eye distances) lose weight, linearly down to CLOSE_WEIGHT at
#: its edge. Chosen on dev renders with a bar over the mouth (seeds 21000+, docs/texture.md): 0.3, 0.45,
#: 0.6, 0.75, 0.9 gave 3.68°, 3.35°, 3.15°, 3.06°, 3.14° median rotation error and 2.15-1.94 % reprojection;
#: 0.6 cuts the bent nostrils to ~0.4 and the jaw next to the bar to ~0.1-0.3 and leaves the eyes at 1.
REACH_IOD = 0.6
CLOSE_WEIGHT = 0.1
#: Connected non-skin regions smaller than this (square eye distances) are features or noise, not occluders:
#: a nostril or an open eye is ~0.02-0.05, the synthetic bar over the mouth ~1 inside the face region. At
#: 0.15 the clean dev renders had a blob in 2.5 % of the faces, at 0.3 in none.
MIN_BLOB_IOD2 = 0.3
#: The face region is the hull of the detector's mesh shrunk by this (eye distances): its rim is where the
#: background, the hair and the shaded jaw edge meet the face (widened by 0.1 instead, 92 % of the clean dev
#: renders had a "blob" there).
SHRINK_IOD = 0.08
#: The background is read in a ring this wide (eye distances) around the detector's mesh; occluder pixels
#: within BACKGROUND_RGB (RGB distance) of its median colour are background seen past the face's silhouette
#: (a turned head: the hull of the mesh spans background beyond the far cheek), not something in front.
RING_IOD = 0.3
BACKGROUND_RGB = 40.0
#: Above this many pixels between the eyes the mask is computed on a reduced image (extent, not detail):
#: 34 ms per photo (load 2). At 40 px it was 4x cheaper and moved the 30° fits by at most 0.05°, but in
#: benchmarks/fit_trust.py one more mouth-bar fit was wrong and kept (2 of 50 against 1): not kept.
WORK_IOD_PX = 80.0
#: Skin-coloured occluders (a hand over the mouth) are skin to the blob test above. texture/skin_cover.py
#: finds them by the feature they hide (a mouth zone without lips; the texture also an eye zone without iris) and
#: delimits them by colour; here with the colour split tightened from the start (a pixel is occluder when
#: its colour is within half its distance to the face's): at the texture's plain split the hand's region
#: leaked over the cheeks and nose of the DEMO renders up to the eyes, leaving too few landmarks to trust
#: (docs/texture.md, "A skin-coloured hand in the fit"). Where the colours cannot delimit it, nothing is
#: masked: a closed eye or pale lips would otherwise cost the fit its most precise landmarks. Only the mouth
#: seeds it: a closed eye under coloured eye shadow (a real fixture photo) reads as an eye without lashes or
#: iris, and its mask cost the fit 11 landmarks and its overlay; an eye a hand hides is fit/trust.py's
#: plain_eyes test's.
SKIN_COVER = True  # benchmarks/fit_skin_cover.py turns it off for its "before"
SKIN_COVER_RATIOS = (0.5, 0.3)
#: Dark lenses are dark, and the eye and brow zones permit dark (lashes, pupils, brows), so sunglasses passed
#: the blob test and the detector's eyes and brows, bent onto the lenses, were trusted (4.9 % reprojection).
#: A dark region at least SOLID_DARK_IOD across (texture/occluder.py's ``solid_dark``: thicker than any brow,
#: lash line or pupil) is an object there. Only by the eyes and brows: elsewhere dark already counts as
#: occluder, except in the mouth, where an open mouth's cavity is dark and wide.
DARK_COVER = True  # benchmarks/fit_sunglasses.py turns it off for its "before"
#: An eye counts as covered when its landmarks' cover weights average below this (on the occluder 0.1).
EYES_COVERED_WEIGHT = 0.5


def _zones(points: np.ndarray, landmarks: np.ndarray) -> FeatureZones:
    """Zones of pixels ``points`` (P, 2): each gets the zone of its nearest landmark, so lips may show by the
    mouth's landmarks and dark or colourless pixels by the eyes' and brows'. Zones only permit colours."""
    group = np.empty(N_LANDMARKS, dtype=object)
    for name, indices in GROUPS.items():
        group[list(indices)] = name
    nearest = group[np.argmin(((points[:, None, :] - landmarks[None, :, :]) ** 2).sum(axis=2), axis=1)]
    return FeatureZones(
        mouth=nearest == "mouth", brows=np.isin(nearest, ["eyes", "brows"]), eye_opening=np.zeros(len(points), bool)
    )


def _morph(operation: Any, region: np.ndarray, radius: float) -> np.ndarray:
    """``region`` (uint8) dilated or eroded (cv2.dilate, cv2.erode) by a disk of ``radius`` pixels."""
    import cv2

    r = round(radius)
    if r <= 0:
        return region
    return np.asarray(operation(region, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))),
                      dtype=np.uint8)  # fmt: skip


def _near(points: np.ndarray, parts: ZoneParts) -> np.ndarray:
    """(P,) bool: ``points`` (P, 2) within a part's radius of one of its anchors; only the points inside each
    part's anchors' box widened by its radius are measured."""
    near = np.zeros(len(points), bool)
    for anchors, radius in parts:
        low, high = anchors.min(axis=0) - radius, anchors.max(axis=0) + radius
        idx = np.flatnonzero(((points >= low) & (points <= high)).all(axis=1))
        for anchor in anchors:
            near[idx] |= ((points[idx] - anchor) ** 2).sum(axis=1) <= radius * radius
    return near


def feature_zones(points: np.ndarray, landmarks: np.ndarray) -> FeatureZones:
    """Where the photo should show the mouth, the eyes and the brows (``texture/occluder.py``'s zones, as the
    texture draws them on the head): (P,) masks of pixels ``points`` (P, 2) around ``landmarks`` (68, 2)."""
    parts = zone_parts(landmarks)
    return FeatureZones(mouth=_near(points, parts["mouth"]), brows=_near(points, parts["brows"]),
                        eye_opening=_near(points, parts["eye_opening"]))  # fmt: skip


def skin_coloured_mask(rgb: np.ndarray, rows: np.ndarray, cols: np.ndarray, landmarks: np.ndarray,
                       skin: SkinModel) -> np.ndarray:  # fmt: skip
    """(H, W) bool: a skin-coloured occluder over the mouth, from the face region's pixels
    (``rows``, ``cols``) and the landmarks (all in ``rgb``'s pixels); see SKIN_COVER_RATIOS."""
    points = np.stack([cols, rows], axis=1).astype(np.float64)
    iod = eye_distance(landmarks)
    zones = feature_zones(points, np.asarray(landmarks, dtype=np.float64))
    one_row = FeatureZones(mouth=zones.mouth[None], brows=zones.brows[None], eye_opening=zones.eye_opening[None])
    # texture/skin_cover.py reads texels at photo positions; here each pixel of the face region is one, at
    # its centre.
    colors, seen = rgb[rows, cols][None], np.ones((1, len(rows)), bool)
    return skin_coloured_cover(rgb, colors, seen, (points + 0.5)[None], one_row, skin, iod, ratios=SKIN_COVER_RATIOS,
                               fallback=False, eyes_seed=False)  # fmt: skip


def occluder_mask(
    rgb: np.ndarray, mesh_points: np.ndarray, landmarks: np.ndarray, skin: SkinModel
) -> tuple[np.ndarray, float]:
    """(mask, scale): True on occluder blobs in the face region, on the photo resized by ``scale``."""
    import cv2

    iod = eye_distance(landmarks)
    scale = min(1.0, WORK_IOD_PX / max(iod, 1e-6))
    height, width = rgb.shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = rgb if scale == 1.0 else cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    hull = cv2.convexHull(np.round(np.asarray(mesh_points)[:, :2] * scale).astype(np.int32))
    region = np.zeros(small.shape[:2], np.uint8)
    cv2.fillConvexPoly(region, hull, (1,))
    ring = (_morph(cv2.dilate, region, RING_IOD * iod * scale) > 0) & (region == 0)
    region = _morph(cv2.erode, region, SHRINK_IOD * iod * scale)
    rows, cols = np.nonzero(region)
    points = np.stack([cols, rows], axis=1).astype(np.float64)
    pixels = small[rows, cols]
    # Zones only permit colours, so only pixels that are not skin need theirs (the nearest-landmark search
    # over every pixel was three quarters of the time).
    cover = occluded(pixels, skin)
    zones = _zones(points[cover], np.asarray(landmarks, dtype=np.float64) * scale)
    cover[cover] = occluded(pixels[cover], skin, zones)
    if DARK_COVER:
        cover |= _dark_objects_by_the_eyes(small, skin, iod * scale, rows, cols, np.asarray(landmarks) * scale)
    if ring.any():
        background = np.median(small[ring].astype(np.float64), axis=0)
        cover &= np.linalg.norm(pixels - background, axis=1) > BACKGROUND_RGB
    mask = np.zeros(small.shape[:2], np.uint8)
    mask[rows, cols] = cover
    _, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    big = np.flatnonzero(stats[:, cv2.CC_STAT_AREA] >= MIN_BLOB_IOD2 * (iod * scale) ** 2)
    big = big[big > 0]
    blobs = np.isin(labels, big)
    if not SKIN_COVER:
        return blobs, scale
    return blobs | skin_coloured_mask(small, rows, cols, np.asarray(landmarks, np.float64) * scale, skin), scale


def _dark_objects_by_the_eyes(small: np.ndarray, skin: SkinModel, iod_px: float, rows: np.ndarray, cols: np.ndarray,
                               landmarks: np.ndarray) -> np.ndarray:  # fmt: skip
    """(P,) bool for the face region's pixels (``rows``, ``cols``): in a dark region too wide to be a facial
    feature, and nearest to an eye or brow landmark (DARK_COVER)."""
    if len(rows) == 0:
        return np.zeros(0, bool)
    y0, x0 = int(rows.min()), int(cols.min())
    box = small[y0 : int(rows.max()) + 1, x0 : int(cols.max()) + 1]
    dark = solid_dark(box, skin, iod_px)[rows - y0, cols - x0]
    if not dark.any():
        return dark
    points = np.stack([cols[dark], rows[dark]], axis=1).astype(np.float64)
    dark[dark] = _zones(points, np.asarray(landmarks, dtype=np.float64)).brows
    return dark


def cover_weights(rgb: np.ndarray, mesh_points: np.ndarray, landmarks: np.ndarray, skin: SkinModel) -> np.ndarray:
    """(68,) in [CLOSE_WEIGHT, 1]: 1 for a landmark at least REACH_IOD eye distances from any occluder blob."""
    import cv2

    mask, scale = occluder_mask(rgb, mesh_points, landmarks, skin)
    if not mask.any():
        return np.ones(N_LANDMARKS)
    distance = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, 5)
    height, width = mask.shape
    xy = np.round(np.asarray(landmarks, dtype=np.float64) * scale).astype(np.int64)
    inside = (xy[:, 0] >= 0) & (xy[:, 0] < width) & (xy[:, 1] >= 0) & (xy[:, 1] < height)
    d = np.full(N_LANDMARKS, np.inf)
    d[inside] = distance[xy[inside, 1], xy[inside, 0]] / scale
    reach = REACH_IOD * eye_distance(landmarks)
    return np.clip(CLOSE_WEIGHT + (1.0 - CLOSE_WEIGHT) * d / reach, CLOSE_WEIGHT, 1.0)


def eyes_covered(weights: np.ndarray) -> int:
    """How many eyes (0, 1, 2) lie on or next to an occluder the photo shows, from :func:`cover_weights` (68,):
    an eye whose six landmarks' weights average below EYES_COVERED_WEIGHT."""
    eyes = list(GROUPS["eyes"])
    w = np.asarray(weights, dtype=np.float64)
    return sum(int(w[eye].mean() < EYES_COVERED_WEIGHT) for eye in (eyes[:6], eyes[6:]))
