"""The 68 iBUG landmarks read off MediaPipe's 478-point face mesh (numpy only).

The correspondence is derived here from what the two landmark sets *mean*, not copied from any table:
iBUG's 68 points are defined along facial contours (jaw line 0-16, brows 17-26, nose ridge 27-30, nose
base 31-35, eyes 36-47, outer lips 48-59, inner lips 60-67), and MediaPipe publishes the same contours as
chains of mesh indices (``FACEMESH_FACE_OVAL``, ``_LIPS``, ``_LEFT_EYE``, ... in ``face_mesh_connections``,
Apache-2.0). Each iBUG point is a position along one chain at the fraction of its length iBUG spaces it
at (eye lid points at thirds, lip points at sixths, ...), i.e. a weighted pair of neighbouring mesh points.
The chains below are those connection sets, ordered. The correspondence is checked against the DEMO head's
own embedding on renders (tests/inference_server/fit); it holds for any head whose 68-point embedding
follows the iBUG layout (FLAME's does).

Orientation: MediaPipe's "right" is the subject's right (image-left in a frontal photo), like iBUG's
first jaw point, right brow (17-21) and right eye (36-41).
"""

from __future__ import annotations

import numpy as np

N_LANDMARKS = 68

# -- MediaPipe contours as ordered index chains ----------------------------------------------------------
#: Lower face oval from the subject's right ear level through the chin (152) to the left ear level.
JAW_CHAIN = (234, 93, 132, 58, 172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379, 365, 397, 288, 361, 323, 454)
BROW_RIGHT_UPPER = (70, 63, 105, 66, 107)  # outer → inner
BROW_RIGHT_LOWER = (46, 53, 52, 65, 55)
BROW_LEFT_UPPER = (336, 296, 334, 293, 300)  # inner → outer
BROW_LEFT_LOWER = (285, 295, 282, 283, 276)
NOSE_RIDGE = (168, 6, 197, 195, 5, 4)  # between the eyes → tip
NOSE_BASE = (98, 97, 2, 326, 327)  # right nostril → subnasale → left nostril
EYE_RIGHT_UPPER = (33, 246, 161, 160, 159, 158, 157, 173, 133)  # outer → inner corner
EYE_RIGHT_LOWER = (33, 7, 163, 144, 145, 153, 154, 155, 133)
EYE_LEFT_UPPER = (362, 398, 384, 385, 386, 387, 388, 466, 263)  # inner → outer corner
EYE_LEFT_LOWER = (362, 382, 381, 380, 374, 373, 390, 249, 263)
LIP_OUTER_UPPER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)  # right corner → left corner
LIP_OUTER_LOWER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291)
LIP_INNER_UPPER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
LIP_INNER_LOWER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)

#: Landmark groups (iBUG index ranges), used to weight and to score regions.
GROUPS: dict[str, range] = {
    "jaw": range(0, 17),
    "brows": range(17, 27),
    "nose": range(27, 36),
    "eyes": range(36, 48),
    "mouth": range(48, 68),
}
#: Prior trust per group: the jaw line is where landmark conventions disagree most (a contour, not a
#: feature point), so it counts half; everything else fully.
GROUP_WEIGHT = {"jaw": 0.5, "brows": 1.0, "nose": 1.0, "eyes": 1.0, "mouth": 1.0}


def _at(chain: tuple[int, ...], fraction: float) -> list[tuple[int, float]]:
    """The point ``fraction`` (0..1) along ``chain`` by index, as (mesh index, weight) pairs."""
    s = fraction * (len(chain) - 1)
    i = min(int(np.floor(s)), len(chain) - 2)
    t = s - i
    pairs = [(chain[i], 1.0 - t), (chain[i + 1], t)]
    return [(index, weight) for index, weight in pairs if weight > 1e-9]


def _mean(*points: list[tuple[int, float]]) -> list[tuple[int, float]]:
    return [(index, weight / len(points)) for point in points for index, weight in point]


def correspondence() -> list[list[tuple[int, float]]]:
    """For each iBUG landmark 0..67, the MediaPipe mesh indices and weights (summing to 1) that give it."""
    points: list[list[tuple[int, float]]] = []
    points += [_at(JAW_CHAIN, k / 16) for k in range(17)]
    points += [_mean(_at(BROW_RIGHT_UPPER, k / 4), _at(BROW_RIGHT_LOWER, k / 4)) for k in range(5)]
    points += [_mean(_at(BROW_LEFT_UPPER, k / 4), _at(BROW_LEFT_LOWER, k / 4)) for k in range(5)]
    points += [_at(NOSE_RIDGE, k / 3) for k in range(4)]
    points += [_at(NOSE_BASE, k / 4) for k in range(5)]
    # Eyes: corners, then the lids at thirds (iBUG goes round each eye clockwise in the image).
    points += [_at(EYE_RIGHT_UPPER, f) for f in (0.0, 1 / 3, 2 / 3, 1.0)]
    points += [_at(EYE_RIGHT_LOWER, f) for f in (2 / 3, 1 / 3)]
    points += [_at(EYE_LEFT_UPPER, f) for f in (0.0, 1 / 3, 2 / 3, 1.0)]
    points += [_at(EYE_LEFT_LOWER, f) for f in (2 / 3, 1 / 3)]
    # Outer lips: corner, upper lip at sixths to the other corner, lower lip back.
    points += [_at(LIP_OUTER_UPPER, k / 6) for k in range(7)]
    points += [_at(LIP_OUTER_LOWER, f) for f in (5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6)]
    # Inner lips: corner, upper at quarters, corner, lower back.
    points += [_at(LIP_INNER_UPPER, k / 4) for k in range(5)]
    points += [_at(LIP_INNER_LOWER, f) for f in (3 / 4, 2 / 4, 1 / 4)]
    assert len(points) == N_LANDMARKS
    return points


def correspondence_matrix(n_mesh: int = 478) -> np.ndarray:
    """(68, n_mesh) matrix W with ``W @ mesh_points`` = the 68 landmarks."""
    matrix = np.zeros((N_LANDMARKS, n_mesh))
    for row, pairs in enumerate(correspondence()):
        for index, weight in pairs:
            matrix[row, index] += weight
    return matrix


def landmarks68_from_mesh(mesh_points: np.ndarray) -> np.ndarray:
    """(478, 2) or (468, 2) MediaPipe points in pixels → (68, 2) iBUG landmarks in pixels."""
    points = np.asarray(mesh_points, dtype=np.float64)
    if points.ndim != 2 or points.shape[0] < 468 or points.shape[1] not in (2, 3):
        raise ValueError(f"expected MediaPipe face mesh points of shape (478, 2), got {points.shape}")
    return correspondence_matrix(points.shape[0]) @ points


def group_weights() -> np.ndarray:
    """(68,) prior trust of each landmark (see ``GROUP_WEIGHT``)."""
    weights = np.ones(N_LANDMARKS)
    for name, indices in GROUPS.items():
        weights[list(indices)] = GROUP_WEIGHT[name]
    return weights
