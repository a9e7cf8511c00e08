"""The face box the official networks were fed by: an SCRFD-equivalent box from what the project detects.

The official preprocessing cuts the 224 crop (FaRL's input, hence ExpGen's and IdRank's condition) as a
square of 1.6 × the mean side of SCRFD's box around that box's centre. The project has no SCRFD; it has
MediaPipe's dense face mesh. A box built around five landmarks sits low and swings sideways with head
turn, so the box here is modelled on the mesh's face outline instead:

- ``S``: mean of the width and height of the face-oval landmarks' axis-aligned extent (the outline
  the mesh predicts even where the lower face is hidden: SCRFD boxes are axis-aligned too, so a rolled
  face gets a larger box in both);
- centre: the oval extent's centre pulled a fraction of the way towards the nose bridge (mesh 168,
  between the eyes), which follows head turn and pitch the way SCRFD's box does, plus a vertical shift
  in units of ``S``;
- mean side: a multiple of ``S``.

Four numbers, calibrated on the official crops of ``shared/fixtures/official-preprocessing`` by
``benchmarks/calibrate_crops.py`` (figures in docs/preprocessing.md). Without a mesh (five points from a
detector or the user) the box comes from the five-point alignment and a template-frame box calibrated on
the same fixtures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .alignment import ARCFACE_TEMPLATE_112, apply_affine, fit_similarity, invert_affine

#: The face mesh's face-oval landmarks (the outline from the forehead round the chin).
FACE_OVAL = (
    10, 21, 54, 58, 67, 93, 103, 109, 127, 132, 136, 148, 149, 150, 152, 162, 172, 176,
    234, 251, 284, 288, 297, 323, 332, 338, 356, 361, 365, 377, 378, 379, 389, 397, 400, 454,
)  # fmt: skip
#: Mesh landmark on the nose bridge between the eyes (on the midline, so a mirrored mesh keeps it).
NOSE_BRIDGE = 168


@dataclass(frozen=True)
class BoxModel:
    """SCRFD-equivalent box from the mesh: see the module notes. Fractions of the way from the oval
    centre to the nose bridge (``pull_x``, ``pull_y``), a vertical shift and the mean side in units of S."""

    pull_x: float
    pull_y: float
    shift_y: float
    size: float


#: Calibrated on the 10 fixtures (benchmarks/calibrate_crops.py; docs/preprocessing.md).
DEFAULT_BOX_MODEL = BoxModel(pull_x=0.147, pull_y=0.481, shift_y=0.010, size=1.100)

#: SCRFD's box in the ArcFace template frame (x0, y0, x1, y1) for five points without a mesh: the
#: official boxes of the fixtures mapped through the official ArcFace transforms (mean; square, since
#: only its centre and mean side matter).
SCRFD_TEMPLATE_BOX_112 = np.array([8.5, 14.6, 102.1, 108.2], dtype=np.float64)


@dataclass(frozen=True)
class OvalGeometry:
    """What the box model reads off a mesh: oval extent centre (2,), nose bridge (2,), size ``S``."""

    centre: np.ndarray
    bridge: np.ndarray
    size: float


def oval_geometry(landmarks: np.ndarray) -> OvalGeometry:
    """The oval extent and nose bridge of a (≥468, 2) face mesh in pixels."""
    landmarks = np.asarray(landmarks, dtype=np.float64)
    if landmarks.ndim != 2 or landmarks.shape[0] < 468 or landmarks.shape[1] != 2:
        raise ValueError(f"expected a (478, 2) face mesh, got {landmarks.shape}")
    oval = landmarks[list(FACE_OVAL)]
    low, high = oval.min(axis=0), oval.max(axis=0)
    size = float(((high - low).sum()) / 2.0)
    return OvalGeometry(centre=(low + high) / 2.0, bridge=landmarks[NOSE_BRIDGE].copy(), size=size)


def scrfd_box_from_mesh(landmarks: np.ndarray, model: BoxModel = DEFAULT_BOX_MODEL) -> np.ndarray:
    """The SCRFD-equivalent face box [x0, y0, x1, y1] (square) of a face mesh."""
    geometry = oval_geometry(landmarks)
    centre = np.array(
        [
            geometry.centre[0] + model.pull_x * (geometry.bridge[0] - geometry.centre[0]),
            geometry.centre[1]
            + model.pull_y * (geometry.bridge[1] - geometry.centre[1])
            + model.shift_y * geometry.size,
        ]
    )
    half = model.size * geometry.size / 2.0
    return np.concatenate([centre - half, centre + half])


def scrfd_box_from_points5(points5: np.ndarray, template_box: np.ndarray = SCRFD_TEMPLATE_BOX_112) -> np.ndarray:
    """The SCRFD-equivalent box of five ArcFace points: ``template_box`` sent back through the five-point
    alignment, kept axis-aligned and square with the similarity's scale."""
    to_photo = invert_affine(fit_similarity(np.asarray(points5, np.float64), ARCFACE_TEMPLATE_112))
    scale = float(np.sqrt(abs(np.linalg.det(to_photo[:, :2]))))
    x0, y0, x1, y1 = template_box
    centre = apply_affine(to_photo, np.array([[(x0 + x1) / 2.0, (y0 + y1) / 2.0]]))[0]
    half = ((x1 - x0) + (y1 - y0)) / 4.0 * scale
    return np.concatenate([centre - half, centre + half])


