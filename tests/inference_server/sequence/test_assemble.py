"""From per-frame hypotheses to the animation: bridged frames, frames without a fit, the head pose."""

from __future__ import annotations

import numpy as np

from inference_server.sequence.assemble import animate
from inference_server.sequence.frames import FittedFrame

WIDTH = 53


def _frame(index: int, hypotheses: np.ndarray, errors: np.ndarray | None, pose: np.ndarray | None) -> FittedFrame:
    m = len(hypotheses)
    return FittedFrame(
        index=index, status="ok" if errors is not None else "fit_untrusted", hypotheses=hypotheses,
        errors_px=np.full(m, np.nan) if errors is None else errors,
        poses=np.full((m, 6), np.nan) if pose is None else np.repeat(pose[None], m, axis=0),
        eye_px=60.0 if errors is not None else float("nan"), visible=60 if errors is not None else 0, warnings=[],
    )  # fmt: skip


def test_frames_without_hypotheses_or_fit_are_bridged_smoothly() -> None:
    rng = np.random.default_rng(0)
    truth = np.linspace(0.0, 1.0, 6)  # coefficient 0 ramps over the clip
    frames = []
    for t in range(6):
        good = np.zeros(WIDTH)
        good[0] = truth[t]
        wild = rng.normal(0, 2.0, (3, WIDTH))
        hypotheses = np.vstack([wild[:1], good, wild[1:]])  # the consistent one is never listed first
        pose = np.array([0.0, 0.1 * t, 0.0, 0.0, 0.0, -0.5])
        if t == 2:  # no face: no hypotheses at all
            frames.append(_frame(t, np.zeros((0, WIDTH)), None, None))
        elif t == 3:  # a face, but the fit is not trusted: chosen by smoothness alone, pose interpolated
            frames.append(_frame(t, hypotheses, None, None))
        else:
            frames.append(_frame(t, hypotheses, np.array([3.0, 2.0, 3.0, 3.0]), pose))
    anim = animate(frames, np.eye(WIDTH), smoothness=1.0, sigma=0.0)
    assert anim.choice.tolist() == [1, 1, -1, 1, 1, 1]
    assert np.allclose(anim.params[:, 0], truth)  # frame 2 interpolated between its neighbours' choices
    assert anim.observed.tolist() == [True, True, False, False, True, True]
    assert np.allclose(anim.head_pose[:, 1], 0.1 * np.arange(6))  # poses of frames 2 and 3 interpolated
    assert anim.hypotheses.shape == (6, 4, WIDTH) and np.allclose(anim.hypotheses[2], anim.params[2])
    smoothed = animate(frames, np.eye(WIDTH), smoothness=1.0, sigma=1.0)
    assert np.allclose(smoothed.params[:, 0], truth, atol=1e-9)  # a steady motion survives the smoothing
    assert smoothed.path_meta["smoothing"] == {"kind": "gaussian", "sigma_frames": 1.0}


def test_the_gaze_is_bridged_where_it_was_not_read_and_absent_when_never() -> None:
    """Eye poses read on frames 0, 1 and 4 (a ramp): frames 2 and 3 (a closed eye, an untrusted fit) get the
    straight line between, smoothing keeps the ramp; a clip where no frame was read has no gaze."""
    hypotheses = np.zeros((2, WIDTH))
    pose = np.array([0.0, 0.0, 0.0, 0.0, 0.0, -0.5])
    frames = [_frame(t, hypotheses, np.array([1.0, 2.0]), pose) for t in range(5)]
    ramp = [np.array([[0.0, 0.05 * t, 0.0], [0.0, 0.05 * t, 0.01]]) for t in range(5)]
    for t in (0, 1, 4):
        frames[t].eye_pose = ramp[t]
    anim = animate(frames, np.eye(WIDTH), smoothness=1.0, sigma=1.0)
    assert anim.eye_pose is not None and anim.eye_pose.shape == (5, 2, 3)
    np.testing.assert_allclose(anim.eye_pose, np.stack(ramp), atol=1e-12)
    for frame in frames:
        frame.eye_pose = None
    assert animate(frames, np.eye(WIDTH), smoothness=1.0, sigma=1.0).eye_pose is None
