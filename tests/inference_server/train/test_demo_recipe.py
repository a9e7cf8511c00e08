"""The DEMO weights recipe end to end, at toy step counts on the shared synthetic set."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from inference_server.checkpoints import load_networks
from inference_server.train.demo import DEMO_KINDS, DemoRecipe, train_demo_weights

TOY = DemoRecipe(
    idgen_steps=2, expgen_steps=2, idrank_steps=1, idgen_warmup_steps=2, expgen_warmup_steps=2, batch_size=4,
    noise_repeats=2, rank_batch=2, rank_samples=4, rank_sampler_steps=3, rank_images=6, threads=1,
)  # fmt: skip


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    networks = load_networks(path)
    return {f"{name}.{key}": value for name, module in networks.modules().items()
            for key, value in module.state_dict().items()}  # fmt: skip


def _quiet(_message: str) -> None:
    """The recipe's log, discarded."""


@pytest.fixture(scope="module")
def one_call(synthetic_set: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return train_demo_weights(tmp_path_factory.mktemp("demo"), TOY, data=synthetic_set, progress=False, log=_quiet)


def test_the_recipe_writes_three_fp16_demo_files_that_load(one_call: dict[str, Path]) -> None:
    assert sorted(one_call) == sorted(DEMO_KINDS)
    for kind, path in one_call.items():
        networks = load_networks(path)
        assert networks.kind == kind and networks.metadata["demo"] is True
        provenance = networks.metadata["provenance"]
        assert provenance["stored_dtype"] == "float16" and provenance["recipe"]["identity_init"] is True
        stored = load_file(path)
        assert {v.dtype for k, v in stored.items() if "num_batches" not in k} == {torch.float16}
    # The committed copies must stay under the 20 MB the repository allows for them.
    assert sum(p.stat().st_size for p in one_call.values()) < 20 * 1024 * 1024


def test_split_runs_give_the_same_files_as_one_call(
    one_call: dict[str, Path], synthetic_set: Path, tmp_path: Path
) -> None:
    assert train_demo_weights(tmp_path, TOY, data=synthetic_set, progress=False, log=_quiet, only=("expgen",)) == {}
    assert train_demo_weights(tmp_path, TOY, data=synthetic_set, progress=False, log=_quiet, only=("idgen",)) == {}
    split = train_demo_weights(tmp_path, TOY, data=synthetic_set, progress=False, log=_quiet, only=("idrank",))
    for kind in DEMO_KINDS:
        a, b = _tensors(one_call[kind]), _tensors(split[kind])
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=f"{kind} {key}")


def test_idrank_ranks_with_the_warmed_up_encoders_of_idgen_and_expgen_unchanged(one_call: dict[str, Path]) -> None:
    idgen, expgen, idrank = (load_networks(one_call[kind]) for kind in ("idgen", "expgen", "idrank"))
    assert "encoder_warmup_mse_first_last" in idgen.metadata["provenance"]
    assert "encoder_warmup_mse_first_last" in expgen.metadata["provenance"]
    pairs = ((idrank.arcface, idgen.arcface), (idrank.farl, expgen.farl))
    for mine, donor in pairs:
        assert mine is not None and donor is not None
        for key, value in donor.state_dict().items():
            assert torch.equal(mine.state_dict()[key], value), key  # frozen: IdRank did not change them
