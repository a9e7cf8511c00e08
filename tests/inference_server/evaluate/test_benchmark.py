"""The committed DEMO weights on small held-out synthetic sets (seeds never used in training).

What issue 16 asks of them (README, "Demo weights"): ranked at least 5 % below the average of samples and below
the photo-blind "sample nearest the samples' mean", oracle < ranked, more spread where the face is hidden.
demo-weights/5's IdGen / ExpGen (a short run on a shared CPU) with demo-weights/6's retrained IdRank meet the
ranking goals, oracle < ranked and the larger spread where the face is hidden; IdGen's samples do not beat the
mean head. That is a strict xfail: the benchmark is seeded, so a retrain that meets it turns it into a failure
that asks for this file and the README to be updated.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from inference_server.checkpoints import load_networks
from inference_server.demo.weights import PACKAGED_DIR, ensure_demo_weights, packaged_demo_weights
from inference_server.diffusion import sample
from inference_server.evaluate.benchmark import BenchmarkResult, BenchmarkSettings, run_benchmark
from inference_server.train.datasets import CropDataset, read_index
from inference_server.train.synthetic import SyntheticConfig, write_synthetic_dataset

needs_trained_weights = pytest.mark.skipif(
    packaged_demo_weights() is None, reason=f"no trained DEMO weights committed in {PACKAGED_DIR}"
)


@pytest.fixture(scope="module")
def heldout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("heldout")
    write_synthetic_dataset(folder, 16, seed=424242, config=SyntheticConfig(no_occluder_probability=0.0))
    return folder


@pytest.fixture(scope="module")
def benchmark(heldout: Path) -> BenchmarkResult:
    torch.set_num_threads(1)
    return run_benchmark(ensure_demo_weights(), heldout, BenchmarkSettings(n_samples=24, steps=25, seed=3))


@needs_trained_weights
def test_the_demo_weights_are_committed_small_and_labelled() -> None:
    paths = packaged_demo_weights()
    assert paths is not None and ensure_demo_weights() == paths
    assert sum(p.stat().st_size for p in paths.values()) < 20 * 1024 * 1024
    for kind, path in paths.items():
        networks = load_networks(path)
        assert networks.kind == kind and networks.metadata["demo"] is True
        # demo-weights/6 retrained IdRank only; IdGen and ExpGen are the files of demo-weights/5.
        assert networks.metadata["provenance"]["source"] == ("demo-weights/6" if kind == "idrank" else "demo-weights/5")


@needs_trained_weights
def test_the_best_of_n_beats_the_ranked_choice(benchmark: BenchmarkResult) -> None:
    assert benchmark.images == 16 and benchmark.occluded_images >= 12
    assert benchmark.oracle_mm < benchmark.ranked_mm
    assert np.isfinite([benchmark.average_mm, benchmark.shape_spread_occluded_mm]).all()


@needs_trained_weights
def test_ranked_beats_the_average_of_samples_and_the_photo_blind_pick(benchmark: BenchmarkResult) -> None:
    # README: 10.5 % below the average of samples on 100 held-out renders (demo-weights/5's ranker: 9.8 % above).
    assert benchmark.ranked_mm < 0.95 * benchmark.average_mm
    assert benchmark.ranked_mm < benchmark.nearest_mean_mm


@needs_trained_weights
@pytest.mark.xfail(strict=True, reason="demo-weights/5: 150 warm-up steps; the encoders see too little (README)")
def test_idgen_follows_the_face(benchmark: BenchmarkResult) -> None:
    # The samples' mean is nearer the true face than the mean head, which is all a method blind to the photo has.
    assert benchmark.samples_mean_mm < benchmark.mean_head_mm


@needs_trained_weights
def test_expressions_spread_more_where_the_face_is_hidden(benchmark: BenchmarkResult) -> None:
    # ExpGen sees the mouth when it is bare and pins the jaw; hidden, the jaw is free (README: 1.5x).
    assert benchmark.expression_spread_occluded_mm > 1.3 * benchmark.expression_spread_visible_mm


@needs_trained_weights
def test_shapes_spread_more_where_the_face_is_hidden(benchmark: BenchmarkResult) -> None:
    # Only the raw spread: after a similarity alignment the samples' occluded/visible ratio is no larger than
    # that of other faces of the set (README: 1.032 against 1.036), so the effect is where occluders fall.
    assert benchmark.shape_spread_occluded_mm > benchmark.shape_spread_visible_mm


def _samples(kind: str, folder: Path, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Per image: 24 samples (DDIM 25, η = 1, the same seed for every image) and the true targets."""
    networks = load_networks(ensure_demo_weights()[kind]).eval()
    for module in networks.modules().values():
        module.float()
    assert networks.denoiser is not None
    records = read_index(folder)[:count]
    crops = CropDataset(records)
    drawn, truth = [], []
    with torch.no_grad():
        for i, record in enumerate(records):
            batch = crops.batch([i])
            context = networks.arcface(batch.blob)
            if networks.farl is not None:
                context = torch.cat([networks.farl(batch.image), context], dim=1)
            width = networks.denoiser.config.feature_dim
            x = sample(networks.denoiser, context, 24, width, sampler="ddim", steps=25, eta=1.0, seed=0)
            drawn.append(x.numpy())
            truth.append(record.shape if kind == "idgen" else record.expression)
    return np.array(drawn), np.array(truth)


@needs_trained_weights
def test_shape_and_expression_samples_stay_in_the_training_distribution(heldout: Path) -> None:
    """The data: shape 0–49 ~ N(0, 1) (the ICT modes), 50–299 = 0; expression 0–42 ~ N(0, 0.6²), 43–49 = 0."""
    torch.set_num_threads(1)
    shapes, _ = _samples("idgen", heldout, 4)
    spread = shapes.std(axis=1).mean(axis=0)  # per coefficient, averaged over images
    # demo-weights/5 draws narrower than the prior (per-coefficient std 0.38–0.8 on these images)
    assert spread[:50].min() > 0.3 and spread[:50].max() < 1.5
    assert spread[50:].mean() < 0.5 * spread[:50].mean(), "the coefficients the head lacks stay small"
    assert np.abs(shapes.mean(axis=(0, 1))).max() < 0.75
    expressions, _ = _samples("expgen", heldout, 4)
    assert 0.3 < expressions.std(axis=1)[:, :43].mean() < 0.8


@needs_trained_weights
def test_the_sampled_jaw_follows_the_face(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    write_synthetic_dataset(tmp_path, 32, seed=515151)  # the default occluder mix (some faces bare)
    expressions, truth = _samples("expgen", tmp_path, 32)
    jaw_mean, jaw_true = expressions[:, :, 50].mean(axis=1), truth[:, 50]
    # demo-weights/5: 0.18 on these 32 renders (demo-weights/4 reached > 0.3); weak, but it follows the face
    assert np.corrcoef(jaw_mean, jaw_true)[0, 1] > 0.1
