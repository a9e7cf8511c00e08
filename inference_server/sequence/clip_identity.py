"""One identity and one camera for the whole clip.

The identity is pooled over frames with :func:`..identity_stage.sample_and_rank_identities`: IdGen draws
from several frames with a face spread over the clip, every sample is scored by every one of
those frames' IdRank, and the best pooled sample is the clip's head. The camera's focal length is the
median of the focal lengths fitted, with that head, on the same frames (a video has no EXIF).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..fit.calibration import Correspondence
from ..fit.camera import default_intrinsics
from ..fit.stage import fit_head
from ..fit.step import landmark_normals
from ..flame.layer import FlameLayer
from ..identity_stage import IdentityConditions, sample_and_rank_identities
from ..model_bundle import ModelBundle
from .frames import EncodedFrame
from .source import FrameSource


@dataclass
class ClipIdentity:
    shape: np.ndarray  # (1, S)
    frames: list[int]  # the frames the identity was pooled from
    scores: list[float]  # each of those frames' own probability of the chosen sample
    probability: float  # the chosen sample's pooled probability

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"shape": self.shape.astype(np.float32), "frames": np.asarray(self.frames, np.int64),
                "scores": np.asarray(self.scores, np.float64), "probability": np.asarray(self.probability)}  # fmt: skip

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> ClipIdentity:
        return cls(arrays["shape"], [int(i) for i in arrays["frames"]], [float(s) for s in arrays["scores"]],
                   float(arrays["probability"]))  # fmt: skip

    def meta(self) -> dict[str, object]:
        return {"frames": self.frames, "scores": [round(s, 6) for s in self.scores],
                "probability": round(self.probability, 6)}  # fmt: skip


def identity_frames(encoded: list[EncodedFrame], most: int) -> list[int]:
    """Up to ``most`` frames with a face, spread evenly over the clip (frames with status "ok" first, when a
    caller marks others; pass 1 cannot tell an occluder from the DEMO renders reliably, see frames.py)."""
    with_face = [e for e in encoded if e.has_face]
    clear = [e for e in with_face if e.status == "ok"]
    pool = clear if len(clear) >= min(most, len(with_face)) else with_face
    if len(pool) <= most:
        return [e.index for e in pool]
    picks = np.linspace(0, len(pool) - 1, most).round().astype(int)
    return [pool[i].index for i in sorted(set(picks.tolist()))]


def pooled_identity(
    encoded: list[EncodedFrame], bundle: ModelBundle, flame: FlameLayer, *, most_frames: int, n_shapes: int,
    sampler: str, steps: int, eta: float, seed: int, device: torch.device,
    progress: Callable[[str, int, int, str], None], should_cancel: Callable[[], bool],
) -> ClipIdentity:  # fmt: skip
    chosen = identity_frames(encoded, most_frames)
    by_index = {e.index: e for e in encoded}
    rows = [by_index[i] for i in chosen]
    conditions = IdentityConditions(
        idgen=torch.as_tensor(np.stack([r.idgen for r in rows]), device=device),  # type: ignore[misc]
        idrank=torch.as_tensor(np.stack([r.idrank for r in rows]), device=device),  # type: ignore[misc]
    )
    ranked = sample_and_rank_identities(
        bundle, flame, conditions, n_per_photo=max(1, math.ceil(n_shapes / len(rows))), top_k=1, sampler=sampler,
        steps=steps, eta=eta, seed=seed, device=device, progress=progress, should_cancel=should_cancel,
    )  # fmt: skip
    best = int(ranked.keep[0])
    return ClipIdentity(
        shape=ranked.shapes[best : best + 1].cpu().numpy().astype(np.float32),
        frames=chosen,
        scores=[float(s) for s in ranked.kept_photo_scores()[0]],
        probability=float(ranked.probabilities[best]),
    )


def clip_focal(
    source: FrameSource, encoded: list[EncodedFrame], frames: list[int], bundle: ModelBundle, flame: FlameLayer,
    shape: np.ndarray, correspondence: Correspondence | None, device: torch.device,
) -> tuple[float, str]:  # fmt: skip
    """(focal length in pixels, how it was found): the median over ``frames`` of the focal fitted with the
    clip's neutral head; the default field of view when no frame gives a trusted fit."""
    with torch.no_grad():
        out = flame.neutral(torch.as_tensor(shape, device=device, dtype=flame.dtype))
    default = default_intrinsics(source.width, source.height).focal
    if out.landmarks is None:
        return default, "default"
    vertices = out.vertices[0].cpu().numpy().astype(np.float64)
    landmarks = out.landmarks.cpu().numpy().astype(np.float64)
    normals = landmark_normals(vertices, bundle.flame)
    by_index = {e.index: e for e in encoded}
    focals = []
    for frame in source.frames(only=frames):
        points = by_index[frame.index].landmarks
        if frame.rgb is None or points is None:
            continue
        fit = fit_head(frame.rgb, None, points, landmarks, normals, correspondence=correspondence)
        if fit.trusted and fit.camera is not None:
            focals.append(float(fit.camera[0]))
    if not focals:
        return default, "default"
    return float(np.median(focals)), f"median of {len(focals)} frames"
