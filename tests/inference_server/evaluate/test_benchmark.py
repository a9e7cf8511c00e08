"""The committed DEMO weights on a small held-out synthetic occluded set (seeds never used in training)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from inference_server.demo.weights import PACKAGED_DIR, ensure_demo_weights, packaged_demo_weights
from inference_server.evaluate.benchmark import BenchmarkSettings, run_benchmark
from inference_server.train.synthetic import SyntheticConfig, write_synthetic_dataset


@pytest.fixture(scope="module")
def heldout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("heldout")
    config = SyntheticConfig(no_occluder_probability=0.0)  # every image occluded
    write_synthetic_dataset(folder, 16, seed=424242, config=config)
    return folder


# Issue 7 acceptance: these run once `ofer-worker train demo` output is committed to PACKAGED_DIR.
needs_trained_weights = pytest.mark.skipif(
    packaged_demo_weights() is None, reason=f"no trained DEMO weights committed in {PACKAGED_DIR} yet"
)


@needs_trained_weights
def test_the_demo_weights_are_committed_and_small() -> None:
    paths = packaged_demo_weights()
    assert paths is not None
    assert ensure_demo_weights() == paths
    assert sum(p.stat().st_size for p in paths.values()) < 20 * 1024 * 1024


@needs_trained_weights
def test_ranked_beats_average_oracle_beats_ranked_and_occlusion_spreads(heldout: Path) -> None:
    torch.set_num_threads(1)
    settings = BenchmarkSettings(n_samples=24, sampler="ddim", steps=25, seed=3)
    result = run_benchmark(ensure_demo_weights(), heldout, settings)
    assert result.images == 16 and result.occluded_images >= 12
    assert result.oracle_mm < result.ranked_mm < result.average_mm
    assert result.shape_spread_occluded_mm > result.shape_spread_visible_mm
    assert result.expression_spread_occluded_mm > result.expression_spread_visible_mm


@needs_trained_weights
def test_different_faces_give_different_shape_samples(heldout: Path) -> None:
    """The demo IdGen is image-conditioned: the sample means of two faces differ more than the noise."""
    from inference_server.checkpoints import load_networks
    from inference_server.diffusion import sample
    from inference_server.train.datasets import CropDataset, read_index

    torch.set_num_threads(1)
    idgen = load_networks(ensure_demo_weights()["idgen"]).eval()
    assert idgen.denoiser is not None
    idgen.denoiser.float()
    idgen.arcface.float()
    records = read_index(heldout)[:4]
    crops = CropDataset(records)
    means, truths = [], []
    with torch.no_grad():
        for i, record in enumerate(records):
            context = idgen.arcface(crops.batch([i]).blob)
            shapes = sample(idgen.denoiser, context, 24, 300, sampler="ddim", steps=25, eta=1.0, seed=0)
            means.append(shapes[:, :8].mean(dim=0).numpy())
            truths.append(record.shape[:8])  # type: ignore[index]
    means_a, truths_a = np.array(means), np.array(truths)
    # Same seed for every image: any difference between the means comes from the image.
    assert np.abs(means_a - means_a.mean(axis=0)).mean() > 0.2
    # And the predicted leading coefficients follow the true ones.
    assert np.corrcoef(means_a.ravel(), truths_a.ravel())[0, 1] > 0.5
