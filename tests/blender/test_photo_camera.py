"""The head on the photo: the imported camera sees the head where the result's pose and camera put it.

Ground truth is computed here with numpy from the file's ``head_pose`` / ``camera`` (the contract's
projection) and a small rasteriser, independently of the add-on; Blender's side is a Workbench render
from the imported camera, read back with PIL.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import bpy
import numpy as np
import pytest
from bpy_extras.object_utils import world_to_camera_view
from mathutils import Vector
from mesh_probe import evaluated_world
from PIL import Image
from registered import ofer_class, ofer_ops, ofer_state

from inference_server.result import read_result


def _rotation(aa: np.ndarray) -> np.ndarray:
    angle = float(np.linalg.norm(aa))
    if angle == 0.0:
        return np.eye(3)
    x, y, z = np.asarray(aa, dtype=np.float64) / angle
    K = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
    return np.eye(3) + math.sin(angle) * K + (1 - math.cos(angle)) * K @ K


def project(points: np.ndarray, pose: np.ndarray, camera: np.ndarray) -> np.ndarray:
    """The contract: p_cam = R p + t; u = cx + f X / -Z, v = cy - f Y / -Z (pixels, top-left origin)."""
    pose = np.asarray(pose, dtype=np.float64)
    p = np.asarray(points, dtype=np.float64) @ _rotation(pose[:3]).T + pose[3:]
    f, cx, cy = np.asarray(camera, dtype=np.float64)
    return np.stack([cx + f * p[:, 0] / -p[:, 2], cy - f * p[:, 1] / -p[:, 2]], axis=1)


def rasterise(uv: np.ndarray, faces: np.ndarray, width: int, height: int) -> np.ndarray:
    """Boolean mask of the pixels whose centres fall inside any projected triangle."""
    mask = np.zeros((height, width), dtype=bool)
    for a, b, c in uv[faces]:
        x0, x1 = max(int(np.floor(min(a[0], b[0], c[0]))), 0), min(int(np.ceil(max(a[0], b[0], c[0]))), width)
        y0, y1 = max(int(np.floor(min(a[1], b[1], c[1]))), 0), min(int(np.ceil(max(a[1], b[1], c[1]))), height)
        if x0 >= x1 or y0 >= y1:
            continue
        xs, ys = np.meshgrid(np.arange(x0, x1) + 0.5, np.arange(y0, y1) + 0.5)
        area = (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
        if abs(area) < 1e-12:
            continue
        w0 = ((b[0] - xs) * (c[1] - ys) - (b[1] - ys) * (c[0] - xs)) / area
        w1 = ((c[0] - xs) * (a[1] - ys) - (c[1] - ys) * (a[0] - xs)) / area
        inside = (w0 >= 0) & (w1 >= 0) & (w0 + w1 <= 1)
        mask[y0:y1, x0:x1] |= inside
    return mask


def render_silhouette(path: Path) -> np.ndarray:
    scene = bpy.context.scene
    scene.render.engine = "BLENDER_WORKBENCH"
    scene.display.shading.light = "FLAT"
    scene.display.shading.color_type = "SINGLE"
    scene.display.render_aa = "OFF"
    scene.render.film_transparent = True
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGBA"
    scene.render.filepath = str(path)
    bpy.ops.render.render(write_still=True)
    return np.asarray(Image.open(path))[..., 3] > 127


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


@pytest.fixture
def fitted(tmp_path, result_factory) -> Path:
    return result_factory(tmp_path / "fitted.npz", fit="ok")


def _import(path: Path):
    assert ofer_ops().import_result(filepath=str(path)) == {"FINISHED"}
    return bpy.context.view_layer.objects.active


def test_camera_projects_every_vertex_where_the_result_says(addon, fitted) -> None:
    result = read_result(fitted)
    assert result.head_pose is not None and result.camera is not None  # a fit="ok" file has them
    head = _import(fitted)
    scene = bpy.context.scene
    assert scene is not None
    camera = scene.camera
    assert camera is not None and camera is head.ofer.camera and camera.type == "CAMERA"
    width, height = result.meta["image"]["width"], result.meta["image"]["height"]
    assert (scene.render.resolution_x, scene.render.resolution_y) == (width, height)
    expected = project(result.identity_vertices[0], result.head_pose, result.camera)
    world = evaluated_world(head)
    seen = np.array([world_to_camera_view(scene, camera, Vector(p))[:] for p in world])
    pixels = np.stack([seen[:, 0] * width, (1 - seen[:, 1]) * height], axis=1)
    np.testing.assert_allclose(pixels, expected, atol=0.02)  # hundredths of a pixel: float32 in Blender
    assert (seen[:, 2] > 0).all()  # in front of the camera


def test_render_from_the_camera_overlays_the_photo(addon, fitted, tmp_path) -> None:
    """Silhouette IoU against the numpy ground truth, for the neutral head and a keyframed expression."""
    result = read_result(fitted)
    assert result.head_pose is not None and result.camera is not None and result.expression_head_pose is not None
    head = _import(fitted)
    width, height = result.meta["image"]["width"], result.meta["image"]["height"]
    truth = rasterise(
        project(result.identity_vertices[0], result.head_pose, result.camera), result.faces, width, height
    )
    rendered = render_silhouette(tmp_path / "neutral.png")
    assert rendered.shape == (height, width)
    assert truth.sum() > 0.05 * width * height  # the head fills a fair part of the photo
    assert iou(rendered, truth) >= 0.9, iou(rendered, truth)

    # the expression with the largest jaw and its own head pose, reached by playback of a keyframe
    m = int(np.argmax(np.linalg.norm(result.jaw_pose, axis=1))) + 1
    head.ofer.expression = 0
    head.keyframe_insert(data_path="ofer.expression", frame=1)
    head.ofer.expression = m
    head.keyframe_insert(data_path="ofer.expression", frame=5)
    head.ofer.expression = 0  # the callback has run; from here on only playback can bring expression m
    bpy.context.scene.frame_set(5)
    pose = result.expression_head_pose[m - 1]
    truth_m = rasterise(project(result.expression_vertices[m - 1], pose, result.camera), result.faces, width, height)
    rendered_m = render_silhouette(tmp_path / "expression.png")
    assert iou(rendered_m, truth_m) >= 0.9, iou(rendered_m, truth_m)
    assert iou(rendered_m, truth_m) > iou(rendered_m, truth) + 0.02  # the new pose, not the neutral one


def test_photo_is_the_camera_background(addon, fitted) -> None:
    result = read_result(fitted)
    head = _import(fitted)
    data = head.ofer.camera.data
    assert data.show_background_images and len(data.background_images) == 1
    image = data.background_images[0].image
    assert Path(bpy.path.abspath(image.filepath)) == Path(result.meta["image"]["path"])
    assert tuple(image.size) == (result.meta["image"]["width"], result.meta["image"]["height"])
    assert head.ofer.fit_note.startswith("On the photo")


def test_missing_photo_warns_and_the_import_still_works(addon, fitted, tmp_path) -> None:
    with np.load(fitted) as archive:
        members = {k: archive[k] for k in archive.files}
    meta = json.loads(str(members["meta_json"]))
    meta["image"]["path"] = str(tmp_path / "gone" / "holiday.jpg")
    members["meta_json"] = np.array(json.dumps(meta))
    moved = tmp_path / "moved.npz"
    np.savez(moved, **members)
    head = _import(moved)
    assert head.ofer.camera is not None and len(head.ofer.camera.data.background_images) == 0
    warnings = json.loads(head["ofer_import_warnings"])
    assert any("holiday.jpg" in w and "not found" in w for w in warnings)


def test_textured_render_from_the_camera_gives_back_the_photo(addon, fitted, tmp_path) -> None:
    """The factory projects the photo into the UV map as the contract lays it out; the textured head
    rendered from the imported camera must then show the photo's own colours where it covers it."""
    result = read_result(fitted)
    _import(fitted)
    scene = bpy.context.scene
    scene.render.engine = "BLENDER_WORKBENCH"
    scene.display.shading.light = "FLAT"
    scene.display.shading.color_type = "TEXTURE"
    scene.display.render_aa = "OFF"
    scene.view_settings.view_transform = "Standard"  # texture bytes out as they went in
    scene.render.film_transparent = True
    scene.render.image_settings.color_mode = "RGBA"
    scene.render.filepath = str(tmp_path / "textured.png")
    bpy.ops.render.render(write_still=True)
    rendered = np.asarray(Image.open(tmp_path / "textured.png")).astype(np.float64)
    photo = np.asarray(Image.open(result.meta["image"]["path"]).convert("RGB")).astype(np.float64)
    covered = rendered[..., 3] == 255
    inner = covered.copy()  # away from the outline, where a pixel mixes surfaces at different depths
    for axis in (0, 1):
        for step in (-2, -1, 1, 2):
            inner &= np.roll(covered, step, axis=axis)
    assert inner.sum() > 10000
    mse = float(((rendered[..., :3] - photo)[inner] ** 2).mean())
    psnr = 10 * math.log10(255.0**2 / mse)
    # measured: 41.9 dB; the same texture flipped in v scores 9.1 dB, mirrored in u 7.7 dB
    assert psnr > 25.0, psnr


