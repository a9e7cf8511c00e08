"""Render an OFER result file headless with the add-on's importer (Workbench), for a person to look at.

    .venv/bin/python tools/render_result.py RESULT.npz OUT.png [--identity K] [--expression M] [--spread] [--photo]

Runs with the ``bpy`` wheel (or ``blender -b --python tools/render_result.py -- ARGS``). The head is
imported exactly as File ▸ Import ▸ OFER result does, the chosen hypothesis is selected through the
object's Identity/Expression properties, and a three-quarter view is written as a PNG. ``--photo``
renders from the imported photo camera instead (textured when the result has a texture) and lays the
render over the photo, as camera view shows it.
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


def render(
    result_path: Path, out_path: Path, identity: int, expression: int, spread: bool, size: int, photo: bool = False
) -> None:
    bpy.ops.wm.read_factory_settings(use_empty=True)
    extension = load_extension()
    extension.register()
    try:
        importer = importlib.import_module("ofer_face.ofer_blender.importer")
        head: Any = importer.import_result(bpy.context, result_path)
        head.ofer.identity = identity
        head.ofer.expression = expression
        for message in importer.import_warnings(head):
            print(f"warning: {message}")
        if photo:
            render_over_photo(head, out_path)
            return
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


def render_over_photo(head: Any, out_path: Path, opacity: float = 0.75) -> None:
    """Render from the photo camera and blend the head over the camera's background photo."""
    import tempfile

    import numpy as np

    camera = head.ofer.camera
    if camera is None:
        raise SystemExit(f"no photo camera: {head.ofer.fit_note}")
    scene: Any = bpy.context.scene
    scene.render.engine = "BLENDER_WORKBENCH"
    scene.display.shading.light = "STUDIO"
    scene.display.shading.color_type = "TEXTURE" if head.data.materials else "SINGLE"
    scene.display.shading.single_color = (0.8, 0.62, 0.52)
    scene.render.film_transparent = True
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGBA"
    with tempfile.TemporaryDirectory() as folder:
        scene.render.filepath = str(Path(folder) / "head.png")
        bpy.ops.render.render(write_still=True)
        rendered = _pixels(bpy.data.images.load(scene.render.filepath))
    backgrounds = camera.data.background_images
    width, height = scene.render.resolution_x, scene.render.resolution_y
    if len(backgrounds) and backgrounds[0].image is not None and tuple(backgrounds[0].image.size) == (width, height):
        base = _pixels(backgrounds[0].image)
    else:
        print("warning: no photo of the render's size behind the camera: a grey background instead")
        base = np.full((height, width, 4), 0.5, dtype=np.float32)
    alpha = rendered[..., 3:4] * opacity
    out = base.copy()
    out[..., :3] = base[..., :3] * (1 - alpha) + rendered[..., :3] * alpha
    out[..., 3] = 1.0
    image: Any = bpy.data.images.new("overlay", width, height, alpha=True)
    image.pixels.foreach_set(out.ravel())
    image.filepath_raw = str(out_path)
    image.file_format = "PNG"
    image.save()


def _pixels(image: Any) -> Any:
    import numpy as np

    flat = np.empty(len(image.pixels), dtype=np.float32)
    image.pixels.foreach_get(flat)
    return flat.reshape(image.size[1], image.size[0], 4)


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
    parser.add_argument("--photo", action="store_true", help="render from the photo camera, over the photo")
    args = parser.parse_args(argv)
    render(
        args.result.resolve(), args.output.resolve(), args.identity, args.expression, args.spread, args.size, args.photo
    )
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
