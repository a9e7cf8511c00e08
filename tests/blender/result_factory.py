"""Realistic result files for the add-on's tests (numpy only, importable from a worker subprocess).

:func:`make_result_file` is the one place a test gets a result file from. It builds a small head-shaped
mesh with linear identity and expression blend shapes, FLAME's five joints and smooth skin weights, and
poses every expression's jaw with a linear-blend formula written here independently of the add-on
(for a jaw-only pose the blend reduces to ``(1 - w) v + w (R (v - j) + j)``). When the project's demo
FLAME head and FLAME layer exist, the coordinator can switch this function to them (or to real worker
output) without touching any test.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from inference_server.result import ReconstructionResult, read_result, write_result

JOINTS = np.array(
    [[0.0, 0.0, 0.0], [0.0, -0.06, -0.01], [0.0, -0.03, 0.005], [0.032, 0.035, 0.06], [-0.032, 0.035, 0.06]],
    dtype=np.float64,
)
PARENTS = np.array([-1, 0, 1, 1, 1], dtype=np.int32)


def _sphere(rings: int = 14, segments: int = 20) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A closed ellipsoid head (poles + rings) with a UV seam: vertices, faces, uv, uv_faces."""
    verts = [[0.0, 0.11, 0.0]]
    uv = []
    for r in range(1, rings):
        theta = math.pi * r / rings
        for s in range(segments):
            phi = 2 * math.pi * s / segments
            verts.append(
                [
                    0.08 * math.sin(theta) * math.sin(phi),
                    0.11 * math.cos(theta),
                    0.09 * math.sin(theta) * math.cos(phi),
                ]
            )
    verts.append([0.0, -0.11, 0.0])
    for r in range(rings + 1):
        for s in range(segments + 1):
            uv.append([s / segments, 1.0 - r / rings])
    top, bottom = 0, len(verts) - 1

    def vid(r: int, s: int) -> int:  # ring r in 1..rings-1
        return 1 + (r - 1) * segments + s % segments

    def uid(r: int, s: int) -> int:
        return r * (segments + 1) + s

    faces, uv_faces = [], []
    for s in range(segments):
        faces.append([top, vid(1, s), vid(1, s + 1)])
        uv_faces.append([uid(0, s), uid(1, s), uid(1, s + 1)])
        faces.append([bottom, vid(rings - 1, s + 1), vid(rings - 1, s)])
        uv_faces.append([uid(rings, s), uid(rings - 1, s + 1), uid(rings - 1, s)])
        for r in range(1, rings - 1):
            a, b, c, d = vid(r, s), vid(r + 1, s), vid(r + 1, s + 1), vid(r, s + 1)
            ua, ub, uc, ud = uid(r, s), uid(r + 1, s), uid(r + 1, s + 1), uid(r, s + 1)
            faces += [[a, b, c], [a, c, d]]
            uv_faces += [[ua, ub, uc], [ua, uc, ud]]
    return (
        np.array(verts),
        np.array(faces, dtype=np.int32),
        np.array(uv, dtype=np.float32),
        np.array(uv_faces, dtype=np.int32),
    )


def _rotation(axis_angle: np.ndarray) -> np.ndarray:
    angle = float(np.linalg.norm(axis_angle))
    if angle == 0.0:
        return np.eye(3)
    k = axis_angle / angle
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + math.sin(angle) * K + (1 - math.cos(angle)) * K @ K


