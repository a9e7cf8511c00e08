"""Where the user's licensed assets are: command-line flags, environment variables, a config file.

Precedence: flag > environment variable > config file. Nothing here loads a model; it only says which
file is meant, where that choice came from, and what is missing (``ofer-worker doctor`` prints it).
With nothing configured at all the worker runs on the generated DEMO assets; a partly configured set is
an error (the user clearly meant their own models) that names what is missing.
"""

from __future__ import annotations

import os
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .errors import MissingAssetError

#: name → (environment variable, config key, what it is, where to get it)
ASSETS: dict[str, tuple[str, str, str, str]] = {
    "flame_model": (
        "OFER_FLAME_MODEL",
        "flame_model",
        "FLAME 2020 model (generic_model.pkl)",
        "register and download FLAME 2020 at https://flame.is.tue.mpg.de",
    ),
    "checkpoint_dir": (
        "OFER_CHECKPOINT_DIR",
        "checkpoint_dir",
        "OFER checkpoint folder (model_idgen_flame20.tar, model_expgen_flame20.tar, model_idrank.tar "
        "or their converted .safetensors)",
        "register and download the OFER weights at https://ofer.is.tue.mpg.de",
    ),
    "front_face_indices": (
        "OFER_FRONT_INDICES",
        "front_face_indices",
        "front-face vertex indices (frontindices.npy, 1785 ids)",
        "take pretrained/frontindices.npy from the official OFER release",
    ),
    "landmark_embedding": (
        "OFER_LANDMARK_EMBEDDING",
        "landmark_embedding",
        "FLAME landmark embedding (optional: landmarks, NoW evaluation)",
        "download it with FLAME (flame_static_embedding.pkl or landmark_embedding.npy)",
    ),
}
REQUIRED = ("flame_model", "checkpoint_dir", "front_face_indices")
CHECKPOINT_NAMES = {
    "idgen": "model_idgen_flame20",
    "expgen": "model_expgen_flame20",
    "idrank": "model_idrank",
}


def default_config_path(env: Mapping[str, str] = os.environ) -> Path:
    if env.get("OFER_CONFIG"):
        return Path(env["OFER_CONFIG"]).expanduser()
    base = Path(env.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "ofer-blender" / "config.toml"


def default_cache_dir(env: Mapping[str, str] = os.environ) -> Path:
    """``$OFER_CACHE_DIR`` if set, else the platform's user cache folder + ``ofer-blender``."""
    if env.get("OFER_CACHE_DIR"):
        return Path(env["OFER_CACHE_DIR"]).expanduser()
    if sys.platform == "win32":
        return Path(env.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local") / "ofer-blender" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "ofer-blender"
    return Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ofer-blender"


@dataclass
class AssetChoice:
    name: str
    path: Path | None
    source: str  # "flag", "env OFER_X", "config <file>", or "not set"

    @property
    def exists(self) -> bool:
        return self.path is not None and self.path.exists()


@dataclass
class AssetConfig:
    choices: dict[str, AssetChoice]
    config_file: Path
    problems: list[str] = field(default_factory=list)

    def path(self, name: str) -> Path | None:
        return self.choices[name].path

    @property
    def anything_configured(self) -> bool:
        return any(choice.path is not None for choice in self.choices.values())

    @property
    def use_demo(self) -> bool:
        """Demo assets are used exactly when the user configured nothing."""
        return not self.anything_configured

    def missing(self) -> list[str]:
        """Required assets that are unset or point nowhere, plus checkpoint files absent from the folder."""
        out = [name for name in REQUIRED if not self.choices[name].exists]
        folder = self.path("checkpoint_dir")
        if folder is not None and folder.is_dir():
            out += [
                f"checkpoint {stem}"
                for stem in CHECKPOINT_NAMES.values()
                if find_checkpoint(folder, stem) is None
            ]
        return out

    def require_complete(self) -> None:
        missing = self.missing()
        if missing:
            details = "; ".join(_describe_missing(self, name) for name in missing)
            raise MissingAssetError(
                f"some of your model files are missing: {details}",
                "Set them with flags, environment variables or the config file "
                f"{self.config_file} (run `ofer-worker doctor`), or unset all of them to use the DEMO assets.",
            )


def _describe_missing(config: AssetConfig, name: str) -> str:
    if name.startswith("checkpoint "):
        return f"{name.split()[1]}(.tar|.safetensors) not in {config.path('checkpoint_dir')}"
    choice = config.choices[name]
    what = ASSETS[name][2]
    if choice.path is None:
        return f"{what} is not set"
    return f"{what}: {choice.path} does not exist (from {choice.source})"


def find_checkpoint(folder: Path, stem: str) -> Path | None:
    """The converted project file wins over the official pickle when both are present."""
    for suffix in (".safetensors", ".tar", ".pth", ".pt"):
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _read_config(path: Path, problems: list[str]) -> dict[str, str]:
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as exc:
        problems.append(f"config file {path} could not be read ({exc}); it was ignored")
        return {}
    section = data.get("assets", data)
    return {k: str(v) for k, v in section.items() if isinstance(v, str)}


def resolve_assets(
    flags: Mapping[str, str | os.PathLike[str] | None] | None = None,
    env: Mapping[str, str] = os.environ,
    config_file: Path | None = None,
) -> AssetConfig:
    flags = flags or {}
    config_file = config_file or default_config_path(env)
    problems: list[str] = []
    config = _read_config(config_file, problems)
    choices: dict[str, AssetChoice] = {}
    for name, (env_name, key, _what, _where) in ASSETS.items():
        flag_value = flags.get(name)
        if flag_value:
            choices[name] = AssetChoice(name, Path(flag_value).expanduser(), "flag")
        elif env.get(env_name):
            choices[name] = AssetChoice(name, Path(env[env_name]).expanduser(), f"env {env_name}")
        elif config.get(key):
            choices[name] = AssetChoice(name, Path(config[key]).expanduser(), f"config {config_file}")
        else:
            choices[name] = AssetChoice(name, None, "not set")
    return AssetConfig(choices, config_file, problems)


def doctor_report(config: AssetConfig) -> list[str]:
    """Human-readable lines: what was found where, what is missing and where to get it."""
    lines = [
        f"config file: {config.config_file} ({'found' if config.config_file.is_file() else 'not present'})"
    ]
    for name, (env_name, _key, what, where) in ASSETS.items():
        choice = config.choices[name]
        if choice.path is None:
            state = f"not set (flag, {env_name}, or config) — {where}"
        elif choice.exists:
            state = f"{choice.path}  [from {choice.source}]"
        else:
            state = f"MISSING {choice.path}  [from {choice.source}] — {where}"
        lines.append(f"{what}: {state}")
    lines += config.problems
    if config.use_demo:
        lines.append(
            "-> nothing configured: the DEMO assets (generated stand-in head and demo weights) are used."
        )
    elif config.missing():
        lines.append("-> incomplete: " + ", ".join(config.missing()))
    else:
        lines.append("-> all required user assets found.")
    return lines
