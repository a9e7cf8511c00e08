"""Synthetic photos with a known head pose, pinhole camera and texture, for measuring the fit and the
texture stages (the training renders in ``train/synthetic.py`` are orthographic and carry no texture).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..flame.layer import FlameLayer
from ..flame.model_data import FlameModelData
from ..preprocess.synthetic_occluders import draw_bar
from ..render import PinholeCamera, render_mesh, vertex_normals
from ..texture.bake import rasterize_uv
from ..texture.fill import pull_push
from .camera import axis_angle, euler_rotation, project

#: A strongly coloured occluder (saturated green), far from any skin or lip colour.
OCCLUDER_RGB = (20, 200, 60)


@dataclass
class SyntheticCase:
    image: np.ndarray  # (H, W, 3) uint8
    vertices: np.ndarray  # (V, 3) model frame
    landmarks: np.ndarray  # (68, 3) model frame
    landmark_normals: np.ndarray  # (68, 3)
    pose: np.ndarray  # (6,)
    camera: np.ndarray  # (3,)
    texture: np.ndarray  # (S, S, 3) uint8, the ground-truth texture
    occluder_alpha: np.ndarray  # (H, W) in [0, 1]
    expression: np.ndarray  # (50,)
    jaw: np.ndarray  # (3,)
    shape: np.ndarray  # (300,)
    eye_pose: np.ndarray | None = None  # (2, 3) the eyes' rotations (fit/gaze.py's order), when turned


def ground_truth_texture(head: FlameModelData, size: int = 512) -> np.ndarray:
    """The head's preview colours baked into its UV map, with a fine pattern so that misregistration
    shows in the PSNR, and the gutters between UV islands filled."""
    assert head.uv is not None and head.uv_faces is not None
    raster = rasterize_uv(head.uv, np.asarray(head.uv_faces), size)
    colors = np.asarray(head.extra.get("vertex_colors", np.full((head.n_vertices, 3), 0.8)))
    texture = raster.interpolate(colors * 255.0, np.asarray(head.faces))
    rows, cols = np.mgrid[:size, :size] / size
    pattern = 1.0 + 0.05 * np.sin(2 * math.pi * 41 * cols) * np.sin(2 * math.pi * 41 * rows)
    texture = np.clip(texture * pattern[..., None], 0, 255)
    return np.clip(np.rint(pull_push(texture, raster.covered)), 0, 255).astype(np.uint8)


def landmark_normals(vertices: np.ndarray, faces: np.ndarray, head: FlameModelData) -> np.ndarray:
    """(68, 3) unit surface normals at the model's landmarks on ``vertices``."""
    assert head.lmk_faces_idx is not None and head.lmk_bary_coords is not None
    normals = vertex_normals(vertices, faces)[np.asarray(faces)[head.lmk_faces_idx]]
    n = np.einsum("lk,lkc->lc", head.lmk_bary_coords, normals)
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)