def make_result_file(
    path: str | Path,
    *,
    n_identities: int = 3,
    n_expressions: int = 5,
    seed: int = 0,
    meta_extra: dict[str, Any] | None = None,
    backend: str = "auto",
    fit: str = "none",
    flame_controls: bool = False,
    eye_pose: bool = False,
) -> Path:
    """Write a valid result file at ``path`` and return its path.

    ``backend``: ``"worker"`` runs the real worker (``ofer-worker reconstruct`` on the bundled sample photo,
    DEMO assets, a few sampler steps); ``"flame"`` builds the meshes with the project's demo FLAME head and
    FLAME layer (random identity, expression and jaw parameters), ``"synthetic"`` with the small mesh here;
    ``"auto"`` is the worker when no extra metadata or fit is asked for, else FLAME when torch is importable.

    ``fit``: ``"ok"`` adds the "head on the photo" part of the contract with a known camera (see
    :func:`add_fit`): ``head_pose``, ``camera``, ``expression_head_pose``, ``meta["fit"]``, a photo and a
    texture PNG beside the file; ``"untrusted"`` a fit that failed (no pose, no camera, a warning saying why).

    ``flame_controls``: the FLAME backend with the shape (first 12 of 20), expression and pose bases.

    ``eye_pose``: the photo's gaze :data:`EYE_POSE` (needs ``fit="ok"``: the contract has no gaze without a pose).
    """
    if eye_pose and fit != "ok":
        raise ValueError("eye_pose needs fit='ok' (a result has a gaze only with its head pose)")
    if flame_controls:
        controlled = _flame_result(n_identities, n_expressions, seed, meta_extra or {}, with_bases=True)
        if fit != "none":
            add_fit(controlled, Path(path), fit)
        controlled.eye_pose = np.asarray(EYE_POSE, dtype=np.float32) if eye_pose else None
        return write_result(path, controlled)
    if backend == "worker" or (backend == "auto" and not meta_extra and fit == "none"):
        return _without_fit(_worker_result_file(Path(path), n_identities, n_expressions, seed))
    built: ReconstructionResult | None = None
    if backend in ("auto", "flame"):
        try:
            built = _flame_result(n_identities, n_expressions, seed, meta_extra or {})
        except ImportError:
            if backend == "flame":
                raise
    if built is None:
        built = _synthetic_result(n_identities, n_expressions, seed, meta_extra or {})
    if fit != "none":
        add_fit(built, Path(path), fit)
    built.eye_pose = np.asarray(EYE_POSE, dtype=np.float32) if eye_pose else None
    return write_result(path, built)


def _worker_result_file(path: Path, n_identities: int, n_expressions: int, seed: int) -> Path:
    """A result file exactly as the worker writes it for a user (demo assets, few steps for speed)."""
    import shutil
    import subprocess
    import sys
    import tempfile

    sample = Path(__file__).resolve().parents[2] / "inference_server" / "assets" / "sample_occluded_face.jpg"
    with tempfile.TemporaryDirectory(prefix="ofer-worker-result-") as folder:
        command = [
            sys.executable, "-m", "inference_server", "reconstruct", str(sample), "-o", folder,
            "-n", str(max(8, n_identities)), "-m", str(n_expressions), "-k", str(n_identities),
            "--sampler", "ddim", "--steps", "6", "--seed", str(seed), "--device", "cpu", "--no-contact-sheet",
        ]  # fmt: skip
        proc = subprocess.run(command, capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            raise RuntimeError(f"the worker failed to make a result file:\n{proc.stderr[-3000:]}")
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(folder) / "result.npz", path)
    return path


def _without_fit(path: Path) -> Path:
    """The worker places the head on the photo when it can; ``fit="none"`` asks for a file without that
    part (as an older worker, or a photo the fit gave up on without saying so, would write it)."""
    result = read_result(path)
    result.head_pose = result.camera = result.expression_head_pose = result.eye_pose = None  # no gaze without a pose
    for key in ("fit", "texture", "texture_stats", "expression_fit_px", "gaze"):
        result.meta.pop(key, None)
    write_result(path, result)
    return path


def _flame_result(
    n_identities: int, n_expressions: int, seed: int, meta_extra: dict[str, Any], with_bases: bool = False
) -> ReconstructionResult:
    import torch

    from inference_server.demo.head import generate_demo_head
    from inference_server.flame.layer import FlameLayer
    from inference_server.flame_controls import control_bases

    data = generate_demo_head()
    layer = FlameLayer(data, dtype=torch.float64)
    rng = np.random.default_rng(seed)
    n_samples = max(n_identities * 3, 8)
    betas = rng.normal(0, 1, (n_samples, 20))
    psis = rng.normal(0, 1, (n_expressions, 10))
    jaw_pose = np.stack(
        [rng.uniform(0.02, 0.3, n_expressions), rng.normal(0, 0.03, n_expressions), rng.normal(0, 0.03, n_expressions)],
        axis=1,
    )
    jaw_pose[0] = 0.0
    pose = np.zeros((n_expressions, 3 * data.n_joints))
    pose[:, 6:9] = jaw_pose
    t = torch.as_tensor
    with torch.no_grad():
        all_shapes = layer(shape=t(betas)).vertices.numpy()
        neutral = layer(shape=t(betas[:1]))
        expressions = layer(shape=t(betas[:1]), expression=t(psis), pose=t(pose)).vertices.numpy()
    scores = np.sort(rng.dirichlet(np.ones(n_samples)))[::-1]
    f32 = np.float32
    meta: dict[str, Any] = {
        "producer": "tests/blender/result_factory.py (demo FLAME head)",
        "demo": True,
        "image": {"path": "demo.png", "sha256": "0" * 64, "width": 640, "height": 480},
        "flame": {"version": data.version, "n_shape": data.n_shape, "n_expression": data.n_expression},
        "sampler": {"name": "ddim", "steps": 10, "seed": seed, "N": n_samples, "M": n_expressions, "jaw_scale": 0.5},
        **meta_extra,
    }
    bases = control_bases(data, psis.shape[1], n_shapes=12) if with_bases else None
    return ReconstructionResult(
        meta=meta,
        faces=data.faces.astype(np.int32),
        template=data.v_template.astype(f32),
        identity_params=betas[:n_identities].astype(f32),
        identity_scores=scores[:n_identities].astype(f32),
        identity_vertices=all_shapes[:n_identities].astype(f32),
        expression_params=psis.astype(f32),
        jaw_pose=jaw_pose.astype(f32),
        expression_vertices=expressions.astype(f32),
        joints=neutral.rest_joints[0].numpy().astype(f32),
        parents=data.parents.astype(np.int32),
        skin_weights=data.weights.astype(f32),
        spread_identity=np.linalg.norm(all_shapes.std(axis=0), axis=1).astype(f32),
        spread_expression=np.linalg.norm(expressions.std(axis=0), axis=1).astype(f32),
        uv=None if data.uv is None else data.uv.astype(f32),
        uv_faces=None if data.uv_faces is None else data.uv_faces.astype(np.int32),
        shape_basis=None if bases is None else bases.shape_basis,
        expression_basis=None if bases is None else bases.expression_basis,
        pose_basis=None if bases is None else bases.pose_basis,
    )


