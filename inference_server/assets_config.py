"""Where the user's licensed assets are: command-line flags, environment variables, a config file.

Precedence: flag > environment variable > config file. Nothing here loads a model; it only says which
file is meant, where that choice came from, and what is missing (``ofer-worker doctor`` prints it).
With nothing configured at all the worker runs on the shipped DEMO assets; a partly configured set is
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
            out += [f"checkpoint {stem}" for stem in CHECKPOINT_NAMES.values() if find_checkpoint(folder, stem) is None]
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


#: Largest config file read (a real one is a few hundred bytes).
MAX_CONFIG_BYTES = 1 << 20
_CONFIG_KEYS = {key: name for name, (_env, key, _what, _where) in ASSETS.items()}


def _config_text(path: Path, problems: list[str]) -> str | None:
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            problems.append(f"config file {path} is larger than {MAX_CONFIG_BYTES} bytes; it was ignored")
            return None
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f"config file {path} could not be read ({exc}); it was ignored")
        return None


def _config_path(path: Path, where: str, value: object, problems: list[str]) -> str | None:
    if not isinstance(value, str) or not value or "\x00" in value or len(value) > 4096:
        problems.append(
            f'config file {path}: {where} must be a path string (e.g. {where.split(".")[-1]} = "/path/to/file"), '
            f"got {type(value).__name__}; it was ignored"
        )
        return None
    return value


def _read_config(path: Path, problems: list[str]) -> dict[str, str]:
    """The ``[assets]`` paths of the config file, checked against the schema; each fault named in ``problems``.

    Schema: an ``[assets]`` table (or, as before, top-level keys) whose keys are the asset names in lower
    case (``flame_model``, ``checkpoint_dir``, ``front_face_indices``, ``landmark_embedding``) and whose
    values are path strings. A bad key or value is reported and ignored; the rest of the file still counts.
    """
    if not path.is_file():
        return {}
    text = _config_text(path, problems)
    if text is None:
        return {}
    try:
        data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError, ValueError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        problems.append(f"config file {path} could not be read ({reason}); it was ignored")
        return {}
    if "assets" in data and not isinstance(data["assets"], dict):
        problems.append(
            f"config file {path}: key 'assets' must be a table ([assets] followed by name = \"path\" lines), "
            f"got {type(data['assets']).__name__}; it was ignored"
        )
        return {}
    in_table = isinstance(data.get("assets"), dict)
    section = data["assets"] if in_table else data
    out: dict[str, str] = {}
    for key, value in section.items():
        where = f"assets.{key}" if in_table else key
        if key not in _CONFIG_KEYS:
            if in_table:
                problems.append(
                    f"config file {path}: unknown key '{where}'; known keys: {', '.join(_CONFIG_KEYS)}; it was ignored"
                )
            continue
        checked = _config_path(path, where, value, problems)
        if checked is not None:
            out[key] = checked
    return out


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
    lines = [f"config file: {config.config_file} ({'found' if config.config_file.is_file() else 'not present'})"]
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
        lines.append("-> nothing configured: the DEMO assets (ICT Face Model DEMO head and demo weights) are used.")
    elif config.missing():
        lines.append("-> incomplete: " + ", ".join(config.missing()))
    else:
        lines.append("-> all required user assets found.")
    return lines
