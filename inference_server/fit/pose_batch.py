"""Many pose fits at once: :func:`.pose.fit_pose`'s solver, vectorised over a batch of problems (numpy).

The fit stage solves the same small problem many times: the camera from five starting yaws, each landmark
group left out in turn, then one pose per expression (100 in a default run). One at a time, each solve is
~40 Levenberg-Marquardt iterations of a few dozen tiny numpy calls, and Python's overhead is the whole
cost (3 s for a photo). Here every problem of a batch advances through the same iterations together, each
with its own damping, step acceptance and stop, so the arithmetic is the one of :func:`.pose.fit_pose`
(same constants, same residuals, same finite-difference Jacobian, same IRLS weights) and the results agree
with it to rounding (tests/inference_server/fit/test_pose_batch.py compares them).
"""

from __future__ import annotations

import numpy as np

from .camera import Intrinsics
from .pose import FOCAL_PRIOR_SIGMA, ITERATIONS, ROBUST_SCALE_IOD, START_YAWS, PoseFit, _initial_pose, eye_distance


def rotation_matrices(axis_angles: np.ndarray) -> np.ndarray:
    """Rodrigues for (..., 3) axis-angles → (..., 3, 3) (the identity below 1e-12 rad, as camera.py)."""
    aa = np.asarray(axis_angles, dtype=np.float64)
    angle = np.linalg.norm(aa, axis=-1)
    small = angle < 1e-12
    k = aa / np.where(small, 1.0, angle)[..., None]
    zero = np.zeros_like(angle)
    skew = np.stack([
        np.stack([zero, -k[..., 2], k[..., 1]], axis=-1),
        np.stack([k[..., 2], zero, -k[..., 0]], axis=-1),
        np.stack([-k[..., 1], k[..., 0], zero], axis=-1),
    ], axis=-2)  # fmt: skip
    rot = np.eye(3) + np.sin(angle)[..., None, None] * skew + (1.0 - np.cos(angle))[..., None, None] * (skew @ skew)
    return np.where(small[..., None, None], np.eye(3), rot)


