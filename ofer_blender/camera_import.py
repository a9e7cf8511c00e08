"""The photo's camera: a Blender camera placed by the inverse head pose, with the photo behind it.

The maths is in :mod:`placement` (no bpy). The camera becomes the scene's camera and the render size the
photo's, because only then does a render from it line up with the photo pixel for pixel.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import bpy
import numpy as np

from ..inference_server.result import ReconstructionResult
from . import drivers, placement, skinning


def photo_size(result: ReconstructionResult) -> tuple[int, int] | None:
    image = result.meta.get("image")
    if not isinstance(image, dict):
        return None
    try:
        width, height = int(image["width"]), int(image["height"])
    except (KeyError, TypeError, ValueError):
        return None
    return (width, height) if width > 0 and height > 0 else None


def find_photo(result: ReconstructionResult, source_path: str) -> Path | None:
    """The photo named in the result: as written, else the same name beside the result file."""
    image = result.meta.get("image")
    recorded = str(image.get("path", "")) if isinstance(image, dict) else ""
    if not recorded:
        return None
    folder = Path(source_path).parent
    for candidate in (Path(recorded), folder / recorded, folder / Path(recorded).name):
        if candidate.is_file():
            return candidate
    return None


def build_camera(
    context: Any,
    result: ReconstructionResult,
    head: bpy.types.Object,
    rig_world: np.ndarray,
    source_path: str,
    created: list[Any],
    warnings: list[str],
) -> bpy.types.Object | None:
    """Make the photo camera (None when the result has no usable pose/camera; ``warnings`` says why)."""
    if result.head_pose is None or result.camera is None:
        if (result.head_pose is None) != (result.camera is None):
            have, lack = ("head_pose", "camera") if result.camera is None else ("camera", "head_pose")
            warnings.append(f"The result has a {have} but no {lack}: no photo camera made (the head is unposed)")
        return None
    size = photo_size(result)
    if size is None:
        warnings.append("The result has a camera but no photo size (meta image width/height): no camera made")
        return None
    lens = placement.intrinsics(result.camera, *size)
    data: Any = bpy.data.cameras.new(f"{head.name} photo camera")
    created.append(data)
    data.sensor_fit = "HORIZONTAL"
    data.sensor_width = lens.sensor_width_mm
    data.lens = lens.lens_mm
    data.shift_x = lens.shift_x
    data.shift_y = lens.shift_y
    data.clip_start = placement.CLIP_START_M
    data.clip_end = placement.CLIP_END_M
    camera: Any = bpy.data.objects.new(f"{head.name} photo camera", data)
    created.append(camera)
    camera.rotation_mode = "QUATERNION"
    poses = placement.expression_poses(result.head_pose, result.expression_head_pose, result.jaw_pose.shape[0])
    matrices = [placement.camera_world_matrix(pose, rig_world) for pose in poses]
    placed = [placement.matrix_to_location_quaternion(m) for m in matrices]
    camera.location = tuple(placed[0][0])
    camera.rotation_quaternion = tuple(placed[0][1])
    if result.expression_head_pose is not None:
        locations = np.stack([p[0] for p in placed])
        quaternions = skinning.continuous_quaternions(np.stack([p[1] for p in placed]))
        for axis in range(3):
            drivers.drive_table(camera, "location", axis, head, "expression", locations[:, axis])
        for axis in range(4):
            drivers.drive_table(camera, "rotation_quaternion", axis, head, "expression", quaternions[:, axis])
    _add_background(data, result, source_path, created, warnings)
    scene = context.scene
    scene.render.resolution_x, scene.render.resolution_y = lens.width, lens.height
    scene.render.resolution_percentage = 100
    scene.render.pixel_aspect_x = scene.render.pixel_aspect_y = 1.0
    return camera


def _check_size(image: Any, result: ReconstructionResult, photo: Path, warnings: list[str]) -> None:
    size = photo_size(result)
    loaded = (int(image.size[0]), int(image.size[1]))
    if size is None or loaded == size or loaded == (0, 0):
        return
    if loaded == size[::-1]:
        warnings.append(
            f"The photo '{photo.name}' is stored {loaded[0]}×{loaded[1]} with an EXIF rotation that Blender does "
            f"not apply: the background shows it turned. Save an upright copy ({size[0]}×{size[1]}) beside the "
            "result under the same name and use Import Again."
        )
    else:
        warnings.append(
            f"The photo '{photo.name}' is {loaded[0]}×{loaded[1]} but the result was made from a {size[0]}×{size[1]} "
            "image (another or a resized file?): the background may not line up with the head."
        )


def _add_background(
    data: Any, result: ReconstructionResult, source_path: str, created: list[Any], warnings: list[str]
) -> None:
    photo = find_photo(result, source_path)
    if photo is None:
        image = result.meta.get("image")
        recorded = image.get("path", "") if isinstance(image, dict) else ""
        warnings.append(
            f"The photo '{recorded}' was not found (nor beside the result file): the camera has no background. "
            "Put the photo next to the result file and use Import Again, or add it under the camera's "
            "Background Images."
        )
        return
    existing = {img.as_pointer() for img in bpy.data.images}
    try:
        image = bpy.data.images.load(os.fspath(photo), check_existing=True)
    except RuntimeError as exc:
        warnings.append(f"The photo '{photo}' could not be read ({exc}): the camera has no background")
        return
    if image.as_pointer() not in existing:
        created.append(image)
    _check_size(image, result, photo, warnings)
    background = data.background_images.new()
    background.image = image
    background.frame_method = "STRETCH"  # the camera frame has the photo's aspect: stretch is exact
    background.alpha = 1.0
    data.show_background_images = True
