"""Photo → ranked FLAME hypotheses → result file: the composition of the stages.

The CLI, the server and the tests all call :class:`Reconstructor`. Networks, the FLAME layer and the
face detector are loaded once and kept warm between jobs; every job is a straight line through the
stages of the contract (load, detect, encode, sample_shapes, rank, sample_expressions, decode, write),
reporting progress and honouring cancel between and inside stages.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import __version__
from .assets_config import AssetConfig, default_cache_dir, doctor_report
from .diffusion.background_draw import concurrent_requested
from .draw_stage import DrawSettings, draw_identities_and_expressions
from .errors import BadRequestError, CancelledError, OutOfMemoryError
from .fit.calibration import Correspondence
from .fit.calibration_cache import cached_correspondence
from .fit.second_network import SecondNetwork
from .fit.step import fit_photo, skipped_fit
from .flame.layer import FlameLayer
from .flame_controls import attach_requested_bases
from .hypotheses import checked_order, order_expressions, per_vertex_spread
from .model_bundle import ModelBundle, load_model_bundle
from .photo_inputs import Encodings as Encodings  # re-exported: tests and benchmarks import it from here
from .photo_inputs import encode as encode
from .photo_inputs import encode_photos, load_photos, photos_meta, prepare_photos, request_paths
from .preprocess.crops import ArcFaceCrop, FarlCrop
from .preprocess.detect import FaceDetection, FaceDetector
from .preprocess.image import LoadedImage
from .preprocess.input_checks import input_warnings
from .presets import apply_preset
from .protocol import ReconstructArgs
from .refined_expression import displayed, with_refined_first
from .result import JOINT_NAMES, ReconstructionResult, write_result
from .runtime_info import runtime_info
from .speed_switches import check_switches
from .texture.stage import TextureInputs, discard_texture, texture_beside_result

ProgressFn = Callable[[str, int, int, str], None]
CancelFn = Callable[[], bool]

#: Default steps per sampler when the request names none.
DEFAULT_STEPS = {"ddpm": 1000, "ddim": 50, "dpmsolver": 20}
#: The diffusion module's sampler for each contract name.
SAMPLER_VARIANTS = {"ddpm": "ddpm", "ddim": "ddim", "dpmsolver": "dpmsolver_sde"}
#: Number of FLAME expression coefficients ExpGen predicts (the rest of its 53 outputs are the jaw).
EXPGEN_EXPRESSIONS = 50


@dataclass
class StageClock:
    """Seconds per stage. On a CUDA device each stage boundary waits for the queued kernels: the GPU runs
    behind the host, so without the wait a stage's work was billed to whichever later stage first read a
    result (seen on an H200: 20 sampling steps "took" 6 ms, the ranking after them the rest)."""

    seconds: dict[str, float] = field(default_factory=dict)
    cuda: bool = False
    _stage: str | None = None
    _t0: float = 0.0

    def start(self, stage: str) -> None:
        self.stop()
        self._stage, self._t0 = stage, time.perf_counter()

    def stop(self) -> None:
        if self._stage is not None:
            if self.cuda:
                torch.cuda.synchronize()
            self.seconds[self._stage] = self.seconds.get(self._stage, 0.0) + time.perf_counter() - self._t0
            self._stage = None


@dataclass
class ReconstructionOutput:
    """What one job produced: the result (also on disk at ``path``) plus the inputs for previews."""

    result: ReconstructionResult
    path: Path
    image: LoadedImage
    detection: FaceDetection
    arcface: ArcFaceCrop
    farl: FarlCrop
    seconds: dict[str, float]


def choose_device(requested: str) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise BadRequestError(
            "CUDA was requested but no CUDA device is available to this worker",
            "Choose device 'auto' or 'cpu', or install a CUDA build of torch.",
        )
    if requested in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


class Reconstructor:
    """Keeps models warm; ``run`` does one photo. Not thread-safe: one job at a time (the server ensures it)."""

    def __init__(
        self,
        assets: AssetConfig,
        *,
        device: str = "auto",
        backend: str = "torch",
        precision: str = "fp32",
        channel_order: str = "BGR",
    ) -> None:
        self.assets = assets
        self.device_request = device
        self.backend = backend
        self.precision = precision
        self.channel_order = channel_order
        self._bundle: ModelBundle | None = None
        self._flame: FlameLayer | None = None
        self._detector: FaceDetector | None = None
        #: Per face mesh network (calibration_cache.DETECTORS): (id of the head model, its correspondence).
        self._correspondences: dict[str, tuple[int, Correspondence | None]] = {}
        #: Draw ExpGen's samples in a background thread while IdGen draws (CPU, 2+ threads; the default).
        #: None: ``OFER_CPU_CONCURRENT_SAMPLERS`` decides, read per request so that a misspelt value is that
        #: request's error and not a worker that dies before its handshake.
        self.concurrent_samplers: bool | None = None

    # -- warm state -------------------------------------------------------------------------------
    def bundle(self, device: torch.device) -> ModelBundle:
        precision = check_switches()  # a misspelt switch fails before any loading
        if self._bundle is None:
            self._bundle = load_model_bundle(self.assets, backend=self.backend, precision=self.precision)
        self._bundle.to(device)
        if self.backend == "torch" and device.type == "cpu" and precision is not None:
            # Opt-in: faster encode, but a first start exports and optimises the graphs (benchmarks/README.md).
            self._bundle.use_encoder_runtime(default_cache_dir(), precision, release_torch=True)
        if self.backend == "onnxruntime" and self._bundle.onnx_device != device:
            self._bundle.use_onnxruntime(default_cache_dir())  # sessions belong to one device
        return self._bundle

    def _draws_concurrently(self, device: torch.device) -> bool:
        wanted = concurrent_requested() if self.concurrent_samplers is None else self.concurrent_samplers
        return wanted and device.type == "cpu"

    def flame_layer(self, bundle: ModelBundle, device: torch.device) -> FlameLayer:
        if self._flame is None:
            self._flame = FlameLayer(bundle.flame)
        self._flame.to(device)
        return self._flame

    def detector(self) -> FaceDetector:
        if self._detector is None:
            self._detector = FaceDetector()
        return self._detector

    def correspondence(self, bundle: ModelBundle, detector: str = "face_mesh") -> Correspondence | None:
        """The detector-to-68 map and landmark precision measured on this head model for the face mesh
        network ``detector`` (40 renders, once per model, network and machine: it is kept in the user cache,
        fit/calibration_cache.py; the DEMO head's ship with the worker)."""
        known = self._correspondences.get(detector)
        if known is None or known[0] != id(bundle.flame):
            detect = getattr(self.detector().mediapipe, detector)
            known = (id(bundle.flame), cached_correspondence(bundle.flame, detect, default_cache_dir(), detector))
            self._correspondences[detector] = known
        return known[1]

    def second_network(self, bundle: ModelBundle) -> SecondNetwork:
        """The plain face mesh network for occluded photos (fit/second_network.py); its correspondence is
        measured or read only when a photo first needs it."""
        faces = self.detector().mediapipe
        return SecondNetwork(partial(faces.plain_face_mesh, depth=True),
                             partial(self.correspondence, bundle, "plain_face_mesh"))  # fmt: skip

    def hello_info(self) -> dict[str, Any]:
        devices = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
        missing = [] if self.assets.use_demo else self.assets.missing()
        device = str(choose_device("auto")) if self.device_request == "auto" else self.device_request
        return {
            **runtime_info(device),
            "doctor": doctor_report(self.assets),
            "worker_version": __version__,
            "python": platform.python_version(),
            "torch": torch.__version__,
            "device": device,
            "devices": devices,
            "backend": self.backend,
            "demo": self.assets.use_demo,
            "assets": {
                name: {"path": str(c.path) if c.path else None, "source": c.source, "exists": c.exists}
                for name, c in self.assets.choices.items()
            },
            "missing": missing,
        }

    # -- the server's entry point ------------------------------------------------------------------
    def reconstruct(self, args: ReconstructArgs, progress: ProgressFn, should_cancel: CancelFn) -> dict[str, Any]:
        output = self.run(args, progress, should_cancel)
        res = output.result
        return {
            "path": str(output.path),
            "summary": {
                "identity_scores": [float(s) for s in res.identity_scores[:10]],
                "n_identities": len(res.identity_params),
                "n_expressions": len(res.expression_params),
                "n_shapes": int(res.meta["n_shapes"]),
                "timings": output.seconds,
                "demo": res.demo,
                "detection": output.detection.method,
                "n_photos": int(res.meta["identity_pooling"]["n_photos"]),
            },
        }

    def run(self, args: ReconstructArgs, progress: ProgressFn, should_cancel: CancelFn) -> ReconstructionOutput:
        args = apply_preset(args)  # extra["preset"] = "fast" | "fidelity" sets sampler, steps and eta
        device = choose_device(args.device if args.device != "auto" else self.device_request)
        try:
            return self._run(args, progress, should_cancel, device)
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            if args.device == "auto" and device.type == "cuda":
                progress("load", 0, 1, "GPU out of memory: running on the CPU instead")
                return self._run(args, progress, should_cancel, torch.device("cpu"))
            raise OutOfMemoryError(
                "the GPU ran out of memory",
                "Lower the numbers of shape / expression samples, close other GPU programs, or choose device 'cpu'.",
            ) from None

    # -- the stages ----------------------------------------------------------------------------------
    def _run(
        self, args: ReconstructArgs, progress: ProgressFn, should_cancel: CancelFn, device: torch.device
    ) -> ReconstructionOutput:
        clock = StageClock(cuda=device.type == "cuda")

        def check() -> None:
            if should_cancel():
                raise CancelledError()

        clock.start("load")
        paths = request_paths(args)
        progress("load", 0, len(paths) + 1, Path(args.image).name)
        check_output_path(args.output)
        images = load_photos(paths, lambda d, t, m: progress("load", d, t + 1, m))
        bundle = self.bundle(device)
        flame = self.flame_layer(bundle, device)
        progress("load", len(paths) + 1, len(paths) + 1, f"{images[0].width}x{images[0].height}")
        check()

        clock.start("detect")
        progress("detect", 0, len(paths), "points given" if args.points else "finding the face")
        # The DEMO weights were trained on five-point boxes; the official ones on SCRFD's (face_box.py).
        photos = prepare_photos(
            images, self.detector(), args, box_convention="five_point" if bundle.demo else "scrfd",
            channel_order=self.channel_order, step=lambda d, t, m: progress("detect", d, t, m),  # type: ignore[arg-type]
        )  # fmt: skip
        image, detection, arc, far = photos[0].image, photos[0].detection, photos[0].arcface, photos[0].farl
        check()

        clock.start("encode")
        progress("encode", 0, len(paths), "")
        enc, conditions = encode_photos(bundle, photos, device, lambda d, t, m: progress("encode", d, t, m))
        check()

        sampler = args.sampler
        steps = args.steps or DEFAULT_STEPS[sampler]
        # The contract's "dpmsolver" is DPM-Solver++(2M) in its stochastic (SDE) form: the deterministic
        # form inherits the schedule's terminal-SNR bias (means ~4 % low), the SDE form recovers the target.
        variant = SAMPLER_VARIANTS[sampler]
        eta = float(args.extra.get("eta", 1.0 if sampler == "ddim" else 0.0))

        clock.start("sample_shapes")
        settings = DrawSettings(
            sampler=sampler, variant=variant, steps=steps, eta=eta, seed=args.seed, n_shapes=args.n_shapes,
            n_expressions=args.n_expressions, top_k=args.top_k, device=device,
            concurrent=self._draws_concurrently(device),
        )  # fmt: skip
        draws = draw_identities_and_expressions(
            bundle, flame, conditions, enc, settings, progress=progress, should_cancel=should_cancel,
            stage_started=clock.start,
        )  # fmt: skip
        ranked, exp_samples = draws.ranked, draws.expressions
        shapes, neutral, probabilities, keep = ranked.shapes, ranked.neutral, ranked.probabilities, ranked.keep
        check()
        expressions = exp_samples[:, :EXPGEN_EXPRESSIONS].cpu().numpy()
        jaw = exp_samples[:, EXPGEN_EXPRESSIONS:].cpu().numpy() * args.jaw_scale
        order_mode = checked_order(args.extra.get("expression_order", "best_fit"))
        # "best_fit" decodes in typical order (the fit's reference first) and re-sorts after the fit.
        order = order_expressions(np.concatenate([expressions, jaw], axis=1),
                                  "typical" if order_mode == "best_fit" else order_mode)  # fmt: skip
        expressions, jaw = expressions[order], jaw[order]

        clock.start("decode")
        progress("decode", 0, 2, "identities")
        best_shapes = shapes[torch.as_tensor(keep.copy(), device=shapes.device)]
        with torch.no_grad():
            best = best_shapes.to(device=device, dtype=flame.dtype)
            identity_vertices = neutral[torch.as_tensor(keep.copy(), device=device)]
            progress("decode", 1, 2, "expressions")
            check()
            exp_out = flame.with_expression(
                best[:1],
                torch.as_tensor(expressions, device=device, dtype=flame.dtype),
                torch.as_tensor(jaw, device=device, dtype=flame.dtype),
            )
            rest = flame.neutral(best[:1])
        progress("decode", 2, 2, "")
        check()

        clock.start("fit")
        progress("fit", 0, 1, "head pose and camera")
        exp_vertices = exp_out.vertices.cpu().numpy()
        exp_landmarks = None if exp_out.landmarks is None else exp_out.landmarks.cpu().numpy()
        fits = args.extra.get("fit", True)
        photo_fit = fit_photo(image, detection, bundle.flame, exp_vertices, exp_landmarks,
                              np.concatenate([expressions, jaw], axis=1), order_mode,
                              self.correspondence(bundle) if detection.landmarks is not None else None,
                              partial(self.detector().mediapipe.face_mesh, depth=True),
                              self.second_network(bundle), threads=torch.get_num_threads(),
                              ) if fits else skipped_fit(len(exp_vertices), order_mode)  # fmt: skip
        by_fit = photo_fit.order
        shown = displayed(photo_fit, expressions[by_fit], jaw[by_fit], exp_vertices[by_fit], exp_landmarks)
        spread_expression = per_vertex_spread(shown.vertices)  # the samples' spread, without a refinement
        if args.extra.get("refine_expression"):
            shown = with_refined_first(shown, photo_fit, bundle.flame, flame, best[:1])
        pose_arrays = shown.pose_arrays
        progress("fit", 1, 1, photo_fit.head_fit.status)
        check()

        clock.start("texture")
        progress("texture", 0, 1, "")
        head = TextureInputs.of_fit(bundle.flame, shown.vertices, shown.landmarks, np.arange(len(shown.vertices)),
                                    pose_arrays, photo_fit.gaze.closed)  # fmt: skip
        texture_meta, texture_warnings = (
            texture_beside_result(image.rgb, head, args.output, face_points5=detection.points5) if fits else ({}, [])
        )
        progress("texture", 1, 1, "")
        check()

        clock.start("write")
        progress("write", 0, 1, Path(args.output).name)
        clock.stop()
        meta = self._meta(args, image, detection, arc, far, bundle, device, sampler, steps, eta, order_mode, clock)
        meta |= shown.meta | texture_meta | photos_meta(photos, ranked, args.seed)
        meta["warnings"] = meta["warnings"] + photo_fit.warnings + shown.warnings + texture_warnings
        # Drawn during sample_shapes, so seconds.sample_expressions holds only what was left after the ranking.
        meta["concurrent_samplers"] = draws.concurrent
        result = ReconstructionResult(
            meta=meta,
            faces=bundle.flame.faces.astype(np.int32),
            template=bundle.flame.v_template.astype(np.float32),
            identity_params=best_shapes.cpu().numpy().astype(np.float32),
            identity_scores=probabilities[keep].astype(np.float32),
            identity_vertices=identity_vertices.cpu().numpy().astype(np.float32),
            expression_params=shown.expressions.astype(np.float32),
            jaw_pose=shown.jaw.astype(np.float32),
            expression_vertices=shown.vertices.astype(np.float32),
            joints=rest.rest_joints[0].cpu().numpy().astype(np.float32),
            parents=bundle.flame.parents.astype(np.int32),
            skin_weights=bundle.flame.weights.astype(np.float32),
            spread_identity=per_vertex_spread(neutral.cpu().numpy()),
            spread_expression=spread_expression,
            uv=None if bundle.flame.uv is None else bundle.flame.uv.astype(np.float32),
            uv_faces=None if bundle.flame.uv_faces is None else bundle.flame.uv_faces.astype(np.int32),
            landmarks=None if rest.landmarks is None else rest.landmarks[0].cpu().numpy().astype(np.float32),
            head_pose=pose_arrays["head_pose"],
            camera=pose_arrays["camera"],
            expression_head_pose=pose_arrays["expression_head_pose"],
            eye_pose=pose_arrays["eye_pose"],
        )
        attach_requested_bases(result, args.extra, bundle.flame)
        try:
            check()  # the last moment a cancel can still prevent the file from appearing
            clock.start("write")
            path = write_result(args.output, result)
        except BaseException:
            discard_texture(args.output, texture_meta)  # no texture without the result that names it
            raise
        clock.stop()
        result.meta["seconds"] = dict(clock.seconds)
        progress("write", 1, 1, "")
        return ReconstructionOutput(result, path, image, detection, arc, far, dict(clock.seconds))

    def _meta(
        self,
        args: ReconstructArgs,
        image: LoadedImage,
        detection: FaceDetection,
        arc: ArcFaceCrop,
        far: FarlCrop,
        bundle: ModelBundle,
        device: torch.device,
        sampler: str,
        steps: int,
        eta: float,
        order_mode: str,
        clock: StageClock,
    ) -> dict[str, Any]:
        return {
            "producer": f"ofer-blender-worker {__version__}",
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "units": "metres",
            "demo": bundle.demo,
            "image": {
                "path": str(Path(image.path).resolve()),
                "sha256": image.sha256,
                "width": image.width,
                "height": image.height,
            },
            "detection": detection.to_meta(),
            "warnings": input_warnings(detection),
            "crop_box": [float(v) for v in far.box],
            "arcface_transform": arc.transform.tolist(),
            "farl_transform": far.transform.tolist(),
            "arcface_channel_order": arc.channel_order,
            "models": bundle.model_ids(),
            "encoder_runtimes": bundle.encoder_runtimes(),
            "denoiser_runtimes": bundle.denoiser_runtimes(),
            "attention_synthetic": bundle.attention_synthetic,
            "flame_version": bundle.flame.version,
            "n_shape_coefficients": int(bundle.flame.n_shape),
            "n_expression_coefficients": EXPGEN_EXPRESSIONS,
            "joint_names": list(JOINT_NAMES),
            "sampler": sampler,
            "sampler_variant": SAMPLER_VARIANTS[sampler],
            "steps": steps,
            "eta": eta,
            "seed": args.seed,
            "seeds": {"shapes": args.seed, "expressions": args.seed + 1},
            "n_shapes": args.n_shapes,
            "n_expressions": args.n_expressions,
            "top_k": args.top_k,
            "jaw_scale": args.jaw_scale,
            "expression_order": order_mode,
            "preset": args.extra.get("preset"),
            "expressions_use_identity": 1,
            "device": str(device),
            "backend": self.backend,
            "precision": self.precision,
            "request_box": None if args.box is None else list(args.box),
            "request_points": None if args.points is None else [list(p) for p in args.points],
            "seconds": dict(clock.seconds),
        }


def check_output_path(output: str) -> None:
    """Refuse an output the writer could not create, before any heavy work."""
    target = Path(output)
    fix = "Choose an output path ending in .npz inside a folder you can write to."
    if target.suffix != ".npz":
        raise BadRequestError(f"the output {output!r} must be a .npz file", fix)
    if target.is_dir():
        raise BadRequestError(f"the output {output!r} is a folder", fix)
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadRequestError(f"cannot create the output folder {str(parent)!r} ({exc.strerror})", fix) from None
    if not os.access(parent, os.W_OK):
        raise BadRequestError(f"the output folder {str(parent)!r} is not writable", fix)
