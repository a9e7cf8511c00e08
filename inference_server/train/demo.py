"""The DEMO weights recipe: render synthetic occluded faces, train small IdGen / ExpGen / IdRank on them.

``ofer-worker train demo --out DIR`` runs it (a few minutes on 2 CPU cores) and writes
``DIR/DEMO_{idgen,expgen,idrank}.safetensors`` (+ ``.json``) in fp16, to be committed to
``inference_server/assets/demo_weights/`` (``ensure_demo_weights`` prefers them there).
STATUS: not converged. With these defaults ExpGen samples are in distribution, but the IdGen still
collapses two input columns of its first 1x1 conv, so those shape coefficients drift far off the data
when sampled (README, "Demo weights"); no trained files are committed yet.
Everything is seeded, so the same torch version gives the same files. The encoders start from random
weights and train fully (there are no pretrained encoders to start from). Deviations from the paper's
recipe, for a CPU budget: several noise draws per image and step (``noise_repeats``) and a warm-up +
cosine learning rate instead of ReduceLROnPlateau.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..checkpoints import load_networks, save_project_checkpoint
from .config import TrainConfig
from .presets import PRESETS
from .synthetic import INDEX_NAME, write_synthetic_dataset
from .trainer import train

DEMO_RECIPE_VERSION = "demo-weights/2"
DEMO_KINDS = ("idgen", "expgen", "idrank")


@dataclass(frozen=True)
class DemoRecipe:
    train_images: int = 2400
    idgen_steps: int = 2600
    expgen_steps: int = 1500
    idrank_steps: int = 150
    #: images per step; each image gets ``noise_repeats`` (t, ε) draws, so the denoisers see
    #: batch_size × noise_repeats rows per step while the encoders run on batch_size images only.
    batch_size: int = 32
    noise_repeats: int = 16
    denoiser_lr: float = 2e-3
    encoder_lr: float = 1e-3
    warmup_fraction: float = 0.05
    rank_batch: int = 8
    rank_lr: float = 1e-4
    rank_temperature_mm: float = 1.0
    rank_samples: int = 32
    rank_sampler_steps: int = 25
    seed: int = 0
    threads: int | None = None


def demo_file(folder: Path, kind: str) -> Path:
    return Path(folder) / f"DEMO_{kind}.safetensors"


def _to_fp16(source: Path, destination: Path, note: str, recipe: DemoRecipe) -> None:
    networks = load_networks(source)
    for module in networks.modules().values():
        module.half()
    networks.metadata["demo"] = True
    provenance = dict(networks.metadata.get("provenance", {}))
    provenance.update(source=DEMO_RECIPE_VERSION, note=note, recipe=recipe.__dict__, stored_dtype="float16")
    provenance.pop("config", None)
    networks.metadata["provenance"] = provenance
    save_project_checkpoint(destination, networks)


def train_demo_weights(
    out: Path,
    recipe: DemoRecipe | None = None,
    *,
    data: Path | None = None,
    log: Callable[[str], None] = print,
    progress: bool = True,
) -> dict[str, Path]:
    """Render the training set (unless ``data`` already holds one), train the three networks, write fp16."""
    recipe = recipe or DemoRecipe()
    out = Path(out)
    work = out / "work"
    data = Path(data) if data else work / "synthetic_train"
    if not (data / INDEX_NAME).is_file():
        log(f"rendering {recipe.train_images} synthetic training images into {data}")
        write_synthetic_dataset(data, recipe.train_images, seed=recipe.seed)
    size = PRESETS["demo"]
    common = dict(
        data=data, out=work, batch_size=recipe.batch_size, seed=recipe.seed, freeze="none",
        arcface_lr=recipe.encoder_lr, farl_lr=recipe.encoder_lr, arcface=size.arcface, farl=size.farl,
        idrank=size.idrank, demo=True, progress=progress, save_every=10**9, device="cpu", threads=recipe.threads,
        lr_schedule="cosine",
    )  # fmt: skip
    denoising = dict(common, lr=recipe.denoiser_lr, noise_repeats=recipe.noise_repeats)

    def warmup(steps: int) -> int:
        return max(1, round(recipe.warmup_fraction * steps))

    log("training IdGen")
    idgen = train(
        TrainConfig(
            kind="idgen", steps=recipe.idgen_steps, denoiser=size.idgen, warmup_steps=warmup(recipe.idgen_steps),
            **denoising,  # type: ignore[arg-type]
        )
    )  # fmt: skip
    log("training ExpGen")
    train(
        TrainConfig(
            kind="expgen", steps=recipe.expgen_steps, denoiser=size.expgen, warmup_steps=warmup(recipe.expgen_steps),
            **denoising,  # type: ignore[arg-type]
        )
    )  # fmt: skip
    log("training IdRank on the frozen IdGen's samples")
    rank_common = dict(common, batch_size=recipe.rank_batch, lr=recipe.rank_lr)
    train(
        TrainConfig(
            kind="idrank", steps=recipe.idrank_steps, generator=idgen, n_samples=recipe.rank_samples,
            sampler="ddim", sampler_steps=recipe.rank_sampler_steps, sampler_eta=1.0, cache_samples=True,
            temperature_mm=recipe.rank_temperature_mm, warmup_steps=warmup(recipe.idrank_steps),
            **rank_common,  # type: ignore[arg-type]
        )
    )  # fmt: skip
    note = (
        "DEMO weights trained by `ofer-worker train demo` on synthetic occluded renders of the DEMO head "
        "(reduced widths, random-initialised encoders). Not OFER weights; for demonstration only."
    )
    paths = {}
    for kind in DEMO_KINDS:
        paths[kind] = demo_file(out, kind)
        _to_fp16(work / f"{kind}.safetensors", paths[kind], note, recipe)
    stamp = {"version": DEMO_RECIPE_VERSION, "seed": recipe.seed, "demo": True, "torch": torch.__version__}
    (out / "DEMO_WEIGHTS.json").write_text(json.dumps(stamp, indent=1) + "\n", encoding="utf-8")
    return paths


def clean_work_folder(out: Path) -> None:
    shutil.rmtree(Path(out) / "work", ignore_errors=True)
