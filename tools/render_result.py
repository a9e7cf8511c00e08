"""Render an OFER result file headless with the add-on's importer (Workbench), for a person to look at.

    .venv/bin/python tools/render_result.py RESULT.npz OUT.png [--identity K] [--expression M] [--spread]

Runs with the ``bpy`` wheel (or ``blender -b --python tools/render_result.py -- ARGS``). The head is
imported exactly as File ▸ Import ▸ OFER result does, the chosen hypothesis is selected through the
object's Identity/Expression properties, and a front view is written as a PNG.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import bpy

ROOT = Path(__file__).resolve().parents[1]


def load_extension(name: str = "ofer_face") -> ModuleType:
    """Import the repository root as the extension package, the way Blender does."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def render(result_path: Path, out_path: Path, identity: int, expression: int, spread: bool, size: int) -> None:
    bpy.ops.wm.read_factory_settings(use_empty=True)
    extension = load_extension()
    extension.register()
    try:
        importer = importlib.import_module("ofer_face.ofer_blender.importer")
        head: Any = importer.import_result(bpy.context, result_path)
        head.ofer.identity = identity
        head.ofer.expression = expression
        scene: Any = bpy.context.scene
        depsgraph = bpy.context.evaluated_depsgraph_get()
        corners = [head.matrix_world @ v.co for v in head.evaluated_get(depsgraph).to_mesh().vertices]
        head.evaluated_get(depsgraph).to_mesh_clear()
        lo = [min(c[i] for c in corners) for i in range(3)]
        hi = [max(c[i] for c in corners) for i in range(3)]
        centre = [(a + b) / 2 for a, b in zip(lo, hi, strict=True)]
        extent = max(hi[0] - lo[0], hi[2] - lo[2])
        camera_data: Any = bpy.data.cameras.new("camera")
        camera_data.lens = 50.0
        camera: Any = bpy.data.objects.new("camera", camera_data)
        distance = 1.4 * extent / (2 * math.tan(camera_data.angle / 2))
        camera.location = (centre[0] + 0.35 * distance, centre[1] - distance, centre[2] + 0.1 * distance)
        direction = camera.location - type(camera.location)(centre)
        camera.rotation_euler = (-direction).to_track_quat("-Z", "Y").to_euler()
        scene.collection.objects.link(camera)
        scene.camera = camera
        scene.render.engine = "BLENDER_WORKBENCH"
        scene.display.shading.light = "STUDIO"
        scene.display.shading.color_type = "VERTEX" if spread else "SINGLE"
        if spread:
            head.ofer.spread_display = "IDENTITY"
        scene.display.shading.single_color = (0.8, 0.62, 0.52)
        scene.display.shading.show_cavity = True
        scene.render.resolution_x = scene.render.resolution_y = size
        scene.render.filepath = str(out_path)
        scene.render.image_settings.file_format = "PNG"
        bpy.ops.render.render(write_still=True)
    finally:
        extension.unregister()  # the bpy module hangs at exit while Python update callbacks are registered


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[sys.argv.index("--") + 1 :] if "--" in sys.argv else sys.argv[1:]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("result", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--identity", type=int, default=1)
    parser.add_argument("--expression", type=int, default=0)
    parser.add_argument("--spread", action="store_true", help="colour by the identity spread")
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args(argv)
    render(args.result.resolve(), args.output.resolve(), args.identity, args.expression, args.spread, args.size)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
