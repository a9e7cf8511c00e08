"""The committed DEMO weights on small held-out synthetic sets (seeds never used in training).

What issue 7 asks of them (README, "Demo weights"): ranked < average of samples, oracle < ranked, and more
spread where the face is hidden. The margins are thin for shape (numbers in the README), so these double as
guards: a change to the recipe that loses them fails here.
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
        assert networks.metadata["provenance"]["source"] == "demo-weights/5"


@needs_trained_weights
def test_the_best_of_n_beats_the_ranked_choice(benchmark: BenchmarkResult) -> None:
    assert benchmark.images == 16 and benchmark.occluded_images >= 12
    assert benchmark.oracle_mm < benchmark.ranked_mm
    assert np.isfinite([benchmark.average_mm, benchmark.shape_spread_occluded_mm]).all()


@needs_trained_weights
def test_ranked_beats_the_average_of_samples(benchmark: BenchmarkResult) -> None:
    assert benchmark.ranked_mm < benchmark.average_mm


@needs_trained_weights
def test_idgen_follows_the_face(benchmark: BenchmarkResult) -> None:
    # The samples' mean is nearer the true face than the mean head, which is all a method blind to the photo has.
    assert benchmark.samples_mean_mm < 0.85 * benchmark.mean_head_mm


@needs_trained_weights
def test_expressions_spread_more_where_the_face_is_hidden(benchmark: BenchmarkResult) -> None:
    # ExpGen sees the mouth when it is bare and pins the jaw; hidden, the jaw is free (README: 2.1x).
    assert benchmark.expression_spread_occluded_mm > 1.3 * benchmark.expression_spread_visible_mm


@needs_trained_weights
def test_shapes_spread_more_where_the_face_is_hidden(benchmark: BenchmarkResult) -> None:
    assert benchmark.shape_spread_occluded_mm > benchmark.shape_spread_visible_mm
    # Beyond where the occluders happen to fall: after a similarity alignment (a photo fixes no size), the
    # occluded/visible ratio of the samples exceeds that of other faces of the set (blind to the photo).
    ours = benchmark.aligned_spread_occluded_mm / benchmark.aligned_spread_visible_mm
    blind = benchmark.blind_spread_occluded_mm / benchmark.blind_spread_visible_mm
    assert ours > blind + 0.02


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
    """The data: shape 0–31 ~ N(0, 1), 32–299 ~ N(0, 0.3²); expression ~ N(0, 0.6²)."""
    torch.set_num_threads(1)
    shapes, _ = _samples("idgen", heldout, 4)
    spread = shapes.std(axis=1).mean(axis=0)  # per coefficient, averaged over images
    assert spread[:32].min() > 0.4 and spread[:32].max() < 1.5
    assert 0.15 < spread[32:].mean() < 0.45 and spread[32:].max() < 0.8
    assert np.abs(shapes.mean(axis=(0, 1))).max() < 0.75
    expressions, _ = _samples("expgen", heldout, 4)
    assert 0.3 < expressions.std(axis=1)[:, :50].mean() < 0.8


@needs_trained_weights
def test_the_sampled_jaw_follows_the_face(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    write_synthetic_dataset(tmp_path, 32, seed=515151)  # the default occluder mix (some faces bare)
    expressions, truth = _samples("expgen", tmp_path, 32)
    jaw_mean, jaw_true = expressions[:, :, 50].mean(axis=1), truth[:, 50]
    assert np.corrcoef(jaw_mean, jaw_true)[0, 1] > 0.3
