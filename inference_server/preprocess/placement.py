"""Where a crop was cut from a photo, recovered from the pixels, and how far two crops' placements differ.

Used to compare the project's crops with the official pipeline's (``shared/fixtures/official-preprocessing``):
the official crop is located in the photo by SIFT feature matching and a RANSAC similarity fit, so the
comparison is geometric (where the crop sits, how large, how rotated), not a pixel difference that JPEG
re-encoding and lighting would blur. The recovered transforms agree with a photometric least-squares
refinement to about 0.2 crop pixels on the fixtures (``benchmarks/calibrate_crops.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .alignment import apply_affine, invert_affine


class CropNotLocatedError(ValueError):
    """Too few consistent feature matches to say where the crop came from."""


@dataclass(frozen=True)
class LocatedCrop:
    """``transform`` 2×3 photo → crop; ``inliers`` matches consistent with it; ``matches`` after the
    ratio test."""

    transform: np.ndarray
    inliers: int
    matches: int


def locate_crop(crop: np.ndarray, photo: np.ndarray, *, rotation: bool = True, min_inliers: int = 8) -> LocatedCrop:
    """The similarity photo → crop that cut ``crop`` (H, W, 3 uint8) out of ``photo`` (RGB uint8).

    ``rotation=False`` forces a rotation-free fit (scale and translation, as the official 224 crop).
    """
    import cv2

    sift = cv2.SIFT_create()  # type: ignore[attr-defined]
    crop_kp, crop_desc = sift.detectAndCompute(cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY), None)
    photo_kp, photo_desc = sift.detectAndCompute(cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY), None)
    if crop_desc is None or photo_desc is None or len(crop_kp) < 2 or len(photo_kp) < 2:
        raise CropNotLocatedError("no features to match")
    pairs = cv2.BFMatcher().knnMatch(crop_desc, photo_desc, k=2)
    good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < 0.8 * p[1].distance]
    if len(good) < min_inliers:
        raise CropNotLocatedError(f"only {len(good)} feature matches")
    src = np.array([photo_kp[m.trainIdx].pt for m in good], dtype=np.float64)
    dst = np.array([crop_kp[m.queryIdx].pt for m in good], dtype=np.float64)
    transform, mask = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=3.0)
    if transform is None or int(mask.sum()) < min_inliers:
        raise CropNotLocatedError("no similarity is consistent with enough matches")
    inliers = mask.ravel().astype(bool)
    if not rotation:
        transform = _scale_translation_fit(src[inliers], dst[inliers])
    return LocatedCrop(transform=np.asarray(transform, np.float64), inliers=int(inliers.sum()), matches=len(good))


def _scale_translation_fit(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least squares for dst = s · src + t (no rotation)."""
    src_c = src - src.mean(axis=0)
    dst_c = dst - dst.mean(axis=0)
    scale = float((src_c * dst_c).sum() / (src_c**2).sum())
    shift = dst.mean(axis=0) - scale * src.mean(axis=0)
    return np.array([[scale, 0.0, shift[0]], [0.0, scale, shift[1]]])


def transform_scale(transform: np.ndarray) -> float:
    """The uniform scale of a 2×3 similarity."""
    return float(np.sqrt(abs(np.linalg.det(transform[:, :2]))))


def mean_displacement(reference: np.ndarray, other: np.ndarray, size: int, samples: int = 8) -> float:
    """Mean distance, in crop pixels, between where two photo → crop transforms put the same photo
    points, over a ``samples``² grid spanning the ``size``² reference crop (translation, scale and
    rotation differences all count)."""
    axis = np.linspace(0.0, size - 1.0, samples)
    grid = np.stack(np.meshgrid(axis, axis), axis=-1).reshape(-1, 2)
    moved = apply_affine(other, apply_affine(invert_affine(reference), grid))
    return float(np.linalg.norm(moved - grid, axis=1).mean())


def centre_offset(reference: np.ndarray, other: np.ndarray, size: int) -> float:
    """Distance, in crop pixels, between the reference crop's centre and where ``other`` puts the same
    photo point: how far the crop is placed off, apart from its scale."""
    centre = np.array([[(size - 1) / 2.0, (size - 1) / 2.0]])
    moved = apply_affine(other, apply_affine(invert_affine(reference), centre))
    return float(np.linalg.norm(moved - centre))


def square_from_farl_transform(transform: np.ndarray, size: int = 224) -> tuple[np.ndarray, float]:
    """The photo square (centre (2,), side) that a rotation-free 224-crop transform cut: the square's
    corners map to the crop's outer pixel centres, so side = (size − 1) / scale (crops.farl_transform)."""
    scale = transform_scale(transform)
    side = (size - 1) / scale
    centre = apply_affine(invert_affine(transform), np.array([[(size - 1) / 2.0, (size - 1) / 2.0]]))[0]
    return centre, side
