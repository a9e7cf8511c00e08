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

A face cut by the frame: the mesh squeezes the face into the visible part (its box comes out small and
shifted away from the edge) where SCRFD extrapolates the whole face. ``FrameCutModel`` grows the box and
moves it towards each edge the mesh outline crosses, by how close the nose bridge is to that edge —
six numbers fitted on the fixtures cut synthetically at the top, left and right (the bottom: no gain,
not corrected); figures in docs/preprocessing.md, section 5.
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


def scrfd_box_from_mesh(
    landmarks: np.ndarray,
    model: BoxModel = DEFAULT_BOX_MODEL,
    *,
    frame: tuple[int, int] | None = None,
    cut_model: FrameCutModel | None = None,
) -> np.ndarray:
    """The SCRFD-equivalent face box [x0, y0, x1, y1] (square) of a face mesh; with ``frame`` (width,
    height of the photo the mesh is in) a face cut by the frame gets the box extended past the edges
    the mesh crosses (``cut_model``, default ``DEFAULT_FRAME_CUT``)."""
    box = _uncut_box(landmarks, model)
    if frame is None:
        return box
    return extend_past_frame(box, landmarks, frame, DEFAULT_FRAME_CUT if cut_model is None else cut_model)


def _uncut_box(landmarks: np.ndarray, model: BoxModel) -> np.ndarray:
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


#: Outward unit direction of each edge of the photo.
EDGE_DIRECTIONS = {
    "top": np.array([0.0, -1.0]),
    "bottom": np.array([0.0, 1.0]),
    "left": np.array([-1.0, 0.0]),
    "right": np.array([1.0, 0.0]),
}
#: A mesh outline (its 468 points) reaching this fraction of the face size past an edge crosses it.
CUT_FRACTION = 0.02


@dataclass(frozen=True)
class EdgeCorrection:
    """How a box grows and moves for one kind of edge. ``reach``: the correction starts when the nose
    bridge is nearer the edge than ``reach`` × S; per unit of the shortfall ``d`` (``reach`` − distance,
    in S) the side is multiplied by exp(``grow`` × d) and the centre moves ``shift`` × d × S towards the
    edge. ``limit``: the largest shortfall of the cuts it was fitted on; a face cut deeper is corrected
    as if cut there (the model is not extrapolated)."""

    reach: float
    grow: float
    shift: float
    limit: float = float("inf")


@dataclass(frozen=True)
class FrameCutModel:
    """Corrections for the top edge and for the left and right edges (mirror images of each other)."""

    top: EdgeCorrection
    side: EdgeCorrection

    def for_edge(self, edge: str) -> EdgeCorrection | None:
        return self.top if edge == "top" else self.side if edge in ("left", "right") else None


#: Fitted on 126 synthetic cuts (flagged cut by the frame) of the 7 fixtures the mesh finds whole
#: (benchmarks/calibrate_crops.py, section 8; docs/preprocessing.md section 5).
DEFAULT_FRAME_CUT = FrameCutModel(
    top=EdgeCorrection(reach=0.25, grow=0.514, shift=0.240, limit=0.317),
    side=EdgeCorrection(reach=1.10, grow=0.116, shift=0.064, limit=1.076),
)


def crossed_edges(landmarks: np.ndarray, width: int, height: int) -> dict[str, float]:
    """The photo edges the mesh outline crosses (by ``CUT_FRACTION`` of the face size), each with the
    nose bridge's distance to it in units of the oval size S (negative when the bridge is outside)."""
    landmarks = np.asarray(landmarks, np.float64)
    geometry = oval_geometry(landmarks)
    low, high = landmarks[:468].min(axis=0), landmarks[:468].max(axis=0)
    margin = CUT_FRACTION * geometry.size
    bridge = geometry.bridge
    edges = {
        "top": (low[1] < -margin, bridge[1]),
        "bottom": (high[1] > height + margin, height - bridge[1]),
        "left": (low[0] < -margin, bridge[0]),
        "right": (high[0] > width + margin, width - bridge[0]),
    }
    return {edge: float(distance) / geometry.size for edge, (crossed, distance) in edges.items() if crossed}


def extend_past_frame(
    box: np.ndarray, landmarks: np.ndarray, frame: tuple[int, int], cut_model: FrameCutModel = DEFAULT_FRAME_CUT
) -> np.ndarray:
    """``box`` grown and moved towards the edges of the ``frame`` (width, height) the mesh crosses."""
    box = np.asarray(box, np.float64)
    size = oval_geometry(landmarks).size
    centre, side, grow = (box[:2] + box[2:]) / 2.0, float(box[2] - box[0]), 0.0
    for edge, distance in crossed_edges(landmarks, *frame).items():
        correction = cut_model.for_edge(edge)
        if correction is None:
            continue
        shortfall = min(max(0.0, correction.reach - distance), correction.limit)
        centre = centre + correction.shift * shortfall * size * EDGE_DIRECTIONS[edge]
        grow += correction.grow * shortfall
    half = side * float(np.exp(grow)) / 2.0
    return np.concatenate([centre - half, centre + half])


@dataclass(frozen=True)
class CutSample:
    """A face mesh in a photo cut by the frame, with the official box's centre and mean side there."""

    landmarks: np.ndarray
    frame: tuple[int, int]
    centre: np.ndarray
    mean_side: float


def fit_frame_cut_model(samples: Sequence[CutSample], model: BoxModel = DEFAULT_BOX_MODEL) -> FrameCutModel:
    """Least-squares ``FrameCutModel``: for the top and the side edges, ``grow`` and ``shift`` through
    the origin for each ``reach`` on a grid, the reach that reduces the squared errors most."""
    rows: dict[str, list[tuple[float, float, float]]] = {"top": [], "side": []}
    for sample in samples:
        box = _uncut_box(sample.landmarks, model)
        size = oval_geometry(sample.landmarks).size
        centre, side = (box[:2] + box[2:]) / 2.0, float(box[2] - box[0])
        for edge, distance in crossed_edges(sample.landmarks, *sample.frame).items():
            group = "top" if edge == "top" else "side" if edge in ("left", "right") else None
            if group is not None:
                towards = float((sample.centre - centre) @ EDGE_DIRECTIONS[edge]) / size
                rows[group].append((distance, towards, float(np.log(sample.mean_side / side))))
    fitted = {group: _fit_edge(np.array(values).reshape(-1, 3)) for group, values in rows.items()}
    return FrameCutModel(top=fitted["top"], side=fitted["side"])


def _fit_edge(rows: np.ndarray) -> EdgeCorrection:
    best = (0.0, EdgeCorrection(0.0, 0.0, 0.0))
    for reach in np.arange(0.0, 1.2001, 0.05):
        shortfall = np.maximum(0.0, reach - rows[:, 0])
        norm = float(shortfall @ shortfall)
        if (shortfall > 0).sum() < 3:
            continue
        shift, grow = float(shortfall @ rows[:, 1]) / norm, float(shortfall @ rows[:, 2]) / norm
        # Reduction of the squared errors (centre in S, log side) against no correction.
        gain = shift * float(shortfall @ rows[:, 1]) + grow * float(shortfall @ rows[:, 2])
        if gain > best[0]:
            best = (gain, EdgeCorrection(float(reach), grow, shift, float(shortfall.max())))
    return best[1]


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
