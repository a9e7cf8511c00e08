"""The two draws of a reconstruction: IdGen's shapes (ranked by IdRank) and ExpGen's expressions.

ExpGen does not need IdGen's result, so on CPU it draws in a background thread while IdGen draws
(``diffusion/background_draw.py``); a request gives the same samples either way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .diffusion import sample
from .diffusion.background_draw import BackgroundDraw, work_share
from .flame.layer import FlameLayer
from .identity_stage import IdentityConditions, RankedIdentities, sample_and_rank_identities
from .model_bundle import DenoiserModel, ModelBundle
from .photo_inputs import Encodings

ProgressFn = Callable[[str, int, int, str], None]


@dataclass(frozen=True)
class DrawSettings:
    """What both draws share: sampler variant, steps, η, seed, sample counts and where they run."""

    sampler: str  # the contract's name, for progress messages
    variant: str  # the diffusion module's sampler
    steps: int
    eta: float
    seed: int
    n_shapes: int
    n_expressions: int
    top_k: int
    device: torch.device
    concurrent: bool


@dataclass
class Draws:
    """What the two draws hand to the stages after them."""

    ranked: RankedIdentities
    expressions: torch.Tensor  # (n_expressions, 53): 50 expression coefficients and the jaw
    concurrent: bool  # ExpGen drew during IdGen's draw


def draw_identities_and_expressions(
    bundle: ModelBundle,
    flame: FlameLayer,
    conditions: IdentityConditions,
    enc: Encodings,
    settings: DrawSettings,
    *,
    progress: ProgressFn,
    should_cancel: Callable[[], bool],
    stage_started: Callable[[str], None],
) -> Draws:
    """IdGen's ranked shapes and ExpGen's samples; ``stage_started("rank" | "sample_expressions")`` marks
    where the caller's clock switches stage (ExpGen's time is then only what is left after the ranking)."""
    s = settings
    expression_draw = BackgroundDraw(
        lambda report, cancel: _expressions(bundle, enc, s, report, cancel),
        concurrent=s.concurrent,
        progress=lambda d, t: progress("sample_expressions", d, t, s.sampler), should_cancel=should_cancel,
        background_share=work_share(bundle.expgen.denoiser, s.n_expressions, bundle.idgen.denoiser,
                                    s.n_shapes * conditions.n_photos),
        caller_keeps_threads=bundle.splits_rows(),
    )  # fmt: skip

    def identity_progress(stage: str, done: int, total: int, message: str) -> None:
        if stage == "rank" and done == 0:
            stage_started("rank")
        progress(stage, done, total, message)

    with expression_draw:
        ranked = sample_and_rank_identities(
            bundle, flame, conditions, n_per_photo=s.n_shapes, top_k=s.top_k, sampler=s.variant, steps=s.steps,
            eta=s.eta, seed=s.seed, device=s.device, progress=identity_progress, should_cancel=should_cancel,
        )  # fmt: skip
        stage_started("sample_expressions")
        expressions = expression_draw.result()
    return Draws(ranked, expressions, expression_draw.concurrent)


def _expressions(
    bundle: ModelBundle,
    enc: Encodings,
    s: DrawSettings,
    report: Callable[[int, int], None],
    cancel: Callable[[], bool],
) -> torch.Tensor:
    return sample_coefficients(
        bundle.expgen_denoiser, enc.expgen, s.n_expressions, sampler=s.variant, steps=s.steps, eta=s.eta,
        seed=s.seed + 1, device=s.device, progress=report, should_cancel=cancel,
    )  # fmt: skip


def sample_coefficients(
    model: DenoiserModel,
    context: torch.Tensor,
    n_samples: int,
    *,
    sampler: str,
    steps: int,
    eta: float,
    seed: int,
    device: torch.device,
    progress: Callable[[int, int], None],
    should_cancel: Callable[[], bool],
) -> torch.Tensor:
    """N coefficient vectors for one image; the context row is shared by all samples."""
    with torch.no_grad():
        return sample(
            model, context, n_samples, model.feature_dim, sampler=sampler, steps=steps, eta=eta, seed=seed,
            device=device, progress=progress, should_cancel=should_cancel,
        )  # fmt: skip
