"""Speed presets the user picks from: which sampler, how many steps, which η (standard library only).

- ``fidelity``: the paper's sampler, ancestral DDPM over all 1000 steps.
- ``fast``: DPM-Solver++(2M) in its stochastic form (the contract's ``dpmsolver``) with 20 steps, 50×
  fewer network evaluations. Chosen by measurement (benchmarks/README.md, "fast vs fidelity"): on the
  DEMO weights its mean mesh is as close to fidelity's as two fidelity runs with different seeds are to
  each other (about 3 mm over 100 samples), shape spread is about 6 % narrower, expression spread equal;
  strided DDIM η = 1 needs 50 steps for a similar result.

A request selects a preset with ``extra["preset"]``; ``apply_preset`` turns it into the request's own
``sampler`` / ``steps`` / ``extra["eta"]`` fields, which the pipeline already reads. An explicit
``steps`` in the request wins over the preset's.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .errors import BadRequestError
from .protocol import SAMPLERS, ReconstructArgs


@dataclass(frozen=True)
class Preset:
    """One sampler setting, in the contract's vocabulary (``sampler`` is one of ``protocol.SAMPLERS``)."""

    name: str
    sampler: str
    steps: int
    eta: float
    description: str

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise ValueError(f"preset {self.name!r}: unknown sampler {self.sampler!r}")
        if not 1 <= self.steps <= 1000:
            raise ValueError(f"preset {self.name!r}: steps must be 1..1000, got {self.steps}")
        if not 0.0 <= self.eta <= 1.0:
            raise ValueError(f"preset {self.name!r}: eta must be in [0, 1], got {self.eta}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


PRESETS: dict[str, Preset] = {
    "fast": Preset("fast", "dpmsolver", 20, 0.0, "DPM-Solver++(2M) SDE, 20 steps: about 50x fewer network calls"),
    "fidelity": Preset("fidelity", "ddpm", 1000, 0.0, "DDPM, 1000 steps, as in the paper"),
}
DEFAULT_PRESET = "fidelity"


def resolve_preset(name: str) -> Preset:
    """The preset called ``name``; a clear error naming the choices otherwise."""
    try:
        return PRESETS[name]
    except (KeyError, TypeError):
        raise BadRequestError(
            f"unknown preset {name!r}",
            f"Choose one of: {', '.join(sorted(PRESETS))}, or give 'sampler' and 'steps' instead.",
        ) from None


def apply_preset(args: ReconstructArgs) -> ReconstructArgs:
    """``args`` with the sampler, steps and η of ``args.extra["preset"]``; unchanged without a preset.

    The preset sets ``sampler`` and ``extra["eta"]``; ``steps`` comes from the preset unless the request
    gave its own. The preset's name stays in ``extra`` so the result's metadata can show it.
    """
    name = args.extra.get("preset")
    if name is None:
        return args
    preset = resolve_preset(name)
    extra = {**args.extra, "eta": preset.eta}
    steps = args.steps if args.steps is not None else preset.steps
    return dataclasses.replace(args, sampler=preset.sampler, steps=steps, extra=extra)
