"""The contact sheet: photo with the face marks, the two crops, and the ranked hypotheses rendered."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .atomic_io import atomic_write_bytes
from .fit.camera import project, rotation_matrix
from .fit.gaze import eyeballs_of
from .pipeline import ReconstructionOutput
from .render import Camera, PinholeCamera, RenderError, grid, render_mesh
from .result import ReconstructionResult

TILE = 256
#: Expressions shown on the sheet (the file holds all of them).
SHEET_EXPRESSIONS = 5
SHEET_IDENTITIES = 5


def _fit(image: np.ndarray, size: int = TILE) -> np.ndarray:
    h, w = image.shape[:2]
    scale = size / max(h, w)
    resized = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    tile = np.full((size, size, 3), 255, np.uint8)
    top, left = (size - resized.shape[0]) // 2, (size - resized.shape[1]) // 2
    tile[top : top + resized.shape[0], left : left + resized.shape[1]] = resized
    return tile


def _photo_with_marks(output: ReconstructionOutput) -> np.ndarray:
    photo = output.image.rgb.copy()
    thickness = max(1, round(max(photo.shape[:2]) / 300))
    x0, y0, x1, y1 = (round(float(v)) for v in output.detection.box)
    cv2.rectangle(photo, (x0, y0), (x1, y1), (40, 220, 40), thickness)
    for x, y in output.detection.points5:
        cv2.circle(photo, (round(float(x)), round(float(y))), 2 * thickness, (255, 40, 40), -1)
    return _fit(photo)


def _heat(values: np.ndarray) -> np.ndarray:
    """Spread → colour from blue (certain) to red (uncertain), normalised to the 98th percentile."""
    top = max(float(np.percentile(values, 98)), 1e-12)
    t = np.clip(values / top, 0.0, 1.0)[:, None]
    return (1 - t) * np.array([0.25, 0.45, 0.95]) + t * np.array([0.95, 0.25, 0.2])


def _centre(vertices: np.ndarray) -> tuple[float, float, float]:
    x, y, z = ((vertices.min(axis=0) + vertices.max(axis=0)) / 2).tolist()
    return (x, y, z)


def warning_lines(warnings: list[dict[str, str]], width_px: int) -> list[str]:
    """The banner's lines: each warning in full, wrapped at word boundaries to the sheet's width (its advice
    is at the end: a cut line lost it), continuation lines indented."""
    import textwrap

    limit = max(20, width_px // 9)  # characters of the 0.5-scale Hershey font that fit the width
    lines: list[str] = []
    for warning in warnings:
        text = f"WARNING {warning.get('code', '')}: {warning.get('message', '')}"
        # OpenCV's Hershey fonts draw ASCII only.
        text = text.replace("°", " deg").replace("–", "-").replace("×", "x").encode("ascii", "replace").decode()
        lines += textwrap.wrap(text, limit, subsequent_indent="    ", break_on_hyphens=False) or [text]
    return lines


def _with_warnings(sheet: np.ndarray, warnings: list[dict[str, str]]) -> np.ndarray:
    """The warnings in orange above the sheet (input and fit warnings from the result file)."""
    if not warnings:
        return sheet
    lines = warning_lines(warnings, sheet.shape[1])
    banner = np.full((10 + 24 * len(lines), sheet.shape[1], 3), (255, 222, 190), np.uint8)
    for i, line in enumerate(lines):
        cv2.putText(banner, line, (8, 25 + 24 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (120, 40, 0), 1, cv2.LINE_AA)
    return np.concatenate([banner, sheet], axis=0)


def _head_on_photo(output: ReconstructionOutput) -> np.ndarray | None:
    """The first expression drawn through the fitted camera, half-transparent over the photo."""
    res = output.result
    if res.head_pose is None or res.camera is None:
        return None
    photo = output.image.rgb
    height, width = photo.shape[:2]
    scale = min(1.0, 1024 / max(width, height))  # the overlay is shown small; render it small
    w, h = max(1, round(width * scale)), max(1, round(height * scale))
    f, cx, cy = (float(v) for v in res.camera)
    pose = tuple(float(v) for v in res.head_pose)
    camera = PinholeCamera(pose, f, cx, cy, width, height)  # type: ignore[arg-type]
    marker = (255, 0, 255)
    head = render_mesh(res.expression_vertices[0], res.faces, width=w, height=h, camera=camera, background=marker)
    small = cv2.resize(photo, (w, h), interpolation=cv2.INTER_AREA)
    covered = (head != np.array(marker, np.uint8)).any(axis=2)[:, :, None]
    blended = np.where(covered, (0.45 * small + 0.55 * head).astype(np.uint8), small)
    _draw_gaze(blended, res, camera, scale)
    return _fit(blended)


def _draw_gaze(image: np.ndarray, res: ReconstructionResult, camera: PinholeCamera, scale: float) -> None:
    """Where the fitted eyes look: an arrow 4 cm long from each eye's centre (nothing without ``eye_pose``)."""
    if res.eye_pose is None:
        return
    eyes = eyeballs_of(res.expression_vertices[0], res.skin_weights, res.joints)
    if eyes is None:
        return
    for eye, turn in zip(eyes, res.eye_pose.astype(np.float64), strict=True):
        ahead = eye.centre + 0.04 * rotation_matrix(turn) @ ((eye.pupil - eye.centre) / eye.radius)
        ends = project(
            np.stack([eye.centre, ahead]), np.asarray(camera.pose), np.array([camera.focal, camera.cx, camera.cy])
        )
        a, b = (tuple(int(np.rint(v * scale)) for v in end[:2]) for end in ends)
        cv2.arrowedLine(image, a, b, (0, 255, 255), max(1, round(2 * scale)), cv2.LINE_AA, tipLength=0.25)


