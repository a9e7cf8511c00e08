"""The synthetic sequence measurement: a rendered clip with a known performance → path vs first sample.

The clip: the DEMO head with one random identity, a scripted expression track (slow sinusoids on the head's
active expression components, the jaw opening and closing), a head turning and nodding in front of a pinhole
camera, and a bar over the mouth for the middle third of the frames. The worker's ``sequence`` runs on the
frames as a folder of PNGs; the errors compare, on the front-face vertices in the model frame, each frame's
expression displacement (the mesh minus its own neutral identity, so the clip's identity error is left out):

- ``error``: mean over frames of the mean vertex distance to the truth (mm);
- ``jitter``: mean over frames of the mean vertex change from the previous frame (mm), minus the truth's.

``path`` is the sequence result (frame_vertices); ``first`` takes each frame's first ExpGen hypothesis.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..fit.camera import axis_angle, euler_rotation, project, rotation_angle_deg, rotation_matrix
from ..fit.synthetic import OCCLUDER_RGB, ground_truth_texture
from ..flame.layer import FlameLayer
from ..flame.model_data import FlameModelData
from ..preprocess.synthetic_occluders import draw_bar
from ..render import PinholeCamera, render_mesh, write_png
from ..sequence.assemble import Rig, animate, hypothesis_metric
from ..sequence.controls import rig_vertices
from ..sequence.run import SequenceOutput
from ..sequence_result import SequenceResult


@dataclass
class SyntheticClip:
    frames: list[np.ndarray]  # (H, W, 3) uint8
    expression_vertices: np.ndarray  # (T, V, 3) model frame: truth minus its neutral
    occluded: np.ndarray  # (T,) bool: the bar covers the mouth
    poses: np.ndarray  # (T, 6) the true head pose, the sequence result's convention
    camera: np.ndarray  # (3,) f, cx, cy


def expression_track(
    n_frames: int, active: np.ndarray, rng: np.random.Generator, period: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(T, 50) expressions and (T, 3) jaw: two slow sinusoids per active component (a quarter to one and a
    half cycles per clip), amplitude about the training prior's 0.6; the jaw opens to 0.25 rad and closes.
    ``period``: the frames the whole performance takes (default the clip's; longer films a part of it)."""
    t = np.arange(n_frames)[:, None] / max((period or n_frames) - 1, 1)
    expression = np.zeros((n_frames, 50))
    for k in range(2):
        freq = rng.uniform(0.25, 0.75, 50) * (k + 1)
        phase = rng.uniform(0, 2 * math.pi, 50)
        expression += 0.45 * rng.normal(0, 1, 50) * np.sin(2 * math.pi * freq * t + phase)
    expression *= active[None, :50]
    jaw = np.zeros((n_frames, 3))
    jaw[:, 0] = 0.125 * (1 - np.cos(2 * math.pi * t[:, 0]))
    return expression, jaw


