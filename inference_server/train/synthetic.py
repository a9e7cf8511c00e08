"""Synthetic occluded face renders with ground truth (DEMO head; no GPU, no download).

Each sample draws a shape, an expression and jaw, a head pose (yaw / pitch within ±30°), a light, a
skin tone, a background and an occluder; renders the head with the numpy rasteriser; and records the
ground truth: the parameters, the five ArcFace points and the face box (projected with the known camera,
so training and evaluation can skip the detector), the occluded fraction of the face's pixels and which
front-face vertices the occluder hides. The dataset folder holds ``images/NNNNNN.png``,
``labels/NNNNNN.npz`` and ``index.json`` (see :mod:`.datasets` for the reader).
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from ..flame.layer import FlameLayer
from ..flame.model_data import FlameModelData
from ..preprocess.alignment import box_from_points5
from ..preprocess.synthetic_occluders import (
    draw_bar,
    draw_hand_over_mouth,
    draw_sunglasses,
    draw_surgical_mask,
)
from ..render import Camera, project, rasterize, render_mesh, write_png

#: Bump when renders change: the index records it, so stale data sets are recognisable.
#: 3: coefficients of components the head lacks are zero; 4: face pixels are the triangles touching the
#: front-face vertices (with 3, the DEMO head's spread-out front vertices gave no face pixels, so the
#: occluded fraction read 0 and the max_occlusion cap never applied)
SYNTHETIC_VERSION = "ofer-synthetic/4"
INDEX_NAME = "index.json"
N_SHAPE = 300
N_EXPRESSION = 50
#: The five ArcFace points from the 68 landmarks: eye centres (means of 36-41, 42-47), nose tip, mouth corners.
LEFT_EYE, RIGHT_EYE, NOSE_TIP, MOUTH_LEFT, MOUTH_RIGHT = range(36, 42), range(42, 48), 30, 48, 54
#: A vertex counts as seen by the camera when it lies at most this far (metres) behind the z-buffer.
DEPTH_TOLERANCE = 1.5e-3


@dataclass(frozen=True)
class SyntheticConfig:
    """What to draw. Shape components below ``strong_shape`` get N(0, 1), the rest N(0, weak_shape_std²);
    components the head's basis does not have (all-zero columns, e.g. the DEMO head's identity modes past
    50 and expression modes past 43) are 0, so no network is trained to guess values no pixel shows."""

    size: int = 192
    strong_shape: int = 50  # the DEMO head's 50 ICT identity modes, each scaled to 1σ of the scans
    weak_shape_std: float = 0.3
    expression_std: float = 0.6
    jaw_open_std: float = 0.12  # radians, |N(0, σ²)| about the x axis
    max_yaw_deg: float = 30.0
    max_pitch_deg: float = 20.0
    max_occlusion: float = 0.6
    no_occluder_probability: float = 0.2


@dataclass
class SyntheticSample:
    """One render and its ground truth (arrays are numpy)."""

    image: np.ndarray  # (H, W, 3) uint8 RGB
    shape: np.ndarray  # (300,)
    expression: np.ndarray  # (50,)
    jaw: np.ndarray  # (3,) axis-angle, radians
    yaw_deg: float
    pitch_deg: float
    points5: np.ndarray  # (5, 2) pixels
    box: np.ndarray  # (4,) x0 y0 x1 y1
    occluder: str
    occluded_fraction: float  # of the pixels showing the front face
    front_occluded: np.ndarray  # (n_front,) bool: the occluder hides this front-face vertex
    front_in_view: np.ndarray  # (n_front,) bool: not hidden by the head itself
    alpha: np.ndarray  # (H, W) float32 occluder coverage in [0, 1] (not stored on disk)
    camera: Camera
    vertices: np.ndarray  # (V, 3) the posed head, metres (not stored on disk)


# -- backgrounds ----------------------------------------------------------------------------------------
def random_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Noise, a gradient, or blurred shapes."""
    kind = rng.integers(3)
    if kind == 0:
        noise = rng.random((size // 8 + 1, size // 8 + 1, 3)) * 255
        image = cv2.resize(noise, (size, size), interpolation=cv2.INTER_CUBIC)
    elif kind == 1:
        a, b = rng.random(3) * 255, rng.random(3) * 255
        angle = rng.random() * 2 * math.pi
        ys, xs = np.mgrid[:size, :size] / size
        w = np.clip((xs * math.cos(angle) + ys * math.sin(angle) + 1) / 2, 0, 1)[:, :, None]
        image = a * (1 - w) + b * w
    else:
        image = np.empty((size, size, 3))
        image[:] = rng.random(3) * 255
        for _ in range(int(rng.integers(3, 9))):
            centre = (int(rng.integers(size)), int(rng.integers(size)))
            axes = (int(rng.integers(size // 10, size // 2)), int(rng.integers(size // 10, size // 2)))
            colour = tuple(float(c) for c in rng.random(3) * 255)
            cv2.ellipse(image, centre, axes, float(rng.random() * 180), 0, 360, colour, -1)
        image = cv2.GaussianBlur(image, (0, 0), size / 40)
    return np.clip(image, 0, 255).astype(np.uint8)


# -- occluders ------------------------------------------------------------------------------------------
def _jittered(points5: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The points moved and scaled a little, so occluders do not always sit in the same place."""
    d = float(np.linalg.norm(points5[1] - points5[0]))
    centre = points5.mean(axis=0)
    scale = rng.uniform(0.85, 1.2)
    return centre + (points5 - centre) * scale + rng.normal(0, 0.15 * d, 2)


def _blob_hand(rgb: np.ndarray, points5: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A skin- or glove-coloured cluster of ellipses anywhere on the face (a hand-like blob)."""
    d = float(np.linalg.norm(points5[1] - points5[0]))
    mask = np.zeros(rgb.shape[:2], np.uint8)
    centre = points5[int(rng.integers(5))] + rng.normal(0, 0.4 * d, 2)
    for _ in range(int(rng.integers(2, 6))):
        c = centre + rng.normal(0, 0.35 * d, 2)
        axes = (max(1, int(rng.uniform(0.2, 0.7) * d)), max(1, int(rng.uniform(0.1, 0.4) * d)))
        cv2.ellipse(mask, (int(c[0]), int(c[1])), axes, float(rng.uniform(0, 180)), 0, 360, (255,), -1)
    layer = np.empty_like(rgb)
    layer[:] = (rng.uniform(0.6, 1.0) * np.array([226, 176, 146])).astype(np.uint8)
    alpha = mask.astype(np.float32)[:, :, None] / 255
    return np.clip(rgb * (1 - alpha) + layer * alpha, 0, 255).astype(np.uint8)


def _scarf(rgb: np.ndarray, points5: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A coloured band with stripes from below the nose or mouth down past the chin."""
    eye_mid = points5[:2].mean(axis=0)
    across = (points5[1] - points5[0]) / max(float(np.linalg.norm(points5[1] - points5[0])), 1e-6)
    down = np.array([-across[1], across[0]])
    d = float(np.linalg.norm(points5[1] - points5[0]))
    top = eye_mid + rng.uniform(0.8, 1.5) * d * down
    corners = [top - 1.6 * d * across, top + 1.6 * d * across]
    corners += [corners[1] + 2.5 * d * down, corners[0] + 2.5 * d * down]
    mask = np.zeros(rgb.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(np.array(corners)).astype(np.int32)], (255,))
    layer = np.empty_like(rgb)
    base = rng.integers(0, 255, 3)
    layer[:] = base
    for k in range(0, rgb.shape[0], max(2, int(d / 3))):
        layer[k : k + max(1, int(d / 8))] = 255 - base
    alpha = mask.astype(np.float32)[:, :, None] / 255
    return np.clip(rgb * (1 - alpha) + layer * alpha, 0, 255).astype(np.uint8)


def _random_bar(rgb: np.ndarray, points5: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    r, g, b = (int(c) for c in rng.integers(0, 255, 3))
    return draw_bar(rgb, _jittered(points5, rng), "eyes" if rng.random() < 0.5 else "mouth", (r, g, b))


Occluder = Callable[[np.ndarray, np.ndarray, np.random.Generator], np.ndarray]

#: Name → drawing function ``(rgb, points5, rng) -> rgb``; the mask is recovered from two draws.
OCCLUDERS: dict[str, Occluder] = {
    "hand_over_mouth": lambda rgb, p, rng: draw_hand_over_mouth(rgb, _jittered(p, rng)),
    "hand_blob": _blob_hand,
    "bar": _random_bar,
    "sunglasses": lambda rgb, p, rng: draw_sunglasses(rgb, _jittered(p, rng)),
    "surgical_mask": lambda rgb, p, rng: draw_surgical_mask(rgb, _jittered(p, rng)),
    "scarf": _scarf,
}


def occluder_alpha(draw: Occluder, shape: tuple[int, int], points5: np.ndarray, seed: int) -> np.ndarray:
    """The occluder's coverage in [0, 1]: draw it (same random choices) on black and on white.

    Every drawing blends ``out = in (1 - a) + layer a``, so ``out_white - out_black = 255 (1 - a)``.
    """
    black = draw(np.zeros((*shape, 3), np.uint8), points5, np.random.default_rng(seed))
    white = draw(np.full((*shape, 3), 255, np.uint8), points5, np.random.default_rng(seed))
    difference = white.astype(np.float32) - black.astype(np.float32)
    return np.asarray(np.clip(1.0 - difference.min(axis=2) / 255.0, 0.0, 1.0), dtype=np.float32)


# -- the renderer ---------------------------------------------------------------------------------------
class SyntheticRenderer:
    """Draws :class:`SyntheticSample` s from a FLAME-layout head (the demo head by default)."""

    def __init__(self, head: FlameModelData, config: SyntheticConfig | None = None) -> None:
        if head.lmk_faces_idx is None or len(head.lmk_faces_idx) != 68:
            raise ValueError("the head needs a 68-point landmark embedding to place the five points")
        self.head = head
        self.config = config or SyntheticConfig()
        self.layer = FlameLayer(head)
        self.front = np.asarray(head.front_face_indices, dtype=np.int64)
        front_set = np.zeros(head.n_vertices, bool)
        front_set[self.front] = True
        # Triangles touching the front-face region: FLAME's region is contiguous (this adds its border ring),
        # the DEMO head's 1785 vertices are spread evenly over its face, where whole triangles would be rare.
        self.front_faces = np.nonzero(front_set[head.faces].any(axis=1))[0]
        self.colors = np.asarray(head.extra.get("vertex_colors", np.full((head.n_vertices, 3), 0.8)))
        moves = np.abs(head.shapedirs).max(axis=(0, 1)) > 0
        self.shape_active = _padded(moves[: head.n_shape], N_SHAPE)
        self.expression_active = _padded(moves[head.n_shape :], N_EXPRESSION)

    def draw_parameters(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        c = self.config
        shape = rng.normal(0.0, 1.0, N_SHAPE)
        shape[c.strong_shape :] *= c.weak_shape_std
        shape *= self.shape_active
        expression = rng.normal(0.0, c.expression_std, N_EXPRESSION) * self.expression_active
        jaw = rng.normal(0.0, 0.02, 3)
        jaw[0] = abs(rng.normal(0.0, c.jaw_open_std))
        return {"shape": shape, "expression": expression, "jaw": jaw}

    def render(
        self, rng: np.random.Generator, *, shape: np.ndarray | None = None, occluder: str | None = None
    ) -> SyntheticSample:
        """One random sample; ``shape`` fixes the identity and ``occluder`` the occluder (a name of
        :data:`OCCLUDERS` or "none"), e.g. for several views of one person. Without them the random draws
        are the data set's."""
        c, size = self.config, self.config.size
        params = self.draw_parameters(rng)
        if shape is not None:
            params["shape"] = np.asarray(shape, dtype=np.float64).reshape(N_SHAPE)
        yaw = float(rng.uniform(-c.max_yaw_deg, c.max_yaw_deg))
        pitch = float(rng.uniform(-c.max_pitch_deg, c.max_pitch_deg))
        with torch.no_grad():
            out = self.layer.with_expression(
                torch.as_tensor(params["shape"][None], dtype=torch.float32),
                torch.as_tensor(params["expression"][None], dtype=torch.float32),
                torch.as_tensor(params["jaw"][None], dtype=torch.float32),
            )
        vertices = out.vertices[0].double().numpy()
        assert out.landmarks is not None
        landmarks = out.landmarks[0].double().numpy()
        centre = landmarks[[33, 8]].mean(axis=0) + rng.normal(0, 0.01, 3)
        camera = Camera(yaw_deg=yaw, pitch_deg=pitch, center=tuple(centre), extent=rng.uniform(0.24, 0.36))

        tone = rng.uniform(0.45, 1.15) * rng.uniform(0.9, 1.1, 3)
        colors = np.clip(self.colors * tone, 0, 1)
        light = np.array([rng.uniform(-1, 1), rng.uniform(-0.5, 1), rng.uniform(0.4, 1.2)])
        face = render_mesh(
            vertices, self.head.faces, width=size, height=size, camera=camera, colors=colors,
            light_dir=tuple(light), ambient=float(rng.uniform(0.2, 0.5)), background=(0, 0, 0),
        )  # fmt: skip
        screen, depth = project(vertices, camera, size, size)
        raster = rasterize(screen, depth, self.head.faces, size, size)
        covered = raster.triangle >= 0
        image = np.where(covered[:, :, None], face, random_background(rng, size))

        lmk_xy, _ = project(landmarks, camera, size, size)
        points5 = np.stack([
            lmk_xy[list(LEFT_EYE)].mean(axis=0), lmk_xy[list(RIGHT_EYE)].mean(axis=0),
            lmk_xy[NOSE_TIP], lmk_xy[MOUTH_LEFT], lmk_xy[MOUTH_RIGHT],
        ])  # fmt: skip

        face_pixels = np.isin(raster.triangle, self.front_faces)
        name, alpha = "none", np.zeros((size, size), np.float32)
        wanted = rng.random() >= c.no_occluder_probability
        if wanted if occluder is None else occluder != "none":
            for _ in range(8):  # redraw until the occluder hides at most max_occlusion of the face
                name = occluder or str(rng.choice(sorted(OCCLUDERS)))
                seed = int(rng.integers(2**31))
                alpha = occluder_alpha(OCCLUDERS[name], (size, size), points5, seed)
                if _fraction(alpha, face_pixels) <= c.max_occlusion:
                    image = OCCLUDERS[name](image, points5, np.random.default_rng(seed))
                    break
            else:
                name, alpha = "none", np.zeros((size, size), np.float32)

        front_xy, front_depth = screen[self.front], depth[self.front]
        px = np.clip(front_xy[:, 0].astype(np.int64), 0, size - 1)
        py = np.clip(front_xy[:, 1].astype(np.int64), 0, size - 1)
        in_view = front_depth >= raster.depth[py, px] - DEPTH_TOLERANCE
        return SyntheticSample(
            image=image, shape=params["shape"], expression=params["expression"], jaw=params["jaw"],
            yaw_deg=yaw, pitch_deg=pitch, points5=points5, box=box_from_points5(points5), occluder=name,
            occluded_fraction=_fraction(alpha, face_pixels), front_occluded=alpha[py, px] > 0.5,
            front_in_view=in_view, alpha=alpha, camera=camera, vertices=vertices,
        )  # fmt: skip


def _padded(flags: np.ndarray, size: int) -> np.ndarray:
    out = np.zeros(size)
    out[: min(size, len(flags))] = flags[:size]
    return out


def _fraction(alpha: np.ndarray, face_pixels: np.ndarray) -> float:
    total = int(face_pixels.sum())
    return float((alpha[face_pixels] > 0.5).sum() / total) if total else 0.0


# -- the data set folder --------------------------------------------------------------------------------
def _write_sample(folder: Path, i: int, sample: SyntheticSample) -> dict[str, object]:
    stem = f"{i:06d}"
    write_png(folder / "images" / f"{stem}.png", sample.image)
    np.savez(
        folder / "labels" / f"{stem}.npz",
        shape=sample.shape.astype(np.float32),
        expression=sample.expression.astype(np.float32),
        jaw=sample.jaw.astype(np.float32),
        points5=sample.points5.astype(np.float32),
        box=sample.box.astype(np.float32),
        front_occluded=sample.front_occluded,
        front_in_view=sample.front_in_view,
    )
    return {
        "image": f"images/{stem}.png", "label": f"labels/{stem}.npz", "occluder": sample.occluder,
        "occluded_fraction": round(sample.occluded_fraction, 5),
        "yaw_deg": round(sample.yaw_deg, 3), "pitch_deg": round(sample.pitch_deg, 3),
        "points5": np.round(sample.points5, 3).tolist(), "box": np.round(sample.box, 3).tolist(),
    }  # fmt: skip


def _render_range(
    folder: Path, indices: range, seed: int, head: FlameModelData, config: SyntheticConfig | None
) -> list[dict[str, object]]:
    """Render and write samples ``indices`` (one worker process's share); returns their index entries."""
    torch.set_num_threads(1)  # one process per core: intra-op threads would only compete
    renderer = SyntheticRenderer(head, config)
    return [_write_sample(folder, i, renderer.render(np.random.default_rng([seed, i]))) for i in indices]


def write_synthetic_dataset(
    folder: Path,
    count: int,
    *,
    seed: int = 0,
    head: FlameModelData | None = None,
    config: SyntheticConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
    workers: int = 1,
) -> Path:
    """Render ``count`` samples into ``folder`` (images/, labels/, index.json); returns the index path.

    Sample ``i`` uses its own generator seeded from (seed, i), so any subset can be re-rendered and
    ``workers`` processes (0: one per CPU core) write exactly the files one process writes.
    """
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    if workers < 0:
        raise ValueError(f"workers must be >= 0 (0: one per CPU core), got {workers}")
    if head is None:
        from ..demo.head import generate_demo_head

        head = generate_demo_head()
    renderer = SyntheticRenderer(head, config)
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "labels").mkdir(parents=True, exist_ok=True)
    workers = min(workers or os.cpu_count() or 1, count)
    entries: list[dict[str, object]] = []
    if workers == 1:
        for i in range(count):
            entries.append(_write_sample(folder, i, renderer.render(np.random.default_rng([seed, i]))))
            if progress:
                progress(i + 1, count)
    else:
        # "spawn": a forked child would inherit torch's thread pool state, which is not fork-safe.
        context = multiprocessing.get_context("spawn")
        # Chunks of a few seconds' work: each carries the head (tens of MB) to its process once.
        chunk = max(1, min(200, math.ceil(count / (4 * workers))))
        chunks = [range(start, min(start + chunk, count)) for start in range(0, count, chunk)]
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            jobs = [pool.submit(_render_range, folder, r, seed, head, config) for r in chunks]
            for job in jobs:  # in order, so the index lists the samples by number
                part = job.result()
                entries.extend(part)
                if progress:
                    progress(len(entries), count)
    index = {
        "format": SYNTHETIC_VERSION,
        "seed": seed,
        "count": count,
        "head": head.version,
        "head_generator": head.extra.get("generator_version"),
        "config": asdict(renderer.config),
        "n_front_vertices": len(renderer.front),
        "entries": entries,
    }
    path = folder / INDEX_NAME
    path.write_text(json.dumps(index, indent=1) + "\n", encoding="utf-8")
    return path
