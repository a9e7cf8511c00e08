"""Draw the face marks over the photo in the Image Editor (only when Blender has a GPU context)."""

from __future__ import annotations

from typing import Any

import bpy

from . import face_list, face_marks
from .ids import IMAGE_BOX_KEY, IMAGE_POINTS_KEY

_HANDLE: list[Any] = []
COLOUR = (1.0, 0.75, 0.1, 1.0)
#: The faces the worker listed (face_list.py): the chosen one (face 0 when none is) brighter.
LISTED_COLOUR = (0.3, 0.8, 1.0, 0.6)
CHOSEN_COLOUR = (0.3, 0.8, 1.0, 1.0)


def _rectangle(to_region: Any, box: Any) -> list[tuple[float, float]]:
    x0, y0, x1, y1 = (float(v) for v in box)
    corners = [to_region(x0, y0), to_region(x1, y0), to_region(x1, y1), to_region(x0, y1)]
    return [point for i in range(4) for point in (corners[i], corners[(i + 1) % 4])]


def _draw_listed_faces(image: Any, to_region: Any, draw_lines: Any) -> None:
    """Each listed face's box and number, so the user sees which face a number means."""
    import blf

    faces = face_list.stored(image)
    chosen = face_list.chosen(image) or 0
    for face in faces:
        colour = CHOSEN_COLOUR if face.index == chosen else LISTED_COLOUR
        draw_lines(_rectangle(to_region, face.box), colour)
        x, y = to_region(face.box[0], face.box[1])
        blf.size(0, 16)
        blf.color(0, *colour)
        blf.position(0, x + 4, y - 18, 0)
        blf.draw(0, str(face.index))


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

    shader: Any = gpu.shader.from_builtin("UNIFORM_COLOR")  # type: ignore[func-returns-value]

    def draw_lines(points: list[tuple[float, float]], colour: tuple[float, ...]) -> None:
        batch = batch_for_shader(shader, "LINES", {"pos": points})
        gpu.state.line_width_set(2.0)
        shader.uniform_float("color", colour)
        batch.draw(shader)
        gpu.state.line_width_set(1.0)

    _draw_listed_faces(image, to_region, draw_lines)
    lines: list[tuple[float, float]] = []
    if IMAGE_BOX_KEY in image:
        lines += _rectangle(to_region, image[IMAGE_BOX_KEY])
    if IMAGE_POINTS_KEY in image:
        flat = [float(v) for v in image[IMAGE_POINTS_KEY]]
        for i in range(5):
            cx, cy = to_region(flat[2 * i], flat[2 * i + 1])
            size = 6.0
            lines += [(cx - size, cy), (cx + size, cy), (cx, cy - size), (cx, cy + size)]
    if lines:
        draw_lines(lines, COLOUR)


def enable() -> None:
    if bpy.app.background or _HANDLE:
        return  # no window to draw in
    _HANDLE.append(bpy.types.SpaceImageEditor.draw_handler_add(_draw, (), "WINDOW", "POST_PIXEL"))


def disable() -> None:
    while _HANDLE:
        bpy.types.SpaceImageEditor.draw_handler_remove(_HANDLE.pop(), "WINDOW")
