"""Synthetic occluders drawn over a face, placed from its five ArcFace points.

Used to make the sample photo, the detection tests and the fallback-chain measurement
(benchmarks/detection_chain.py). Every drawing is deterministic.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

#: The five ArcFace points of ``skimage.data.astronaut()`` (512×512), as the face mesh finds them on the
#: clean photo (iris centres, nose tip 4, mouth corners 61/291); tests re-measure them.
ASTRONAUT_POINTS5 = np.array(
    [[203.5, 101.1], [246.6, 103.5], [223.6, 125.8], [201.8, 139.2], [245.0, 141.0]], dtype=np.float64
)

SKIN_RGB = (226, 176, 146)


def _face_frame(points5: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Eye midpoint, unit vector along the eyes (image-right for an upright face), unit vector down the
    face, and the eye distance."""
    points5 = np.asarray(points5, dtype=np.float64)
    eye_mid = points5[:2].mean(axis=0)
    across = points5[1] - points5[0]
    distance = float(np.linalg.norm(across))
    across = across / distance
    down = np.array([-across[1], across[0]])
    return eye_mid, across, down, distance


def _angle_deg(across: np.ndarray) -> float:
    return float(np.degrees(np.arctan2(across[1], across[0])))


def _blend(rgb: np.ndarray, layer: np.ndarray, mask: np.ndarray, feather: float) -> np.ndarray:
    """Alpha-blend ``layer`` over ``rgb`` where ``mask`` (uint8) is set, with soft edges."""
    import cv2

    alpha = mask.astype(np.float32) / 255.0
    if feather > 0:
        alpha = np.asarray(cv2.GaussianBlur(alpha, (0, 0), feather), dtype=np.float32)
    weight = alpha[:, :, None]
    out = rgb.astype(np.float32) * (1 - weight) + layer.astype(np.float32) * weight
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _ellipse(mask: np.ndarray, centre: np.ndarray, axes: tuple[float, float], angle: float) -> None:
    import cv2

    shift = 4  # sub-pixel precision for cv2 drawing
    cv2.ellipse(
        mask,
        (round(centre[0] * 16), round(centre[1] * 16)),
        (round(axes[0] * 16), round(axes[1] * 16)),
        angle,
        0,
        360,
        (255,),
        thickness=-1,
        lineType=cv2.LINE_AA,
        shift=shift,
    )


def draw_hand_over_mouth(rgb: np.ndarray, points5: np.ndarray) -> np.ndarray:
    """A skin-coloured hand (palm and four fingers, with creases and shading) over mouth and chin."""
    import cv2

    _, across, down, d = _face_frame(points5)
    mouth = np.asarray(points5, dtype=np.float64)[3:5].mean(axis=0)
    angle = _angle_deg(across)
    mask = np.zeros(rgb.shape[:2], np.uint8)
    palm_centre = mouth - 0.8 * d * across + 0.1 * d * down
    _ellipse(mask, palm_centre, (0.6 * d, 0.8 * d), angle)
    finger_masks = []
    for i, offset in enumerate((-0.5, -0.17, 0.16, 0.48)):
        length = (1.35, 1.5, 1.45, 1.25)[i] * d
        start = palm_centre + offset * d * down + 0.2 * d * across
        centre = start + 0.5 * length * across
        finger = np.zeros_like(mask)
        _ellipse(finger, centre, (0.5 * length, 0.17 * d), angle)
        finger_masks.append(finger)
        mask = np.maximum(mask, finger)
    # Skin with a soft light-to-shadow gradient along the face's down direction.
    ys, xs = np.mgrid[: rgb.shape[0], : rgb.shape[1]]
    along = ((xs - palm_centre[0]) * down[0] + (ys - palm_centre[1]) * down[1]) / (2.0 * d)
    shade = np.clip(1.05 - 0.25 * along, 0.7, 1.1)[:, :, None]
    layer = np.clip(np.array(SKIN_RGB, np.float32)[None, None, :] * shade, 0, 255)
    # Dark creases between the fingers.
    creases = np.zeros_like(mask)
    for finger in finger_masks:
        edges = cv2.morphologyEx(finger, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))
        creases = np.maximum(creases, edges)
    layer[creases > 0] *= 0.7
    return _blend(rgb, layer.astype(np.uint8), mask, feather=max(0.6, d * 0.02))


