"""The detector's run on the mirrored photo, as a second observation of the fit's 68 landmarks (numpy only).

MediaPipe's mesh has habits of its own that a single run carries into the pose: under an occluder over
the mouth it draws the nose sideways along the eye axis, which reads as a turn of +0.7° on average
(docs/texture.md, "Fit"). Run on the horizontally mirrored photo, the same network sees the face the
other way round: a sideways habit of the network lands on the other side, and fitting both runs cancels
it (a habit of the picture would not cancel; this one does, so it is the network's). The mirrored run's
points are mapped back (x → W − x: MediaPipe's normalised coordinates put pixel i's centre at i + ½;
checked on clean renders in the test) and its 68 landmarks relabelled with the iBUG mirror pairing (its
right eye is the photo's left eye).

The two runs are not averaged before the fit: the stage fits both as observations of the same model
points (``pose_batch.fit_poses``' ``second``), so the robust loss weighs each run's point on its own and,
where the runs disagree, the one the rest of the face contradicts yields (the mean of the two runs measured
worse: docs/texture.md). Only the fit sees the mirrored run: the detection, its five points and the
crops stay those of the direct run.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .landmarks68 import GROUPS, N_LANDMARKS
from .pose import eye_distance

#: A face mesh detector: RGB uint8 photo → list of (478, 2) point arrays in its pixels.
Detector = Callable[[np.ndarray], list[np.ndarray]]
#: Mesh points (478, 2) → the 68 landmarks (68, 2); affine (rows sum to 1), so it commutes with the mirror.
To68 = Callable[[np.ndarray], np.ndarray]
#: The mirrored run's landmarks are used only if they land within this many eye distances (median over
#: the 68) of the direct ones: further off, the mirrored run found another face or failed.
MAX_DISAGREEMENT_IOD = 0.15


def _reversed(indices: range) -> dict[int, int]:
    """An open chain (jaw, a brow pair, the nose base) read from the other end."""
    return dict(zip(indices, reversed(indices), strict=True))


def _ring(start: int, n: int, opposite: int) -> dict[int, int]:
    """A closed contour of ``n`` points from ``start`` (a corner, clockwise in the image): mirroring reverses
    the direction, so the point k steps after the corner maps to k steps before ``opposite`` corner."""
    return {start + k: start + (opposite - k) % n for k in range(n)}


def mirror_pairs() -> np.ndarray:
    """(68,) the iBUG index of each landmark's mirror image (an involution), from the groups' layout:
    jaw 0-16 and brows 17-26 run from the subject's right to left, the nose ridge 27-30 is on the midline,
    the nose base 31-35 runs right to left; each eye goes clockwise from its corner (right eye 36 outer,
    39 inner; left eye 42 inner, 45 outer); the outer lips 48-59 and inner lips 60-67 go clockwise from
    the right corner (54 and 64 the left corners)."""
    nose = GROUPS["nose"]
    pairs: dict[int, int] = {}
    pairs |= _reversed(GROUPS["jaw"]) | _reversed(GROUPS["brows"])
    pairs |= {i: i for i in range(nose.start, nose.start + 4)} | _reversed(range(nose.start + 4, nose.stop))
    right, left = 36, 42
    # Right eye k steps clockwise from its outer corner 36 ↔ left eye k steps anticlockwise from its outer 45.
    for k in range(6):
        pairs[right + k] = left + (3 - k) % 6
        pairs[left + (3 - k) % 6] = right + k
    pairs |= _ring(48, 12, 6) | _ring(60, 8, 4)
    table = np.array([pairs[i] for i in range(N_LANDMARKS)])
    assert (table[table] == np.arange(N_LANDMARKS)).all()
    return table


MIRROR = mirror_pairs()


def unmirror(points: np.ndarray, width: int) -> np.ndarray:
    """Points found on ``rgb[:, ::-1]`` (pixel i ↔ W − 1 − i, centres at i + ½) in the photo's pixels."""
    out = np.array(points, dtype=np.float64, copy=True)
    out[..., 0] = width - out[..., 0]
    return out


def nearest_landmarks(meshes: list[np.ndarray], direct: np.ndarray, to68: To68) -> np.ndarray | None:
    """The 68 landmarks of the face in ``meshes`` (detector points in the photo's pixels) that lands nearest
    ``direct`` (68, 2+), or None when none lands within MAX_DISAGREEMENT_IOD (another face, a failed run)."""
    best, best_miss = None, np.inf
    for points in meshes:
        landmarks = to68(np.asarray(points, np.float64))
        miss = float(np.median(np.linalg.norm(landmarks[:, :2] - direct[:, :2], axis=1)))
        if miss < best_miss:
            best, best_miss = landmarks, miss
    if best is None or best_miss > MAX_DISAGREEMENT_IOD * eye_distance(direct[:, :2]):
        return None
    return best


def mirrored_landmarks(rgb: np.ndarray, direct: np.ndarray, detect: Detector, to68: To68) -> np.ndarray | None:
    """The 68 landmarks of the detector's run on the mirrored photo, in the photo's pixels and labels, for
    the face nearest ``direct`` (68, 2); None when that run finds no face close enough."""
    width = rgb.shape[1]
    # Relabelled before the comparison, so that each landmark meets its own; depth maps back unchanged.
    relabelled = lambda points: to68(points)[MIRROR]  # noqa: E731
    found = [unmirror(np.asarray(points, np.float64), width) for points in detect(np.ascontiguousarray(rgb[:, ::-1]))]
    return nearest_landmarks(found, direct, relabelled)


def with_depth(rgb: np.ndarray, mesh: np.ndarray, detect: Detector, to68: To68) -> np.ndarray:
    """``mesh`` (478, 2) with the relative depth (third column) of the detector's run on ``rgb`` that found
    the same face, when the detector gives depth ((478, 3) points); else ``mesh`` unchanged. The detection
    may come from another run (a crop, a variant of the photo): its 2D points are kept, and the depth is
    taken only from a run whose 68 land within MAX_DISAGREEMENT_IOD of the detection's."""
    points = np.asarray(mesh, dtype=np.float64)
    if points.shape[1] > 2:
        return points
    direct = to68(points)
    best, best_miss = None, np.inf
    for found in detect(rgb):
        found = np.asarray(found, dtype=np.float64)
        if found.shape != (len(points), 3):
            continue
        miss = float(np.median(np.linalg.norm(to68(found[:, :2]) - direct, axis=1)))
        if miss < best_miss:
            best, best_miss = found, miss
    if best is None or best_miss > MAX_DISAGREEMENT_IOD * eye_distance(direct):
        return points
    return np.column_stack([points, best[:, 2]])