def _texture_tile(output: ReconstructionOutput) -> np.ndarray | None:
    name = output.result.meta.get("texture")
    if not isinstance(name, str):
        return None
    image = cv2.imread(str(Path(output.path).parent / name), cv2.IMREAD_COLOR)
    return None if image is None else _fit(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))


def identity_label(number: int, score: float, best: float) -> str:
    """A tile's label in the add-on's key-name wording ("ID 02 (87.5% of ID 01)"): IdRank's softmax over 100
    samples is flat, so absolute probabilities all read alike (0.014, 0.013, 0.013 …); relative ones differ."""
    percent = 100.0 * score / best if best > 0 else 0.0
    relative = "100%" if percent >= 99.95 else "<0.001%" if percent < 1e-3 else f"{percent:.3g}%"
    return f"ID {number:02d}" if number == 1 else f"ID {number:02d} ({relative} of ID 01)"


def write_contact_sheet(path: str | Path, output: ReconstructionOutput) -> Path:
    res = output.result
    faces = res.faces
    front = Camera()
    first = res.identity_vertices[0]
    camera = Camera(
        center=_centre(first),
        extent=float(np.ptp(first[:, 1]) * 1.08),
    )
    images = [_photo_with_marks(output), _fit(output.arcface.image), _fit(output.farl.image)]
    confidence = output.detection.confidence
    # The score first: a caption too long for its tile is cut at its end, where the detector's name is.
    score = "" if confidence is None else f" {confidence:.2f}"
    labels = [f"photo{score} ({output.detection.method})", "ArcFace crop", "FaRL crop"]
    for tile, label in ((_head_on_photo(output), "fitted head on photo"), (_texture_tile(output), "texture")):
        if tile is not None:
            images.append(tile)
            labels.append(label)
    for k in range(min(SHEET_IDENTITIES, len(res.identity_vertices))):
        images.append(render_mesh(res.identity_vertices[k], faces, width=TILE, height=TILE, camera=camera))
        labels.append(identity_label(k + 1, float(res.identity_scores[k]), float(res.identity_scores[0])))
    images.append(render_mesh(first, faces, width=TILE, height=TILE, camera=camera, colors=_heat(res.spread_identity)))
    labels.append("identity spread")
    for m in range(min(SHEET_EXPRESSIONS, len(res.expression_vertices))):
        images.append(render_mesh(res.expression_vertices[m], faces, width=TILE, height=TILE, camera=camera))
        labels.append(f"EXP {m + 1:03d}")
    images.append(render_mesh(first, faces, width=TILE, height=TILE, camera=front, colors=_heat(res.spread_expression)))
    labels.append("expression spread")
    sheet = grid(images, labels, columns=6)
    if res.demo:
        banner = np.full((34, sheet.shape[1], 3), (255, 236, 170), np.uint8)
        cv2.putText(banner, "DEMO assets: ICT Face Model DEMO head and demo weights, not FLAME / OFER", (8, 23),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.6, (60, 40, 0), 1, cv2.LINE_AA)  # fmt: skip
        sheet = np.concatenate([banner, sheet], axis=0)
    sheet = _with_warnings(sheet, res.meta.get("warnings") or [])
    ok, png = cv2.imencode(".png", cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RenderError(f"OpenCV could not encode the contact sheet ({sheet.shape})")
    return atomic_write_bytes(path, png.tobytes())
