"""Load the repository root as the extension package, the way Blender does (``bl_ext.<repo>.ofer_face``).

Inside Blender the add-on's modules live under the extension root package and reach the shared
``inference_server`` modules with relative imports; tests reproduce that by importing the root
``__init__.py`` as a package named ``ofer_face`` whose search path is the repository root.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "ofer_face"


def load_extension(name: str = PACKAGE) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(
        name, REPO_ROOT / "__init__.py", submodule_search_locations=[str(REPO_ROOT)]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def addon_module(relative: str, name: str = PACKAGE) -> ModuleType:
    """``addon_module("ofer_blender.job")`` → the module as the extension sees it."""
    load_extension(name)
    return importlib.import_module(f"{name}.{relative}")
