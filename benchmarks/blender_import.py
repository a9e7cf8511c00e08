"""Time the add-on's import of one result file into Blender (the ``bpy`` wheel, headless).

Run by ``benchmarks/reconstruction.py`` in its own process (torch and bpy must not share one):
``.venv/bin/python benchmarks/blender_import.py RESULT.npz [--repeats 3]``. Prints one JSON line:
``{"seconds": [...], "shape_keys": K, "vertices": V}``; each repeat starts from an empty scene.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
LOADER = ROOT / "tests" / "ofer_blender" / "extension_loader.py"


def _extension_loader() -> ModuleType:
    """The test suite's loader: it mounts ofer_blender/ + inference_server/ as one extension package."""
    spec = importlib.util.spec_from_file_location("ofer_bench_extension_loader", LOADER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("result", type=Path)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import bpy

    loader = _extension_loader()
    seconds = []
    keys = vertices = 0
    for _ in range(args.repeats):
        bpy.ops.wm.read_factory_settings(use_empty=True)
        root = loader.load_extension()
        root.register()  # the importer stores its state in the add-on's registered properties
        try:
            importer = loader.addon_module("ofer_blender.importer")
            start = time.perf_counter()
            obj = importer.import_result(bpy.context, str(args.result))
            seconds.append(time.perf_counter() - start)
            keys = len(obj.data.shape_keys.key_blocks) if obj.data.shape_keys else 0
            vertices = len(obj.data.vertices)
        finally:
            root.unregister()  # bpy hangs at exit while property callbacks are registered
    print(json.dumps({"seconds": seconds, "shape_keys": keys, "vertices": vertices}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
