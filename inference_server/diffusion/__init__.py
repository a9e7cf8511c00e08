"""Diffusion for OFER's IdGen and ExpGen: the noise schedule and the samplers (this package imports torch)."""

from .samplers import (
    DEFAULT_STEPS,
    SAMPLER_NAMES,
    SamplerPlan,
    make_generator,
    plan_sampler,
    run_plan,
    sample,
)
from .schedule import NoiseSchedule

__all__ = [
    "DEFAULT_STEPS",
    "SAMPLER_NAMES",
    "NoiseSchedule",
    "SamplerPlan",
    "make_generator",
    "plan_sampler",
    "run_plan",
    "sample",
]