def test_texture_is_on_the_material_as_written(addon, fitted) -> None:
    head = _import(fitted)
    result = read_result(fitted)
    material = head.data.materials[0]
    nodes = material.node_tree.nodes
    texture = next(n for n in nodes if n.type == "TEX_IMAGE")
    shader = next(n for n in nodes if n.type == "BSDF_PRINCIPLED")
    assert shader.inputs["Base Color"].links[0].from_node == texture
    image = texture.image
    assert image.packed_file is not None  # a saved .blend keeps it
    png = np.asarray(Image.open(Path(fitted).parent / result.meta["texture"]).convert("RGB"))
    pixels = np.empty(len(image.pixels), dtype=np.float32)
    image.pixels.foreach_get(pixels)
    # Blender's pixel rows start at the bottom (v = 0); the file's row 0 is v = 1 (the contract)
    blender_rgb = pixels.reshape(image.size[1], image.size[0], 4)[..., :3]
    np.testing.assert_allclose(blender_rgb, np.flipud(png) / 255.0, atol=1e-6)


def test_without_a_camera_the_head_stands_on_the_grid_facing_minus_y(addon, result_factory, tmp_path) -> None:
    path = result_factory(tmp_path / "plain.npz")
    result = read_result(path)
    head = _import(path)
    assert head.ofer.camera is None and bpy.context.scene.camera is None
    world = evaluated_world(head)
    assert abs(world[:, 2].min()) < 1e-6  # on the grid
    assert world[:, 2].max() > 0.15  # upright: a head is taller than 15 cm
    nose = int(np.argmax(result.identity_vertices[0][:, 2]))  # the most forward point of the face
    assert world[nose, 1] == pytest.approx(world[:, 1].min(), abs=1e-6)  # the face looks towards −Y


