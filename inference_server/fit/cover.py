"""How close each landmark lies to an occluder the photo shows (numpy + OpenCV; no torch).

A detector does not only guess the landmarks *on* an occluder: it bends its whole mesh around it. With a bar
over the mouth MediaPipe draws the nostrils 5-15 % of the eye distance too high and the chin far too high,
points whose own neighbourhood is plain skin, so the per-landmark colour test of
:func:`.stage.landmark_visibility` keeps them, and with the mouth gone the pitch rests on exactly them. The
photo says where the occluder is: pixels of the face region that are neither skin nor the facial feature
allowed there (:func:`..texture.occluder.occluded`), kept where they form a blob too large to be a nostril,
a pupil or a brow. A landmark's weight then falls with its distance to that blob, in eye distances.
"""

from __future__ import annotations

import numpy as np

from ..texture.occluder import FeatureZones, SkinModel, occluded
from .landmarks68 import GROUPS, N_LANDMARKS
from .pose import eye_distance

#: Landmarks closer than this to the occluder (eye distances) lose weight, linearly down to CLOSE_WEIGHT at
#: the occluder's edge.
REACH_IOD = 0.3
CLOSE_WEIGHT = 0.1
#: Connected non-skin regions smaller than this (square eye distances) are features or noise, not occluders:
#: a nostril or an open eye is ~0.02-0.05, the synthetic bar over the mouth ~1.
MIN_BLOB_IOD2 = 0.15
#: The face region is the hull of the detector's mesh, widened by this (eye distances) so that an occluder's
#: part beyond the bent mesh still counts.
MARGIN_IOD = 0.1
#: Above this many pixels between the eyes the mask is computed on a reduced image (extent, not detail).
WORK_IOD_PX = 80.0


def _zones(points: np.ndarray, shape: tuple[int, int], landmarks: np.ndarray) -> FeatureZones:
    """Each pixel gets the feature zone of its nearest landmark: lips may show by the mouth's landmarks, dark
    and colourless pixels by the eyes' and brows'. Zones only permit colours (texture/occluder.py)."""
    group = np.empty(N_LANDMARKS, dtype=object)
    for name, indices in GROUPS.items():
        group[list(indices)] = name
    d2 = ((points[:, None, :] - landmarks[None, :, :]) ** 2).sum(axis=2)
    nearest = group[np.argmin(d2, axis=1)]
    mouth = np.zeros(shape, bool)
    brows = np.zeros(shape, bool)
    mouth.reshape(-1)[:] = nearest == "mouth"
    brows.reshape(-1)[:] = np.isin(nearest, ["eyes", "brows"])
    return FeatureZones(mouth=mouth, brows=brows, eye_opening=np.zeros(shape, bool))


def occluder_mask(rgb: np.ndarray, mesh_points: np.ndarray, landmarks: np.ndarray, skin: SkinModel) -> np.ndarray:
    """(H, W) bool at ``scale`` = the mask's pixels per photo pixel: True on occluder blobs in the face region."""
    import cv2

    iod = eye_distance(landmarks)
    scale = min(1.0, WORK_IOD_PX / max(iod, 1e-6))
    height, width = rgb.shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = rgb if scale == 1.0 else cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    hull = cv2.convexHull(np.round(np.asarray(mesh_points)[:, :2] * scale).astype(np.int32))
    region = np.zeros(small.shape[:2], np.uint8)
    cv2.fillConvexPoly(region, hull, (1,))
    grow = round(abs(MARGIN_IOD) * iod * scale)
    if grow > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1))
        region = (cv2.dilate if MARGIN_IOD > 0 else cv2.erode)(region, kernel)
    rows, cols = np.nonzero(region)
    points = np.stack([cols, rows], axis=1).astype(np.float64)
    zones = _zones(points, (len(points),), np.asarray(landmarks, dtype=np.float64) * scale)
    mask = np.zeros(small.shape[:2], np.uint8)
    mask[rows, cols] = occluded(small[rows, cols], skin, zones)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    big = np.flatnonzero(stats[:, cv2.CC_STAT_AREA] >= MIN_BLOB_IOD2 * (iod * scale) ** 2)
    big = big[big > 0]
    return np.isin(labels, big), scale


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
