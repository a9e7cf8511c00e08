"""A clip whose eyes sweep from the subject's right to left: the sequence result carries the gaze per frame
(fit/gaze.py on each frame, bridged and smoothed like the head pose), following the sweep."""

from __future__ import annotations

import itertools
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from inference_server.assets_config import resolve_assets
from inference_server.demo.head import generate_demo_head
from inference_server.fit.camera import rotation_matrix
from inference_server.fit.gaze import direction_angles, eyeballs_of
from inference_server.fit.synthetic import ground_truth_texture, render_case
from inference_server.flame.layer import FlameLayer
from inference_server.pipeline import Reconstructor
from inference_server.protocol import SequenceArgs
from inference_server.sequence import run as run_module
from inference_server.sequence_result import read_sequence_result

SWEEP_DEG = (-20.0, -10.0, 0.0, 10.0, 20.0)


@pytest.mark.timeout(600)
def test_the_eyes_of_a_clip_follow_the_sweep(tmp_path: Path) -> None:
    reconstructor = Reconstructor(resolve_assets({}), device="cpu")
    head = generate_demo_head()  # the bundle's head, with the vertex colours that paint the irises
    layer, texture = FlameLayer(head, dtype=torch.float64), ground_truth_texture(head)
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, yaw in enumerate(SWEEP_DEG):  # the same head and pose every frame (one seed): only the eyes move
        case = render_case(head, layer, texture, np.random.default_rng(11), max_yaw=10, gaze_deg=(yaw, 0.0))
        cv2.imwrite(str(folder / f"frame_{i + 1}.png"), case.image[:, :, ::-1])
    args = SequenceArgs(source=str(folder), output=str(tmp_path / "clip.npz"), n_shapes=4, n_expressions=4,
                        identity_frames=2, sampler="dpmsolver", steps=6, seed=0)  # fmt: skip
    result = read_sequence_result(run_module.run_sequence(reconstructor, args, lambda *a: None, lambda: False).path)
    assert result.frame_eye_pose is not None
    assert sum(f["gaze_read"] for f in result.meta["frames"]) >= 4
    eyes = eyeballs_of(result.identity_vertices[0], result.skin_weights, result.joints)
    assert eyes is not None
    yaws = []
    for turns in result.frame_eye_pose.astype(np.float64):
        directions = [rotation_matrix(t) @ (e.pupil - e.centre) / e.radius for e, t in zip(eyes, turns, strict=True)]
        yaws.append(direction_angles(np.mean(directions, axis=0))[0])
    # The sweep's direction at every step, most of its 40° swing, each frame within 12° (the head pose the clip's
    # guessed identity gives is off by up to 5° on these frames, and the eyes inherit some of it). Eyes left at
    # rest would be 20° off at the ends.
    assert all(b > a for a, b in itertools.pairwise(yaws)), yaws
    assert yaws[-1] - yaws[0] > 20.0, yaws
    np.testing.assert_allclose(yaws, SWEEP_DEG, atol=12.0)
