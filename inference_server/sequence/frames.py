"""The per-frame stages of a clip: pass 1 (detect, crop, encode once) and pass 2 (ExpGen hypotheses on
the clip's identity, decode, fit of head pose and per-hypothesis visible-landmark error).

Each pass turns one frame into a small record of arrays that the work folder stores, so a frame is never
computed twice. Nothing here raises for a frame the clip can live without: an undecodable frame, a frame
without a face or whose fit is not trusted is recorded with its status and bridged later by the path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..draw_stage import sample_coefficients
from ..errors import NoFaceError
from ..fit.calibration import Correspondence
from ..fit.gaze import eyeballs, fit_gaze
from ..fit.landmarks68 import N_LANDMARKS
from ..fit.pose import eye_distance
from ..fit.stage import TRUSTED_WEIGHT, fit_head
from ..fit.step import landmark_normals
from ..flame.layer import FlameLayer
from ..model_bundle import ModelBundle
from ..pipeline import EXPGEN_EXPRESSIONS, encode
from ..preprocess.crops import arcface_crop, farl_crop
from ..preprocess.detect import FaceDetector
from ..preprocess.face_box import crop_box
from ..preprocess.input_checks import input_warnings
from .source import Frame
from .workdir import pack_meta, unpack_meta

#: A fitted frame with fewer landmarks trusted as visible than this share of 68 is reported "occluded" (on the
#: rendered clips of evaluate/sequence.py: 30-43 visible with the mouth covered, 42-54 without).
OCCLUDED_BELOW = 0.6
#: ExpGen's seed for frame t is ``seed + FRAME_SEED_OFFSET + t`` (the photo pipeline uses seed + 1).
FRAME_SEED_OFFSET = 1


@dataclass
class EncodedFrame:
    """Pass 1 of one frame. Without a face: status "no_face" / "unreadable" and no conditions."""

    index: int
    name: str
    status: str  # "ok" | "no_face" | "unreadable"
    warnings: list[dict[str, str]]
    landmarks: np.ndarray | None = None  # (478, 2 or 3) the detector's dense landmarks
    idgen: np.ndarray | None = None  # (512,)
    expgen: np.ndarray | None = None  # (1024,)
    idrank: np.ndarray | None = None  # (1024,)
    detection: dict[str, Any] | None = None

    @property
    def has_face(self) -> bool:
        return self.idgen is not None

    def to_arrays(self) -> dict[str, np.ndarray]:
        meta = {"index": self.index, "name": self.name, "status": self.status, "warnings": self.warnings,
                "detection": self.detection}  # fmt: skip
        out = {"meta": pack_meta(meta)}
        for key in ("landmarks", "idgen", "expgen", "idrank"):
            value = getattr(self, key)
            if value is not None:
                out[key] = np.asarray(value, np.float32)
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> EncodedFrame:
        meta = unpack_meta(arrays)
        return cls(
            index=int(meta["index"]), name=str(meta["name"]), status=str(meta["status"]),
            warnings=list(meta["warnings"]), detection=meta.get("detection"),
            **{k: arrays.get(k) for k in ("landmarks", "idgen", "expgen", "idrank")},
        )  # fmt: skip


def encode_frame(
    frame: Frame, detector: FaceDetector, bundle: ModelBundle, device: torch.device, channel_order: str
) -> EncodedFrame:
    """Detect the face nearest the centre, cut the crops and run every encoder once."""
    if frame.rgb is None:
        warning = {"code": "frame_unreadable", "message": f"Frame {frame.name} could not be read: {frame.error}"}
        return EncodedFrame(frame.index, frame.name, "unreadable", [warning])
    try:
        detection = detector.detect(frame.rgb)
    except NoFaceError:
        warning = {"code": "frame_no_face", "message": f"No face was found in frame {frame.name}."}
        return EncodedFrame(frame.index, frame.name, "no_face", [warning])
    arc = arcface_crop(frame.rgb, detection.points5, channel_order)  # type: ignore[arg-type]
    # The DEMO weights were trained on five-point boxes; the official ones on SCRFD's (as the photo pipeline).
    far = farl_crop(frame.rgb, crop_box(detection.box, detection.points5, "five_point" if bundle.demo else "scrfd"))
    enc = encode(bundle, arc, far, device)
    # "occluded" is decided by the fit (landmarks the frame shows as covered), not by the detector's
    # occluded_points, which misfire on the DEMO head's renders.
    return EncodedFrame(
        frame.index, frame.name, "ok", input_warnings(detection),
        landmarks=None if detection.landmarks is None else np.asarray(detection.landmarks, np.float32),
        idgen=enc.idgen[0].cpu().numpy(), expgen=enc.expgen[0].cpu().numpy(), idrank=enc.idrank[0].cpu().numpy(),
        detection={"box": [round(float(v), 2) for v in detection.box], "method": detection.method,
                   "confidence": detection.confidence, "occluded_points": list(detection.occluded_points)},
    )  # fmt: skip


@dataclass
class FittedFrame:
    """Pass 2 of one frame: its hypotheses and how each fits the frame (NaN errors: fit not trusted)."""

    index: int
    status: str  # the pass-1 status, or "fit_untrusted"
    hypotheses: np.ndarray  # (M, E + 3) expression ‖ jaw (after jaw_scale); (0, E + 3) without a face
    errors_px: np.ndarray  # (M,) visible-landmark error, NaN when the fit is not trusted
    poses: np.ndarray  # (M, 6) head pose per hypothesis, NaN when not trusted
    eye_px: float  # the frame's eye distance in pixels (NaN without a fit)
    visible: int  # landmarks trusted as visible
    warnings: list[dict[str, str]]
    eye_pose: np.ndarray | None = None  # (2, 3) the frame's gaze (fit/gaze.py), None where not read

    @property
    def trusted(self) -> bool:
        return bool(len(self.errors_px)) and bool(np.isfinite(self.errors_px).all())

    def to_arrays(self) -> dict[str, np.ndarray]:
        meta = {"index": self.index, "status": self.status, "eye_px": self.eye_px, "visible": self.visible,
                "warnings": self.warnings}  # fmt: skip
        out = {"meta": pack_meta(meta), "hypotheses": self.hypotheses.astype(np.float32),
               "errors_px": self.errors_px.astype(np.float64), "poses": self.poses.astype(np.float64)}  # fmt: skip
        if self.eye_pose is not None:
            out["eye_pose"] = self.eye_pose.astype(np.float64)
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> FittedFrame:
        meta = unpack_meta(arrays)
        eye_pose = arrays.get("eye_pose")  # absent: not read, or a work folder from before the gaze
        return cls(int(meta["index"]), str(meta["status"]), arrays["hypotheses"], arrays["errors_px"],
                   arrays["poses"], float(meta["eye_px"]), int(meta["visible"]), list(meta["warnings"]),
                   None if eye_pose is None or np.shape(eye_pose) != (2, 3) else np.asarray(eye_pose))  # fmt: skip


@dataclass
class FitContext:
    """What pass 2 shares across frames: the models, the clip's identity and camera."""

    bundle: ModelBundle
    flame: FlameLayer
    identity: torch.Tensor  # (1, S) shape coefficients
    focal_px: float
    correspondence: Correspondence | None
    n_expressions: int
    sampler: str  # the diffusion module's variant name
    steps: int
    eta: float
    seed: int
    jaw_scale: float
    device: torch.device