def fit_box_model(meshes: Sequence[np.ndarray], centres: Sequence[np.ndarray], mean_sides: Sequence[float]) -> BoxModel:
    """Least-squares ``BoxModel`` from face meshes and the official boxes' centres and mean sides."""
    if not (len(meshes) == len(centres) == len(mean_sides)) or len(meshes) < 2:
        raise ValueError("fit_box_model needs at least two meshes, each with a centre and a mean side")
    geometries = [oval_geometry(m) for m in meshes]
    dx = np.array([g.bridge[0] - g.centre[0] for g in geometries])
    tx = np.array([c[0] - g.centre[0] for c, g in zip(centres, geometries, strict=True)])
    pull_x = float((dx * tx).sum() / max((dx**2).sum(), 1e-12))
    sizes = np.array([g.size for g in geometries])
    design = np.stack([np.array([g.bridge[1] - g.centre[1] for g in geometries]) / sizes, np.ones(len(sizes))], 1)
    ty = np.array([c[1] - g.centre[1] for c, g in zip(centres, geometries, strict=True)]) / sizes
    (pull_y, shift_y), *_ = np.linalg.lstsq(design, ty, rcond=None)
    size = float(np.mean(np.asarray(mean_sides, np.float64) / sizes))
    return BoxModel(pull_x=pull_x, pull_y=float(pull_y), shift_y=float(shift_y), size=size)


def fit_template_box(
    arcface_transforms: Sequence[np.ndarray], centres: Sequence[np.ndarray], mean_sides: Sequence[float]
) -> np.ndarray:
    """The square template-frame box (x0, y0, x1, y1) whose centre and side are the mean of the official
    boxes mapped through the official ArcFace transforms (photo → 112 crop)."""
    mapped_centres = []
    mapped_sides = []
    for transform, centre, side in zip(arcface_transforms, centres, mean_sides, strict=True):
        mapped_centres.append(apply_affine(transform, np.asarray(centre, np.float64).reshape(1, 2))[0])
        mapped_sides.append(float(side) * float(np.sqrt(abs(np.linalg.det(transform[:, :2])))))
    centre = np.mean(mapped_centres, axis=0)
    half = float(np.mean(mapped_sides)) / 2.0
    return np.concatenate([centre - half, centre + half])


def crop_box(box: np.ndarray, points5: np.ndarray, convention: str) -> np.ndarray:
    """The box the 224 crop is cut around, in the convention the networks were trained with: "scrfd"
    (the official weights: the detection's SCRFD-equivalent ``box``) or "five_point" (the project's DEMO
    weights, trained on synthetic renders cropped with ``alignment.box_from_points5``)."""
    if convention == "scrfd":
        return np.asarray(box, np.float64)
    if convention == "five_point":
        from .alignment import box_from_points5

        return box_from_points5(points5)
    raise ValueError(f"unknown crop box convention {convention!r}; use 'scrfd' or 'five_point'")