def _synthetic_result(
    n_identities: int, n_expressions: int, seed: int, meta_extra: dict[str, Any]
) -> ReconstructionResult:
    rng = np.random.default_rng(seed)
    template, faces, uv, uv_faces = _sphere()
    V = template.shape[0]
    n_shape, n_exp = 12, 8
    # smooth, head-sized blend shapes: low-order polynomials of the position, a few millimetres each
    feats = np.stack([template[:, 0], template[:, 1], template[:, 2], template[:, 0] * template[:, 1] * 20], axis=1)
    shape_dirs = np.einsum("vf,fcs->vcs", feats, rng.normal(0, 0.05, (4, 3, n_shape)))
    front_low = np.clip((template[:, 2] / 0.09) * (0.5 - template[:, 1] / 0.11), 0, None)[:, None, None]
    exp_dirs = front_low * np.einsum("vf,fce->vce", feats, rng.normal(0, 0.08, (4, 3, n_exp)))

    n_samples = max(n_identities * 3, 8)
    betas = rng.normal(0, 1, (n_samples, n_shape))
    scores = np.sort(rng.dirichlet(np.ones(n_samples)))[::-1]
    identity_params = betas[:n_identities]
    identity_vertices = template + np.einsum("vcs,ks->kvc", shape_dirs, identity_params)

    weights = np.zeros((V, 5))
    jaw_w = 1 / (1 + np.exp(-(-(template[:, 1] + 0.02) * 120))) * (template[:, 2] > -0.02)
    neck_w = np.clip((-template[:, 1] - 0.08) * 30, 0, 1) * (1 - jaw_w)
    eye_w = [np.exp(-np.sum((template - JOINTS[j]) ** 2, axis=1) / 0.0004) * 0.5 for j in (3, 4)]
    weights[:, 2], weights[:, 1], weights[:, 3], weights[:, 4] = jaw_w, neck_w, eye_w[0], eye_w[1]
    weights[:, 0] = np.clip(1 - weights[:, 1:].sum(axis=1), 0, None)
    weights /= weights.sum(axis=1, keepdims=True)

    psis = rng.normal(0, 1, (n_expressions, n_exp))
    jaw_pose = np.stack(
        [
            rng.uniform(0.02, 0.3, n_expressions),
            rng.normal(0, 0.03, n_expressions),
            rng.normal(0, 0.03, n_expressions),
        ],
        axis=1,
    )
    jaw_pose[0] = 0.0  # one expression with the mouth closed
    expression_vertices = np.empty((n_expressions, V, 3))
    jaw = JOINTS[2]
    for m in range(n_expressions):
        rest = identity_vertices[0] + np.einsum("vce,e->vc", exp_dirs, psis[m])
        rotated = (rest - jaw) @ _rotation(jaw_pose[m]).T + jaw
        expression_vertices[m] = (1 - weights[:, 2:3]) * rest + weights[:, 2:3] * rotated

    meta: dict[str, Any] = {
        "producer": "tests/blender/result_factory.py",
        "demo": True,
        "image": {"path": "synthetic.png", "sha256": "0" * 64, "width": 640, "height": 480},
        "flame": {"version": "synthetic", "n_shape": n_shape, "n_expression": n_exp},
        "sampler": {
            "name": "ddim",
            "steps": 10,
            "seed": seed,
            "N": n_samples,
            "M": n_expressions,
            "jaw_scale": 0.5,
        },
    }
    meta.update(meta_extra)
    all_shapes = template + np.einsum("vcs,ks->kvc", shape_dirs, betas)
    f32 = np.float32
    return ReconstructionResult(
        meta=meta,
        faces=faces,
        template=template.astype(f32),
        identity_params=identity_params.astype(f32),
        identity_scores=scores[:n_identities].astype(f32),
        identity_vertices=identity_vertices.astype(f32),
        expression_params=psis.astype(f32),
        jaw_pose=jaw_pose.astype(f32),
        expression_vertices=expression_vertices.astype(f32),
        joints=JOINTS.astype(f32),
        parents=PARENTS,
        skin_weights=weights.astype(f32),
        spread_identity=np.linalg.norm(all_shapes.std(axis=0), axis=1).astype(f32),
        spread_expression=np.linalg.norm(expression_vertices.std(axis=0), axis=1).astype(f32),
        uv=uv,
        uv_faces=uv_faces,
    )


