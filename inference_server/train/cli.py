"""``ofer-worker train {idgen,expgen,idrank,synth,demo}``.

Several processes: ``torchrun --nproc_per_node K -m inference_server train idgen ...`` (gloo on CPU, nccl
on GPUs); ``--batch-size`` is per process.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from ..errors import WorkerError
from ..progress_bar import ProgressBar


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="train IdGen / ExpGen / IdRank, render synthetic data, demo weights")
    jobs = parser.add_subparsers(dest="job", metavar="JOB", required=True)
    for kind in ("idgen", "expgen", "idrank"):
        job = jobs.add_parser(kind, help=f"train {kind}")
        job.add_argument("--data", type=Path, required=True, help="training data folder")
        job.add_argument("--format", dest="data_format", default="index", choices=("index", "mica", "famos"))
        job.add_argument("--out", type=Path, required=True, help="output folder (resumes a run found there)")
        job.add_argument("--size", default="official", choices=("official", "demo", "tiny"))
        job.add_argument("--steps", type=int, default=1000)
        job.add_argument("--batch-size", type=int, default=16)
        job.add_argument("--lr", type=float, default=1e-6 if kind == "idrank" else 1e-3)
        job.add_argument("--arcface-lr", type=float, default=1e-4)
        job.add_argument("--farl-lr", type=float, default=1e-4)
        job.add_argument("--weight-decay", type=float, default=1e-4)
        job.add_argument("--freeze", default="l4", choices=("all", "l4", "none"))
        job.add_argument("--seed", type=int, default=0)
        job.add_argument("--device", default="auto", help="auto, cpu or cuda")
        job.add_argument("--channel-order", default="BGR", choices=("BGR", "RGB"))
        job.add_argument("--log-every", type=int, default=10)
        job.add_argument("--save-every", type=int, default=200)
        if kind != "idrank":
            job.add_argument(
                "--identity-init", action="store_true",
                help="start the denoiser at eps_hat = x_t (short runs; see train/initialisation.py)",
            )  # fmt: skip
            job.add_argument("--noise-repeats", type=int, default=1, help="(t, noise) draws per image and step")
        job.add_argument(
            "--encoder-warmup-steps", type=int, default=0,
            help="supervised encoder regression before step 0 (no pretrained encoders; see train/encoder_warmup.py)",
        )  # fmt: skip
        job.add_argument("--encoder-warmup-lr", type=float, default=1e-3)
        job.add_argument("--max-records", type=int, help="train on the first N records only")
        job.add_argument("--arcface-init", type=Path, help="start ArcFace from this checkpoint's encoder")
        if kind != "idgen":
            job.add_argument("--farl-init", type=Path, help="start FaRL from this checkpoint's encoder")
        job.add_argument("--init", type=Path, help="start from this project checkpoint of the same kind")
        job.add_argument("--no-resume", action="store_true", help="start over even if OUT holds a run")
        job.add_argument("--no-progress", action="store_true")
        if kind == "idrank":
            job.add_argument("--generator", type=Path, required=True, help="frozen IdGen checkpoint")
            job.add_argument("--n-samples", type=int, default=100)
            job.add_argument("--temperature", type=float, default=1.0, help="target softmax temperature (mm)")
            job.add_argument("--sampler", default="ddpm", choices=("ddpm", "ddim", "dpmsolver", "dpmsolver_sde"))
            job.add_argument("--sampler-steps", type=int)
            job.add_argument(
                "--deviation-init", action="store_true",
                help="start the first rank layer blind to the shared mean mesh, with constant references "
                "(see train/initialisation.py)",
            )  # fmt: skip
            job.add_argument("--cache-samples", action="store_true", help="draw each image's samples once")
            job.add_argument("--flame", type=Path, help="FLAME model (.pkl/.npz); default: the DEMO head")
        job.set_defaults(run=run_train, kind=kind)
    synth = jobs.add_parser("synth", help="render a synthetic occluded data set with ground truth")
    synth.add_argument("--out", type=Path, required=True)
    synth.add_argument("--count", type=int, default=1000)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--workers", type=int, default=0, help="render processes (0: one per CPU core)")
    synth.set_defaults(run=run_synth)
    demo = jobs.add_parser("demo", help="train the DEMO weights on synthetic renders (minutes on a CPU)")
    demo.add_argument("--out", type=Path, required=True)
    demo.add_argument("--images", type=int, help="synthetic training renders (default: the recipe's)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--threads", type=int, help="torch CPU threads (1 on a busy machine)")
    demo.add_argument(
        "--only", nargs="+", choices=("idgen", "expgen", "idrank"), default=(),
        help="train just these (e.g. idgen and expgen in two processes, then idrank); resumes from OUT/work",
    )  # fmt: skip
    demo.add_argument("--data", type=Path, help="an existing synthetic training set (`train synth`)")
    demo.add_argument("--keep-work", action="store_true", help="keep the renders and full-precision runs")
    demo.set_defaults(run=run_demo)


def run_train(args: argparse.Namespace) -> int:
    from .config import TrainConfig
    from .presets import PRESETS
    from .trainer import train

    size = PRESETS[args.size]
    extra: dict[str, Any] = {}
    if args.kind != "idrank":
        extra.update(identity_init=args.identity_init, noise_repeats=args.noise_repeats)
    if args.kind == "idrank":
        extra.update(
            generator=args.generator, n_samples=args.n_samples, temperature_mm=args.temperature,
            sampler=args.sampler, sampler_steps=args.sampler_steps, cache_samples=args.cache_samples,
            deviation_init=args.deviation_init,
            flame=args.flame,
        )  # fmt: skip
    try:
        config = TrainConfig(
            kind=args.kind, data=args.data, out=args.out, data_format=args.data_format, steps=args.steps,
            batch_size=args.batch_size, lr=args.lr, arcface_lr=args.arcface_lr, farl_lr=args.farl_lr,
            weight_decay=args.weight_decay, freeze=args.freeze, seed=args.seed, device=args.device,
            channel_order=args.channel_order, log_every=args.log_every, save_every=args.save_every,
            init=args.init, arcface_init=args.arcface_init, farl_init=getattr(args, "farl_init", None),
            denoiser=getattr(size, args.kind) if args.kind != "idrank" else None,
            arcface=size.arcface, farl=size.farl, idrank=size.idrank, progress=not args.no_progress,
            encoder_warmup_steps=args.encoder_warmup_steps, encoder_warmup_lr=args.encoder_warmup_lr,
            max_records=args.max_records,
            **extra,
        )  # fmt: skip
        path = train(config, resume=not args.no_resume)
    except (WorkerError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(path)
    return 0


def run_synth(args: argparse.Namespace) -> int:
    from .synthetic import write_synthetic_dataset

    bar = ProgressBar()
    index = write_synthetic_dataset(args.out, args.count, seed=args.seed, workers=args.workers,
                                    progress=lambda done, total: bar("rendered", done, total))  # fmt: skip
    print(index)
    return 0


def run_demo(args: argparse.Namespace) -> int:
    from .demo import DemoRecipe, clean_work_folder, train_demo_weights

    recipe = DemoRecipe(seed=args.seed, threads=args.threads)
    if args.images is not None:
        recipe = dataclasses.replace(recipe, train_images=args.images)
    paths = train_demo_weights(args.out, recipe, data=args.data, only=tuple(args.only))
    if paths and not args.keep_work:
        clean_work_folder(args.out)
    for path in paths.values():
        print(path)
    return 0
