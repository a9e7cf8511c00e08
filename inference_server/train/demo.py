"""The DEMO weights recipe: render synthetic occluded faces, train small IdGen / ExpGen / IdRank on them.

``ofer-worker train demo --out DIR`` runs it and writes ``DIR/DEMO_{idgen,expgen,idrank}.safetensors``
(+ ``.json``) in fp16; the committed copies live in ``inference_server/assets/demo_weights/``
(``ensure_demo_weights`` prefers them). On 2 CPU cores: rendering 16,000 faces ~9 min (one process per
core), IdGen and ExpGen ~40 min each (``--only idgen`` / ``--only expgen`` in two processes run them side
by side, then ``--only idrank``), IdRank ~16 min (most of it drawing the IdGen samples it ranks).
Everything is seeded, so the same torch version gives the same files.

Deviations from the paper's recipe, for a CPU budget and encoders that start from random weights (there
are no pretrained ArcFace / FaRL to start from):

* a supervised **encoder warm-up** stands in for the pretrained encoders (``encoder_warmup``: shape or
  expression regressed from the crops, BatchNorm on batch statistics); the encoders are then frozen, as the
  paper's IdGen keeps ArcFace, and their context is computed once per image;
* several noise draws per image and step (``noise_repeats``) and a warm-up + cosine learning rate instead
  of ReduceLROnPlateau;
* the denoisers start at ε̂ = x_t (``identity_init``: without it a short run's samples drift to std ≈ 12,
  see ``train/initialisation.py``);
* IdRank ranks with the trained IdGen's ArcFace and ExpGen's FaRL (as the paper's three networks all
  start from the same pretrained encoders), trained on a cache of the frozen IdGen's samples
  (``rank_cache``) of renders IdGen never saw (seed ``rank_data_seed``): on its own training renders IdGen's
  samples sit much nearer the truth (4.3 against 5.5 mm) and there the ranker would learn to trust them.
  Without ``OUT/work/idgen.safetensors`` (``--only idrank`` with nothing trained before) it ranks the
  committed IdGen's samples and keeps the committed IdGen / ExpGen files as they are (demo-weights/6).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoints import LoadedNetworks, load_networks, save_project_checkpoint
from ..demo.weights import PACKAGED_DIR
from ..flame.layer import FlameLayer
from ..nets.idrank import IdRank
from .config import TrainConfig
from .presets import PRESETS
from .rank_cache import RankCache, RankFitSettings, cache_rank_inputs, fit_ranker
from .synthetic import INDEX_NAME, write_synthetic_dataset
from .trainer import train

DEMO_RECIPE_VERSION = "demo-weights/6"
DEMO_KINDS = ("idgen", "expgen", "idrank")


@dataclass(frozen=True)
class DemoRecipe:
    """demo-weights/6: the ICT DEMO head, sized to about an hour on two CPU cores shared with other work
    (demo-weights/4 had 16,000 renders and 2,000 + 3,000 / 3,000 steps; see the README for what the
    smaller run costs). demo-weights/6 retrained IdRank only (``rank_*``); IdGen / ExpGen are those of /5."""

    train_images: int = 1600
    #: supervised encoder warm-up (``TrainConfig.encoder_warmup_steps``, see ``encoder_warmup``): the
    #: stand-in for the pretrained ArcFace / FaRL the paper starts from; the encoders are then frozen and
    #: their context computed once per image, so the denoiser steps cost little.
    idgen_warmup_steps: int = 150
    expgen_warmup_steps: int = 150
    idgen_steps: int = 500
    expgen_steps: int = 500
    idrank_steps: int = 500
    #: images per step; each image gets ``noise_repeats`` (t, ε) draws, so the denoisers see
    #: batch_size × noise_repeats rows per step.
    batch_size: int = 64
    noise_repeats: int = 8
    identity_init: bool = True
    encoder_warmup_lr: float = 2e-3
    denoiser_lr: float = 2e-3
    warmup_fraction: float = 0.05
    #: IdRank: rank_images renders of seed rank_data_seed (never seen by IdGen), rank_samples IdGen
    #: samples each (DDIM rank_sampler_steps, η = 1, seed rank_sample_seed + 1000 i), rank_batch images a step
    rank_images: int = 480
    rank_data_seed: int = 1
    rank_sample_seed: int = 7_000_000
    rank_batch: int = 16
    rank_lr: float = 1e-3
    #: the L1 errors of one image's samples differ by ~0.5 mm (std); on 80 validation renders T = 1 mm and
    #: 0.3 mm ranked alike (5.008 / 5.018 mm), 1 mm kept
    rank_temperature_mm: float = 1.0
    rank_input_scale_mm: float = 4.0
    rank_samples: int = 32
    rank_sampler_steps: int = 25
    seed: int = 0
    threads: int | None = None
    save_every: int = 100  # also what an interrupted run resumes from


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


def demo_train_config(kind: str, recipe: DemoRecipe, data: Path, work: Path, *, progress: bool = True) -> TrainConfig:
    """The DEMO run of IdGen or ExpGen (IdRank: ``train_demo_ranker``)."""
    size = PRESETS["demo"]
    common: dict[str, Any] = dict(
        kind=kind, data=data, out=work, seed=recipe.seed, freeze="all", arcface=size.arcface, farl=size.farl,
        idrank=size.idrank, demo=True, progress=progress, save_every=recipe.save_every, device="cpu",
        threads=recipe.threads, lr_schedule="cosine",
    )  # fmt: skip
    steps = recipe.idgen_steps if kind == "idgen" else recipe.expgen_steps
    return TrainConfig(
        steps=steps, batch_size=recipe.batch_size, lr=recipe.denoiser_lr, warmup_steps=_warmup(recipe, steps),
        noise_repeats=recipe.noise_repeats, identity_init=recipe.identity_init,
        encoder_warmup_steps=recipe.idgen_warmup_steps if kind == "idgen" else recipe.expgen_warmup_steps,
        encoder_warmup_lr=recipe.encoder_warmup_lr, denoiser=size.idgen if kind == "idgen" else size.expgen,
        **common,
    )  # fmt: skip


def _warmup(recipe: DemoRecipe, steps: int) -> int:
    return max(1, round(recipe.warmup_fraction * steps))


def train_demo_weights(
    out: Path,
    recipe: DemoRecipe | None = None,
    *,
    data: Path | None = None,
    log: Callable[[str], None] = print,
    progress: bool = True,
    only: tuple[str, ...] = (),
) -> dict[str, Path]:
    """Render the training set (unless ``data`` already holds one), train the three networks, write fp16.

    ``only`` trains just those networks (e.g. IdGen and ExpGen in two processes at once, then IdRank);
    runs resume from ``OUT/work``, so the split gives the same files as one call. The call that trains
    IdRank (last) writes the fp16 files; the others return ``{}``.
    """
    recipe = recipe or DemoRecipe()
    out = Path(out)
    work = out / "work"
    data = Path(data) if data else work / "synthetic_train"
    generators = [kind for kind in DEMO_KINDS[:2] if not only or kind in only]
    if generators and not (data / INDEX_NAME).is_file():  # IdRank renders its own (``train_demo_ranker``)
        log(f"rendering {recipe.train_images} synthetic training images into {data}")
        write_synthetic_dataset(data, recipe.train_images, seed=recipe.seed, workers=0)
    for kind in generators:
        log(f"training {kind}")
        train(demo_train_config(kind, recipe, data, work, progress=progress))
    if only and "idrank" not in only:
        return {}  # IdRank comes last: the call that trains it writes the files
    log("training idrank on the frozen IdGen's samples")
    train_demo_ranker(recipe, work, log=log)
    note = (
        "DEMO weights trained by `ofer-worker train demo` on synthetic occluded renders of the DEMO head "
        "(reduced widths, random-initialised encoders). Not OFER weights; for demonstration only."
    )
    if not (work / "idgen.safetensors").is_file():
        note += " demo-weights/6: IdRank retrained; IdGen and ExpGen are the committed demo-weights/5 files."
    paths = {}
    for kind in DEMO_KINDS:
        paths[kind] = demo_file(out, kind)
        if (work / f"{kind}.safetensors").is_file():
            _to_fp16(work / f"{kind}.safetensors", paths[kind], note, recipe)
        else:  # IdGen / ExpGen not trained here: the committed files, unchanged (see ``rank_donors``)
            source = packaged_file(kind)
            shutil.copyfile(source, paths[kind])
            shutil.copyfile(source.with_suffix(".json"), paths[kind].with_suffix(".json"))
    stamp = {"version": DEMO_RECIPE_VERSION, "seed": recipe.seed, "demo": True, "torch": torch.__version__}
    (out / "DEMO_WEIGHTS.json").write_text(json.dumps(stamp, indent=1) + "\n", encoding="utf-8")
    return paths


def clean_work_folder(out: Path) -> None:
    shutil.rmtree(Path(out) / "work", ignore_errors=True)


def packaged_file(kind: str) -> Path:
    path = PACKAGED_DIR / f"DEMO_{kind}.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: train IdGen and ExpGen first (--only idgen / --only expgen)")
    return path


def rank_donors(work: Path) -> tuple[LoadedNetworks, LoadedNetworks]:
    """(IdGen, IdRank-with-its-encoders): from this run's IdGen / ExpGen, else the committed DEMO files."""
    if (work / "idgen.safetensors").is_file():
        idgen = load_networks(work / "idgen.safetensors")
        expgen = load_networks(work / "expgen.safetensors")
        assert expgen.farl is not None
        rank_net = IdRank(PRESETS["demo"].idrank)
        encoders = LoadedNetworks("idrank", idgen.arcface, farl=expgen.farl, rank_net=rank_net, metadata={"demo": True})
    else:
        idgen, encoders = load_networks(packaged_file("idgen")), load_networks(packaged_file("idrank"))
    for networks in (idgen, encoders):
        networks.eval()
        for module in networks.modules().values():
            module.float().requires_grad_(False)
    return idgen, encoders


