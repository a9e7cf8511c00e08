"""Face mesh points found on a mirror image, relabelled as the photo's own (numpy only).

A face the detection chain finds only in a mirrored copy (a hand over half the face, hair: ``chain.py``'s
variants) comes back with every label naming the other side. Swapping each label for its mirror partner
(``assets/face_mesh_mirror.json``, measured by ``assets/make_face_mesh_mirror.py``) makes it a run like any
other: the fit and the texture can use it.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

import numpy as np

from .mediapipe_faces import N_MESH_LANDMARKS, N_PLAIN_MESH_LANDMARKS

MIRROR_FILE = "face_mesh_mirror.json"


@cache
def mesh_mirror() -> np.ndarray:
    """(478,) int: entry i is the face mesh point that is point i's mirror image (an involution that keeps the
    plain network's 468 among themselves)."""
    data = json.loads(resources.files("inference_server.assets").joinpath(MIRROR_FILE).read_text())
    table = np.asarray(data["mirror"], dtype=np.int64)
    if table.shape != (N_MESH_LANDMARKS,) or not (table[table] == np.arange(N_MESH_LANDMARKS)).all():
        raise ValueError(f"{MIRROR_FILE} is not a mirror table of the {N_MESH_LANDMARKS} face mesh points")
    if (table[:N_PLAIN_MESH_LANDMARKS] >= N_PLAIN_MESH_LANDMARKS).any():
        raise ValueError(f"{MIRROR_FILE} pairs a face point with an iris point")
    table.setflags(write=False)
    return table


def relabel_mirrored(points: np.ndarray) -> np.ndarray:
    """Face mesh points (478 or 468 rows, any columns) found on a mirror image and already mapped back to the
    photo's pixels → the same points under the photo's labels."""
    points = np.asarray(points)
    if len(points) not in (N_MESH_LANDMARKS, N_PLAIN_MESH_LANDMARKS):
        raise ValueError(f"expected {N_MESH_LANDMARKS} or {N_PLAIN_MESH_LANDMARKS} face mesh points, got {len(points)}")
    return points[mesh_mirror()[: len(points)]]
