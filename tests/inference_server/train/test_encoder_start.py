"""Encoder starts for runs without pretrained encoders: the supervised warm-up and copying another run's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from inference_server.checkpoints import load_networks
from inference_server.train.datasets import DatasetError
from inference_server.train.trainer import Trainer, train

from .test_trainer import tiny_config


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_the_warm_up_fits_the_standardised_targets_and_leaves_the_denoiser_alone(
    synthetic_set: Path, tmp_path: Path
) -> None:
    config = tiny_config(
        "expgen", synthetic_set, tmp_path, steps=1, batch_size=16, freeze="none", encoder_warmup_steps=80,
        encoder_warmup_lr=1e-2,
    )  # fmt: skip
    trainer = Trainer(config)
    assert trainer.networks.denoiser is not None and trainer.networks.farl is not None
    denoiser_before, farl_before = _state(trainer.networks.denoiser), _state(trainer.networks.farl)
    losses = trainer.warm_up_encoders()
    assert len(losses) == 80
    # Standardised targets: predicting the data mean scores ~1; 16 images can be fitted well below it.
    assert np.mean(losses[:5]) > 0.8 and np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    assert all(torch.equal(v, trainer.networks.denoiser.state_dict()[k]) for k, v in denoiser_before.items())
    assert any(not torch.equal(v, trainer.networks.farl.state_dict()[k]) for k, v in farl_before.items())
    trainer.close()


def test_the_warm_up_runs_once_and_a_resumed_run_skips_it(synthetic_set: Path, tmp_path: Path) -> None:
    config = tiny_config("idgen", synthetic_set, tmp_path, steps=3, freeze="none", encoder_warmup_steps=4)
    first = Trainer(config)
    assert len(first.warm_up_encoders()) == 4
    assert first.warm_up_encoders() == []  # already done in this run
    first.close()
    resumed = Trainer(config)
    assert resumed.resume() and resumed.step == 0 and resumed.warmed_up  # saved right after the warm-up
    arc = _state(resumed.networks.arcface)
    assert resumed.warm_up_encoders() == []
    assert all(torch.equal(v, resumed.networks.arcface.state_dict()[k]) for k, v in arc.items())
    resumed.close()
    log = tmp_path / "idgen.log.jsonl"
    logged = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
    assert all("encoder_warmup_mse" not in row for row in logged)  # warm_up_encoders() alone logs nothing


def test_the_warm_up_is_logged_by_run(synthetic_set: Path, tmp_path: Path) -> None:
    config = tiny_config("idgen", synthetic_set, tmp_path, steps=2, freeze="l4", encoder_warmup_steps=5)
    train(config)
    rows = [json.loads(line) for line in (tmp_path / "idgen.log.jsonl").read_text().splitlines()]
    warm = [row for row in rows if "encoder_warmup_mse" in row]
    assert [row["encoder_warmup_step"] for row in warm] == [5]
    assert load_networks(tmp_path / "idgen.safetensors").metadata["provenance"]["step"] == 2


def test_idrank_can_start_its_encoders_from_the_generator_runs(synthetic_set: Path, tmp_path: Path) -> None:
    idgen = train(tiny_config("idgen", synthetic_set, tmp_path / "gen", steps=2, freeze="none"))
    expgen = train(tiny_config("expgen", synthetic_set, tmp_path / "exp", steps=2, freeze="none"))
    config = tiny_config(
        "idrank", synthetic_set, tmp_path / "rank", steps=1, batch_size=2, generator=idgen, n_samples=4,
        sampler="ddim", sampler_steps=3, arcface_init=idgen, farl_init=expgen,
    )  # fmt: skip
    trainer = Trainer(config)
    assert trainer.networks.farl is not None
    for mine, donor in ((trainer.networks.arcface, load_networks(idgen).arcface),
                        (trainer.networks.farl, load_networks(expgen).farl)):  # fmt: skip
        assert donor is not None
        for key, value in donor.state_dict().items():
            torch.testing.assert_close(mine.state_dict()[key], value.to(mine.state_dict()[key].dtype))
    trainer.close()


def test_an_encoder_start_of_another_size_is_refused(synthetic_set: Path, tmp_path: Path) -> None:
    from inference_server.train.presets import PRESETS

    other = train(tiny_config("idgen", synthetic_set, tmp_path / "gen", steps=1, arcface=PRESETS["demo"].arcface))
    with pytest.raises(DatasetError, match="does not fit"):
        Trainer(tiny_config("idgen", synthetic_set, tmp_path / "run", arcface_init=other))


def test_the_shape_warm_up_loss_is_the_front_face_vertex_error_relative_to_the_mean_head(demo_head) -> None:
    from inference_server.flame.layer import FlameLayer
    from inference_server.train.encoder_warmup import warmup_target

    rng = np.random.default_rng(0)
    shapes = rng.normal(0, 1, (64, 300)).astype(np.float32)
    shapes[:, 32:] *= 0.3
    target = warmup_target(shapes, demo_head)
    flame = FlameLayer(demo_head)
    front = torch.as_tensor(np.asarray(demo_head.front_face_indices))

    def front_mm(coefficients: np.ndarray) -> np.ndarray:
        return flame.neutral(torch.as_tensor(coefficients)).vertices[:, front].double().numpy() * 1000.0

    truth = front_mm(shapes)
    mean_head = front_mm(shapes.mean(axis=0, keepdims=True))
    mean_error = ((truth - mean_head) ** 2).sum(axis=2).mean()  # mm², what predicting the mean scores
    guess = shapes + rng.normal(0, 0.5, shapes.shape).astype(np.float32)
    guess_error = ((truth - front_mm(guess)) ** 2).sum(axis=2).mean(axis=1)  # (64,) mm² per image
    standardised_guess = target.standardise(torch.as_tensor(guess))
    loss = float(target.loss(standardised_guess, torch.as_tensor(shapes)))
    np.testing.assert_allclose(loss, guess_error.mean() / mean_error, rtol=1e-3)
    zero = torch.zeros(64, len(target.keep))  # the data mean, standardised
    np.testing.assert_allclose(float(target.loss(zero, torch.as_tensor(shapes))), 1.0, rtol=1e-3)


def test_frozen_warmed_up_encoders_train_before_step_0_then_stay_fixed_with_batch_statistics(
    synthetic_set: Path, tmp_path: Path
) -> None:
    config = tiny_config("idgen", synthetic_set, tmp_path, steps=4, freeze="all", encoder_warmup_steps=6)
    trainer = Trainer(config)
    start = _state(trainer.networks.arcface)
    assert not any(p.requires_grad for p in trainer.networks.arcface.parameters())
    assert len(trainer.warm_up_encoders()) == 6
    warmed = _state(trainer.networks.arcface)
    assert not torch.equal(warmed["fc.weight"], start["fc.weight"])
    # BatchNorm normalised with the batch during the warm-up and kept what it saw as running statistics.
    assert not torch.equal(warmed["bn1.running_mean"], start["bn1.running_mean"])
    assert not any(p.requires_grad for p in trainer.networks.arcface.parameters())  # frozen again
    trainer.run()
    assert all(torch.equal(v, trainer.networks.arcface.state_dict()[k]) for k, v in warmed.items())
    assert len(trainer.context_cache) > 0  # the fixed encoders ran once per image
    trainer.close()


def test_cached_context_gives_the_same_loss_as_running_the_frozen_encoders(synthetic_set: Path, tmp_path: Path) -> None:
    config = tiny_config("expgen", synthetic_set, tmp_path, steps=1, freeze="all")
    trainer = Trainer(config)
    trainer._set_train_mode()
    batch = trainer.dataset.batch([0, 3, 5])
    cached = trainer._frozen_context(batch)
    assert cached is not None
    with torch.no_grad():
        direct = torch.cat([trainer.networks.farl(batch.image), trainer.networks.arcface(batch.blob)], dim=1)  # type: ignore[misc]
    torch.testing.assert_close(cached, direct)
    assert sorted(trainer.context_cache) == [0, 3, 5]
    assert trainer._frozen_context(trainer.dataset.batch([5, 0])) is not None and len(trainer.context_cache) == 3
    trainer.close()


def test_max_records_trains_on_the_first_records_only(synthetic_set: Path, tmp_path: Path) -> None:
    trainer = Trainer(tiny_config("idgen", synthetic_set, tmp_path, max_records=5))
    assert len(trainer.dataset) == 5
    assert trainer.dataset.records[4].image.name == "000004.png"
    trainer.close()
    with pytest.raises(ValueError, match="max_records"):
        tiny_config("idgen", synthetic_set, tmp_path, max_records=0)