#: The known camera of ``fit="ok"`` files: photo size, focal length and an off-centre principal point (pixels)
PHOTO_SIZE = (400, 300)
CAMERA = (520.0, 214.0, 141.0)
#: Head pose (axis-angle, translation in metres): turned and tilted a little, 0.6 m in front of the camera
HEAD_POSE = (0.12, -0.35, 0.06, 0.012, -0.008, -0.6)
#: The gaze of ``eye_pose=True`` files (axis-angle of left_eye, right_eye): both eyes turned to the subject's
#: left and down, by different amounts so that a swapped or shared eye shows
EYE_POSE = ((0.10, 0.30, 0.0), (0.06, 0.22, 0.03))
TEXTURE_SIZE = 256


def photo_pixels(width: int, height: int) -> np.ndarray:
    """(H, W, 3) uint8: smooth colour waves, so a texture sampled from it shows where every texel came from."""
    x, y = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    rgb = np.stack([np.sin(x / 11.0), np.sin(y / 9.0), np.sin((x + 2 * y) / 23.0)], axis=-1)
    return np.round(128 + 100 * rgb).astype(np.uint8)


def texture_from_photo(result: ReconstructionResult, photo: np.ndarray, size: int = TEXTURE_SIZE) -> np.ndarray:
    """The photo projected into the UV map as the contract lays it out (u right, v up, row 0 is v = 1).

    Every texel centre inside a UV triangle takes the photo's colour (nearest pixel) where its surface
    point projects; no visibility test — texels the camera cannot see never show in a render from it.
    """
    assert result.uv is not None and result.uv_faces is not None and result.head_pose is not None
    assert result.camera is not None
    texture = np.full((size, size, 3), 128, dtype=np.uint8)
    vertices = result.identity_vertices[0].astype(np.float64)
    pose, camera = result.head_pose.astype(np.float64), result.camera.astype(np.float64)
    height, width = photo.shape[:2]
    for face, uv_face in zip(result.faces, result.uv_faces, strict=True):
        # texel coordinates: column = u·size, row = (1 − v)·size
        t = np.stack([result.uv[uv_face, 0] * size, (1 - result.uv[uv_face, 1]) * size], axis=1).astype(np.float64)
        c0, c1 = max(int(np.floor(t[:, 0].min())), 0), min(int(np.ceil(t[:, 0].max())), size)
        r0, r1 = max(int(np.floor(t[:, 1].min())), 0), min(int(np.ceil(t[:, 1].max())), size)
        area = (t[1, 0] - t[0, 0]) * (t[2, 1] - t[0, 1]) - (t[1, 1] - t[0, 1]) * (t[2, 0] - t[0, 0])
        if c0 >= c1 or r0 >= r1 or abs(area) < 1e-12:
            continue
        cols, rows = np.meshgrid(np.arange(c0, c1) + 0.5, np.arange(r0, r1) + 0.5)
        w1 = ((cols - t[0, 0]) * (t[2, 1] - t[0, 1]) - (rows - t[0, 1]) * (t[2, 0] - t[0, 0])) / area
        w2 = ((t[1, 0] - t[0, 0]) * (rows - t[0, 1]) - (t[1, 1] - t[0, 1]) * (cols - t[0, 0])) / area
        inside = (w1 >= -1e-9) & (w2 >= -1e-9) & (w1 + w2 <= 1 + 1e-9)
        if not inside.any():
            continue
        a, b, c = vertices[face]
        points = a + w1[inside, None] * (b - a) + w2[inside, None] * (c - a)
        px = _project(points, pose, camera)
        pc = np.clip(np.floor(px[:, 0]).astype(int), 0, width - 1)
        pr = np.clip(np.floor(px[:, 1]).astype(int), 0, height - 1)
        texture[(rows[inside] - 0.5).astype(int), (cols[inside] - 0.5).astype(int)] = photo[pr, pc]
    return texture