def render_case(
    head: FlameModelData, layer: FlameLayer, texture: np.ndarray, rng: np.random.Generator, *,
    size: tuple[int, int] = (640, 480), max_yaw: float = 30.0, occluder: str | None = None, ambient: float = 0.5,
    yaw: float | None = None, gaze_deg: tuple[float, float] | None = None, add_expression: np.ndarray | None = None,
) -> SyntheticCase:  # fmt: skip
    """One photo: random identity, expression and jaw, pose within ±``max_yaw`` yaw, ±15° pitch, ±8° roll,
    a focal length of 0.8-2.2 × the longer side, the face ~20 % of the width; ``occluder`` "mouth" or
    "eyes" draws a strongly coloured bar there. ``ambient`` 1.0 renders the texture unshaded. ``yaw``
    (degrees) fixes the turn instead of drawing it (the other draws stay as they were). ``gaze_deg`` (yaw
    towards the subject's left, pitch up; degrees in the head's frame) turns both eyes to look that way
    (no draw: the other draws stay as they were). ``add_expression`` is added to the drawn expression's
    first coefficients (a named expression on top of a random one, e.g. closed eyes)."""
    width, height = size
    shape = rng.normal(0, 1, 300) * np.where(np.arange(300) < 32, 1.0, 0.3)
    expression = rng.normal(0, 0.3, 50)
    if add_expression is not None:
        expression[: len(add_expression)] += np.asarray(add_expression, dtype=np.float64)[: len(expression)]
    jaw = np.array([abs(rng.normal(0, 0.12)), 0.0, 0.0])
    with torch.no_grad():
        out = layer.with_expression(torch.as_tensor(shape[None]), torch.as_tensor(expression[None]),
                                    torch.as_tensor(jaw[None]))  # fmt: skip
    vertices = out.vertices[0].double().numpy()
    assert out.landmarks is not None
    landmarks = out.landmarks[0].double().numpy()
    eye_pose = None
    if gaze_deg is not None:
        vertices, eye_pose = _looking(head, vertices, *gaze_deg)
    angles = np.radians([rng.uniform(-15, 15), rng.uniform(-max_yaw, max_yaw), rng.uniform(-8, 8)])
    if yaw is not None:
        angles[1] = math.radians(yaw)
    rotation = euler_rotation(angles)
    focal = rng.uniform(0.8, 2.2) * max(width, height)
    iod_m = float(np.linalg.norm(landmarks[36:42].mean(axis=0) - landmarks[42:48].mean(axis=0)))
    depth = focal * iod_m / (rng.uniform(0.14, 0.2) * width)
    centre = landmarks[[27, 30, 33]].mean(axis=0)
    offset = np.array([rng.uniform(-0.1, 0.1) * width, rng.uniform(-0.1, 0.1) * height]) * depth / focal
    translation = np.array([offset[0], offset[1], -depth]) - rotation @ centre
    pose = np.concatenate([axis_angle(rotation), translation])
    camera = np.array([focal, width / 2.0, height / 2.0])
    pinhole = PinholeCamera(tuple(pose.tolist()), focal, width / 2.0, height / 2.0, width, height)
    background = tuple(int(c) for c in rng.integers(40, 200, 3))
    assert head.uv is not None and head.uv_faces is not None
    image = render_mesh(vertices, head.faces, width=width, height=height, camera=pinhole, ambient=ambient,
                        background=background, texture=(texture, head.uv, head.uv_faces))  # fmt: skip
    alpha = np.zeros((height, width), np.float32)
    if occluder is not None:
        xy = project(landmarks, pose, camera)
        points5 = np.stack([xy[36:42].mean(axis=0), xy[42:48].mean(axis=0), xy[30], xy[48], xy[54]])
        black = draw_bar(np.zeros_like(image), points5, occluder, OCCLUDER_RGB)
        white = draw_bar(np.full_like(image, 255), points5, occluder, OCCLUDER_RGB)
        alpha = np.clip(1.0 - (white.astype(np.float32) - black).min(axis=2) / 255.0, 0, 1)
        image = draw_bar(image, points5, occluder, OCCLUDER_RGB)
    return SyntheticCase(
        image=image, vertices=vertices, landmarks=landmarks,
        landmark_normals=landmark_normals(vertices, head.faces, head), pose=pose, camera=camera,
        texture=texture, occluder_alpha=alpha, expression=expression, jaw=jaw, shape=shape, eye_pose=eye_pose,
    )  # fmt: skip


def _looking(
    head: FlameModelData, vertices: np.ndarray, yaw_deg: float, pitch_deg: float
) -> tuple[np.ndarray, np.ndarray]:
    """``vertices`` with both eyes turned to look along (yaw, pitch), and those turns (2, 3)."""
    from .gaze import angles_direction, eyeballs, rotation_between, turned_eyes

    eyes = eyeballs(head, vertices)
    if eyes is None:
        raise ValueError("the head has no eyeballs on eye joints")
    target = angles_direction(yaw_deg, pitch_deg)
    eye_pose = np.stack([rotation_between((e.pupil - e.centre) / e.radius, target) for e in eyes])
    return turned_eyes(head, vertices, eye_pose), eye_pose


