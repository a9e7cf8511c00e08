"""What in the photo is not face: a skin colour model fitted to the photo itself (numpy + OpenCV).

The evidence is colour, measured in the photo: skin chromaticity (r, g) = (R, G) / (R + G + B) is nearly
independent of shading, so one robust 2D Gaussian fitted to the face region describes this face's skin
under this light. A pixel far from it is not skin. Facial features that are not skin-coloured are allowed
where the head says they are: lip-like colours (near skin, at least as red) in the mouth zone, dark and
colourless pixels (brows, lashes, sclera) in the eye and brow zones, and inside the eye opening any
colour short of the saturation of a painted or dyed object (irises come in many colours, none of them
vivid). Everything else that is not skin is an occluder. The zones only *permit* colours; they never
mark a pixel as occluded, so landmarks alone never decide the mask.

Chromaticity misses one kind of object: a saturated colour of skin's own hue (an orange, an egg, a tanned
leather glove) lies along the skin cluster's long axis in (r, g), within its radius. The same pixels are
far from skin in CIE (a*, b*), where a perceptual difference in saturation counts as much as one in hue
(:class:`HueModel`); that second test is the texture's (``off_skin_hue``).

Colour misses patterned objects partly of the skin's colour (a plaid hat, lace, strands of hair): checks or
threads of the skin's hue pass both tests. Skin is smooth at the scale of a few pixels when the face is seen
at ~60 px between the eyes; such objects are not (``patterned``, the texture's too).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Mahalanobis radius (in standard deviations) of skin, and the looser radius for lips.
SKIN_RADIUS = 3.5
LIP_RADIUS = 9.0
#: Smallest chromaticity standard deviation: a synthetic or very evenly lit face would otherwise give
#: a skin cluster so tight that every shade of shadow counted as an occluder.
MIN_CHROMA_STD = 0.012
#: Below this fraction of the skin's median brightness a pixel's chromaticity is noise: "dark".
DARK_FRACTION = 0.35
#: Saturation (max - min) / max below which a bright pixel counts as colourless (sclera, grey hair).
ACHROMATIC_SATURATION = 0.12
#: Inside the eye opening, colours up to this saturation may be an iris.
IRIS_SATURATION = 0.6
#: Dark regions wider than this (fraction of the eye distance) are objects (sunglasses, a dark glove),
#: not brows, lashes or pupils, which are thinner: they count as occluder even where features may be dark.
SOLID_DARK_IOD = 0.3
#: Mahalanobis radius of skin in the CIE (a*, b*) plane, and the smallest spread (a*, b* units) of that
#: model (a grey photo's skin is one point there).
HUE_RADIUS = 3.5
MIN_AB_STD = 2.0
#: Pixels per row handed to OpenCV's colour conversion (see cie_lab).
LAB_ROW = 4096
#: Patterned objects (a plaid hat, lace, knitwear, hair strands) are judged on the face scaled to at most
#: PATTERN_IOD_PX pixels between the eyes: a pixel is rough where the brightness in its PATTERN_PIXELS²
#: neighbourhood has a standard deviation above PATTERN_CONTRAST of its mean, and patterned where at least
#: PATTERN_SHARE of the pixels within PATTERN_WINDOW_IOD eye distances are rough (a crease or a lone strand is a
#: thin line, below that share). On the fixture photos' plain skin the rough measure's median is 0.02-0.07 and
#: its 95th percentile 0.10-0.18; on the annotated plaid hat its median is 0.24 and 81 % of it is above 0.15
#: (docs/texture.md, "Patterned objects").
PATTERN_IOD_PX = 60.0
PATTERN_PIXELS = 3
PATTERN_CONTRAST = 0.15
PATTERN_WINDOW_IOD = 0.15
PATTERN_SHARE = 0.5


class SkinModelError(ValueError):
    """Too few pixels to learn the skin colour from."""


@dataclass(frozen=True)
class SkinModel:
    mean: np.ndarray  # (2,) chromaticity (r, g)
    inv_cov: np.ndarray  # (2, 2)
    brightness: float  # median max(R, G, B) of skin pixels, 0..255

    def distance(self, rgb: np.ndarray) -> np.ndarray:
        """Mahalanobis distance of every pixel's chromaticity from the skin mean (same leading shape)."""
        d = chromaticity(rgb) - self.mean
        return np.sqrt(quadratic_form(d, self.inv_cov))


