"""The five ArcFace points from two landmark models: the face mesh and MTCNN's O-Net (mtcnn.py).

The official ArcFace crop is aligned on SCRFD's five keypoints. Against the official crops of the ten
real occluded fixtures (docs/preprocessing.md, section 5) the face mesh's points and O-Net's (run on the
face box the chain found, averaged over jittered and mirrored patches) err in different directions, so
their mean is closer to SCRFD's than either where O-Net is confident. Where it is not (a hand over the
eyes, a bowed head) O-Net's points are unreliable and the mesh's are kept.

O-Net's points alone for a face cut by the frame (where the mesh squeezes the face into the visible part)
helped the one such fixture (20.7 → 6.2 px) but not the 12 cuts made of the other fixtures (mesh 6.8, mean
7.1, O-Net alone 8.2 px: ``benchmarks/calibrate_crops.py`` section 7), so such a face gets the mean too.

The rule and its two numbers were chosen on the ten fixtures (``benchmarks/calibrate_crops.py`` section 6,
with its leave-one-out figures): a handful of photos, so take it as a measured default, not a law.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .mtcnn import BoxLandmarks

#: O-Net's points are used when its median face score over the jittered patches reaches this.
MIN_ONET_SCORE = 0.95
#: O-Net's weight in the mean with the face mesh's points (0: mesh only, 1: O-Net only).
ONET_WEIGHT = 0.5


@dataclass(frozen=True)
class RefinedPoints:
    """The five points and where they came from: "mesh" (the detection's own) or "mesh+mtcnn" (the mean)."""

    points5: np.ndarray
    source: str


def refine_points5(points5: np.ndarray, onet: BoxLandmarks | None) -> RefinedPoints:
    """The ArcFace five points from the detection's ``points5`` and O-Net's (see the module notes)."""
    points5 = np.asarray(points5, np.float64)
    if onet is None or onet.score < MIN_ONET_SCORE:
        return RefinedPoints(points5, "mesh")
    return RefinedPoints((1.0 - ONET_WEIGHT) * points5 + ONET_WEIGHT * onet.points5, "mesh+mtcnn")
