"""Draw the face marks over the photo in the Image Editor (only when Blender has a GPU context)."""

from __future__ import annotations

from typing import Any

import bpy

from . import face_marks
from .ids import IMAGE_BOX_KEY, IMAGE_POINTS_KEY

_HANDLE: list[Any] = []
COLOUR = (1.0, 0.75, 0.1, 1.0)


def _draw() -> None:
    import gpu  # imported here: headless Blender builds may lack a GPU backend
    from gpu_extras.batch import batch_for_shader

    context = bpy.context
    space = context.space_data
    image = getattr(space, "image", None)
    region = context.region
    if image is None or region is None or image.size[0] == 0:
        return
    width, height = int(image.size[0]), int(image.size[1])

    def to_region(x: float, y: float) -> tuple[float, float]:
        u, v = face_marks.pixels_to_uv(x, y, width, height)
        x_region, y_region = region.view2d.view_to_region(u, v, clip=False)
        return float(x_region), float(y_region)

    lines: list[tuple[float, float]] = []
    if IMAGE_BOX_KEY in image:
        x0, y0, x1, y1 = (float(v) for v in image[IMAGE_BOX_KEY])
        corners = [to_region(x0, y0), to_region(x1, y0), to_region(x1, y1), to_region(x0, y1)]
        for i in range(4):
            lines += [corners[i], corners[(i + 1) % 4]]
    if IMAGE_POINTS_KEY in image:
        flat = [float(v) for v in image[IMAGE_POINTS_KEY]]
        for i in range(5):
            cx, cy = to_region(flat[2 * i], flat[2 * i + 1])
            size = 6.0
            lines += [(cx - size, cy), (cx + size, cy), (cx, cy - size), (cx, cy + size)]
    if not lines:
        return
    shader: Any = gpu.shader.from_builtin("UNIFORM_COLOR")  # type: ignore[func-returns-value]
    batch = batch_for_shader(shader, "LINES", {"pos": lines})
    gpu.state.line_width_set(2.0)
    shader.uniform_float("color", COLOUR)
    batch.draw(shader)
    gpu.state.line_width_set(1.0)


def enable() -> None:
    if bpy.app.background or _HANDLE:
        return  # no window to draw in
    _HANDLE.append(bpy.types.SpaceImageEditor.draw_handler_add(_draw, (), "WINDOW", "POST_PIXEL"))


def disable() -> None:
    while _HANDLE:
        bpy.types.SpaceImageEditor.draw_handler_remove(_HANDLE.pop(), "WINDOW")