def test_untrusted_fit_imports_without_camera_and_says_why(addon, result_factory, tmp_path) -> None:
    path = result_factory(tmp_path / "untrusted.npz", fit="untrusted")
    result = read_result(path)
    assert result.head_pose is None and result.camera is None
    before = {o.name for o in bpy.data.objects}
    head = _import(path)
    assert head.ofer.camera is None and bpy.context.scene.camera is None
    assert {o.type for o in bpy.data.objects if o.name not in before} == {"MESH", "ARMATURE"}
    reason = result.meta["fit"]["reason"]
    assert reason in head.ofer.fit_note and head.ofer.fit_note.startswith("Not placed on the photo")
    assert any(reason in w for w in json.loads(head["ofer_import_warnings"]))


def test_a_result_made_without_the_fit_stands_on_the_grid_and_says_so(addon, result_factory, tmp_path) -> None:
    """ofer-worker --no-fit: no camera, no texture, and the panel says why, without a warning."""
    path = result_factory(tmp_path / "skipped.npz", fit="skipped")
    head = _import(path)
    assert head.ofer.camera is None and bpy.context.scene.camera is None
    assert head.ofer.fit_note == "Not placed on the photo: skipped on request, --no-fit"
    assert json.loads(head.get("ofer_import_warnings", "[]")) == []
    assert abs(evaluated_world(head)[:, 2].min()) < 1e-6  # on the grid


def test_import_is_one_undoable_operator(addon) -> None:
    """Everything an import makes (head, rig, camera, material, texture, render size) comes from one
    operator with an undo step; the importer pushes no steps of its own (headless Blender has no undo
    stack to exercise, so the flag is what can be checked here)."""
    assert "UNDO" in ofer_class("OFER_OT_import_result").bl_options
    assert "UNDO" in ofer_class("OFER_OT_import_again").bl_options