def train_demo_ranker(recipe: DemoRecipe, work: Path, *, log: Callable[[str], None] = print) -> Path:
    """Render the ranker's renders, cache IdGen's samples of them, fit IdRank; writes work/idrank.safetensors."""
    from ..demo.head import generate_demo_head

    if recipe.threads:
        torch.set_num_threads(recipe.threads)
    data = work / "synthetic_rank"
    if not (data / INDEX_NAME).is_file():
        log(f"rendering {recipe.rank_images} renders of seed {recipe.rank_data_seed} for IdRank into {data}")
        write_synthetic_dataset(data, recipe.rank_images, seed=recipe.rank_data_seed, workers=0)
    idgen, networks = rank_donors(work)
    head = generate_demo_head()
    flame = FlameLayer(head)
    front = torch.as_tensor(np.asarray(head.front_face_indices))
    cache_path = work / "rank_cache.npz"
    if cache_path.is_file():
        cache = RankCache.load(cache_path)
    else:
        log(f"drawing {recipe.rank_samples} IdGen samples for each of {recipe.rank_images} renders")
        cache = cache_rank_inputs(
            idgen, networks, flame, front, data, range(recipe.rank_images), n_samples=recipe.rank_samples,
            sampler_steps=recipe.rank_sampler_steps, seed=recipe.rank_sample_seed,
        )  # fmt: skip
        cache.save(cache_path)
    settings = RankFitSettings(
        steps=recipe.idrank_steps, batch_images=recipe.rank_batch, lr=recipe.rank_lr,
        temperature_mm=recipe.rank_temperature_mm, input_scale_mm=recipe.rank_input_scale_mm, seed=recipe.seed,
    )  # fmt: skip
    with torch.no_grad():
        mean_head_mm = flame.neutral(torch.zeros(1, 300)).vertices[0, front] * 1000.0
    torch.manual_seed(recipe.seed)
    rank_net = IdRank(PRESETS["demo"].idrank)
    with torch.enable_grad():
        losses = fit_ranker(rank_net, cache, mean_head_mm, settings)
    log(f"IdRank ListNet loss {losses[0]:.3f} -> {sum(losses[-50:]) / len(losses[-50:]):.3f} (last 50 steps)")
    provenance = {
        "kind": "idrank", "last_loss": losses[-1], "rank_fit": settings.__dict__, "images": len(cache.truth_mm),
    }  # fmt: skip
    out = LoadedNetworks(
        "idrank", networks.arcface, farl=networks.farl, rank_net=rank_net.eval(),
        metadata={"demo": True, "provenance": provenance},
    )  # fmt: skip
    return save_project_checkpoint(work / "idrank.safetensors", out)