def closed_eyes_expression(head: FlameModelData) -> np.ndarray:
    """Expression coefficients that close both eyes (the DEMO head's ARKit ``eyeBlink_L`` and ``_R`` at 1), for
    ``render_case``'s ``add_expression``; raises KeyError for a model without ARKit shapes (a FLAME model)."""
    names, to_modes = head.extra["arkit_names"], head.extra["arkit_to_expression"]
    weights = np.array([1.0 if name in ("eyeBlink_L", "eyeBlink_R") else 0.0 for name in names])
    return np.asarray(to_modes @ weights, dtype=np.float64)


def five_points(case: SyntheticCase) -> np.ndarray:
    """(5, 2) the case's eye centres, nose tip and mouth corners in its pixels (where occluders are drawn)."""
    xy = project(case.landmarks, case.pose, case.camera)
    return np.stack([xy[36:42].mean(axis=0), xy[42:48].mean(axis=0), xy[30], xy[48], xy[54]])


def with_training_occluder(case: SyntheticCase, name: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(photo, coverage in [0, 1]) of ``case`` under the training renders' occluder ``name``
    (``train/synthetic.py``'s ``OCCLUDERS``), its random choices seeded from ``rng``; ``case`` is not changed."""
    from ..train.synthetic import OCCLUDERS, occluder_alpha

    points5 = five_points(case)
    seed = int(rng.integers(2**31))
    alpha = occluder_alpha(OCCLUDERS[name], (case.image.shape[0], case.image.shape[1]), points5, seed)
    return OCCLUDERS[name](case.image, points5, np.random.default_rng(seed)), alpha


def with_pasted_hand(case: SyntheticCase, source: np.ndarray, polygon: np.ndarray, target: np.ndarray,
                     height_iod: float = 2.2) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(photo, mask) of ``case`` with a real hand pasted over it: the region ``polygon`` (K, 2) of the photo
    ``source``, scaled to ``height_iod`` eye distances tall and centred on ``target`` (2,) in the case's
    pixels, its colour moved to the face's median colour in CIE Lab (so colour alone cannot tell it from
    the face); ``case`` is not changed."""
    import cv2

    xy = project(case.landmarks, case.pose, case.camera)
    iod = float(np.linalg.norm(xy[36:42].mean(axis=0) - xy[42:48].mean(axis=0)))
    low, high = polygon.min(axis=0), polygon.max(axis=0)
    scale = height_iod * iod / float(high[1] - low[1])
    offset = np.asarray(target, np.float64) - scale * 0.5 * (low + high)
    height, width = case.image.shape[:2]
    warped = cv2.warpAffine(source, np.array([[scale, 0.0, offset[0]], [0.0, scale, offset[1]]]), (width, height),
                            flags=cv2.INTER_LINEAR)  # fmt: skip
    region = np.zeros((height, width), np.uint8)
    cv2.fillPoly(region, [np.round(polygon * scale + offset).astype(np.int32)], (1,))
    face_hull = np.zeros((height, width), np.uint8)
    cv2.fillConvexPoly(face_hull, cv2.convexHull(np.round(xy[:27, :2]).astype(np.int32)), (1,))
    inside = region > 0
    lab = cv2.cvtColor(case.image, cv2.COLOR_RGB2LAB).astype(np.float64)
    face = np.median(lab[(face_hull > 0) & ~inside], axis=0)
    hand = cv2.cvtColor(warped, cv2.COLOR_RGB2LAB).astype(np.float64)[inside]
    hand = np.clip(hand - np.median(hand, axis=0) + face, 0, 255).astype(np.uint8)
    image = case.image.copy()
    image[inside] = cv2.cvtColor(hand[:, None], cv2.COLOR_LAB2RGB)[:, 0]
    return image, inside


def with_saturated_disc(case: SyntheticCase, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``case.image`` with an ellipse of the face's median hue at twice its saturation over the mouth (an
    egg held to the lips), and its mask."""
    import cv2

    xy = project(case.landmarks, case.pose, case.camera)[:, :2]
    iod = float(np.linalg.norm(xy[36:42].mean(axis=0) - xy[42:48].mean(axis=0)))
    face = np.zeros(case.image.shape[:2], np.uint8)
    cv2.fillConvexPoly(face, cv2.convexHull(np.round(xy).astype(np.int32)), (1,))
    hsv = cv2.cvtColor(case.image, cv2.COLOR_RGB2HSV)
    h, s, v = np.median(hsv[face > 0], axis=0)
    saturated = np.array([[[h, min(255.0, 2.0 * s), v]]], dtype=np.uint8)
    colour = np.asarray(cv2.cvtColor(saturated, cv2.COLOR_HSV2RGB), dtype=np.float64)[0, 0]
    centre = xy[62] + rng.normal(0, 0.05 * iod, 2)
    axes = (round(0.45 * iod), round(0.35 * iod))
    mask = np.zeros(case.image.shape[:2], np.uint8)
    cv2.ellipse(mask, (round(centre[0]), round(centre[1])), axes, float(rng.uniform(-20, 20)), 0, 360, (1,), -1)
    image = case.image.copy()
    shade = np.clip(rng.normal(1.0, 0.04, (*image.shape[:2], 1)), 0.8, 1.2)  # a little texture, like an egg shell
    image[mask > 0] = np.clip(colour * shade[mask > 0], 0, 255).astype(np.uint8)
    return image, mask > 0


def with_plaid_band(case: SyntheticCase, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``case.image`` with a plaid band over the forehead (a hat's brim, a patterned headband), and its mask.
    A quarter of the plaid is the face's own median colour and the rest its shades (threads of the same hue,
    darker and greyer, but not dark enough to count as dark), with thin lighter lines: colour alone leaves
    most of it in the texture."""
    import cv2

    xy = project(case.landmarks, case.pose, case.camera)[:, :2]
    left, right = xy[36:42].mean(axis=0), xy[42:48].mean(axis=0)
    iod = float(np.linalg.norm(right - left))
    across = (right - left) / iod
    up = np.array([across[1], -across[0]])  # image y grows downwards: "up" is the eye line turned by -90°
    if up[1] > 0:
        up = -up
    centre = xy[17:27].mean(axis=0) + (0.35 + rng.uniform(-0.05, 0.05)) * iod * up
    height, width = case.image.shape[:2]
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    u = (xx - centre[0]) * across[0] + (yy - centre[1]) * across[1]
    v = (xx - centre[0]) * up[0] + (yy - centre[1]) * up[1]
    mask = (np.abs(u) <= 1.3 * iod) & (np.abs(v) <= 0.3 * iod)
    face = np.zeros((height, width), np.uint8)
    cv2.fillConvexPoly(face, cv2.convexHull(np.round(xy).astype(np.int32)), (1,))
    skin = np.median(case.image[(face > 0) & ~mask].astype(np.float64), axis=0)
    period = 0.14 * iod
    phase = rng.uniform(0, period, 2)
    stripe_u = ((u + phase[0]) % period) < 0.5 * period
    stripe_v = ((v + phase[1]) % period) < 0.5 * period
    dark = 0.45 * (0.7 * skin + 0.3 * skin.mean())  # the same hue, darker and greyer: skin to chromaticity
    cloth = np.where((stripe_u & stripe_v)[..., None], dark, np.where((stripe_u ^ stripe_v)[..., None],
                     0.5 * (skin + dark), skin))  # fmt: skip
    line = (np.abs(((u + phase[0]) % (3 * period)) - 1.5 * period) < 0.012 * iod * 1.5)[..., None]
    cloth = np.where(line, np.minimum(skin * 1.25, 255.0), cloth)
    image = case.image.copy()
    image[mask] = np.clip(cloth[mask], 0, 255).astype(np.uint8)
    return image, mask