def render_clip(
    head: FlameModelData, n_frames: int, *, seed: int = 0, size: tuple[int, int] = (480, 360), period: int | None = None
) -> SyntheticClip:
    """``n_frames`` frames of one performance lasting ``period`` frames (default ``n_frames``)."""
    rng = np.random.default_rng(seed)
    layer = FlameLayer(head, dtype=torch.float64)
    moves = np.abs(head.shapedirs).max(axis=(0, 1)) > 0
    shape = rng.normal(0, 1, head.n_shape) * moves[: head.n_shape] * np.where(np.arange(head.n_shape) < 50, 1, 0.3)
    expression, jaw = expression_track(n_frames, moves[head.n_shape :].astype(float), rng, period)
    with torch.no_grad():
        out = layer.with_expression(torch.as_tensor(shape[None]), torch.as_tensor(expression), torch.as_tensor(jaw))
        neutral = layer.neutral(torch.as_tensor(shape[None])).vertices[0].numpy()
    assert out.landmarks is not None
    vertices, landmarks = out.vertices.numpy(), out.landmarks.numpy()
    width, height = size
    focal = 1.2 * width
    iod = float(np.linalg.norm(landmarks[0, 36:42].mean(0) - landmarks[0, 42:48].mean(0)))
    depth = focal * iod / (0.17 * width)
    texture = ground_truth_texture(head)
    assert head.uv is not None and head.uv_faces is not None
    occluded = np.zeros(n_frames, bool)
    occluded[n_frames // 3 : 2 * n_frames // 3] = True
    camera = np.array([focal, width / 2.0, height / 2.0])
    frames, poses = [], []
    for i in range(n_frames):
        phase = 2 * math.pi * i / max((period or n_frames) - 1, 1)
        rotation = euler_rotation(np.radians([6 * math.sin(phase * 1.5), 18 * math.sin(phase), 3 * math.sin(phase)]))
        centre = landmarks[i, [27, 30, 33]].mean(axis=0)
        translation = np.array([0.01 * math.sin(phase), 0.0, -depth]) - rotation @ centre
        pose = np.concatenate([axis_angle(rotation), translation])
        poses.append(pose)
        pinhole = PinholeCamera(tuple(pose.tolist()), focal, width / 2.0, height / 2.0, width, height)
        image = render_mesh(vertices[i], head.faces, width=width, height=height, camera=pinhole, ambient=0.5,
                            background=(90, 110, 130), texture=(texture, head.uv, head.uv_faces))  # fmt: skip
        if occluded[i]:
            xy = project(landmarks[i], pose, camera)
            points5 = np.stack([xy[36:42].mean(0), xy[42:48].mean(0), xy[30], xy[48], xy[54]])
            image = draw_bar(image, points5, "mouth", OCCLUDER_RGB)
        frames.append(image)
    return SyntheticClip(frames, vertices - neutral[None], occluded, np.stack(poses), camera)


def write_clip(clip: SyntheticClip, folder: Path) -> Path:
    for i, image in enumerate(clip.frames):
        write_png(folder / f"frame_{i + 1}.png", image)  # unpadded numbers: the natural order is tested too
    return folder


@dataclass
class SequenceScores:
    frames: int
    occluded_frames: int
    path_error_mm: float
    first_error_mm: float
    path_jitter_mm: float  # minus the truth's
    first_jitter_mm: float
    truth_jitter_mm: float
    path_occluded_error_mm: float
    first_occluded_error_mm: float
    neutral_error_mm: float  # the identity's neutral face on every frame: what ignoring the pixels scores
    oracle_error_mm: float  # each frame's hypothesis nearest the truth: the best any choice could do
    rotation_error_deg: float  # median over frames of the head rotation's angle to the truth
    focal_error: float  # the clip camera's focal length / the true one - 1

    def table(self) -> str:
        rows = [("chosen path", self.path_error_mm, self.path_occluded_error_mm, self.path_jitter_mm),
                ("first sample", self.first_error_mm, self.first_occluded_error_mm, self.first_jitter_mm)]  # fmt: skip
        lines = ["| per frame | error (mm) | error, occluded frames (mm) | jitter − truth's (mm) |",
                 "|---|---|---|---|"]  # fmt: skip
        lines += [f"| {name} | {e:.3f} | {o:.3f} | {j:.3f} |" for name, e, o, j in rows]
        return "\n".join(lines) + (
            f"\n\ntruth's own jitter {self.truth_jitter_mm:.3f} mm; {self.frames} frames; neutral face "
            f"{self.neutral_error_mm:.3f} mm, nearest hypothesis (oracle) {self.oracle_error_mm:.3f} mm; head "
            f"rotation {self.rotation_error_deg:.1f}° (median), focal length {100 * self.focal_error:+.0f} %"
        )

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _expression_meshes(sequence: SequenceResult, params: np.ndarray) -> np.ndarray:
    e = sequence.expression_basis.shape[0]
    vertices = rig_vertices(sequence.identity_vertices[0], sequence.joints, sequence.parents, sequence.skin_weights,
                            sequence.expression_basis, sequence.pose_basis, params[:, :e], params[:, e:])  # fmt: skip
    return vertices - sequence.identity_vertices[0][None]


def _errors(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    return np.linalg.norm(pred - truth, axis=2).mean(axis=1) * 1000.0


def _jitter(meshes: np.ndarray) -> float:
    return float(np.linalg.norm(np.diff(meshes, axis=0), axis=2).mean() * 1000.0)


def score_sequence(sequence: SequenceResult, clip: SyntheticClip, front: np.ndarray | None) -> SequenceScores:
    assert sequence.frame_hypotheses is not None
    region = slice(None) if front is None else front
    truth = clip.expression_vertices[:, region]
    path = (sequence.frame_vertices - sequence.identity_vertices)[:, region]
    first = _expression_meshes(sequence, sequence.frame_hypotheses[:, 0].astype(np.float64))[:, region]
    truth_jitter = _jitter(truth)
    path_errors, first_errors = _errors(path, truth), _errors(first, truth)
    occ = clip.occluded
    hypotheses = sequence.frame_hypotheses.astype(np.float64)
    pairs = zip(hypotheses, truth, strict=True)
    oracle = [_errors(_expression_meshes(sequence, h)[:, region], t).min() for h, t in pairs]
    return SequenceScores(
        frames=len(truth), occluded_frames=int(occ.sum()),
        path_error_mm=float(path_errors.mean()), first_error_mm=float(first_errors.mean()),
        path_jitter_mm=_jitter(path) - truth_jitter, first_jitter_mm=_jitter(first) - truth_jitter,
        truth_jitter_mm=truth_jitter, path_occluded_error_mm=float(path_errors[occ].mean()),
        first_occluded_error_mm=float(first_errors[occ].mean()),
        neutral_error_mm=float(_errors(np.zeros_like(truth), truth).mean()), oracle_error_mm=float(np.mean(oracle)),
        rotation_error_deg=float(np.median(rotation_errors_deg(sequence.frame_head_pose, clip.poses))),
        focal_error=float(sequence.camera[0] / clip.camera[0] - 1.0),
    )  # fmt: skip


def rotation_errors_deg(predicted: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(T,) angle of the rotation between each predicted head pose and the true one, degrees."""
    pairs = zip(np.asarray(predicted, np.float64), np.asarray(truth, np.float64), strict=True)
    return np.array([rotation_angle_deg(rotation_matrix(p[:3]), rotation_matrix(q[:3])) for p, q in pairs])


def sweep(output: SequenceOutput, clip: SyntheticClip, model: FlameModelData, settings: list[tuple[float, float]]
          ) -> list[dict[str, float]]:  # fmt: skip
    """Path error and jitter for other (smoothness, smoothing) pairs on the same per-frame work."""
    result, front = output.result, model.front_face_indices
    region = slice(None) if front is None else front
    rig = Rig(result.identity_vertices[0], result.joints, result.expression_basis, result.pose_basis)
    metric = hypothesis_metric(model, rig, front)
    truth = clip.expression_vertices[:, region]
    rows = []
    for smoothness, sigma in settings:
        anim = animate(output.fitted, metric, smoothness, sigma)
        meshes = _expression_meshes(result, anim.params)[:, region]
        rows.append({"smoothness": smoothness, "smoothing": sigma, "error_mm": float(_errors(meshes, truth).mean()),
                     "jitter_mm": _jitter(meshes) - _jitter(truth)})  # fmt: skip
    return rows


def evaluate_sequence(
    run: Callable[[Path], SequenceOutput], model: FlameModelData, folder: Path, *, n_frames: int, seed: int = 0,
    size: tuple[int, int] = (480, 360), period: int | None = None, settings: list[tuple[float, float]] | None = None,
) -> tuple[SequenceScores, list[dict[str, float]]]:  # fmt: skip
    """Render a clip into ``folder``, reconstruct it with ``run`` (frames folder → output) and score it;
    ``settings``: other (smoothness, smoothing) pairs to score on the same per-frame work."""
    clip = render_clip(model, n_frames, seed=seed, size=size, period=period)
    output = run(write_clip(clip, folder / "frames"))
    scores = score_sequence(output.result, clip, model.front_face_indices)
    return scores, sweep(output, clip, model, settings or [])