# numpy's reductions over a length-3 (or 2) last axis cost ~50x the elementwise form on ~10⁵ pixels (ufunc
# reduce's per-row overhead); these give bit-identical results (max / min are exact; the sums below add in
# the order numpy's reduce and einsum do, checked in tests/inference_server/texture/test_fast_paths.py).
def channel_max(x: np.ndarray) -> np.ndarray:
    """``x.max(axis=-1)`` of (..., 3) colours."""
    return np.maximum(np.maximum(x[..., 0], x[..., 1]), x[..., 2])


def channel_min(x: np.ndarray) -> np.ndarray:
    """``x.min(axis=-1)`` of (..., 3) colours."""
    return np.minimum(np.minimum(x[..., 0], x[..., 1]), x[..., 2])


def quadratic_form(d: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """``einsum("...i,ij,...j->...", d, matrix, d)`` of (..., 2) vectors, term by term in einsum's order."""
    d0, d1 = d[..., 0], d[..., 1]
    return d0 * matrix[0, 0] * d0 + d0 * matrix[0, 1] * d1 + d1 * matrix[1, 0] * d0 + d1 * matrix[1, 1] * d1


def chromaticity(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) RGB → (..., 2) (r, g) chromaticity."""
    x = np.asarray(rgb, dtype=np.float64)
    total = np.maximum(x[..., 0] + x[..., 1] + x[..., 2], 1.0)[..., None]  # = x.sum(axis=-1), bit for bit
    return (x / total)[..., :2]


def fit_skin_model(pixels: np.ndarray, rounds: int = 4) -> SkinModel:
    """A robust Gaussian of the dominant chromaticity among ``pixels`` (N, 3): start from the median and
    refit on the pixels within SKIN_RADIUS, so an occluder covering part of the region is left out as
    long as skin is the largest colour there."""
    x = np.asarray(pixels, dtype=np.float64).reshape(-1, 3)
    bright = channel_max(x)
    usable = x[bright > 30]  # very dark pixels carry no chromaticity
    if len(usable) < 20:
        raise SkinModelError(f"only {len(usable)} usable face pixels to learn the skin colour from")
    mean, cov, keep = _robust_gaussian(chromaticity(usable), MIN_CHROMA_STD, SKIN_RADIUS, rounds)
    brightness = float(np.median(channel_max(usable[keep]))) if keep.any() else float(np.median(bright))
    return SkinModel(mean=mean, inv_cov=np.linalg.inv(cov), brightness=brightness)


def _robust_gaussian(
    c: np.ndarray, min_std: float, radius: float, rounds: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, covariance, inliers) of the dominant cluster of the 2D points ``c``: the first round a robust
    spread (MAD) around the median, later rounds the covariance of the points within ``radius``."""
    keep = np.ones(len(c), bool)
    mean = np.median(c, axis=0)
    cov = np.eye(2) * min_std**2
    for i in range(rounds):
        if i == 0:
            mad = 1.4826 * np.median(np.abs(c - mean), axis=0)
            cov = np.diag(np.maximum(mad, min_std) ** 2)
        else:
            inliers = c[keep]
            if len(inliers) < 20:
                break
            mean = inliers.mean(axis=0)
            cov = np.cov(inliers.T) + np.eye(2) * min_std**2
        d = c - mean
        keep = quadratic_form(d, np.linalg.inv(cov)) <= radius**2
    return mean, cov, keep


def face_skin(rgb: np.ndarray, mesh_points: np.ndarray) -> SkinModel:
    """The skin model of the face inside the convex hull of the detector's dense landmarks (N, 2)."""
    import cv2

    height, width = rgb.shape[:2]
    hull = cv2.convexHull(np.round(np.asarray(mesh_points)[:, :2]).astype(np.int32))
    region = np.zeros((height, width), np.uint8)
    cv2.fillConvexPoly(region, hull, (1,))
    return fit_skin_model(rgb[region > 0])


@dataclass(frozen=True)
class FeatureZones:
    """Where non-skin facial features may show, as boolean masks of the same shape as the pixels tested."""

    mouth: np.ndarray
    brows: np.ndarray  # brows and eye surroundings (lashes, lids)
    eye_opening: np.ndarray


#: Feature zones around the 68 landmarks (eye distances): within MOUTH_ZONE_IOD of a lip landmark is the
#: mouth's; within BROW_ZONE_IOD of a brow or eye landmark, or NOSTRIL_ZONE_IOD of a nostril landmark, may show
#: brows, lashes and nostrils; each eye's opening is the disk over its two corners.
MOUTH_ZONE_IOD = 0.16
BROW_ZONE_IOD = 0.12
NOSTRIL_ZONE_IOD = 0.06

#: A zone as parts: (anchor points (k, D), radius); a point lies in the zone when within a part's radius of
#: one of its anchors.
ZoneParts = list[tuple[np.ndarray, float]]


def zone_parts(landmarks: np.ndarray) -> dict[str, ZoneParts]:
    """The parts of the ``FeatureZones`` fields ("mouth", "brows", "eye_opening") around 68 landmarks (68, D),
    in the landmarks' own units (model metres for texels, pixels for a photo)."""
    points = np.asarray(landmarks, dtype=np.float64)
    iod = float(np.linalg.norm(points[36:42].mean(axis=0) - points[42:48].mean(axis=0)))
    eyes = []
    for eye in (points[36:42], points[42:48]):
        eyes.append((eye.mean(axis=0, keepdims=True), 0.5 * float(np.linalg.norm(eye[0] - eye[3]))))
    brows = [(points[17:27], BROW_ZONE_IOD * iod), (points[36:48], BROW_ZONE_IOD * iod),
             (points[31:36], NOSTRIL_ZONE_IOD * iod)]  # fmt: skip
    return {"mouth": [(points[48:68], MOUTH_ZONE_IOD * iod)], "brows": brows, "eye_opening": eyes}


def solid_dark(rgb: np.ndarray, skin: SkinModel, iod_px: float) -> np.ndarray:
    """(H, W) bool: dark pixels inside a dark region at least SOLID_DARK_IOD eye distances across."""
    import cv2

    dark = (channel_max(np.asarray(rgb)) < DARK_FRACTION * skin.brightness).astype(np.uint8)
    height, width = dark.shape
    # The test is about extent, not detail: at most ~100 pixels between the eyes is plenty.
    scale = min(1.0, 100.0 / max(iod_px, 1e-6))
    small = dark if scale == 1.0 else cv2.resize(dark, (max(1, round(width * scale)), max(1, round(height * scale))),
                                                 interpolation=cv2.INTER_NEAREST)  # fmt: skip
    side = max(3, round(SOLID_DARK_IOD * iod_px * scale)) | 1
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (side, side))
    opened = cv2.morphologyEx(small, cv2.MORPH_OPEN, kernel)
    if scale < 1.0:
        opened = cv2.resize(opened, (width, height), interpolation=cv2.INTER_NEAREST)
    return np.asarray(opened, dtype=bool) & dark.astype(bool)


