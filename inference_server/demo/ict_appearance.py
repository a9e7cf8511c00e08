"""Per-vertex colours of the converted ICT head for previews and synthetic renders (no texture ships).

Skin, then regions found from the landmarks: lips (an ellipse through the outer lip corners and
heights), brows (a band along the brow landmarks), hair (above a hairline that runs from the forehead down
to the nape), a dark mouth socket, white scleras with a brown iris and a dark pupil. Edges are blended
over a few millimetres so the renders have no aliasing seams.
"""

from __future__ import annotations

import itertools

import numpy as np

from .ict_rig import smoothstep, sphere_centre

SKIN = np.array([0.82, 0.64, 0.53])
LIPS = np.array([0.70, 0.38, 0.36])
BROWS = np.array([0.28, 0.20, 0.15])
HAIR = np.array([0.20, 0.14, 0.10])
MOUTH = np.array([0.30, 0.10, 0.10])
SCLERA = np.array([0.93, 0.91, 0.88])
IRIS = np.array([0.32, 0.22, 0.13])
PUPIL = np.array([0.05, 0.04, 0.04])
IRIS_DEG, PUPIL_DEG = 22.0, 9.0


def _blend(colors: np.ndarray, amount: np.ndarray, color: np.ndarray) -> None:
    colors[:] = colors * (1 - amount[:, None]) + color * amount[:, None]


def _segment_distance(points: np.ndarray, polyline: np.ndarray) -> np.ndarray:
    """Distance in the x-y plane from each point to a polyline."""
    best = np.full(len(points), np.inf)
    for a, b in itertools.pairwise(polyline):
        ab = b - a
        t = np.clip(((points - a) @ ab) / (ab @ ab), 0, 1)
        best = np.minimum(best, np.linalg.norm(points - (a + t[:, None] * ab), axis=1))
    return best


def vertex_colors(
    vertices: np.ndarray,
    landmarks: np.ndarray,
    n_skin: int,
    eyes: tuple[np.ndarray, np.ndarray],
    scleras: tuple[np.ndarray, np.ndarray],
) -> np.ndarray:
    """(V, 3) colours in [0, 1]; the first ``n_skin`` vertices are skin (face, head, mouth socket)."""
    colors = np.tile(SKIN, (len(vertices), 1))
    skin = np.zeros(len(vertices), dtype=bool)
    skin[:n_skin] = True
    x, y, z = vertices.T
    front_z = landmarks[36:48, 2].min() - 0.01
    mouth = landmarks[48:60]
    centre = mouth.mean(axis=0)
    half_width = 0.5 * (mouth[6, 0] - mouth[0, 0]) * 1.02
    half_height = 0.5 * (mouth[3, 1] - mouth[9, 1]) * 1.05
    r = np.hypot((x - centre[0]) / half_width, (y - centre[1]) / half_height)
    _blend(colors, skin * smoothstep(r, 1.1, 0.9) * (z > front_z), LIPS)
    for brow in (landmarks[17:22, :2], landmarks[22:27, :2]):
        d = _segment_distance(vertices[:, :2] - [0.0, 0.002], brow)
        _blend(colors, skin * smoothstep(d, 0.0045, 0.002) * (z > front_z - 0.01) * 0.85, BROWS)
    brow_y, eye_y = landmarks[17:27, 1].max(), landmarks[36:48, 1].mean()
    # The hairline: high on the forehead, down to below the ears at the back of the head.
    depth = np.clip((front_z - z) / 0.09, 0.0, 1.0)
    hairline = (brow_y + 0.05) * (1 - depth) + (eye_y - 0.06) * depth
    _blend(colors, skin * smoothstep(y, hairline - 0.004, hairline + 0.004), HAIR)
    colors[n_skin - _MOUTH_SOCKET_SIZE : n_skin] = MOUTH
    for eye, sclera in zip(eyes, scleras, strict=True):
        # ICT's iris sits under the sclera's clear cornea: colour the eyeball by the angle from its axis
        # (centre → iris): an iris 6 mm and a pupil 2.5 mm in radius on the 15.8 mm eyeball.
        iris = np.setdiff1d(eye, sclera)
        centre = sphere_centre(vertices[sclera])[0]
        axis = vertices[iris].mean(axis=0) - centre
        axis /= np.linalg.norm(axis)
        d = vertices[eye] - centre
        angle = np.degrees(np.arccos(np.clip(d @ axis / np.linalg.norm(d, axis=1), -1.0, 1.0)))
        colors[eye] = SCLERA
        colors[eye] = np.where((angle < IRIS_DEG)[:, None], IRIS, colors[eye])
        colors[eye] = np.where((angle < PUPIL_DEG)[:, None], PUPIL, colors[eye])
    return np.clip(colors, 0.0, 1.0)


#: The mouth socket is the last block of skin vertices in the DEMO head's order (ICT 11248-13293).
_MOUTH_SOCKET_SIZE = 2046
