"""The two draws of a reconstruction (inference_server/draw_stage.py), on the DEMO bundle."""

from __future__ import annotations

from dataclasses import replace

import torch

from inference_server.assets_config import resolve_assets
from inference_server.draw_stage import DrawSettings, draw_identities_and_expressions, sample_coefficients
from inference_server.identity_stage import IdentityConditions
from inference_server.photo_inputs import Encodings
from inference_server.pipeline import Reconstructor


def test_the_draws_are_each_networks_own_samples_drawn_side_by_side_or_not() -> None:
    """ExpGen's draw beside IdGen's gives exactly what ExpGen alone gives with its seed (seed + 1), and the
    stage clock hears "rank" (IdGen drawn) before "sample_expressions"."""
    cpu = torch.device("cpu")
    reconstructor = Reconstructor(resolve_assets({}), device="cpu")
    bundle = reconstructor.bundle(cpu)
    flame = reconstructor.flame_layer(bundle, cpu)
    torch.manual_seed(0)
    idgen = torch.nn.functional.normalize(torch.randn(1, 512), dim=1)
    enc = Encodings(idgen=idgen, expgen=torch.randn(1, 1024), idrank=torch.randn(1, 1024))
    conditions = IdentityConditions(idgen=enc.idgen, idrank=enc.idrank)
    settings = DrawSettings(
        sampler="ddim",
        variant="ddim",
        steps=6,
        eta=1.0,
        seed=7,
        n_shapes=10,
        n_expressions=6,
        top_k=3,
        device=cpu,
        concurrent=True,
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    runs, stages = [], []
    try:
        for concurrent in (True, False):
            started: list[str] = []
            draws = draw_identities_and_expressions(
                bundle, flame, conditions, enc, replace(settings, concurrent=concurrent), progress=lambda *a: None,
                should_cancel=lambda: False, stage_started=started.append,
            )  # fmt: skip
            runs.append(draws)
            stages.append(started)
        alone = sample_coefficients(
            bundle.expgen_denoiser, enc.expgen, 6, sampler="ddim", steps=6, eta=1.0, seed=8,
            device=cpu, progress=lambda *a: None, should_cancel=lambda: False,
        )  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    side_by_side, one_after_the_other = runs
    assert side_by_side.concurrent and not one_after_the_other.concurrent
    assert stages == [["rank", "sample_expressions"]] * 2
    assert side_by_side.expressions.shape == (6, 53)
    torch.testing.assert_close(side_by_side.expressions, alone, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(one_after_the_other.expressions, alone, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(side_by_side.ranked.shapes, one_after_the_other.ranked.shapes, rtol=1e-5, atol=1e-6)
    assert side_by_side.ranked.shapes.shape[0] == 10 and len(side_by_side.ranked.keep) == 3
    assert list(side_by_side.ranked.keep) == list(one_after_the_other.ranked.keep)