def patterned(rgb: np.ndarray, skin: SkinModel, iod_px: float) -> np.ndarray:
    """(H, W) bool: pixels of ``rgb`` (H, W, 3) inside a region of fine texture (PATTERN_CONTRAST)."""
    import cv2

    height, width = rgb.shape[:2]
    full = cv2.cvtColor(np.ascontiguousarray(rgb, dtype=np.uint8), cv2.COLOR_RGB2GRAY).astype(np.float32)
    scale = min(1.0, PATTERN_IOD_PX / max(iod_px, 1e-6))
    gray = full
    if scale < 1.0:  # the same texture at any photo size: skin pores of a large photo are not a pattern
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        gray = np.asarray(cv2.resize(full, size, interpolation=cv2.INTER_AREA), dtype=np.float32)
    mean = cv2.blur(gray, (PATTERN_PIXELS, PATTERN_PIXELS))
    spread = np.sqrt(np.maximum(cv2.blur(gray * gray, (PATTERN_PIXELS, PATTERN_PIXELS)) - mean * mean, 0.0))
    # Against a floor of dark skin's brightness: in shadow and on dark objects noise is not texture.
    rough = (spread > PATTERN_CONTRAST * np.maximum(mean, DARK_FRACTION * skin.brightness)).astype(np.float32)
    side = max(3, round(PATTERN_WINDOW_IOD * iod_px * scale)) | 1
    dense = (cv2.blur(rough, (side, side)) >= PATTERN_SHARE).astype(np.uint8)
    if scale < 1.0:
        dense = cv2.resize(dense, (width, height), interpolation=cv2.INTER_NEAREST)
    return np.asarray(dense, dtype=bool)