def _project(points: np.ndarray, pose: np.ndarray, camera: np.ndarray) -> np.ndarray:
    """The contract's projection: p_cam = R p + t, u = cx + f X / -Z, v = cy - f Y / -Z."""
    p_cam = points @ _rotation(pose[:3]).T + pose[3:]
    depth = -p_cam[:, 2]
    f, cx, cy = camera
    return np.stack([cx + f * p_cam[:, 0] / depth, cy - f * p_cam[:, 1] / depth], axis=1)


def _write_png(path: Path, pixels: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(pixels).save(path)


def add_fit(result: ReconstructionResult, path: Path, fit: str) -> None:
    """Add the fitted pose and camera (or a failed fit) to ``result``, with a photo and a texture beside ``path``."""
    width, height = PHOTO_SIZE
    photo = path.parent / (path.stem + "-photo.png")
    path.parent.mkdir(parents=True, exist_ok=True)
    result.meta["image"] = {"path": str(photo.resolve()), "sha256": "0" * 64, "width": width, "height": height}
    if fit == "skipped":  # what ofer-worker --no-fit writes: no pose, camera, gaze or texture, and no warning
        reason = "skipped on request, --no-fit"
        result.meta["fit"] = {"status": "skipped", "reason": reason, "focal_source": "none",
                              "n_landmarks_used": 0, "reprojection_px": None}  # fmt: skip
        result.meta["gaze"] = {"status": "skipped", "reason": reason, "eyes_read": [], "eyes_closed": []}
        result.meta["expression_order"] = "typical"
    elif fit == "untrusted":
        reason = "only 9 of 68 landmarks are visible (at least 20 are needed)"
        result.meta["fit"] = {"status": "untrusted", "reason": reason, "focal_source": "estimated",
                              "n_landmarks_used": 9, "reprojection_px": 0.0}  # fmt: skip
        result.meta["warnings"] = [{"code": "fit_untrusted", "message": f"No head pose or camera: {reason}"}]
    else:
        pose = np.asarray(HEAD_POSE, dtype=np.float64)
        M = result.expression_vertices.shape[0]
        per_expression = np.tile(pose, (M, 1))
        per_expression[:, :3] += np.outer(np.arange(M), [0.03, 0.05, -0.02])  # each expression turns a little more
        per_expression[:, 3:] += np.outer(np.arange(M), [0.002, -0.001, 0.004])
        result.head_pose = pose.astype(np.float32)
        result.camera = np.asarray(CAMERA, dtype=np.float32)
        result.expression_head_pose = per_expression.astype(np.float32)
        result.meta["fit"] = {"status": "ok", "reason": "", "focal_source": "estimated",
                              "n_landmarks_used": 68, "reprojection_px": 0.8}  # fmt: skip
        result.meta["expression_order"] = "best_fit"
        result.meta["expression_fit_px"] = [round(0.9 + 0.6 * m, 2) for m in range(M)]
    pixels = photo_pixels(width, height)
    _write_png(photo, pixels)
    if fit == "ok":
        texture = path.stem + "-texture.png"
        _write_png(path.parent / texture, texture_from_photo(result, pixels))
        result.meta["texture"] = texture


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Write a result file for the add-on's tests")
    parser.add_argument("output")
    parser.add_argument("--n-identities", type=int, default=3)
    parser.add_argument("--n-expressions", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backend", default="auto", choices=["auto", "worker", "flame", "synthetic"])
    parser.add_argument("--fit", default="none", choices=["none", "ok", "untrusted", "skipped"])
    parser.add_argument("--flame-controls", action="store_true")
    parser.add_argument("--eye-pose", action="store_true")
    args = parser.parse_args(argv)
    make_result_file(
        args.output,
        n_identities=args.n_identities,
        n_expressions=args.n_expressions,
        seed=args.seed,
        backend=args.backend,
        fit=args.fit,
        flame_controls=args.flame_controls,
        eye_pose=args.eye_pose,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