def test_saved_file_keeps_camera_texture_and_playback(addon, fitted, tmp_path) -> None:
    """After save and reload (texture packed, the result folder gone), playback still moves head and camera;
    no driver needs Python (they work with script auto-execution off)."""
    result = read_result(fitted)
    assert result.camera is not None and result.expression_head_pose is not None  # a fit="ok" file has them
    head = _import(fitted)
    m = result.expression_vertices.shape[0]
    for frame, expression in ((1, 0), (9, m)):
        head.ofer.expression = expression
        head.keyframe_insert(data_path="ofer.expression", frame=frame)
    blend = tmp_path / "scene.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    (Path(fitted).parent / result.meta["texture"]).unlink()
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.wm.open_mainfile(filepath=str(blend))
    head = next(o for o in bpy.data.objects if o.type == "MESH")
    camera = bpy.context.scene.camera
    assert camera is ofer_state(head).camera
    image = head.data.materials[0].node_tree.nodes["Image Texture"].image
    assert image.packed_file is not None
    assert len(image.pixels) == 4 * image.size[0] * image.size[1] > 0  # loads from the .blend alone
    owners = [head.data.shape_keys, ofer_state(head).rig, camera]
    fcurves = [fc for owner in owners for fc in owner.animation_data.drivers]
    assert len(fcurves) == (result.identity_vertices.shape[0] - 1) + m + 4 + 7
    assert all(fc.driver.type == "AVERAGE" or fc.driver.is_simple_expression for fc in fcurves)
    scene = bpy.context.scene
    assert scene is not None
    scene.frame_set(9)
    seen = world_to_camera_view(scene, camera, Vector(evaluated_world(head)[0]))
    u, v = seen[0] * result.meta["image"]["width"], (1 - seen[1]) * result.meta["image"]["height"]
    expected = project(result.expression_vertices[m - 1][:1], result.expression_head_pose[m - 1], result.camera)[0]
    assert (u, v) == pytest.approx(tuple(expected), abs=0.02)


@pytest.mark.parametrize(("size", "says"), [((300, 400), "EXIF rotation"), ((200, 150), "resized")])
def test_a_photo_of_another_size_is_a_warning(addon, fitted, tmp_path, size, says) -> None:
    """A phone photo stored sideways (EXIF-rotated) or a resized copy would not line up: the user is told."""
    with np.load(fitted) as archive:
        members = {k: archive[k] for k in archive.files}
    meta = json.loads(str(members["meta_json"]))
    Image.new("RGB", size, (90, 90, 90)).save(tmp_path / "other.png")
    meta["image"]["path"] = str(tmp_path / "other.png")
    members["meta_json"] = np.array(json.dumps(meta))
    np.savez(tmp_path / "other.npz", **members)
    head = _import(tmp_path / "other.npz")
    warnings = json.loads(head["ofer_import_warnings"])
    assert any("other.png" in w and says in w for w in warnings), warnings
    assert len(head.ofer.camera.data.background_images) == 1  # still shown: the user decides


def test_render_tool_lays_the_head_over_the_photo(fitted, tmp_path) -> None:
    """tools/render_result.py --photo: the photo where the head is not, the head where the projection says."""
    import subprocess
    import sys

    result = read_result(fitted)
    assert result.head_pose is not None and result.camera is not None
    out = tmp_path / "over.png"
    tool = Path(__file__).resolve().parents[2] / "tools" / "render_result.py"
    proc = subprocess.run(
        [sys.executable, str(tool), str(fitted), str(out), "--photo"], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    width, height = result.meta["image"]["width"], result.meta["image"]["height"]
    over = np.asarray(Image.open(out).convert("RGB")).astype(int)
    photo = np.asarray(Image.open(result.meta["image"]["path"]).convert("RGB")).astype(int)
    truth = rasterise(
        project(result.identity_vertices[0], result.head_pose, result.camera), result.faces, width, height
    )
    changed = np.abs(over - photo).sum(axis=2) > 6
    assert over.shape == photo.shape
    assert iou(changed, truth) >= 0.9, iou(changed, truth)


def test_a_pose_without_a_camera_is_a_warning_not_a_wrong_camera(addon, fitted, tmp_path) -> None:
    with np.load(fitted) as archive:
        members = {k: archive[k] for k in archive.files if k != "camera"}
    np.savez(tmp_path / "half.npz", **members)
    head = _import(tmp_path / "half.npz")
    assert head.ofer.camera is None and bpy.context.scene.camera is None
    assert any("head_pose but no camera" in w for w in json.loads(head["ofer_import_warnings"]))
