"""A second network's opinion on an occluded face: the face mesh without its attention refinement (numpy).

Under an occluder the face mesh guesses the hidden part of the face and bends its visible points toward
the guess (docs/texture.md, "Landmarks next to an occluder"): that miss is a habit of the network on the
picture, so the mirrored photo's run (:mod:`.landmark_averaging`) cancels only its sideways part, and the
pitch stays as the network drew it. The MediaPipe wheel carries a second landmark network, the one
without the attention refinement of eyes and lips (``face_landmark.tflite``); its guesses under the
occluder are its own. Its runs on the photo and on the mirrored photo, each read through a correspondence
measured for that network on the model (:func:`.calibration.calibrate_correspondence`, cached like the
first's), are fitted as further observations of the 68 landmarks at half the weight of the first
network's (docs/texture.md, "A second network under an occluder").

Only photos that show an occluder next to the landmarks ask for them (an occluder blob, :mod:`.cover`, or
landmarks the detection found covered, :mod:`..preprocess.occlusion`), and only while the head is turned at
most SECOND_NETWORK_MAX_YAW_DEG: on a clean face the refined network is the more precise one and the
second's points cost accuracy (dev clean renders 1.52° → 1.98° when always fitted), so a clean photo is
fitted as before and pays nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .calibration import Correspondence
from .landmark_averaging import Detector, mirrored_landmarks, nearest_landmarks
from .pose_batch import stacked_runs

#: Weight of the second network's points relative to the first network's, per landmark (it scales the
#: precision). Chosen on the dev renders with a bar over the mouth (seeds 21000+): 1.0 gave 2.37°,
#: 0.5 gave 2.07° median rotation error (2.48° without the second network).
SECOND_NETWORK_WEIGHT = 0.5

#: Beyond this yaw (degrees, the direct run's fit) the second network is not asked: on a turned head the
#: detection's five-point occlusion check takes the far side's shading for cover, and the clean sweep to ±90°
#: (benchmarks/fit_trust.py) went 1.85° → 2.11° median with the second network asked there, 1.88° with this
#: limit; the fit sets (±30°) are unchanged by it.
SECOND_NETWORK_MAX_YAW_DEG = 35.0


@dataclass(frozen=True)
class SecondNetwork:
    """The second face mesh network and its correspondence on the model in use (measured or read from the
    cache only when first needed: a photo without an occluder never asks)."""

    detect: Detector
    correspondence: Callable[[], Correspondence | None]


def second_network_runs(rgb: np.ndarray, direct: np.ndarray, network: SecondNetwork) -> np.ndarray | None:
    """(k × 68, C) the second network's 68 landmarks on ``rgb`` and on its mirror (k ≤ 2 runs, each the face
    nearest ``direct``, the first network's 68, in the photo's pixels and labels), or None when it has no
    correspondence on this model or finds the face in neither run."""
    correspondence = network.correspondence()
    if correspondence is None:
        return None
    matrix = correspondence.matrix
    to68 = lambda points: np.asarray(matrix @ points)  # noqa: E731
    # Only meshes the correspondence maps (the plain network's 468 points).
    detect = lambda image: [m for m in network.detect(image) if len(m) == matrix.shape[1]]  # noqa: E731
    runs = [nearest_landmarks(detect(rgb), direct, to68), mirrored_landmarks(rgb, direct, detect, to68)]
    found = [run for run in runs if run is not None]
    return stacked_runs(found) if found else None
