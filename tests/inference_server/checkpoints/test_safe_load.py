"""Damaged and hostile files give a clear BadCheckpointError, and nothing inside them ever runs."""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path

import pytest
import torch

from inference_server.checkpoints import load_networks
from inference_server.checkpoints.safe_load import read_torch_checkpoint
from inference_server.errors import BadCheckpointError, MissingAssetError


class _RunsACommand:
    """Unpickling this calls os.system(...): what a malicious checkpoint would do."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (self.command,))


def test_valid_file_reads(tmp_path: Path) -> None:
    torch.save({"net": {"w": torch.ones(2)}, "epoch": 3}, tmp_path / "ok.tar")
    data = read_torch_checkpoint(tmp_path / "ok.tar")
    assert data["epoch"] == 3 and torch.equal(data["net"]["w"], torch.ones(2))


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-pickle"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path: Path, legacy: bool) -> None:
    marker = tmp_path / "pwned"
    payload = {"net": _RunsACommand(f"touch {marker}"), "epoch": 1}
    path = tmp_path / "model_idgen_flame20.tar"
    if legacy:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    else:
        torch.save(payload, path)
    with pytest.raises(BadCheckpointError) as info:
        load_networks(path)
    assert "model_idgen_flame20.tar" in str(info.value)
    assert info.value.fix
    assert not marker.exists()


def test_truncated_file(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    torch.save({"net": {"w": torch.randn(1000)}}, buffer)
    path = tmp_path / "model_idrank.tar"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(BadCheckpointError, match=r"model_idrank\.tar cannot be read") as info:
        load_networks(path)
    assert "download the file again" in info.value.fix


def test_random_bytes(tmp_path: Path) -> None:
    path = tmp_path / "noise.tar"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(BadCheckpointError, match=r"noise\.tar"):
        load_networks(path)


def test_zip_without_a_pickle(tmp_path: Path) -> None:
    path = tmp_path / "archive.tar"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("hello.txt", "not a checkpoint")
    with pytest.raises(BadCheckpointError, match=r"archive\.tar"):
        load_networks(path)


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.tar").write_bytes(b"")
    with pytest.raises(BadCheckpointError, match="empty"):
        load_networks(tmp_path / "empty.tar")


def test_nested_reference_bomb_is_refused_quickly(tmp_path: Path) -> None:
    # Each level references the previous one twice: 2**60 leaves if anything walked it naively.
    bomb: list[object] = []
    for _ in range(60):
        bomb = [bomb, bomb]
    torch.save({"net": bomb}, tmp_path / "bomb.tar")
    with pytest.raises(BadCheckpointError, match=r"bomb\.tar.*'net'"):
        load_networks(tmp_path / "bomb.tar")


def test_not_a_dictionary(tmp_path: Path) -> None:
    torch.save(torch.zeros(3), tmp_path / "tensor.tar")
    with pytest.raises(BadCheckpointError, match="holds a Tensor"):
        load_networks(tmp_path / "tensor.tar")


def test_missing_file_is_a_missing_asset(tmp_path: Path) -> None:
    with pytest.raises(MissingAssetError, match="does not exist"):
        load_networks(tmp_path / "absent.tar")
