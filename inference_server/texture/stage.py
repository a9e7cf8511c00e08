"""The texture stage: photo → UV texture of the fitted head, hidden texels filled, PNG beside the result."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..assets_config import default_cache_dir
from ..atomic_io import atomic_write_bytes
from ..blas_threads import one_blas_thread
from ..fit.camera import project as project_points
from ..fit.gaze import eyeball_members, turned_eyes
from ..fit.pose import eye_distance
from ..flame.model_data import FlameModelData
from .bake import occluder_texels, project_texels, sample_photo, texel_zones
from .eyes import eye_texels, highlight_level, paint_eyes
from .fill import mirror_fill, pull_push
from .layout import uv_layout
from .occluder import SkinModelError

#: Side of the texture in texels.
TEXTURE_SIZE = 512


@dataclass
class Texture:
    image: np.ndarray  # (S, S, 3) uint8 sRGB, row 0 is v = 1
    from_photo: np.ndarray  # (S, S) bool: texels taken directly from the photo
    mirrored: np.ndarray  # (S, S) bool: texels copied from the other side
    occluded: np.ndarray  # (S, S) bool: texels the photo shows covered by an occluder
    covered: np.ndarray  # (S, S) bool: texels inside some UV triangle
    eyes_painted: np.ndarray | None = None  # (S, S) bool: eyeball texels painted as an eye (eyes.py)

    def stats(self) -> dict[str, float]:
        n = max(int(self.covered.sum()), 1)
        return {
            "from_photo": round(float(self.from_photo.sum()) / n, 4),
            "mirrored": round(float(self.mirrored.sum()) / n, 4),
            "occluded": round(float(self.occluded.sum()) / n, 4),
            "eyes_painted": round(float(0 if self.eyes_painted is None else self.eyes_painted.sum()) / n, 4),
        }


@dataclass(frozen=True)
class TextureInputs:
    """The fitted head: mesh in the model frame (as posed by ``pose``), its UV layout and landmarks."""

    vertices: np.ndarray  # (V, 3)
    template: np.ndarray  # (V, 3) the symmetric template, for the mirror map
    faces: np.ndarray  # (F, 3)
    uv: np.ndarray  # (T, 2)
    uv_faces: np.ndarray  # (F, 3)
    landmarks: np.ndarray  # (68, 3) on ``vertices``
    pose: np.ndarray  # (6,)
    camera: np.ndarray  # (3,)
    eye_members: tuple[np.ndarray, ...] = ()  # each eyeball's vertex indices (none: no eye is painted)
    eyes_closed: tuple[bool, ...] = ()  # per eye_members: the photo shows that eye closed (lids, not the ball)

    @classmethod
    def of_fit(
        cls, model: FlameModelData, exp_vertices: np.ndarray, exp_landmarks: np.ndarray | None, order: np.ndarray,
        pose_arrays: dict[str, np.ndarray | None], closed: tuple[str, ...] = (),
    ) -> TextureInputs | None:  # fmt: skip
        """The display-first expression (``exp_vertices`` in display order, ``exp_landmarks`` as decoded,
        ``order`` between them) as the fit posed it; None without a pose or a UV map. ``closed``: the eyes
        ("left", "right") the photo shows closed (``fit.gaze.Gaze.closed``)."""
        pose, camera = pose_arrays["head_pose"], pose_arrays["camera"]
        if pose is None or camera is None or model.uv is None or model.uv_faces is None or exp_landmarks is None:
            return None
        vertices = exp_vertices[0].astype(np.float64)
        if pose_arrays.get("eye_pose") is not None:  # the irises are baked where the photo's eyes look
            vertices = turned_eyes(model, vertices, np.asarray(pose_arrays["eye_pose"], dtype=np.float64))
        return cls(
            vertices=vertices, template=model.v_template, faces=model.faces, uv=model.uv,
            uv_faces=model.uv_faces, landmarks=exp_landmarks[order[0]].astype(np.float64),
            pose=pose.astype(np.float64), camera=camera.astype(np.float64), eye_members=eyeball_members(model),
            eyes_closed=(("left" in closed), ("right" in closed)),  # eyeball_members' order: FLAME's left, right
        )  # fmt: skip


@one_blas_thread()  # small products and 2x2 inverses: threads only add waits (blas_threads.py)
def make_texture(
    rgb: np.ndarray, head: TextureInputs, size: int = TEXTURE_SIZE, cache_dir: Path | None = None,
    face_points5: np.ndarray | None = None,
) -> Texture:  # fmt: skip
    """Bake the photo into the UV map of ``head``; raises SkinModelError when no skin is visible.
    ``cache_dir``: where the model's UV layout may be kept between processes (:mod:`.layout`).
    ``face_points5``: the face's five points as the detection placed them, so the hand search asks about
    the same face as the detection's landmark check did and reuses its answer (preprocess/hands.py keeps
    it per photo and face); default: the head's own projected points."""
    height, width = rgb.shape[:2]
    faces = np.asarray(head.faces, dtype=np.int64)
    raster, mirror = uv_layout(head, size, cache_dir)
    projection = project_texels(raster, np.asarray(head.vertices, dtype=np.float64), faces,
                                np.asarray(head.pose, dtype=np.float64), head.camera, width, height)  # fmt: skip
    colors = sample_photo(rgb, projection.pixel)
    zones = texel_zones(raster, np.asarray(head.vertices, dtype=np.float64), faces, head.landmarks)
    xy = project_points(head.landmarks, head.pose, head.camera)
    iod_px = eye_distance(xy)
    points5 = face_points5
    if points5 is None:
        points5 = np.stack([xy[36:42].mean(axis=0), xy[42:48].mean(axis=0), xy[30], xy[48], xy[54]])[:, :2]
    covered_by_occluder, _ = occluder_texels(rgb, colors, projection, zones, iod_px, points5, closed_eyes_x(head))
    valid = projection.visible & ~covered_by_occluder
    if not valid.any():
        raise SkinModelError("no texel of the head is visible in the photo")
    eyes = [eye_texels(raster, head.template, faces, head.uv, head.uv_faces, members) for members in head.eye_members]
    for eye, closed in zip(eyes, head.eyes_closed, strict=False):
        if eye is not None and closed:  # what the photo shows there is the lids over the ball
            valid[eye.rows, eye.cols] = False
    mirrored_colors, after_mirror = mirror_fill(colors, valid, mirror)
    filled = pull_push(mirrored_colors, after_mirror)
    # The eyes are painted over the fill, not fed to it: their colours would tint the skin fill around them.
    painted = paint_eyes(filled, after_mirror, [eye for eye in eyes if eye is not None],
                         highlight_level(colors[projection.visible]))  # fmt: skip
    image = np.clip(np.rint(filled), 0, 255).astype(np.uint8)
    return Texture(image=image, from_photo=valid, mirrored=after_mirror & ~valid,
                   occluded=covered_by_occluder, covered=raster.covered, eyes_painted=painted)  # fmt: skip


