"""The acceptance test of issue 18 item 1 on a rendered clip (DEMO head and weights, small settings).

A performance (scripted expressions and jaw, the head turning) with a bar over the mouth for the middle third
of the frames. The run is cancelled part-way through pass 2 and run again: it resumes without redoing a frame.
The chosen path must be closer to the truth than each frame's first hypothesis and jitter at least 3× less
(frame-to-frame change minus the truth's, docs/sequence-result.md); the larger measurement is
``ofer-worker evaluate sequence`` (README).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from inference_server.assets_config import resolve_assets
from inference_server.errors import CancelledError
from inference_server.evaluate.sequence import render_clip, rotation_errors_deg, score_sequence, write_clip
from inference_server.pipeline import Reconstructor
from inference_server.protocol import SequenceArgs
from inference_server.sequence import run as run_module
from inference_server.sequence.controls import rig_vertices
from inference_server.sequence.workdir import work_folder_for
from inference_server.sequence_result import read_sequence_result

FRAMES = 9


class Counting:
    def __init__(self, inner: Any) -> None:
        self.inner, self.calls = inner, 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self.inner(*args, **kwargs)


@pytest.mark.timeout(600)
def test_a_clip_becomes_a_smooth_animation_and_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reconstructor = Reconstructor(resolve_assets({}), device="cpu")
    head = reconstructor.bundle(torch.device("cpu")).flame
    # nine frames of a performance that takes 36: motion between frames like a filmed clip's, not a slideshow's
    clip = render_clip(head, FRAMES, seed=0, size=(320, 240), period=36)
    frames = write_clip(clip, tmp_path / "frames")
    args = SequenceArgs(source=str(frames), output=str(tmp_path / "clip.npz"), n_shapes=4, n_expressions=8,
                        identity_frames=2, sampler="dpmsolver", steps=6, seed=0)  # fmt: skip
    seen: list[tuple[str, int, int]] = []

    def cancel_at_frame_four() -> bool:
        return ("expressions", 4, FRAMES) in seen

    def record(stage: str, done: int, total: int, message: str = "") -> None:
        seen.append((stage, done, total))

    with pytest.raises(CancelledError):
        run_module.run_sequence(reconstructor, args, record, cancel_at_frame_four)
    work = work_folder_for(args.output)
    assert not Path(args.output).exists()
    assert len(list((work / "encode").glob("*.npz"))) == FRAMES and len(list((work / "fit").glob("*.npz"))) == 4

    encode, fit = Counting(run_module.encode_frame), Counting(run_module.fit_frame)
    monkeypatch.setattr(run_module, "encode_frame", encode)
    monkeypatch.setattr(run_module, "fit_frame", fit)
    seen.clear()
    output = run_module.run_sequence(reconstructor, args, record, lambda: False)
    assert (encode.calls, fit.calls, output.resumed_frames) == (0, FRAMES - 4, 4)  # nothing done twice
    assert [d for s, d, _ in seen if s == "expressions"] == list(range(4, FRAMES + 1))
    assert not work.exists()

    result = read_sequence_result(output.path)
    assert result.n_frames == FRAMES and result.demo and result.frame_observed.sum() >= FRAMES - 1
    assert [f["name"] for f in result.meta["frames"]] == [f"frame_{i + 1}.png" for i in range(FRAMES)]
    assert result.camera[1:].tolist() == [160.0, 120.0]
    e = result.expression_basis.shape[0]
    params = np.concatenate([result.frame_expression_params, result.frame_jaw_pose], axis=1).astype(np.float64)
    again = rig_vertices(result.identity_vertices[0], result.joints, result.parents, result.skin_weights,
                         result.expression_basis, result.pose_basis, params[:, :e], params[:, e:])  # fmt: skip
    assert np.abs(again - result.frame_vertices).max() < 1e-5

    # One camera and the head's turn and nod. The fit of MediaPipe's landmarks on DEMO renders is off by ~3.5°
    # with the true identity (docs/texture.md); here the identity is estimated and the renders are small.
    turn = rotation_errors_deg(result.frame_head_pose, clip.poses)
    swing = rotation_errors_deg(result.frame_head_pose[[0]], result.frame_head_pose[[-1]])[0]
    true_swing = rotation_errors_deg(clip.poses[[0]], clip.poses[[-1]])[0]
    print(
        f"head rotation error {np.median(turn):.1f}° (max {turn.max():.1f}°), swing {swing:.1f}° (true "
        f"{true_swing:.1f}°), focal {result.camera[0]:.0f} px (true {clip.camera[0]:.0f})"
    )
    assert np.median(turn) < 8.0 and abs(swing - true_swing) < 0.3 * true_swing
    assert abs(result.camera[0] / clip.camera[0] - 1) < 0.25

    scores = score_sequence(result, clip, head.front_face_indices)
    print(scores.table())
    # Measured: path 2.98 mm against first sample 3.43 mm; jitter − truth's 0.35 mm against 2.62 mm (truth's
    # own 0.46 mm per frame). About 35 s of CPU on 2 shared cores.
    assert scores.path_error_mm < scores.first_error_mm
    assert scores.first_jitter_mm > 0  # the baseline jitters: the comparison below is not vacuous
    assert 3 * scores.path_jitter_mm <= scores.first_jitter_mm