def draw_bar(
    rgb: np.ndarray, points5: np.ndarray, region: str, colour: tuple[int, int, int] = (18, 18, 18)
) -> np.ndarray:
    """A solid bar across the eyes (``region`` "eyes") or the mouth ("mouth"), along the face's tilt."""
    import cv2

    eye_mid, across, down, d = _face_frame(points5)
    points5 = np.asarray(points5, dtype=np.float64)
    if region == "eyes":
        centre, half_h = eye_mid, 0.28 * d
    elif region == "mouth":
        centre, half_h = points5[3:5].mean(axis=0) + 0.05 * d * down, 0.35 * d
    else:
        raise ValueError(f"unknown bar region {region!r}")
    half_w = 1.25 * d
    corners = np.array(
        [centre + sx * half_w * across + sy * half_h * down for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1))]
    )
    mask = np.zeros(rgb.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(corners * 16).astype(np.int32)], (255,), lineType=cv2.LINE_AA, shift=4)
    layer = np.empty_like(rgb)
    layer[:] = colour
    return _blend(rgb, layer, mask, feather=0.0)


def draw_surgical_mask(rgb: np.ndarray, points5: np.ndarray) -> np.ndarray:
    """A light-blue face mask from just under the eyes to below the chin."""
    import cv2

    eye_mid, across, down, d = _face_frame(points5)
    top = eye_mid + 0.55 * d * down
    bottom = eye_mid + 2.0 * d * down
    outline = np.array(
        [
            top - 0.95 * d * across,
            top + 0.95 * d * across,
            bottom + 0.7 * d * across - 0.3 * d * down,
            bottom,
            bottom - 0.7 * d * across - 0.3 * d * down,
        ]
    )
    mask = np.zeros(rgb.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(outline * 16).astype(np.int32)], (255,), lineType=cv2.LINE_AA, shift=4)
    layer = np.empty_like(rgb)
    layer[:] = (150, 190, 215)
    # Pleats: darker horizontal lines across the mask.
    for k in (0.35, 0.6, 0.85):
        a = top + k * (bottom - top) - 1.0 * d * across
        b = top + k * (bottom - top) + 1.0 * d * across
        cv2.line(layer, tuple(int(v) for v in a), tuple(int(v) for v in b), (120, 160, 185), max(1, int(d * 0.04)))
    return _blend(rgb, layer, mask, feather=max(0.6, d * 0.015))


def draw_sunglasses(rgb: np.ndarray, points5: np.ndarray) -> np.ndarray:
    """Two dark lenses over the eyes and a bridge."""
    import cv2

    _, across, down, d = _face_frame(points5)
    points5 = np.asarray(points5, dtype=np.float64)
    angle = _angle_deg(across)
    mask = np.zeros(rgb.shape[:2], np.uint8)
    for eye in points5[:2]:
        _ellipse(mask, eye + 0.05 * d * down, (0.42 * d, 0.3 * d), angle)
    a = points5[0] + 0.3 * d * across
    b = points5[1] - 0.3 * d * across
    cv2.line(mask, tuple(int(v) for v in a), tuple(int(v) for v in b), (255,), max(1, int(d * 0.06)))
    layer = np.empty_like(rgb)
    layer[:] = (25, 28, 32)
    return _blend(rgb, layer, mask, feather=0.5)


#: Name → drawing function, for the measurement and tests.
OCCLUDERS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "none": lambda rgb, points5: rgb.copy(),
    "hand_over_mouth": draw_hand_over_mouth,
    "bar_over_eyes": lambda rgb, points5: draw_bar(rgb, points5, "eyes"),
    "bar_over_mouth": lambda rgb, points5: draw_bar(rgb, points5, "mouth"),
    "surgical_mask": draw_surgical_mask,
    "sunglasses": draw_sunglasses,
    "sunglasses_and_hand": lambda rgb, points5: draw_hand_over_mouth(draw_sunglasses(rgb, points5), points5),
}
