"""Everything a reconstruction needs loaded at once: the three OFER model files and the FLAME model.

The bundle is the one place that knows which encoder copy feeds which network (IdGen, ExpGen and IdRank
each own fine-tuned encoders) and how the contexts are assembled: IdGen gets the normalised ArcFace
embedding (1, 512); ExpGen and IdRank get [FaRL ‖ ArcFace] (1, 1024), FaRL first. Encoder copies
with identical weights are kept once and run once per image (``encoder_sharing``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .assets_config import CHECKPOINT_NAMES, AssetConfig, default_cache_dir, find_checkpoint
from .backends import BackendError, CudaGraphEpsModel, cuda_graphs_requested, whole_steps_requested
from .checkpoints.networks import LoadedNetworks
from .diffusion.samplers import run_plan
from .diffusion.whole_step import WholeStepSampler
from .encoder_lanes import EncoderJob, LaneRun, estimated_cost, lanes_by_default, lanes_requested, run_encoders
from .encoder_runtime import EncoderRuntimeReport, encoder_networks, trim_heap
from .encoder_sharing import ENCODER_SLOTS, EncoderSharing, find_identical
from .errors import BadModelFileError
from .flame.layer import FlameLayer
from .flame.model_data import FlameModelData
from .nets.idrank import FRONT_VERTEX_COUNT
from .nets.onnx_step import requested_step_runtime
from .nets.row_lanes import row_split_requested
from .rank_fold import FoldedFirstLayer, cached_fold

log = logging.getLogger(__name__)


class DenoiserModel:
    """An ε-model for the samplers: ``model(x, t, context) -> eps`` plus the coefficient width, and where the
    bundle runs whole plans its own way, ``plan_runner()`` for ``run_plan`` (None: step by step)."""

    def __init__(
        self,
        runner: Callable[..., torch.Tensor],
        feature_dim: int,
        plan_runner: Callable[[], WholeStepSampler | None] = lambda: None,
    ) -> None:
        self.runner = runner
        self.feature_dim = feature_dim
        self.plan_runner = plan_runner

    def __call__(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return self.runner(x, t, context).to(x.dtype)


class TorchRunner:
    """Calls a module with its inputs cast to the module's device and floating dtype (timesteps stay ints)."""

    def __init__(self, module: torch.nn.Module, call: Callable[..., torch.Tensor] | None = None) -> None:
        self.module = module
        self.call = call or module  # e.g. the module's fused inference copy

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        param = next(self.module.parameters())
        return self.call(*(_cast_like(x, param) for x in inputs))


