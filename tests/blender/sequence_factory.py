"""Sequence result files (``ofer-sequence/1``) for the add-on's tests, written with numpy as seqformat says.

Run in a subprocess (it needs torch for the DEMO FLAME head and layer; bpy must not share the process).
A scripted clip: one identity, expressions and jaw following smooth curves (the jaw opens and closes),
the head turning and moving in front of a fixed camera, and a folder of small frames for the background.
``frame_vertices`` come from the FLAME layer itself, so the joints follow the expression as in FLAME; with
``eye_pose`` the file also has a gaze (``frame_eye_pose``) and, as the worker writes them, the meshes keep the
eyes at rest.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

FRAME_SIZE = (64, 48)
CAMERA = (70.0, 31.0, 25.0)
FPS = 24.0


def _head_poses(T: int) -> np.ndarray:
    t = np.linspace(0.0, 1.0, T)
    poses = np.zeros((T, 6))
    poses[:, 0] = 0.15 * np.sin(2 * np.pi * t)  # nodding
    poses[:, 1] = -0.3 + 0.6 * t  # turning from one side to the other
    poses[:, 3] = 0.01 * np.cos(2 * np.pi * t)
    poses[:, 5] = -0.6 - 0.05 * t  # 0.6 m in front of the camera, moving away
    return poses


def _eye_poses(T: int) -> np.ndarray:
    """(T, 2, 3) a gaze sweeping from the subject's right to their left, dipping down mid-clip: the two eyes by
    different amounts (and the right one rolled a little), so that a swapped or shared eye shows."""
    t = np.linspace(0.0, 1.0, T)
    eyes = np.zeros((T, 2, 3))
    eyes[:, 0, 0] = 0.12 * np.sin(np.pi * t)  # down in the middle of the clip
    eyes[:, 0, 1] = -0.35 + 0.7 * t
    eyes[:, 1, 0] = 0.08 * np.sin(np.pi * t)
    eyes[:, 1, 1] = -0.25 + 0.5 * t
    eyes[:, 1, 2] = 0.04
    return eyes


def make_sequence_file(path: Path, n_frames: int = 12, seed: int = 0, eye_pose: bool = False) -> Path:
    import torch

    from inference_server.demo.head import generate_demo_head
    from inference_server.flame.layer import FlameLayer
    from inference_server.flame_controls import control_bases

    data = generate_demo_head()
    layer = FlameLayer(data, dtype=torch.float64)
    rng = np.random.default_rng(seed)
    E = 10
    beta = rng.normal(0, 1, (1, 20))
    t = np.linspace(0.0, 1.0, n_frames)[:, None]
    psi = np.sin(2 * np.pi * (t + rng.random((1, E)))) * rng.uniform(0.5, 2.0, (1, E))
    jaw = np.zeros((n_frames, 3))
    jaw[:, 0] = 0.3 * np.sin(np.pi * t[:, 0]) ** 2  # closed at both ends, open in the middle
    jaw[:, 1] = 0.03 * np.sin(4 * np.pi * t[:, 0])
    pose = np.zeros((n_frames, 15))
    pose[:, 6:9] = jaw
    with torch.no_grad():
        neutral = layer(shape=torch.as_tensor(beta))
        frames = layer(shape=torch.as_tensor(beta), expression=torch.as_tensor(psi), pose=torch.as_tensor(pose))
    bases = control_bases(data, E, n_shapes=1)
    folder = path.parent / "frames"
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    from PIL import Image

    for k in range(n_frames):
        name = f"frame_{k + 1:04d}.png"
        pixels = np.full((FRAME_SIZE[1], FRAME_SIZE[0], 3), 20 * (k % 12), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / name)
        names.append(name)
    f32 = np.float32
    meta = {
        "producer": "tests/blender/sequence_factory.py",
        "units": "metres",
        "demo": True,
        "flame_version": data.version,
        "joint_names": ["root", "neck", "jaw", "left_eye", "right_eye"],
        "source": {
            "path": str(folder),
            "kind": "folder",
            "fps": FPS,
            "width": FRAME_SIZE[0],
            "height": FRAME_SIZE[1],
            "n_frames": n_frames,
        },
        "frames": [
            {"index": k, "name": names[k], "status": "ok", "warnings": [], "fit_px": 0.5, "choice": 0}
            for k in range(n_frames)
        ],
        "warnings": [],
    }
    arrays = {
        "format": np.array("ofer-sequence/1"),
        "meta_json": np.array(json.dumps(meta)),
        "faces": data.faces.astype(np.int32),
        "uv": data.uv.astype(f32),
        "uv_faces": data.uv_faces.astype(np.int32),
        "template": data.v_template.astype(f32),
        "identity_params": beta.astype(f32),
        "identity_vertices": neutral.vertices.numpy().astype(f32),
        "joints": neutral.rest_joints[0].numpy().astype(f32),
        "parents": data.parents.astype(np.int32),
        "skin_weights": data.weights.astype(f32),
        "expression_basis": bases.expression_basis,
        "pose_basis": bases.pose_basis,
        "frame_expression_params": psi.astype(f32),
        "frame_jaw_pose": jaw.astype(f32),
        "frame_head_pose": _head_poses(n_frames).astype(f32),
        "camera": np.asarray(CAMERA, dtype=f32),
        "frame_vertices": frames.vertices.numpy().astype(f32),
        "frame_observed": np.ones(n_frames, dtype=np.int32),
    }
    if eye_pose:
        arrays["frame_eye_pose"] = _eye_poses(n_frames).astype(f32)
    np.savez(path, **arrays)
    return path


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("path", type=Path)
    parser.add_argument("n_frames", type=int, nargs="?", default=12)
    parser.add_argument("--eye-pose", action="store_true")
    args = parser.parse_args()
    make_sequence_file(args.path, n_frames=args.n_frames, eye_pose=args.eye_pose)