def occluded(rgb: np.ndarray, skin: SkinModel, zones: FeatureZones | None = None) -> np.ndarray:
    """Boolean mask, True where the pixel (..., 3) is evidence of something in front of the face."""
    x = np.asarray(rgb, dtype=np.float64)
    distance = skin.distance(x)
    bright = channel_max(x)
    dark = bright < DARK_FRACTION * skin.brightness
    saturation = (bright - channel_min(x)) / np.maximum(bright, 1.0)
    achromatic = (saturation < ACHROMATIC_SATURATION) & ~dark
    not_skin = (distance > SKIN_RADIUS) | dark
    if zones is None:
        return not_skin
    allowed = zones.eye_opening & (saturation < IRIS_SATURATION)
    # Lips are skin turned redder: near the skin colour and at least as red, never bluer or greener.
    lip_like = (distance <= LIP_RADIUS) & (chromaticity(x)[..., 0] >= skin.mean[0] - 0.01)
    allowed |= zones.mouth & (lip_like | dark)
    allowed |= zones.brows & (dark | achromatic | lip_like)
    return not_skin & ~allowed


def cie_lab(rgb: np.ndarray) -> np.ndarray:
    """(N, 3) RGB 0..255 → (N, 3) CIE Lab with lightness halved (shading varies more than hue)."""
    import cv2

    pixels = np.asarray(rgb)
    if pixels.dtype != np.uint8:  # photo pixels already are: clipping and converting would change nothing
        pixels = np.clip(np.asarray(pixels, dtype=np.float64), 0, 255).astype(np.uint8)
    pixels = pixels.reshape(-1, 3)
    n = len(pixels)
    # Rows of LAB_ROW pixels (the last one padded): OpenCV converts row by row, and N rows of one pixel cost
    # ~6x as much; each pixel's value does not depend on the layout.
    block = np.zeros((-(-n // LAB_ROW) * LAB_ROW, 3), np.uint8)
    block[:n] = pixels
    lab = cv2.cvtColor(block.reshape(-1, LAB_ROW, 3), cv2.COLOR_RGB2LAB).reshape(-1, 3)[:n].astype(np.float64)
    lab[:, 0] *= 100.0 / 255.0 * 0.5
    lab[:, 1:] -= 128.0
    return lab


@dataclass(frozen=True)
class HueModel:
    """The face's skin as a robust Gaussian in the CIE (a*, b*) plane."""

    mean: np.ndarray  # (2,) a*, b*
    inv_cov: np.ndarray  # (2, 2)

    def distance(self, ab: np.ndarray) -> np.ndarray:
        """Mahalanobis distance of (..., 2) a*, b* values from the skin mean."""
        return np.sqrt(quadratic_form(np.asarray(ab) - self.mean, self.inv_cov))


def fit_hue_model(pixels: np.ndarray, skin: SkinModel, ab: np.ndarray | None = None) -> HueModel:
    """The dominant (a*, b*) among ``pixels`` (N, 3) that are not dark (their a*, b* is noise); ``ab``: the
    pixels' (a*, b*) when already computed."""
    x = np.asarray(pixels).reshape(-1, 3)
    ab = cie_lab(x)[:, 1:] if ab is None else np.asarray(ab, dtype=np.float64)
    usable = ab[channel_max(np.asarray(x, dtype=np.float64)) >= DARK_FRACTION * skin.brightness]
    if len(usable) < 20:
        raise SkinModelError(f"only {len(usable)} usable face pixels to learn the skin colour from")
    mean, cov, _ = _robust_gaussian(usable, MIN_AB_STD, HUE_RADIUS, 4)
    return HueModel(mean=mean, inv_cov=np.linalg.inv(cov))


def off_skin_hue(
    rgb: np.ndarray, skin: SkinModel, hue: HueModel, zones: FeatureZones, ab: np.ndarray | None = None
) -> np.ndarray:
    """Boolean mask over ``rgb`` (N, 3): bright enough pixels whose (a*, b*) is far from the face's skin
    (``ab``: the pixels' (a*, b*) when already computed).

    Not judged in the brow and eye zones (brows and irises differ from skin in every way; the
    chromaticity test of :func:`occluded` covers those zones). In the mouth zone lips are allowed: they
    differ from skin toward red (a* up at least as much as b*), where a saturated orange or yellow object
    moves toward yellow (b* up more than a*); grey pixels (teeth) are allowed too."""
    x = np.asarray(rgb, dtype=np.float64)
    bright = channel_max(x)
    ab = cie_lab(rgb)[:, 1:] if ab is None else ab
    far = (hue.distance(ab) > HUE_RADIUS) & (bright >= DARK_FRACTION * skin.brightness)
    shift = ab - hue.mean
    achromatic = (bright - channel_min(x)) / np.maximum(bright, 1.0) < ACHROMATIC_SATURATION
    lips = zones.mouth & ((shift[:, 1] <= shift[:, 0]) | achromatic)
    return far & ~zones.brows & ~zones.eye_opening & ~lips