def _cast_like(x: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """Move / cast one input; a broadcast view (one row expanded over N) is cast as its single row and
    expanded again, so the denoiser still sees a shared condition and computes FiLM once per step."""
    dtype = param.dtype if x.is_floating_point() else x.dtype
    if x.dim() >= 1 and x.shape[0] > 1 and x.stride(0) == 0:
        return x[:1].to(param.device, dtype).expand_as(x)
    return x.to(param.device, dtype)


#: Runner names: "<model file kind>.<network slot>".
RUNNER_NAMES = (
    "idgen.arcface", "idgen.denoiser",
    "expgen.arcface", "expgen.farl", "expgen.denoiser",
    "idrank.arcface", "idrank.farl", "idrank.rank_net",
)  # fmt: skip


@dataclass
class ModelBundle:
    idgen: LoadedNetworks
    expgen: LoadedNetworks
    idrank: LoadedNetworks
    flame: FlameModelData
    front_indices: np.ndarray  # (1785,) int64
    demo: bool
    sources: dict[str, str]
    dtype: torch.dtype = torch.float32
    #: False keeps every encoder copy separate (the unshared reference path for benchmarks and tests).
    share_encoders: bool = True
    #: Sample with the fused CPU float32 denoiser step (``nets.fused_denoiser``); False runs the plain modules.
    fuse_denoisers: bool = True
    #: False scores identity samples through their meshes (``score_shapes``) even where the fold applies (A/B).
    fold_rank: bool = True
    #: Where the rank fold is kept between processes (``rank_fold.cached_fold``); None computes it every load.
    fold_cache_dir: Path | None = field(default_factory=default_cache_dir)
    #: Run the distinct encoders on two lanes on the CPU (``encoder_lanes``); None: ``OFER_CPU_ENCODER_LANES``
    #: decides, read at every ``contexts`` call (unset: ``encoder_lanes.lanes_by_default``).
    encoder_lanes: bool | None = None
    #: Cut the fused steps' batches into single-thread blocks of rows (``nets/row_lanes.py``); None:
    #: ``OFER_CPU_ROW_SPLIT`` decides when the fused copies are built (unset: on).
    row_split: bool | None = None
    #: Run the fused steps by ONNX Runtime where it agrees with torch (``nets/onnx_step.py``): "onnxruntime" or
    #: "torch"; None: ``OFER_CPU_DENOISER_RUNTIME`` decides when the fused copies are built (unset: onnxruntime).
    step_runtime: str | None = None
    #: Where the steps' ONNX graphs are kept between processes; None: torch runs the steps.
    step_cache_dir: Path | None = field(default_factory=default_cache_dir)
    #: Replay each denoiser step as a CUDA graph on a CUDA device (``backends.CudaGraphEpsModel``: the same
    #: kernels, one launch instead of ~200); None: ``OFER_CUDA_GRAPHS`` decides (unset: on).
    cuda_graphs: bool | None = None
    #: Where graphs replay, replay the whole sampler step, update and noise included (``diffusion/whole_step.py``);
    #: None: ``OFER_CUDA_WHOLE_STEPS`` decides (unset: off).
    cuda_whole_steps: bool | None = None

    def __post_init__(self) -> None:
        assert self.idgen.denoiser is not None and self.expgen.denoiser is not None
        self.encoder_sharing = self._share_identical_encoders()
        self.backend = "torch"
        self.onnx_device: torch.device | None = None
        self.runners: dict[str, Callable[..., torch.Tensor]] = {
            f"{networks.kind}.{slot}": TorchRunner(module)
            for networks in (self.idgen, self.expgen, self.idrank)
            for slot, module in networks.modules().items()
        }
        self.idgen_denoiser = DenoiserModel(
            lambda *a: self._run_denoiser("idgen", *a),
            self.idgen.denoiser.config.feature_dim,
            lambda: self.whole_step_runner("idgen"),
        )
        self.expgen_denoiser = DenoiserModel(
            lambda *a: self._run_denoiser("expgen", *a),
            self.expgen.denoiser.config.feature_dim,
            lambda: self.whole_step_runner("expgen"),
        )
        self._device = torch.device("cpu")
        #: Whether ``to`` has put the networks in ``dtype`` yet: loading leaves them fp32 on the CPU, so the
        #: first ``to`` casts even to the CPU (an fp16/bf16 bundle must not run fp32 there under its label).
        self._placed = self.dtype == torch.float32
        self.encoder_runtime: EncoderRuntimeReport | None = None
        self._onnx_encoders: dict[str, Callable[..., torch.Tensor]] = {}
        self._torch_encoders: dict[str, Callable[..., torch.Tensor]] = {}
        self._released_encoders: set[str] = set()  # encoders whose fp32 torch weights were freed (worker)
        self._fused: dict[str, Callable[..., torch.Tensor]] = {}
        self._whole_steps: dict[str, WholeStepSampler] = {}
        self._rank_fold: tuple[tuple[Any, ...], FlameLayer, FoldedFirstLayer] | None = None
        self.last_lanes = LaneRun([], [])  # what the last ``contexts`` ran on its lanes (benchmarks)

    def _fuses(self) -> bool:
        """Whether the samplers step through the fused CPU float32 copies."""
        fuse = self.fuse_denoisers and self.backend == "torch" and self.dtype == torch.float32
        return fuse and self._device.type == "cpu"

    def splits_rows(self) -> bool:
        """Whether the fused steps cut their batch into single-thread blocks of rows (``nets/row_lanes.py``;
        ``row_split``, else ``OFER_CPU_ROW_SPLIT``, decides when the fused copy is built)."""
        return self._fuses() and (row_split_requested() if self.row_split is None else self.row_split)

    def _run_denoiser(self, kind: str, *inputs: torch.Tensor) -> torch.Tensor:
        """The denoiser's runner, its CUDA graph replay, or its fused CPU float32 copy (each built on first
        use) when that applies."""
        if self._replays_graphs():
            return self._run_graph(kind, *inputs)
        if not self._fuses():
            return self.runners[f"{kind}.denoiser"](*inputs)
        if kind not in self._fused:
            from .nets.fused_denoiser import FusedDenoiser

            net = self._networks(kind).denoiser
            assert net is not None
            fused = FusedDenoiser(net, row_split=self.row_split)
            wanted = requested_step_runtime() if self.step_runtime is None else self.step_runtime
            if wanted == "onnxruntime" and self.step_cache_dir is not None:
                fused.use_onnx_step(self.step_cache_dir, kind)
            self._fused[kind] = TorchRunner(net, fused)
        return self._fused[kind](*inputs)

    def _replays_graphs(self) -> bool:
        wanted = cuda_graphs_requested() if self.cuda_graphs is None else self.cuda_graphs
        return wanted and self.backend == "torch" and self._device.type == "cuda"

    def _run_graph(self, kind: str, *inputs: torch.Tensor) -> torch.Tensor:
        if kind not in self._fused:
            net = self._networks(kind).denoiser
            assert net is not None
            self._fused[kind] = TorchRunner(net, CudaGraphEpsModel(net, net.config.feature_dim))
        try:
            return self._fused[kind](*inputs)
        except RuntimeError as exc:  # a capture the driver refuses: sample eagerly rather than fail the request
            log.warning("CUDA graph replay of the %s denoiser failed (%s); running it eagerly", kind, exc)
            self.cuda_graphs = False
            self._fused.pop(kind, None)
            return self.runners[f"{kind}.denoiser"](*inputs)

    def _runs_whole_steps(self) -> bool:
        wanted = whole_steps_requested() if self.cuda_whole_steps is None else self.cuda_whole_steps
        return wanted and self._replays_graphs()

    def whole_step_runner(self, kind: str) -> WholeStepSampler | None:
        """The sampler that replays ``kind``'s whole steps as CUDA graphs, where that applies and has not failed."""
        if not self._runs_whole_steps():
            return None
        if kind not in self._whole_steps:
            net = self._networks(kind).denoiser
            assert net is not None
            self._whole_steps[kind] = WholeStepSampler(
                TorchRunner(net.eval()),
                graphs=self._device.type == "cuda",
                fallback=partial(run_plan, self._denoiser_model(kind)),
            )
        sampler = self._whole_steps[kind]
        return None if sampler.failed else sampler

    def _denoiser_model(self, kind: str) -> DenoiserModel:
        return self.idgen_denoiser if kind == "idgen" else self.expgen_denoiser

    def _networks(self, kind: str) -> LoadedNetworks:
        return {"idgen": self.idgen, "expgen": self.expgen, "idrank": self.idrank}[kind]

    def _share_identical_encoders(self) -> EncoderSharing:
        """Replace each encoder copy by the first one with the same weights (the copy's memory is freed)."""
        present = [(slot, getattr(self._networks(slot.split(".")[0]), slot.split(".")[1])) for slot in ENCODER_SLOTS]
        present = [(slot, module) for slot, module in present if module is not None]
        if not self.share_encoders:
            return EncoderSharing({slot: slot for slot, _ in present}, {})
        sharing = find_identical(present)
        for slot, first in sharing.canonical.items():
            if slot != first:
                kind, name = slot.split(".")
                first_kind, _ = first.split(".")
                setattr(self._networks(kind), name, getattr(self._networks(first_kind), name))
        return sharing

    @property
    def attention_synthetic(self) -> bool:
        return any(n.attention_synthetic for n in (self.idgen, self.expgen))

    @property
    def device(self) -> torch.device:
        return self._device

    def to(self, device: torch.device) -> ModelBundle:
        if device != self._device or not self._placed:
            if self._released_encoders:
                raise BackendError(
                    f"the encoders run in CPU ONNX Runtime sessions or bf16 copies (their fp32 weights were released): "
                    f"cannot move the models to {device}",
                    "Restart the worker without OFER_ENCODER_RUNTIME / OFER_ENCODER_PRECISION to use another device.",
                )
            for networks in (self.idgen, self.expgen, self.idrank):
                for module in networks.modules().values():
                    module.to(device=device, dtype=self.dtype)
            self._device, self._placed = device, True
            self.plain_encoders(device.type != "cpu")  # the ONNX Runtime encoders are CPU sessions
            self._fused.clear()
            self._whole_steps.clear()
        return self

    def use_onnxruntime(self, cache_dir: Path) -> None:
        """Run every network through onnxruntime: export once per model file set into ``cache_dir``, then
        open sessions (CUDA execution provider on a CUDA device when onnxruntime has it, else CPU)."""
        from .backends import OnnxNetwork
        from .onnx_export import export_loaded_networks, graph_name, write_manifest

        key = hashlib.sha256(json.dumps(self.sources, sort_keys=True).encode()).hexdigest()[:16]
        folder = cache_dir / "onnx" / key
        folder.mkdir(parents=True, exist_ok=True)
        for networks in (self.idgen, self.expgen, self.idrank):
            expected = [folder / f"{graph_name(networks.kind, slot)}.onnx" for slot in networks.modules()]
            if not all(path.is_file() for path in expected):
                cpu = {slot: module.to("cpu", torch.float32) for slot, module in networks.modules().items()}
                graphs = export_loaded_networks(networks, folder)
                write_manifest(folder, networks, graphs)
                for module in cpu.values():
                    module.to(self._device, self.dtype)
        device = "cuda" if self._device.type == "cuda" else "cpu"
        self.runners = {name: OnnxNetwork.from_path(folder / f"{name.replace('.', '_')}.onnx", device=device)
                        for name in self.runners}  # fmt: skip
        self.backend = "onnxruntime"
        self.onnx_device = self._device

    def use_encoder_runtime(
        self, cache_dir: Path, precision: str = "fp32", *, release_torch: bool = False
    ) -> EncoderRuntimeReport:
        """Run each distinct encoder in a faster form where one validates or is adopted (``encoder_runtime``:
        ONNX Runtime fp32, int8 where ``encoder_quantise`` adopts it, a torch bf16 copy where ``encoder_bf16``
        adopts it — per ``precision``, see ``encoder_runtime.CHOICES``); the torch modules stay for everything
        else. Only for the torch back end on the CPU in fp32; idempotent. ``release_torch`` frees the fp32
        torch weights of the encoders that now run in another form (one copy of the weights in memory, not
        two); the bundle then stays on the CPU."""
        if self.encoder_runtime is not None:
            return self.encoder_runtime
        slots = sorted(set(self.encoder_sharing.canonical.values()))
        if self.backend != "torch" or self._device.type != "cpu" or self.dtype != torch.float32:
            why = f"{self.backend} back end on {self._device.type} in {self.dtype}: not the CPU fp32 torch path"
            return EncoderRuntimeReport(on_torch=dict.fromkeys(slots, why))
        modules = {slot: getattr(self._networks(slot.split(".")[0]), slot.split(".")[1]) for slot in slots}
        networks, report = encoder_networks(modules, cache_dir, precision)
        self._onnx_encoders = dict(networks)
        self._torch_encoders = {slot: self.runners[slot] for slot in networks}
        self.runners.update(networks)
        self.encoder_runtime = report
        if release_torch:
            for slot in networks:  # shared copies are the same module: released once for all their slots
                modules[slot].to_empty(device="meta")
            self._released_encoders = set(networks)
            self._torch_encoders = {}
            trim_heap()
        return report

    def encoder_runtimes(self) -> dict[str, str]:
        """slot → what computes its embedding ("torch fp32", "onnxruntime fp32", "onnxruntime int8", "torch
        bf16"), for the result's meta; shared copies name the slot they use."""
        report = self.encoder_runtime
        out = {}
        names = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
        plain = f"{self.backend} {names.get(self.dtype, str(self.dtype))}"
        for slot, first in self.encoder_sharing.canonical.items():
            precision = None if report is None else report.precision.get(first)
            faster = precision is not None and self.runners.get(first) is self._onnx_encoders.get(first)
            engine = "torch" if precision == "bf16" else "onnxruntime"  # bf16: a torch copy (encoder_bf16)
            runtime = f"{engine} {precision}" if faster else plain
            out[slot] = runtime + ("" if first == slot else f" (shares {first})")
        return out

    def denoiser_runtimes(self) -> dict[str, str]:
        """kind → what runs its denoiser steps now ("onnxruntime fp32 fused", "torch fp32 fused", "torch fp32
        fused, bf16 GEMMs", any
        with ", rows in N blocks" when its last step cut the batch (``nets/row_lanes.py``), or the plain
        runner's backend and dtype, with ", CUDA graph replay" where the steps replay a captured graph), for
        the result's meta: a bf16 step (``OFER_CPU_PRECISION``) gives other
        samples than fp32, and a reader of the file must be able to tell."""
        names = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
        plain = f"{self.backend} {names.get(self.dtype, str(self.dtype))}"
        out = {}
        for kind in ("idgen", "expgen"):
            fused = self._fused.get(kind)
            whole = self._whole_steps.get(kind)
            if whole is not None and not whole.failed and self._runs_whole_steps():
                out[kind] = f"{plain}, CUDA graph replay of whole steps"
            elif isinstance(fused, TorchRunner) and isinstance(fused.call, CudaGraphEpsModel):
                out[kind] = f"{plain}, CUDA graph replay"
            elif isinstance(fused, TorchRunner) and self._device.type == "cpu":
                gemms = getattr(fused.call, "precision", "fp32")
                lanes = getattr(fused.call, "row_lanes", None)
                blocks = 0 if lanes is None else lanes.last_blocks
                engine = "onnxruntime" if getattr(fused.call, "onnx_step", False) else "torch"
                out[kind] = (f"{engine} fp32 fused" + (", bf16 GEMMs" if gemms == "bf16" else "")
                             + (f", rows in {blocks} blocks" if blocks > 1 else ""))  # fmt: skip
            else:
                out[kind] = plain
        return out

    def plain_encoders(self, plain: bool) -> None:
        """Switch the encoders between torch (``plain``) and their ONNX Runtime sessions (benchmarks, tests)."""
        if self.backend != "torch":  # use_onnxruntime replaced every runner: nothing of ours to switch
            return
        if plain and self._released_encoders:
            raise BackendError(
                f"the torch weights of {', '.join(sorted(self._released_encoders))} were released",
                "Open the encoder runtime with release_torch=False to switch back and forth.",
            )
        self.runners.update(self._torch_encoders if plain else self._onnx_encoders)

    def _cast(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(device=self._device, dtype=torch.float32)

    def contexts(self, blob: torch.Tensor, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """IdGen, ExpGen and IdRank contexts of one image, each distinct encoder run once (on two lanes on the
        CPU: ``encoder_lanes``; the same embeddings either way)."""
        firsts = [self.encoder_sharing.canonical.get(slot, slot) for slot in ENCODER_SLOTS]
        runtimes = self.encoder_runtimes()
        distinct = {first: runtimes.get(first, "") for first in dict.fromkeys(firsts)}
        embeddings = run_encoders(
            [self._encoder_job(first, runtime, blob, image) for first, runtime in distinct.items()],
            lanes=self._device.type == "cpu" and self._lanes_wanted(distinct.values()),
            record=self.last_lanes,
        )

        def embed(slot: str) -> torch.Tensor:
            return embeddings[self.encoder_sharing.canonical.get(slot, slot)]

        def joint(kind: str) -> torch.Tensor:
            return torch.cat([embed(f"{kind}.farl"), embed(f"{kind}.arcface")], dim=1)

        return embed("idgen.arcface"), joint("expgen"), joint("idrank")

    def _lanes_wanted(self, runtimes: Iterable[str]) -> bool:
        """The bundle's setting, else the switch, else lanes where they measured faster (``lanes_by_default``)."""
        wanted = lanes_requested() if self.encoder_lanes is None else self.encoder_lanes
        return lanes_by_default(runtimes) if wanted is None else wanted

    def _encoder_job(self, slot: str, runtime: str, blob: torch.Tensor, image: torch.Tensor) -> EncoderJob:
        source = self._cast(blob if slot.endswith("arcface") else image)
        runner = self.runners[slot]
        kind, name = slot.split(".")
        module = getattr(self._networks(kind), name, None)
        return EncoderJob(slot, lambda: runner(source).float(), estimated_cost(module, runtime))

    def idgen_context(self, blob: torch.Tensor) -> torch.Tensor:
        return self.runners["idgen.arcface"](self._cast(blob)).float()

    def _joint_context(self, kind: str, blob: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        farl = self.runners[f"{kind}.farl"](self._cast(image)).float()
        arc = self.runners[f"{kind}.arcface"](self._cast(blob)).float()
        return torch.cat([farl, arc], dim=1)

    def expgen_context(self, blob: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return self._joint_context("expgen", blob, image)

    def idrank_context(self, blob: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return self._joint_context("idrank", blob, image)

    def score_shapes(self, front_vertices_mm: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """IdRank logits (N,) for the N samples of one image (front-face vertices in mm)."""
        from .nets.idrank import build_rank_input

        x = build_rank_input(front_vertices_mm.float())
        ctx = context.expand(x.shape[0], -1)
        return self.runners["idrank.rank_net"](self._cast(x), self._cast(ctx)).float().reshape(-1)

    def folded_rank(self, flame: FlameLayer) -> FoldedFirstLayer | None:
        """IdRank's first layer folded through ``flame``'s shape basis (``rank_fold``), or None where the
        fold does not apply: another back end runs IdRank (its graph takes vertices), or ``flame`` is not the
        linear FLAME layer. Computed once per (FLAME layer, device, dtype) and kept."""
        runner = self.runners["idrank.rank_net"]
        net = self.idrank.rank_net
        if self.backend != "torch" or not isinstance(runner, TorchRunner) or runner.module is not net:
            return None
        if not self.fold_rank or net is None or type(flame) is not FlameLayer:
            return None
        param = next(net.parameters())
        key = (flame.device, flame.dtype, param.device, param.dtype)
        if self._rank_fold is None or self._rank_fold[0] != key or self._rank_fold[1] is not flame:
            self._rank_fold = (key, flame, cached_fold(net, flame, self.front_indices, self.fold_cache_dir))
        return self._rank_fold[2]

    def score_coefficients(self, folded: FoldedFirstLayer, shapes: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """IdRank logits (N,) for the N samples of one image, straight from their shape coefficients
        (``folded_rank``): equal to ``score_shapes`` of their neutral front-face vertices up to rounding."""
        net = self.idrank.rank_net
        assert net is not None
        param = next(net.parameters())
        ctx = context.to(device=param.device, dtype=param.dtype).reshape(-1, net.config.context_dim)
        return net.forward_from_first_linear(folded(shapes), ctx).float().reshape(-1)

    def model_ids(self) -> dict[str, Any]:
        return {
            kind: {
                "source": self.sources.get(kind),
                "demo": networks.demo,
                "attention_synthetic": networks.attention_synthetic,
                "provenance": networks.metadata.get("provenance", {}),
            }
            for kind, networks in (("idgen", self.idgen), ("expgen", self.expgen), ("idrank", self.idrank))
        } | {"flame": self.sources.get("flame"), "shared_encoders": self.encoder_sharing.groups}


def load_front_indices(path: Path, n_vertices: int, *, official: bool = True) -> np.ndarray:
    """The front-face vertex list, checked; for FLAME it must be the official list (IdRank is bound to it)."""
    from .flame.loading import is_official_front_face_indices, load_front_face_indices

    indices = load_front_face_indices(path, n_vertices=n_vertices)
    fix = "Use the unmodified frontindices.npy of the OFER release: IdRank's first layer is bound to its order."
    if indices.shape != (FRONT_VERTEX_COUNT,):
        raise BadModelFileError(f"{path}: expected {FRONT_VERTEX_COUNT} vertex ids, got {indices.shape[0]}", fix)
    if official and not is_official_front_face_indices(indices):
        raise BadModelFileError(f"{path}: this is not the official OFER front-face list", fix)
    return indices


def load_model_bundle(assets: AssetConfig, *, backend: str = "torch", precision: str = "fp32") -> ModelBundle:
    """The user's models when configured (all of them), else the shipped DEMO assets."""
    from .checkpoints import load_networks
    from .flame.loading import load_flame_model

    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    if assets.use_demo:
        from .demo.assets import ensure_demo_assets
        from .demo.weights import ensure_demo_weights

        head = ensure_demo_assets()
        flame = load_flame_model(head.model_pkl, landmark_embedding=head.landmark_embedding)
        front = load_front_indices(head.front_face_indices, flame.n_vertices, official=False)
        weights = ensure_demo_weights()
        demo_sources = {"flame": str(head.model_pkl)} | {kind: str(path) for kind, path in weights.items()}
        demo_nets = {kind: load_networks(path) for kind, path in weights.items()}
        return ModelBundle(
            demo_nets["idgen"], demo_nets["expgen"], demo_nets["idrank"], flame, front, True, demo_sources, dtype
        )

    assets.require_complete()
    flame_path = assets.path("flame_model")
    assert flame_path is not None
    flame = load_flame_model(flame_path, landmark_embedding=assets.path("landmark_embedding"))
    front_path = assets.path("front_face_indices")
    assert front_path is not None
    front = load_front_indices(front_path, flame.n_vertices)
    folder = assets.path("checkpoint_dir")
    assert folder is not None
    sources: dict[str, str] = {"flame": str(flame_path)}
    nets = {}
    for kind, stem in CHECKPOINT_NAMES.items():
        path = find_checkpoint(folder, stem)
        assert path is not None  # require_complete checked it
        sources[kind] = str(path)
        nets[kind] = load_networks(path)
    return ModelBundle(nets["idgen"], nets["expgen"], nets["idrank"], flame, front, False, sources, dtype)