class _Batch:
    """The data of B problems: model points (B, N, 3), shared image points (N, 2), weights (B, N)."""

    def __init__(self, model: np.ndarray, image: np.ndarray, prior_w: np.ndarray, intr: Intrinsics,
                 fit_focal: bool, scale: float) -> None:  # fmt: skip
        self.model, self.image, self.prior_w = model, image, prior_w
        self.intr, self.fit_focal, self.scale = intr, fit_focal, scale

    def errors(self, params: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """(b, K, N, 2) pixel errors for params (b, K, P) of the problems ``rows`` (b,)."""
        focal = self.intr.focal * np.exp(params[..., 6]) if self.fit_focal else np.full(params.shape[:-1], self.intr.focal)
        rot = rotation_matrices(params[..., :3])  # (b, K, 3, 3)
        cam = self.model[rows][:, None] @ np.swapaxes(rot, -1, -2) + params[..., None, 3:6]  # (b, K, N, 3)
        depth = np.maximum(-cam[..., 2], 1e-9)
        f = focal[..., None]
        projected = np.stack([self.intr.cx + f * cam[..., 0] / depth, self.intr.cy - f * cam[..., 1] / depth], axis=-1)
        return projected - self.image

    def robust(self, params: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """(b, N) Cauchy weights at params (b, P)."""
        err = self.errors(params[:, None], rows)[:, 0]
        return 1.0 / (1.0 + (np.linalg.norm(err, axis=-1) / self.scale) ** 2)

    def evaluate(self, params: np.ndarray, robust: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Residual vectors (b, K, R) and costs (b, K) of params (b, K, P) under fixed robust weights (b, N)."""
        err = self.errors(params, rows)
        r = (err * np.sqrt(self.prior_w[rows] * robust)[:, None, :, None]).reshape(*params.shape[:2], -1)
        if self.fit_focal:
            r = np.concatenate([r, (self.scale * params[..., 6] / FOCAL_PRIOR_SIGMA)[..., None]], axis=-1)
        return r, (r * r).sum(axis=-1)


def solve_batch(starts: np.ndarray, batch: _Batch) -> tuple[np.ndarray, np.ndarray]:
    """LM + IRLS from each start (B, P); returns the parameters (B, P) and final robust costs (B,)."""
    params = np.array(starts, dtype=np.float64)
    n, p = params.shape
    lam = np.full(n, 1e-3)
    active = np.ones(n, bool)
    for _ in range(ITERATIONS):
        rows = np.nonzero(active)[0]
        if len(rows) == 0:
            break
        x = params[rows]
        robust = batch.robust(x, rows)
        steps = 1e-6 * np.maximum(1.0, np.abs(x))  # (b, P)
        shifted = np.repeat(x[:, None], p + 1, axis=1)
        shifted[:, 1:][:, np.arange(p), np.arange(p)] += steps
        r_all, costs = batch.evaluate(shifted, robust, rows)
        r, cost = r_all[:, 0], costs[:, 0]
        jac = (r_all[:, 1:] - r[:, None]).transpose(0, 2, 1) / steps[:, None, :]  # (b, R, P)
        normal = jac.transpose(0, 2, 1) @ jac
        gradient = np.einsum("brp,br->bp", jac, r)
        diag = np.einsum("bii->bi", normal)
        improved = np.zeros(len(rows), bool)
        delta = np.zeros_like(x)
        trying = np.arange(len(rows))
        for _ in range(8):
            t = trying
            damped = normal[t] + lam[rows[t], None, None] * (np.eye(p) * (diag[t] + 1e-9)[:, None, :])
            delta[t] = np.linalg.solve(damped, -gradient[t][..., None])[..., 0]
            trial = x[t] + delta[t]
            trial_cost = batch.evaluate(trial[:, None], robust[t], rows[t])[1][:, 0]
            ok = trial_cost < cost[t]
            params[rows[t[ok]]] = trial[ok]
            lam[rows[t[ok]]] = np.maximum(lam[rows[t[ok]]] / 3.0, 1e-7)
            improved[t[ok]] = True
            lam[rows[t[~ok]]] *= 4.0
            trying = t[~ok]
            if len(trying) == 0:
                break
        done = ~improved | (np.abs(delta).max(axis=1) < 1e-8)
        active[rows[done]] = False
    every = np.arange(n)
    robust = batch.robust(params, every)
    return params, batch.evaluate(params[:, None], robust, every)[1][:, 0]


def fit_poses(
    model_points: np.ndarray,
    image_points: np.ndarray,
    weights: np.ndarray,
    intrinsics: Intrinsics,
    *,
    fit_focal: bool,
    starts: np.ndarray | None = None,
) -> list[PoseFit]:
    """:func:`.pose.fit_pose` for B problems sharing the photo's points ``image_points`` (68, 2):
    ``model_points`` (B, 68, 3), ``weights`` (B, 68) or (68,), ``starts`` (B, 6) or (6,) or None for
    the yaw search (every problem from every START_YAWS start; the cheapest end wins, the first on a tie)."""
    model = np.asarray(model_points, dtype=np.float64)
    image = np.asarray(image_points, dtype=np.float64)
    b = len(model)
    prior_w = np.clip(np.broadcast_to(np.asarray(weights, dtype=np.float64), (b, model.shape[1])), 0.0, 1.0)
    scale = max(ROBUST_SCALE_IOD * eye_distance(image), 0.5)
    extra = [0.0] if fit_focal else []
    if starts is not None:
        first = np.broadcast_to(np.asarray(starts, dtype=np.float64), (b, 6))
        tries, owner = np.concatenate([first, np.zeros((b, len(extra)))], axis=1), np.arange(b)
    else:
        tries = np.array([
            np.concatenate([_initial_pose(model[i], image, prior_w[i], intrinsics, intrinsics.focal, y), extra])
            for i in range(b) for y in START_YAWS
        ])  # fmt: skip
        owner = np.repeat(np.arange(b), len(START_YAWS))
    batch = _Batch(model[owner], image, prior_w[owner], intrinsics, fit_focal, scale)
    params, costs = solve_batch(tries, batch)
    per_problem = costs.reshape(b, -1)
    best = np.arange(b) * per_problem.shape[1] + np.argmin(per_problem, axis=1)
    err = _Batch(model, image, prior_w, intrinsics, fit_focal, scale).errors(params[best][:, None], np.arange(b))[:, 0]
    distance = np.linalg.norm(err, axis=-1)
    focal = intrinsics.focal * np.exp(params[best, 6]) if fit_focal else np.full(b, intrinsics.focal)
    robust = prior_w / (1.0 + (distance / scale) ** 2)
    return [
        PoseFit(pose=params[j, :6].copy(), focal=float(focal[i]), residuals=distance[i], robust_weights=robust[i],
                cost=float(costs[j]))
        for i, j in enumerate(best)
    ]  # fmt: skip
