"""IdGen, ExpGen and IdRank training (the paper's recipe, with the official code's defects fixed).

* Denoisers: t ~ U{0..999}, x_t = √ᾱ_t x0 + √(1-ᾱ_t) ε, loss = mean |ε̂ − ε| (L1); AdamW (weight decay
  1e-4); ReduceLROnPlateau(factor 0.99, patience 2) stepped per epoch on the mean training loss. ExpGen gets
  gradients (no ``no_grad`` around its forward), and all 16 attention projections are registered
  parameters, so they are trained and saved.
* IdRank: a FROZEN IdGen draws N shapes per image; e_i = mean |GT − P_i| (mm, front-face vertices, xyz),
  target softmax(−e / T), loss = cross-entropy of the rank logits against that soft target (ListNet).
* Encoders frozen or partly fine-tuned (``freeze``); frozen parts run in eval mode with no gradients.

Resumable: the networks go to ``OUT/<kind>.safetensors`` (project format) and the trainer state (step,
optimiser, scheduler, loss accumulators, RNG state: plain tensors and dicts) to ``OUT/<kind>.trainer.pt``,
read back with ``torch.load(weights_only=True)``. Batches and noise are functions of (seed, rank, step),
so a resumed run repeats the uninterrupted run's loss trajectory.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data.distributed import DistributedSampler

from ..checkpoints import LoadedNetworks, load_networks, save_project_checkpoint
from ..diffusion import NoiseSchedule, sample
from ..flame.layer import FlameLayer
from ..flame.model_data import FlameModelData
from ..nets.arcface import ArcFaceEncoder
from ..nets.clip_visual import ClipImageEncoder
from ..nets.denoiser import Denoiser
from ..nets.idrank import IdRank, build_rank_input
from . import distributed
from .config import TrainConfig
from .datasets import CropBatch, CropDataset, DatasetError, read_records
from .encoder_warmup import all_parameters_train, batch_statistics, warmup_target
from .initialisation import start_at_identity, start_on_deviations

STATE_SUFFIX = ".trainer.pt"


# -- encoders: what trains -----------------------------------------------------------------------------
def trainable_encoder_parts(encoder: nn.Module, freeze: str) -> list[nn.Module]:
    """The sub-modules that train under ``freeze`` ("all": none, "l4": the last stage, "none": all)."""
    if freeze == "all":
        return []
    if freeze == "none":
        return [encoder]
    if isinstance(encoder, ArcFaceEncoder):
        return [encoder.stages()[-1], encoder.bn2, encoder.fc, encoder.features]
    if isinstance(encoder, ClipImageEncoder):
        visual = encoder.visual
        return [visual.transformer.resblocks[-1], visual.ln_post]
    raise TypeError(f"unknown encoder {type(encoder).__name__}")


def freeze_encoder(encoder: nn.Module, freeze: str) -> list[nn.Parameter]:
    """Switch gradients off outside the trainable parts; returns the trainable parameters."""
    encoder.requires_grad_(False)
    parts = trainable_encoder_parts(encoder, freeze)
    for part in parts:
        part.requires_grad_(True)
    if isinstance(encoder, ArcFaceEncoder):
        encoder.features.weight.requires_grad_(False)  # fixed at 1, as in the official training
    if isinstance(encoder, ClipImageEncoder) and freeze == "l4":
        encoder.visual.proj.requires_grad_(True)
    return [p for p in encoder.parameters() if p.requires_grad]


def set_train_mode(encoder: nn.Module, freeze: str) -> None:
    """Train mode only for the trainable parts: frozen layers stay in eval mode (official defect fixed)."""
    encoder.eval()
    for part in trainable_encoder_parts(encoder, freeze):
        part.train()


# -- objectives (nn.Modules so DistributedDataParallel can wrap them) -----------------------------------
class DiffusionObjective(nn.Module):
    """L1 ε-prediction loss of a denoiser conditioned on its encoders' context."""

    alphas_cumprod: torch.Tensor

    def __init__(self, kind: str, denoiser: Denoiser, arcface: ArcFaceEncoder, farl: ClipImageEncoder | None):
        super().__init__()
        self.kind, self.denoiser, self.arcface, self.farl = kind, denoiser, arcface, farl
        schedule = NoiseSchedule.linear()
        self.register_buffer("alphas_cumprod", torch.as_tensor(schedule.alphas_cumprod, dtype=torch.float32))

    def context(self, blob: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        arc = self.arcface(blob)
        if self.kind == "idgen":
            return arc
        assert self.farl is not None
        return torch.cat([self.farl(image), arc], dim=1)

    def forward(
        self,
        blob: torch.Tensor,
        image: torch.Tensor,
        x0: torch.Tensor,
        t: torch.Tensor,
        noise: torch.Tensor,
        context: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``context``: the encoders' output when it is already known (frozen encoders, cached)."""
        a = self.alphas_cumprod[t][:, None]
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        context = self.context(blob, image) if context is None else context
        repeats = x0.shape[0] // context.shape[0]  # noise draws per image (``noise_repeats``)
        context = context.repeat_interleave(repeats, dim=0) if repeats > 1 else context
        return (self.denoiser(xt, t, context) - noise).abs().mean()


class RankObjective(nn.Module):
    """ListNet soft-target cross-entropy of the rank logits over each image's N samples."""

    def __init__(self, rank_net: IdRank, arcface: ArcFaceEncoder, farl: ClipImageEncoder) -> None:
        super().__init__()
        self.rank_net, self.arcface, self.farl = rank_net, arcface, farl

    def forward(
        self,
        blob: torch.Tensor,
        image: torch.Tensor,
        rank_input: torch.Tensor,
        target: torch.Tensor,
        context: torch.Tensor | None = None,
    ) -> torch.Tensor:
        batch, n = target.shape
        context = torch.cat([self.farl(image), self.arcface(blob)], dim=1) if context is None else context
        logits = self.rank_net(rank_input, context.repeat_interleave(n, dim=0)).view(batch, n)
        return -(target * torch.log_softmax(logits, dim=1)).sum(dim=1).mean()


def ranking_errors_mm(samples_front_mm: torch.Tensor, truth_front_mm: torch.Tensor) -> torch.Tensor:
    """e_i = mean over front vertices and xyz of |GT − P_i| (mm); (N, V, 3), (V, 3) → (N,)."""
    return (samples_front_mm - truth_front_mm[None]).abs().mean(dim=(1, 2))


def ranking_target(errors_mm: torch.Tensor, temperature_mm: float = 1.0) -> torch.Tensor:
    return torch.softmax(-errors_mm / temperature_mm, dim=-1)


def warmup_cosine(step: int, *, warmup: int, total: int) -> float:
    """Learning-rate factor: linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


# -- progress --------------------------------------------------------------------------------------------
class ProgressBar:
    """A one-line text bar on stderr (rank 0 only), plus a JSON-lines log file."""

    def __init__(self, total: int, start: int, log_path: Path | None, enabled: bool) -> None:
        self.total, self.start, self.enabled = total, start, enabled
        self.began = time.monotonic()
        self.log = log_path.open("a", encoding="utf-8") if log_path else None

    def update(self, step: int, values: dict[str, float]) -> None:
        if self.log:
            self.log.write(json.dumps({"step": step, **values}) + "\n")
            self.log.flush()
        if not self.enabled:
            return
        done = step - self.start
        if done <= 0:  # encoder warm-up rows: the steps' rate is timed from the end of the warm-up
            self.began = time.monotonic()
        rate = done / max(time.monotonic() - self.began, 1e-9)
        eta = (self.total - step) / rate if rate > 0 else 0.0
        filled = int(30 * step / self.total)
        text = " ".join(f"{k}={v:.4g}" for k, v in values.items())
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {step}/{self.total} {text} eta {eta:.0f}s ")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")
        if self.log:
            self.log.close()


# -- the trainer ------------------------------------------------------------------------------------------
def _step_seed(seed: int, rank: int, step: int) -> int:
    return (seed * 1_000_003 + rank * 7_919 + step * 104_729) % (2**63 - 1)


def build_networks(config: TrainConfig) -> LoadedNetworks:
    """Fresh networks (or the ``init`` checkpoint's), then the encoders of ``arcface_init`` / ``farl_init``."""
    networks = _fresh_networks(config)
    for name, source in (("arcface", config.arcface_init), ("farl", config.farl_init)):
        if source is None:
            continue
        donor = getattr(load_networks(source), name)
        target = getattr(networks, name)
        if donor is None or target is None:
            raise DatasetError(f"--{name}-init {source} has no {name} encoder for this run", "Pick another file.")
        try:
            target.load_state_dict(
                {k: v.float() if v.is_floating_point() else v for k, v in donor.state_dict().items()}
            )
        except RuntimeError as error:
            raise DatasetError(
                f"the {name} encoder of {source} does not fit this run's size: {error}", "Use the same --size."
            ) from error
    return networks


def _fresh_networks(config: TrainConfig) -> LoadedNetworks:
    """Fresh networks of the configured sizes (or the ``init`` checkpoint's), seeded with ``seed``."""
    if config.init is not None:
        loaded = load_networks(config.init)
        if loaded.kind != config.kind:
            raise DatasetError(
                f"--init {config.init} is a {loaded.kind} file, not {config.kind}", "Pick the right file."
            )
        return loaded
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        arcface = ArcFaceEncoder(config.arcface)
        denoiser = None
        if config.kind != "idrank":
            assert config.denoiser is not None
            denoiser = Denoiser(config.denoiser)
            if config.identity_init:
                start_at_identity(denoiser)
        if config.kind == "idgen":
            return LoadedNetworks("idgen", arcface, denoiser=denoiser)
        farl = ClipImageEncoder(config.farl)
        if config.kind == "expgen":
            return LoadedNetworks("expgen", arcface, denoiser=denoiser, farl=farl)
        rank_net = IdRank(config.idrank)
        if config.deviation_init:
            start_on_deviations(rank_net)
        return LoadedNetworks("idrank", arcface, farl=farl, rank_net=rank_net)


def _load_flame(config: TrainConfig) -> FlameModelData:
    if config.flame is None:
        from ..demo.head import generate_demo_head

        return generate_demo_head()
    from ..flame.loading import load_flame_model

    return load_flame_model(config.flame)


class Trainer:
    """Runs one training job; ``run()`` returns the per-step losses of this process."""

    def __init__(self, config: TrainConfig, records: list[Any] | None = None) -> None:
        self.config = config
        if config.threads:
            torch.set_num_threads(config.threads)
        self.info = distributed.setup(config.device)
        records = records or read_records(config.data, config.data_format)
        self.dataset = CropDataset(records[: config.max_records], config.channel_order)
        self._check_targets()
        self.networks = build_networks(config)
        self.networks.metadata.setdefault("provenance", {})
        for module in self.networks.modules().values():
            module.to(self.info.device)
        self.encoder_params = {
            "arcface": freeze_encoder(self.networks.arcface, config.freeze),
            "farl": [] if self.networks.farl is None else freeze_encoder(self.networks.farl, config.freeze),
        }
        self.objective: nn.Module
        if config.kind == "idrank":
            assert self.networks.rank_net is not None and self.networks.farl is not None
            self.objective = RankObjective(self.networks.rank_net, self.networks.arcface, self.networks.farl)
            head_params = list(self.networks.rank_net.parameters())
            self._prepare_ranking()
        else:
            assert self.networks.denoiser is not None
            self.objective = DiffusionObjective(
                config.kind, self.networks.denoiser, self.networks.arcface, self.networks.farl
            )
            head_params = list(self.networks.denoiser.parameters())
        self.objective.to(self.info.device)
        groups = [{"params": head_params, "lr": config.lr}]
        if self.encoder_params["arcface"]:
            groups.append({"params": self.encoder_params["arcface"], "lr": config.arcface_lr})
        if self.encoder_params["farl"]:
            groups.append({"params": self.encoder_params["farl"], "lr": config.farl_lr})
        self.optimiser = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
        self.scheduler: Any
        if config.lr_schedule == "cosine":
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(
                self.optimiser, partial(warmup_cosine, warmup=config.warmup_steps, total=config.steps)
            )
        else:
            self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.optimiser, mode="min", factor=0.99, patience=2, threshold=1e-4
            )
        self.model: nn.Module = self.objective
        if self.info.distributed:
            self.model = nn.parallel.DistributedDataParallel(
                self.objective, device_ids=[self.info.device.index] if self.info.device.type == "cuda" else None
            )
        self.sampler: DistributedSampler[int] = DistributedSampler(
            range(len(self.dataset)),  # type: ignore[arg-type]  # only len() is used
            num_replicas=self.info.world_size, rank=self.info.rank,
            shuffle=True, seed=config.seed, drop_last=len(self.dataset) >= self.info.world_size,
        )  # fmt: skip
        self.batch = min(config.batch_size, len(self.sampler))
        self.steps_per_epoch = max(1, len(self.sampler) // self.batch)
        self.step = 0
        self.epoch_loss = [0.0, 0]
        self.losses: list[float] = []
        self.warmup_losses: list[float] = []
        self.warmed_up = False
        self.context_cache: dict[int, torch.Tensor] = {}  # frozen encoders only (``_frozen_context``)

    # paths
    @property
    def weights_path(self) -> Path:
        return self.config.out / f"{self.config.kind}.safetensors"

    @property
    def state_path(self) -> Path:
        return self.config.out / f"{self.config.kind}{STATE_SUFFIX}"

    def _check_targets(self) -> None:
        wanted = "shape" if self.config.kind in ("idgen", "idrank") else "expression"
        missing = [r.image for r in self.dataset.records if getattr(r, wanted) is None]
        if missing:
            raise DatasetError(
                f"{len(missing)} training images have no {wanted} target (first: {missing[0]})",
                "Train IdGen / IdRank on identity fits (mica) and ExpGen on expression fits (famos).",
            )

    # IdRank: the frozen generator and the FLAME layer for the errors
    def _prepare_ranking(self) -> None:
        config = self.config
        if config.generator is None:
            raise DatasetError("IdRank training needs --generator IDGEN_CHECKPOINT", "Train IdGen first.")
        generator = load_networks(config.generator)
        if generator.kind != "idgen" or generator.denoiser is None:
            raise DatasetError(f"--generator {config.generator} is not an IdGen file", "Pass an IdGen checkpoint.")
        self.generator = generator.eval()
        for module in generator.modules().values():
            module.to(self.info.device).requires_grad_(False)
        flame = _load_flame(config)
        if flame.front_face_indices is None:
            raise DatasetError("the FLAME model has no front-face vertex list", "Use the demo head or add one.")
        self.flame = FlameLayer(flame).to(self.info.device)
        self.front = torch.as_tensor(np.asarray(flame.front_face_indices), device=self.info.device)
        if 6 * len(self.front) != config.idrank.input_dim:
            raise DatasetError(
                f"the rank net expects {config.idrank.input_dim // 6} front vertices, the head has {len(self.front)}",
                "Use the official front-face list (1785 vertices).",
            )
        self.sample_cache: dict[int, torch.Tensor] = {}

    def _front_mm(self, shapes: torch.Tensor) -> torch.Tensor:
        return self.flame.neutral(shapes).vertices[:, self.front] * 1000.0

    @torch.no_grad()
    def generator_samples(self, index: int, blob: torch.Tensor | None, step: int) -> torch.Tensor:
        config = self.config
        if config.cache_samples and index in self.sample_cache:
            return self.sample_cache[index]
        assert self.generator.denoiser is not None
        if blob is None:
            raise RuntimeError(f"no crop for image {index} and no cached samples")
        context = self.generator.arcface(blob[None])
        seed = _step_seed(config.seed, index, 0 if config.cache_samples else step + 1)
        shapes = sample(
            self.generator.denoiser, context, config.n_samples, self.generator.denoiser.config.feature_dim,
            sampler=config.sampler, steps=config.sampler_steps, eta=config.sampler_eta, seed=seed,
            device=self.info.device,
        )  # fmt: skip
        if config.cache_samples:
            self.sample_cache[index] = shapes
        return shapes

    # one step
    def _indices(self, step: int) -> list[int]:
        epoch, position = divmod(step, self.steps_per_epoch)
        self.sampler.set_epoch(epoch)
        order = list(iter(self.sampler))
        return order[position * self.batch : (position + 1) * self.batch]

    def _loss(self, batch: CropBatch, step: int) -> torch.Tensor:
        device = self.info.device
        blob, image = batch.blob.to(device), batch.image.to(device)
        if self.config.kind == "idrank":
            inputs, targets = [], []
            for row, index in enumerate(batch.index.tolist()):
                # Once every sample is cached the batch carries no crops (``_needs_crops``): blob is empty.
                shapes = self.generator_samples(index, blob[row] if row < len(blob) else None, step)
                with torch.no_grad():
                    front = self._front_mm(shapes)
                    truth = self._front_mm(batch.shape[row : row + 1].to(device))[0]
                inputs.append(build_rank_input(front))
                targets.append(ranking_target(ranking_errors_mm(front, truth), self.config.temperature_mm))
            return self.model(blob, image, torch.cat(inputs), torch.stack(targets), self._frozen_context(batch))
        x0 = (batch.shape if self.config.kind == "idgen" else batch.expression).to(device)
        x0 = x0.repeat_interleave(self.config.noise_repeats, dim=0)
        generator = torch.Generator().manual_seed(_step_seed(self.config.seed, self.info.rank, step))
        t = torch.randint(0, 1000, (x0.shape[0],), generator=generator).to(device)
        noise = torch.randn(x0.shape, generator=generator).to(device)
        return self.model(blob, image, x0, t, noise, self._frozen_context(batch))

    def _needs_crops(self, indices: list[int]) -> bool:
        """False once frozen encoders' contexts (and, for IdRank, cached samples) cover every image."""
        if self.config.freeze != "all" or any(i not in self.context_cache for i in indices):
            return True
        if self.config.kind == "idrank":
            return not self.config.cache_samples or any(i not in self.sample_cache for i in indices)
        return False

    @torch.no_grad()
    def _frozen_context(self, batch: CropBatch) -> torch.Tensor | None:
        """With ``freeze="all"`` the encoders are fixed functions: their context is computed once per image."""
        if self.config.freeze != "all":
            return None
        missing = [row for row, index in enumerate(batch.index.tolist()) if index not in self.context_cache]
        if missing:
            rows = torch.as_tensor(missing)
            device = self.info.device
            context = self._context(batch.blob[rows].to(device), batch.image[rows].to(device))
            for row, value in zip(missing, context, strict=True):
                self.context_cache[int(batch.index[row])] = value
        return torch.stack([self.context_cache[int(i)] for i in batch.index.tolist()])

    def _context(self, blob: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """The encoders' context for this kind (IdRank: FaRL ‖ ArcFace, as its rank net sees it)."""
        if isinstance(self.objective, DiffusionObjective):
            return self.objective.context(blob, image)
        assert self.networks.farl is not None
        return torch.cat([self.networks.farl(image), self.networks.arcface(blob)], dim=1)

    def warm_up_encoders(self, report: Callable[[int, float], None] | None = None) -> list[float]:
        """``encoder_warmup_steps`` of supervised regression before step 0; returns the losses.

        A stand-in for pretrained encoders (see :mod:`.encoder_warmup`): every encoder parameter trains,
        BatchNorm uses batch statistics, and the head is thrown away; the main phase then follows
        ``freeze`` (``"all"``: the warmed-up encoders stay fixed and their context is computed once per
        image). Runs once: a resumed run skips it. 1.0 means "no better than the data mean".
        """
        config = self.config
        encoders = [self.networks.arcface, self.networks.farl]
        if config.encoder_warmup_steps == 0 or self.step > 0 or self.warmed_up:
            return []
        device = self.info.device
        wanted = "expression" if config.kind == "expgen" else "shape"
        targets = np.stack([getattr(r, wanted) for r in self.dataset.records]).astype(np.float32)
        target = warmup_target(targets, _load_flame(config) if wanted == "shape" else None).to(device)
        width = self.networks.arcface.config.embedding_dim
        if config.kind != "idgen":
            assert self.networks.farl is not None
            width += self.networks.farl.config.output_dim
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_step_seed(config.seed, 0, -1))
            head = nn.Linear(width, len(target.keep)).to(device)
        fixed = [self.networks.arcface.features.weight]  # fixed at 1, as in the official training
        losses = []
        with all_parameters_train(encoders, fixed) as trainable:
            parameters = trainable + list(head.parameters())
            optimiser = torch.optim.AdamW(parameters, lr=config.encoder_warmup_lr, weight_decay=config.weight_decay)
            schedule = torch.optim.lr_scheduler.LambdaLR(
                optimiser, partial(warmup_cosine, warmup=max(1, config.encoder_warmup_steps // 20),
                                   total=config.encoder_warmup_steps)
            )  # fmt: skip
            for encoder in encoders:
                if encoder is not None:
                    encoder.train()
            with batch_statistics(encoders):
                for step in range(config.encoder_warmup_steps):
                    batch = self.dataset.batch(self._indices(step))
                    raw = (batch.expression if wanted == "expression" else batch.shape).to(device)
                    context = self._context(batch.blob.to(device), batch.image.to(device))
                    loss = target.loss(head(context), raw)
                    optimiser.zero_grad(set_to_none=True)
                    loss.backward()
                    distributed.average_gradients(parameters, self.info)
                    optimiser.step()
                    schedule.step()
                    losses.append(float(loss.item()))
                    if report and ((step + 1) % config.log_every == 0 or step + 1 == config.encoder_warmup_steps):
                        report(step + 1, float(np.mean(losses[-config.log_every :])))
            distributed.average_buffers(encoders, self.info)
        self.warmed_up = True
        self._set_train_mode()
        self.save()  # an interrupted run resumes after the warm-up, not before it
        return losses

    def _set_train_mode(self) -> None:
        self.objective.train()
        for encoder in (self.networks.arcface, self.networks.farl):
            if encoder is not None:
                set_train_mode(encoder, self.config.freeze)

    def steps(self) -> Iterator[tuple[int, float]]:
        """Train from the current step to ``config.steps``; yields (step, loss) after each update."""
        self._set_train_mode()
        while self.step < self.config.steps:
            indices = self._indices(self.step)
            batch = self.dataset.batch(indices, crops=self._needs_crops(indices))
            loss = self._loss(batch, self.step)
            self.optimiser.zero_grad(set_to_none=True)
            loss.backward()
            self.optimiser.step()
            value = float(loss.item())
            self.losses.append(value)
            self.epoch_loss[0] += value
            self.epoch_loss[1] += 1
            self.step += 1
            if self.config.lr_schedule == "cosine":
                self.scheduler.step()
            elif self.step % self.steps_per_epoch == 0:
                mean = distributed.mean_over_processes(self.epoch_loss[0] / self.epoch_loss[1], self.info)
                self.scheduler.step(mean)
                self.epoch_loss = [0.0, 0]
            yield self.step, value

    def run(self) -> list[float]:
        config = self.config
        if self.info.main:
            config.out.mkdir(parents=True, exist_ok=True)
        bar = ProgressBar(
            config.steps, self.step, config.out / f"{config.kind}.log.jsonl" if self.info.main else None,
            enabled=config.progress and self.info.main,
        )  # fmt: skip
        window: list[float] = []
        try:
            self.warmup_losses = self.warm_up_encoders(
                lambda k, mse: bar.update(self.step, {"encoder_warmup_step": k, "encoder_warmup_mse": mse})
            )
            for step, loss in self.steps():
                window.append(loss)
                if step % config.log_every == 0 or step == config.steps:
                    values = {"loss": float(np.mean(window)), "lr": self.optimiser.param_groups[0]["lr"]}
                    bar.update(step, values)
                    window = []
                if step % config.save_every == 0 or step == config.steps:
                    self.save()
        finally:
            bar.close()
        return self.losses

    # checkpoints
    def trained_networks(self) -> LoadedNetworks:
        meta = dict(self.networks.metadata)
        meta["demo"] = self.config.demo
        meta["attention_synthetic"] = False
        meta["provenance"] = {
            "source": "ofer-worker train",
            "kind": self.config.kind,
            "step": self.step,
            "config": json.loads(self.config.to_json()),
            "last_loss": self.losses[-1] if self.losses else None,
        }
        if self.warmup_losses:
            meta["provenance"]["encoder_warmup_mse_first_last"] = [self.warmup_losses[0], self.warmup_losses[-1]]
        return LoadedNetworks(
            self.config.kind, self.networks.arcface, denoiser=self.networks.denoiser,
            farl=self.networks.farl, rank_net=self.networks.rank_net, metadata=meta,
        )  # fmt: skip

    def save(self) -> None:
        """Weights (project format) and trainer state; rank 0 writes, the others wait."""
        if self.info.main:
            save_project_checkpoint(self.weights_path, self.trained_networks())
            state = {
                "step": self.step,
                "epoch_loss": torch.tensor(self.epoch_loss[0], dtype=torch.float64),
                "epoch_count": self.epoch_loss[1],
                "losses": torch.tensor(self.losses, dtype=torch.float64),
                "optimizer": self.optimiser.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "world_size": self.info.world_size,
                "warmed_up": self.warmed_up,
                "config": self.config.to_json(),
            }
            temporary = self.state_path.with_suffix(".tmp")
            torch.save(state, temporary)
            temporary.replace(self.state_path)
        distributed.barrier(self.info)

    def resume(self) -> bool:
        """Continue from ``OUT/<kind>.*`` when both files exist; returns whether it did."""
        if not (self.weights_path.is_file() and self.state_path.is_file()):
            return False
        loaded = load_networks(self.weights_path)
        for name, module in self.networks.modules().items():
            module.load_state_dict(loaded.modules()[name].state_dict())
        state = torch.load(self.state_path, map_location="cpu", weights_only=True)
        if int(state["world_size"]) != self.info.world_size:
            raise DatasetError(
                f"{self.state_path} was written by {state['world_size']} processes, this run has "
                f"{self.info.world_size}", "Resume with the same number of processes.",
            )  # fmt: skip
        self.optimiser.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        self.step = int(state["step"])
        self.warmed_up = bool(state.get("warmed_up", False))
        self.epoch_loss = [float(state["epoch_loss"]), int(state["epoch_count"])]
        self.losses = [float(v) for v in state["losses"].tolist()]
        return True

    def close(self) -> None:
        distributed.teardown(self.info)


def train(config: TrainConfig, *, resume: bool = True, on_trainer: Callable[[Trainer], None] | None = None) -> Path:
    """Train (resuming when the output folder holds a previous run) and return the weights file."""
    trainer = Trainer(config)
    try:
        if resume:
            trainer.resume()
        if on_trainer:
            on_trainer(trainer)
        trainer.run()
        return trainer.weights_path
    finally:
        trainer.close()
