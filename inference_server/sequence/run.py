"""A clip → one sequence result file: the composition of the sequence stages.

open the source → pass 1 per frame (detect, crop, encode) → the clip's identity and camera → pass 2
per frame (ExpGen hypotheses, decode, fit) → the temporal path → write. Every piece of per-frame work is
stored in the work folder as it finishes (workdir.py), progress is reported per frame, a cancel is
honoured between frames (and inside the samplers), and running the same request again resumes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from ..errors import CancelledError, IOFailedError, OutOfMemoryError
from ..pipeline import DEFAULT_STEPS, SAMPLER_VARIANTS, Reconstructor, check_output_path, choose_device
from ..presets import resolve_preset
from ..protocol import SequenceArgs
from ..result import JOINT_NAMES
from ..sequence_result import SequenceResult, write_sequence_result
from .assemble import Animation, Rig, animate, build_rig, frame_records, hypothesis_metric
from .clip_identity import ClipIdentity, clip_focal, pooled_identity
from .frames import EncodedFrame, FitContext, FittedFrame, encode_frame, fit_frame, no_hypotheses
from .source import FrameSource, open_source
from .workdir import WorkFolder, fingerprint, work_folder_for

ProgressFn = Callable[[str, int, int, str], None]
CancelFn = Callable[[], bool]


@dataclass
class SequenceOutput:
    result: SequenceResult
    path: Path
    seconds: dict[str, float]
    resumed_frames: int  # pass-2 frames found finished in the work folder
    fitted: list[FittedFrame]  # every frame's hypotheses and fit (for evaluations that re-run the path)


def with_preset(args: SequenceArgs) -> SequenceArgs:
    name = args.extra.get("preset")
    if name is None:
        return args
    preset = resolve_preset(name)
    steps = args.steps if args.steps is not None else preset.steps
    return dataclasses.replace(args, sampler=preset.sampler, steps=steps, extra={**args.extra, "eta": preset.eta})


def settings_of(args: SequenceArgs, reconstructor: Reconstructor, bundle_ids: dict[str, Any]) -> dict[str, Any]:
    """Everything the stored per-frame work depends on (a change starts the work over)."""
    fields = ("n_shapes", "n_expressions", "identity_frames", "sampler", "steps", "seed", "jaw_scale")
    return {**{f: getattr(args, f) for f in fields}, "eta": args.extra.get("eta"), "models": bundle_ids,
            "backend": reconstructor.backend, "precision": reconstructor.precision}  # fmt: skip


def source_signature(source: FrameSource) -> dict[str, Any]:
    """The source as the work folder remembers it: its layout plus the size and time of its files."""
    root = Path(source.path)
    files = [root / name for name in source.files] if source.kind == "folder" else [root]
    stats = []
    for f in files:
        try:
            info = f.stat()
        except OSError:
            continue  # a frame that vanished is reported unreadable when it is read
        stats.append((f.name, info.st_size, info.st_mtime_ns))
    return {**source.meta(), "path": str(root.resolve()), "files": fingerprint({"stats": stats}, {})}


def run_sequence(
    reconstructor: Reconstructor, args: SequenceArgs, progress: ProgressFn, should_cancel: CancelFn
) -> SequenceOutput:
    """One clip → one sequence result file. A GPU out of memory is a typed error: the finished frames are
    kept in the work folder, so running again (or on the CPU) resumes."""
    try:
        return _run(reconstructor, args, progress, should_cancel)
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        raise OutOfMemoryError(
            "the GPU ran out of memory during the sequence (the finished frames are kept)",
            "Close other GPU programs and run it again, or choose device 'cpu': either resumes where it stopped.",
        ) from None


def _run(
    reconstructor: Reconstructor, args: SequenceArgs, progress: ProgressFn, should_cancel: CancelFn
) -> SequenceOutput:
    args = with_preset(args)
    device = choose_device(args.device if args.device != "auto" else reconstructor.device_request)
    clock: dict[str, float] = {}
    started = time.perf_counter()

    def check() -> None:
        if should_cancel():
            raise CancelledError()

    progress("load", 0, 1, Path(args.source).name)
    check_output_path(args.output)
    source = open_source(args.source, max_frames=args.max_frames, fps=args.fps)
    bundle = reconstructor.bundle(device)
    flame = reconstructor.flame_layer(bundle, device)
    steps = args.steps or DEFAULT_STEPS[args.sampler]
    eta = float(args.extra.get("eta", 1.0 if args.sampler == "ddim" else 0.0))
    settings = settings_of(dataclasses.replace(args, steps=steps, extra={**args.extra, "eta": eta}),
                           reconstructor, bundle.model_ids())  # fmt: skip
    signature = source_signature(source)
    work = WorkFolder(work_folder_for(args.output))
    resumed = work.open(fingerprint(signature, settings), {"source": signature, "settings": settings},
                        resume=args.resume)  # fmt: skip
    progress("load", 1, 1, f"{source.n_frames} frames {source.width}x{source.height}"
             + (f", resuming ({resumed} frames done)" if resumed else ""))  # fmt: skip
    clock["load"] = time.perf_counter() - started
    check()

    encoded = _pass_encode(reconstructor, source, work, bundle, device, progress, check, clock)
    identity, focal, focal_source = _identity_and_camera(
        reconstructor, args, source, work, encoded, bundle, flame, steps, eta, device, progress, should_cancel, clock
    )
    correspondence = reconstructor.correspondence(bundle)
    ctx = FitContext(bundle, flame, torch.as_tensor(identity.shape), focal, correspondence, args.n_expressions,
                     SAMPLER_VARIANTS[args.sampler], steps, eta, args.seed, args.jaw_scale, device)  # fmt: skip
    fitted = _pass_fit(source, work, encoded, ctx, progress, check, should_cancel, clock)

    t0 = time.perf_counter()
    progress("path", 0, 1, "")
    rig = build_rig(bundle.flame, flame, identity.shape)
    metric = hypothesis_metric(bundle.flame, rig, bundle.flame.front_face_indices)
    anim = animate(fitted, metric, args.smoothness, args.smoothing)
    progress("path", 1, 1, f"cost {anim.path_meta['total_cost']:.1f}")
    clock["path"] = time.perf_counter() - t0
    check()

    t0 = time.perf_counter()
    progress("write", 0, 1, Path(args.output).name)
    meta = _meta(args, reconstructor, bundle, source, identity, anim, steps, eta, device, focal_source, clock)
    meta["frames"] = frame_records(encoded, fitted, anim)
    meta["warnings"] = _clip_warnings(meta["frames"])
    result = _result(meta, bundle.flame, identity, rig, anim, focal, source, args.keep_hypotheses)
    check()  # the last moment a cancel can still prevent the file from appearing
    path = write_sequence_result(args.output, result)
    with contextlib.suppress(IOFailedError):  # the result is written: a work folder left behind is harmless
        work.clear()
    clock["write"] = time.perf_counter() - t0
    progress("write", 1, 1, "")
    return SequenceOutput(result, path, clock, resumed, fitted)


def _pass_encode(
    reconstructor: Reconstructor, source: FrameSource, work: WorkFolder, bundle: Any, device: torch.device,
    progress: ProgressFn, check: Callable[[], None], clock: dict[str, float],
) -> list[EncodedFrame]:  # fmt: skip
    """Pass 1: every frame detected and encoded once (stored frames are read back, not redone)."""
    t0 = time.perf_counter()
    done: dict[int, EncodedFrame] = {}
    for index in range(source.n_frames):
        stored = work.load("encode", index)
        if stored is not None:
            done[index] = EncodedFrame.from_arrays(stored)
    progress("frames", len(done), source.n_frames, "stored" if done else "")
    missing = [i for i in range(source.n_frames) if i not in done]
    for frame in source.frames(only=missing):
        check()
        record = encode_frame(frame, reconstructor.detector(), bundle, device, reconstructor.channel_order)
        work.save("encode", frame.index, record.to_arrays())
        done[frame.index] = record
        progress("frames", len(done), source.n_frames, f"{frame.name}: {record.status}")
    clock["frames"] = time.perf_counter() - t0
    return [done[i] for i in range(source.n_frames)]


def _identity_and_camera(
    reconstructor: Reconstructor, args: SequenceArgs, source: FrameSource, work: WorkFolder,
    encoded: list[EncodedFrame], bundle: Any, flame: Any, steps: int, eta: float, device: torch.device,
    progress: ProgressFn, should_cancel: CancelFn, clock: dict[str, float],
) -> tuple[ClipIdentity, float, str]:  # fmt: skip
    t0 = time.perf_counter()
    stored = work.load("identity")
    if stored is not None:
        identity = ClipIdentity.from_arrays(stored)
        focal, focal_source = float(stored["focal"]), str(stored["focal_source"][()])
        progress("identity", 1, 1, "stored")
        return identity, focal, focal_source
    if not any(e.has_face for e in encoded):
        from ..errors import NoFaceError

        raise NoFaceError(f"no face was found in any of the {len(encoded)} frames",
                          "Check that the clip shows a face, large enough and not in profile.")  # fmt: skip
    progress("identity", 0, 1, "")
    identity = pooled_identity(
        encoded, bundle, flame, most_frames=args.identity_frames, n_shapes=args.n_shapes,
        sampler=SAMPLER_VARIANTS[args.sampler], steps=steps, eta=eta, seed=args.seed, device=device,
        progress=progress, should_cancel=should_cancel,
    )  # fmt: skip
    focal, focal_source = clip_focal(source, encoded, identity.frames, bundle, flame, identity.shape,
                                     reconstructor.correspondence(bundle), device)  # fmt: skip
    work.save("identity", None, identity.to_arrays() | {"focal": np.asarray(focal),
                                                        "focal_source": np.array(focal_source)})  # fmt: skip
    progress("identity", 1, 1, f"{len(identity.frames)} frames, focal {focal:.0f} px")
    clock["identity"] = time.perf_counter() - t0
    return identity, focal, focal_source


def _pass_fit(
    source: FrameSource, work: WorkFolder, encoded: list[EncodedFrame], ctx: FitContext, progress: ProgressFn,
    check: Callable[[], None], should_cancel: CancelFn, clock: dict[str, float],
) -> list[FittedFrame]:  # fmt: skip
    """Pass 2: every frame's hypotheses decoded on the clip's identity and fitted (stored frames kept)."""
    t0 = time.perf_counter()
    done: dict[int, FittedFrame] = {}
    for index in range(source.n_frames):
        stored = work.load("fit", index)
        if stored is not None:
            done[index] = FittedFrame.from_arrays(stored)
    progress("expressions", len(done), source.n_frames, "stored" if done else "")
    for e in encoded:  # frames without a face need no pixels
        if e.index not in done and not e.has_face:
            done[e.index] = no_hypotheses(e)
            work.save("fit", e.index, done[e.index].to_arrays())
    missing = [e.index for e in encoded if e.index not in done]
    for frame in source.frames(only=missing):
        check()
        record = fit_frame(encoded[frame.index], frame.rgb, ctx, should_cancel)
        work.save("fit", frame.index, record.to_arrays())
        done[frame.index] = record
        progress("expressions", len(done), source.n_frames, f"{frame.name}: {record.status}")
    clock["expressions"] = time.perf_counter() - t0
    return [done[i] for i in range(source.n_frames)]


def _clip_warnings(frames: list[dict[str, Any]]) -> list[dict[str, str]]:
    counts: dict[str, int] = {}
    for f in frames:
        counts[f["status"]] = counts.get(f["status"], 0) + 1
    out = []
    for status in ("no_face", "unreadable", "fit_untrusted"):
        if counts.get(status):
            message = f"{counts[status]} of {len(frames)} frames are '{status}': bridged by the path."
            out.append({"code": f"frames_{status}", "message": message})
    return out


def _meta(
    args: SequenceArgs, reconstructor: Reconstructor, bundle: Any, source: FrameSource, identity: ClipIdentity,
    anim: Animation, steps: int, eta: float, device: torch.device, focal_source: str, clock: dict[str, float],
) -> dict[str, Any]:  # fmt: skip
    return {
        "producer": f"ofer-blender-worker {__version__}", "python": sys.version.split()[0], "torch": torch.__version__,
        "units": "metres", "demo": bundle.demo, "flame_version": bundle.flame.version,
        "joint_names": list(JOINT_NAMES), "models": bundle.model_ids(), "sampler": args.sampler,
        "sampler_variant": SAMPLER_VARIANTS[args.sampler], "steps": steps, "eta": eta, "seed": args.seed,
        "preset": args.extra.get("preset"), "n_shapes": args.n_shapes, "n_expressions": args.n_expressions,
        "jaw_scale": args.jaw_scale, "device": str(device), "backend": reconstructor.backend,
        "source": source.meta(), "identity": identity.meta(), "path": anim.path_meta,
        "camera": {"focal_source": focal_source}, "seconds": {k: round(v, 3) for k, v in clock.items()},
    }  # fmt: skip


def _result(
    meta: dict[str, Any], model: Any, identity: ClipIdentity, rig: Rig, anim: Animation, focal: float,
    source: FrameSource, keep_hypotheses: bool,
) -> SequenceResult:  # fmt: skip
    e = rig.expression_basis.shape[0]
    return SequenceResult(
        meta=meta,
        faces=np.asarray(model.faces, np.int32),
        template=np.asarray(model.v_template, np.float32),
        identity_params=identity.shape.astype(np.float32),
        identity_vertices=rig.identity_vertices[None],
        joints=rig.joints,
        parents=np.asarray(model.parents, np.int32),
        skin_weights=np.asarray(model.weights, np.float32),
        expression_basis=rig.expression_basis,
        pose_basis=rig.pose_basis,
        frame_expression_params=anim.params[:, :e].astype(np.float32),
        frame_jaw_pose=anim.params[:, e:].astype(np.float32),
        frame_head_pose=anim.head_pose.astype(np.float32),
        camera=np.array([focal, source.width / 2.0, source.height / 2.0], np.float32),
        frame_vertices=rig.vertices(model, anim.params),
        frame_observed=anim.observed.astype(np.int32),
        uv=None if model.uv is None else np.asarray(model.uv, np.float32),
        uv_faces=None if model.uv_faces is None else np.asarray(model.uv_faces, np.int32),
        frame_hypotheses=anim.hypotheses.astype(np.float32) if keep_hypotheses else None,
        frame_choice=np.maximum(anim.choice, 0).astype(np.int32) if keep_hypotheses else None,
        frame_eye_pose=None if anim.eye_pose is None else anim.eye_pose.astype(np.float32),
    )


def sequence_summary(output: SequenceOutput) -> dict[str, Any]:
    """The ``result`` event's ``summary`` for a sequence."""
    meta = output.result.meta
    statuses: dict[str, int] = {}
    for f in meta["frames"]:
        statuses[f["status"]] = statuses.get(f["status"], 0) + 1
    return {"n_frames": output.result.n_frames, "frames": statuses, "demo": output.result.demo,
            "resumed_frames": output.resumed_frames, "timings": output.seconds,
            "path_cost": meta["path"]["total_cost"], "fps": meta["source"]["fps"]}  # fmt: skip