def no_hypotheses(encoded: EncodedFrame) -> FittedFrame:
    empty = np.zeros((0, EXPGEN_EXPRESSIONS + 3))
    return FittedFrame(encoded.index, encoded.status, empty, np.zeros(0), np.zeros((0, 6)), float("nan"), 0, [])


def fit_frame(encoded: EncodedFrame, rgb: np.ndarray | None, ctx: FitContext, should_cancel: Any) -> FittedFrame:
    """ExpGen hypotheses of one frame, decoded on the clip's identity and fitted to the frame."""
    if not encoded.has_face or encoded.expgen is None:
        return no_hypotheses(encoded)
    context = torch.as_tensor(encoded.expgen, device=ctx.device)[None]
    samples = sample_coefficients(
        ctx.bundle.expgen_denoiser, context, ctx.n_expressions, sampler=ctx.sampler, steps=ctx.steps, eta=ctx.eta,
        seed=ctx.seed + FRAME_SEED_OFFSET + encoded.index, device=ctx.device, progress=lambda d, t: None,
        should_cancel=should_cancel,
    ).cpu().numpy().astype(np.float64)  # fmt: skip
    hypotheses = np.concatenate([samples[:, :EXPGEN_EXPRESSIONS], samples[:, EXPGEN_EXPRESSIONS:] * ctx.jaw_scale], 1)
    m = len(hypotheses)
    nan_errors, nan_poses = np.full(m, np.nan), np.full((m, 6), np.nan)
    if rgb is None or encoded.landmarks is None:
        return FittedFrame(encoded.index, "fit_untrusted", hypotheses, nan_errors, nan_poses, float("nan"), 0,
                           [_untrusted(encoded, "the frame has no dense landmarks")])  # fmt: skip
    with torch.no_grad():
        dtype = ctx.flame.dtype
        out = ctx.flame.with_expression(
            ctx.identity.to(device=ctx.device, dtype=dtype),
            torch.as_tensor(hypotheses[:, :EXPGEN_EXPRESSIONS], device=ctx.device, dtype=dtype),
            torch.as_tensor(hypotheses[:, EXPGEN_EXPRESSIONS:], device=ctx.device, dtype=dtype),
        )
    if out.landmarks is None:
        return FittedFrame(encoded.index, "fit_untrusted", hypotheses, nan_errors, nan_poses, float("nan"), 0,
                           [_untrusted(encoded, "the head model has no landmark embedding")])  # fmt: skip
    vertices = out.vertices[0].cpu().numpy().astype(np.float64)
    landmarks = out.landmarks.cpu().numpy().astype(np.float64)
    fit = fit_head(rgb, ctx.focal_px, encoded.landmarks, landmarks, landmark_normals(vertices, ctx.bundle.flame),
                   correspondence=ctx.correspondence)  # fmt: skip
    visible = 0 if fit.weights is None else int((fit.weights >= TRUSTED_WEIGHT).sum())
    if not fit.trusted or fit.expression_errors is None or fit.expression_poses is None or fit.landmarks is None:
        return FittedFrame(encoded.index, "fit_untrusted", hypotheses, nan_errors, nan_poses, float("nan"), visible,
                           [_untrusted(encoded, fit.reason)])  # fmt: skip
    status = "occluded" if visible < OCCLUDED_BELOW * N_LANDMARKS else "ok"
    gaze = None
    if fit.weights is not None and fit.camera is not None:
        gaze = fit_gaze(encoded.landmarks, fit.landmarks, fit.weights, eyeballs(ctx.bundle.flame, vertices),
                        landmarks[0], fit.expression_poses[0], fit.camera).eye_pose  # fmt: skip
    return FittedFrame(encoded.index, status, hypotheses, np.asarray(fit.expression_errors, np.float64),
                       np.asarray(fit.expression_poses, np.float64), float(eye_distance(fit.landmarks)), visible,
                       [], gaze)  # fmt: skip


def _untrusted(encoded: EncodedFrame, reason: str) -> dict[str, str]:
    return {"code": "frame_fit_untrusted", "message": f"Frame {encoded.name}: no head pose ({reason}); bridged."}
