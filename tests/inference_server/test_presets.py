"""Speed presets: the table is valid for the pipeline, and requests resolve to the preset's sampler."""

from __future__ import annotations

import dataclasses

import pytest

from inference_server.diffusion import SAMPLER_NAMES
from inference_server.errors import BadRequestError
from inference_server.pipeline import SAMPLER_VARIANTS
from inference_server.presets import DEFAULT_PRESET, PRESETS, Preset, apply_preset, resolve_preset
from inference_server.protocol import SAMPLERS, ReconstructArgs


def _args(**kw: object) -> ReconstructArgs:
    return ReconstructArgs(image="a.jpg", output="a.npz", **kw)  # type: ignore[arg-type]


def test_the_two_presets_exist_and_run_on_the_pipelines_samplers() -> None:
    assert set(PRESETS) == {"fast", "fidelity"} and DEFAULT_PRESET in PRESETS
    for name, preset in PRESETS.items():
        assert preset.name == name
        assert preset.sampler in SAMPLERS and SAMPLER_VARIANTS[preset.sampler] in SAMPLER_NAMES
    assert (PRESETS["fidelity"].sampler, PRESETS["fidelity"].steps) == ("ddpm", 1000)
    assert PRESETS["fast"].steps * 10 <= PRESETS["fidelity"].steps


@pytest.mark.parametrize("name", ["fast", "fidelity"])
def test_apply_preset_sets_sampler_steps_and_eta(name: str) -> None:
    preset = PRESETS[name]
    out = apply_preset(_args(extra={"preset": name}))
    assert (out.sampler, out.steps, out.extra["eta"], out.extra["preset"]) == (
        preset.sampler,
        preset.steps,
        preset.eta,
        name,
    )


def test_explicit_steps_win_and_no_preset_changes_nothing() -> None:
    assert apply_preset(_args(steps=7, extra={"preset": "fast"})).steps == 7
    plain = _args(sampler="ddim", steps=30)
    assert apply_preset(plain) == plain


def test_unknown_preset_is_a_clear_error() -> None:
    with pytest.raises(BadRequestError, match="unknown preset 'turbo'") as info:
        resolve_preset("turbo")
    assert "fast" in info.value.fix and "fidelity" in info.value.fix
    with pytest.raises(BadRequestError):
        apply_preset(_args(extra={"preset": ["fast"]}))


def test_bad_preset_definitions_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown sampler"):
        Preset("x", "euler", 10, 0.0, "")
    with pytest.raises(ValueError, match="steps"):
        Preset("x", "ddpm", 0, 0.0, "")
    with pytest.raises(ValueError, match="eta"):
        dataclasses.replace(PRESETS["fast"], eta=2.0)