def closed_eyes_x(head: TextureInputs) -> tuple[float, ...]:
    """The photo x of each eyeball the photo shows closed (its vertices' mean, projected)."""
    xs = []
    for members, closed in zip(head.eye_members, head.eyes_closed, strict=False):
        if closed and len(members):
            centre = np.asarray(head.vertices, dtype=np.float64)[members].mean(axis=0, keepdims=True)
            xs.append(float(project_points(centre, head.pose, head.camera)[0, 0]))
    return tuple(xs)


def texture_beside_result(
    rgb: np.ndarray, head: TextureInputs | None, result_path: str | os.PathLike[str],
    face_points5: np.ndarray | None = None,
) -> tuple[dict[str, object], list[dict[str, str]]]:  # fmt: skip
    """Make and write the texture next to the result; returns the meta entries and warnings. A photo
    that cannot give a texture (no pose, no UVs, no visible skin) gives a warning, never an error."""
    if head is None:
        return {}, [{"code": "texture_skipped", "message": "No texture: the head has no trusted pose or no UV map."}]
    try:
        texture = make_texture(rgb, head, cache_dir=default_cache_dir(), face_points5=face_points5)
    except (SkinModelError, ValueError) as exc:
        return {}, [{"code": "texture_failed", "message": f"No texture: {exc}."}]
    path = write_texture_png(texture_path_for(result_path), texture.image)
    return {"texture": path.name, "texture_stats": texture.stats()}, []


def write_texture_png(path: str | os.PathLike[str], image: np.ndarray) -> Path:
    """Write an RGB uint8 image as PNG atomically; a failed write is an ``io_error`` naming the path."""
    target = Path(path)
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"could not encode the texture PNG for {target}")
    return atomic_write_bytes(target, encoded.tobytes())


def discard_texture(result_path: str | os.PathLike[str], texture_meta: dict[str, object]) -> None:
    """Remove the texture written for a result that was then not written (cancel, full disk)."""
    if texture_meta.get("texture"):
        texture_path_for(result_path).unlink(missing_ok=True)


def texture_path_for(result_path: str | os.PathLike[str]) -> Path:
    """The texture PNG's path next to a result file: ``<stem>_texture.png``."""
    p = Path(result_path)
    return p.with_name(f"{p.stem}_texture.png")
