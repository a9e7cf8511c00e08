"""Where the user's model files come from: flag > environment > config file; demo only when nothing is set."""

from __future__ import annotations

from pathlib import Path

import pytest

from inference_server.assets_config import doctor_report, find_checkpoint, resolve_assets
from inference_server.errors import MissingAssetError


def _complete(tmp: Path) -> dict[str, Path]:
    (tmp / "ckpt").mkdir()
    for stem in ("model_idgen_flame20", "model_expgen_flame20"):
        (tmp / "ckpt" / f"{stem}.tar").write_bytes(b"x")
    (tmp / "ckpt" / "model_idrank.safetensors").write_bytes(b"x")
    (tmp / "generic_model.pkl").write_bytes(b"x")
    (tmp / "frontindices.npy").write_bytes(b"x")
    return {"flame_model": tmp / "generic_model.pkl", "checkpoint_dir": tmp / "ckpt",
            "front_face_indices": tmp / "frontindices.npy"}  # fmt: skip


def test_nothing_configured_means_demo(tmp_path: Path) -> None:
    config = resolve_assets({}, env={}, config_file=tmp_path / "none.toml")
    assert config.use_demo
    assert any("DEMO" in line for line in doctor_report(config))


def test_precedence_flag_env_config(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text('[assets]\nflame_model = "/from/config.pkl"\ncheckpoint_dir = "/from/config"\n')
    env = {"OFER_FLAME_MODEL": "/from/env.pkl"}
    config = resolve_assets({"flame_model": "/from/flag.pkl"}, env=env, config_file=cfg)
    assert config.path("flame_model") == Path("/from/flag.pkl") and config.choices["flame_model"].source == "flag"
    config = resolve_assets({}, env=env, config_file=cfg)
    assert config.path("flame_model") == Path("/from/env.pkl")
    assert config.path("checkpoint_dir") == Path("/from/config")
    assert config.choices["checkpoint_dir"].source.startswith("config")


def test_complete_set_and_checkpoint_discovery(tmp_path: Path) -> None:
    flags = _complete(tmp_path)
    config = resolve_assets({k: str(v) for k, v in flags.items()}, env={}, config_file=tmp_path / "none.toml")
    assert not config.use_demo and config.missing() == []
    config.require_complete()
    assert find_checkpoint(tmp_path / "ckpt", "model_idrank").suffix == ".safetensors"  # type: ignore[union-attr]


def test_missing_checkpoint_named_in_the_error(tmp_path: Path) -> None:
    flags = _complete(tmp_path)
    (tmp_path / "ckpt" / "model_expgen_flame20.tar").unlink()
    config = resolve_assets({k: str(v) for k, v in flags.items()}, env={}, config_file=tmp_path / "none.toml")
    assert config.missing() == ["checkpoint model_expgen_flame20"]
    with pytest.raises(MissingAssetError, match="model_expgen_flame20"):
        config.require_complete()


def test_broken_config_file_is_reported_not_fatal(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text("this is = = not toml")
    config = resolve_assets({}, env={}, config_file=cfg)
    assert config.use_demo
    assert any("could not be read" in line for line in doctor_report(config))
