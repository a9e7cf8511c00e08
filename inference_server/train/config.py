"""Training configuration: one dataclass for the three trainers (IdGen, ExpGen, IdRank)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..nets.arcface import ArcFaceConfig
from ..nets.clip_visual import ClipVisionConfig
from ..nets.denoiser import EXPGEN_CONFIG, IDGEN_CONFIG, DenoiserConfig
from ..nets.idrank import IdRankConfig

TRAIN_KINDS = ("idgen", "expgen", "idrank")
#: Encoder fine-tuning: "all" = frozen, "l4" = only the last stage (ArcFace layer4/bn2/fc/features.bias;
#: CLIP last block + ln_post + proj, the official "l4" idea), "none" = everything trains.
FREEZE_MODES = ("all", "l4", "none")
LR_SCHEDULES = ("plateau", "cosine")


@dataclass
class TrainConfig:
    kind: str
    data: Path
    out: Path
    data_format: str = "index"
    steps: int = 1000
    batch_size: int = 16  # per process
    lr: float = 1e-3  # denoiser (IdGen / ExpGen); the paper uses 1e-6 for the rank MLP
    arcface_lr: float = 1e-4
    farl_lr: float = 1e-4
    weight_decay: float = 1e-4
    #: "plateau": the paper's ReduceLROnPlateau per epoch; "cosine": linear warm-up then cosine decay to 0
    #: (what the DEMO recipe uses: far fewer steps than the paper, so the rate must fall on schedule).
    lr_schedule: str = "plateau"
    warmup_steps: int = 0
    #: Denoisers: noise draws (t, ε) per image and step. The encoders run once per image and their context
    #: is repeated, so a large denoiser batch costs little encoder time.
    noise_repeats: int = 1
    #: Denoisers: start with ε̂(x_t, t) ≈ x_t (``initialisation.start_at_identity``) instead of PyTorch's
    #: default initialisation; the DEMO recipe uses it because a short CPU run cannot learn the high-noise
    #: slopes the samplers amplify. Ignored with ``init`` (weights come from the file).
    identity_init: bool = False
    #: IdRank: start the first rank layer blind to the shared-mean half of its input, with a constant reference
    #: in half of every GroupNorm group (``initialisation.start_on_deviations``); the DEMO recipe uses it.
    deviation_init: bool = False
    #: Supervised start for encoders that begin from random weights (the DEMO recipe: it has no pretrained
    #: ArcFace / FaRL): before step 0, regress the run's target (shape for IdGen / IdRank, expression + jaw
    #: for ExpGen) from the encoders' context through a temporary linear head for this many steps; every encoder
    #: parameter trains, BatchNorm uses batch statistics, then ``freeze`` applies (``encoder_warmup``).
    encoder_warmup_steps: int = 0
    encoder_warmup_lr: float = 1e-3
    freeze: str = "l4"
    seed: int = 0
    log_every: int = 10
    save_every: int = 200
    device: str = "auto"
    channel_order: str = "BGR"
    #: Train on the first N records only (None: all). IdRank draws N generator samples per image, so the
    #: DEMO recipe ranks on a subset of the renders its IdGen saw.
    max_records: int | None = None
    init: Path | None = None  # a project checkpoint whose networks start the run (same kind)
    #: Start the encoders from another run's (e.g. IdRank's ArcFace from the trained IdGen, its FaRL from
    #: the trained ExpGen): what pretrained encoders are to the paper's recipe. Sizes must match.
    arcface_init: Path | None = None
    farl_init: Path | None = None
    denoiser: DenoiserConfig | None = None  # None: the official size of the kind
    arcface: ArcFaceConfig = field(default_factory=ArcFaceConfig)
    farl: ClipVisionConfig = field(default_factory=ClipVisionConfig)
    idrank: IdRankConfig = field(default_factory=IdRankConfig)
    # IdRank only
    generator: Path | None = None  # the frozen IdGen checkpoint whose samples are ranked
    n_samples: int = 100
    temperature_mm: float = 1.0
    sampler: str = "ddpm"
    sampler_steps: int | None = None
    sampler_eta: float = 1.0
    cache_samples: bool = False  # draw each image's N samples once (fast demo) instead of every step
    flame: Path | None = None  # FLAME model for the ranking errors; None: the DEMO head
    demo: bool = False  # marks the written files as DEMO weights
    progress: bool = True
    threads: int | None = None  # torch CPU threads; 1 avoids oversubscription on a busy machine

    def __post_init__(self) -> None:
        if self.kind not in TRAIN_KINDS:
            raise ValueError(f"kind must be one of {TRAIN_KINDS}, got {self.kind!r}")
        if self.freeze not in FREEZE_MODES:
            raise ValueError(f"freeze must be one of {FREEZE_MODES}, got {self.freeze!r}")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be at least 1")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.warmup_steps < 0 or self.noise_repeats < 1 or self.encoder_warmup_steps < 0:
            raise ValueError("warmup_steps and encoder_warmup_steps must be >= 0 and noise_repeats >= 1")
        if self.max_records is not None and self.max_records < 1:
            raise ValueError("max_records must be at least 1")
        if self.temperature_mm <= 0:
            raise ValueError("the ranking temperature must be positive")
        self.data, self.out = Path(self.data), Path(self.out)
        if self.denoiser is None and self.kind != "idrank":
            self.denoiser = IDGEN_CONFIG if self.kind == "idgen" else EXPGEN_CONFIG

    def to_json(self) -> str:
        def plain(value: Any) -> Any:
            if isinstance(value, Path):
                return str(value)
            if isinstance(value, dict):
                return {k: plain(v) for k, v in value.items()}
            if isinstance(value, (list, tuple)):
                return [plain(v) for v in value]
            return value

        return json.dumps(plain(asdict(self)), sort_keys=True)
