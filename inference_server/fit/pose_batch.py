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

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .camera import Intrinsics
from .pose import (
    FOCAL_PRIOR_SIGMA,
    ITERATIONS,
    MOTION_PX,
    ROBUST_SCALE_IOD,
    START_YAWS,
    PoseFit,
    _initial_pose,
    eye_distance,
)  # fmt: skip


def rotation_matrices(axis_angles: np.ndarray) -> np.ndarray:
    """Rodrigues for (..., 3) axis-angles → (..., 3, 3): c I + s [k]× + (1 - c) k kᵀ, entry by entry
    (the identity below 1e-12 rad, as :func:`.camera.rotation_matrix`)."""
    aa = np.asarray(axis_angles, dtype=np.float64)
    angle = np.linalg.norm(aa, axis=-1)
    small = angle < 1e-12
    k = aa / np.where(small, 1.0, angle)[..., None]
    c, s = np.where(small, 1.0, np.cos(angle)), np.where(small, 0.0, np.sin(angle))
    t = 1.0 - c
    x, y, z = k[..., 0], k[..., 1], k[..., 2]
    rot = np.empty((*aa.shape[:-1], 3, 3))
    rot[..., 0, 0], rot[..., 0, 1], rot[..., 0, 2] = c + t * x * x, t * x * y - s * z, t * x * z + s * y
    rot[..., 1, 0], rot[..., 1, 1], rot[..., 1, 2] = t * x * y + s * z, c + t * y * y, t * y * z - s * x
    rot[..., 2, 0], rot[..., 2, 1], rot[..., 2, 2] = t * x * z - s * y, t * y * z + s * x, c + t * z * z
    return rot


#: Batches smaller than this are solved by LAPACK (measured crossover ~40 on the 2-core EPYC).
SMALL_BATCH = 32
#: Problems per thread at least when a batch is split over threads (``fit_poses(threads=...)``): below
#: SMALL_BATCH active rows a thread's solves go to LAPACK, and smaller shares spend more of their time in
#: Python, holding the GIL (100 expressions on 2 threads: 1.65× on the 2-core Xeon).
MIN_PROBLEMS_PER_THREAD = 32
#: Weight of a landmark's depth residual relative to its 2D residual (both in pixels): the face mesh's
#: relative depth scatters ~2x its 2D position at the eyes (docs/texture.md, "Depth from the face mesh").
DEPTH_WEIGHT = 0.2
#: The face mesh's relative depth per pixel of the model's (weak-perspective) depth, measured on clean renders.
DEPTH_SCALE = 1.0
#: Cauchy scale of the depth residual relative to the 2D one's (ROBUST_SCALE_IOD).
DEPTH_ROBUST = 2.0


class _Batch:
    """The data of B problems: model points (B, N, 3), shared image points (N, 2) or (N, 3) with the
    detector's relative depth (NaN where there is none), weights (B, N)."""

    def __init__(self, model: np.ndarray, image: np.ndarray, prior_w: np.ndarray, intr: Intrinsics,
                 fit_focal: bool, scale: float) -> None:  # fmt: skip
        self.model, self.image, self.prior_w = model, image[:, :2], prior_w
        # The model's x, y and z each contiguous (3, B, N): the rotation reads them per axis, ~40 % faster
        # than strided views of (B, N, 3).
        self.axes = np.ascontiguousarray(np.moveaxis(model, -1, 0))
        self.intr, self.fit_focal, self.scale = intr, fit_focal, scale
        self.depth: np.ndarray | None = None
        if image.shape[1] > 2 and np.isfinite(image[:, 2]).any():
            # Depth is relative: both the detector's and the model's are taken from their mean over the
            # trusted points, weighted like the 2D residuals (so a hidden point does not shift the mean).
            ok = np.isfinite(image[:, 2])
            w = prior_w * ok
            self.depth_w = w / np.maximum(w.sum(axis=1, keepdims=True), 1e-12)  # (B, N)
            z = np.where(ok, image[:, 2], 0.0) / DEPTH_SCALE
            self.depth = z - (self.depth_w * z).sum(axis=1, keepdims=True)  # (B, N)
            self.depth_gain = DEPTH_WEIGHT * ok  # (N,): no depth, no residual

    def errors(self, params: np.ndarray, rows: np.ndarray, rotations: int | None = None) -> np.ndarray:
        """(b, K, N, 2) pixel errors for params (b, K, P) of the problems ``rows`` (b,). ``rotations``: only
        the first that many of the K parameter sets differ in rotation, the others have the first one's (the
        Jacobian's translation and focal columns), so the rotated model is computed for those alone."""
        if self.fit_focal:
            f = (self.intr.focal * np.exp(params[..., 6]))[..., None]
        else:
            f = np.full((*params.shape[:-1], 1), self.intr.focal)
        k = params.shape[1] if rotations is None else rotations
        rot = rotation_matrices(params[:, :k, :3])[..., None]  # (b, k, 3, 3, 1)
        m = self.axes[:, rows, None]  # (3, b, 1, N)
        t = params[..., 3:6, None]  # (b, K, 3, 1)
        # Camera coordinates one axis at a time: elementwise arrays instead of many tiny matmuls; the
        # translation added last, as a sum of its own, so a shared rotation gives the same bits.
        x, y, z = (np.empty((*params.shape[:2], m.shape[-1])) for _ in range(3))
        for i, axis in enumerate((x, y, z)):
            rotated = rot[..., i, 0, :] * m[0] + rot[..., i, 1, :] * m[1] + rot[..., i, 2, :] * m[2]
            np.add(rotated, t[:, :k, i, :], out=axis[:, :k])
            if k < params.shape[1]:
                np.add(rotated[:, :1], t[:, k:, i, :], out=axis[:, k:])
        depth = np.maximum(-z, 1e-9)
        out = np.empty((*x.shape, 2 if self.depth is None else 3))
        out[..., 0] = self.intr.cx + f * x / depth - self.image[:, 0]
        out[..., 1] = self.intr.cy - f * y / depth - self.image[:, 1]
        if self.depth is not None:
            # The model's depth about its weighted mean, in pixels at that mean's distance (weak perspective,
            # the scale the detector's z is given in).
            mean = (depth * self.depth_w[rows][:, None]).sum(axis=-1, keepdims=True)
            out[..., 2] = (f * (depth - mean) / mean - self.depth[rows][:, None]) * self.depth_gain
        return out

    def robust(self, err: np.ndarray) -> np.ndarray:
        """Cauchy weights of pixel errors (b, N, C): (b, N) of the 2D error without depth; with depth
        (b, N, 3), the 2D error's for x and y and for the depth also its own (with its own scale: a depth
        the detector got wrong yields without taking the point's 2D along)."""
        planar = 1.0 / (1.0 + (err[..., 0] ** 2 + err[..., 1] ** 2) / self.scale**2)
        if err.shape[-1] == 2:
            return planar
        depth = 1.0 / (1.0 + (err[..., 2] / (DEPTH_WEIGHT * DEPTH_ROBUST * self.scale)) ** 2)
        out = np.repeat(planar[..., None], 3, axis=-1)
        out[..., 2] *= depth
        return out

    def root_weights(self, robust: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """(b, 1, N, C or 1): the square roots of the prior times the robust weights (b, N) or (b, N, C) of the
        problems ``rows``, that scale the pixel errors into residuals; fixed through an LM iteration, so
        computed once for its Jacobian and trial steps."""
        w = self.prior_w[rows] * robust if robust.ndim == 2 else self.prior_w[rows][..., None] * robust
        return np.sqrt(w if w.ndim == 3 else w[..., None])[:, None]

    def evaluate(
        self, params: np.ndarray, root: np.ndarray, rows: np.ndarray, err: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Residual vectors (b, K, R) and costs (b, K) of params (b, K, P) under fixed weights (their
        :meth:`root_weights`); ``err``: their pixel errors when already computed."""
        if err is None:
            err = self.errors(params, rows)
        r = (err * root).reshape(*params.shape[:2], -1)
        if self.fit_focal:
            r = np.concatenate([r, (self.scale * params[..., 6] / FOCAL_PRIOR_SIGMA)[..., None]], axis=-1)
        return r, (r * r).sum(axis=-1)


def solve_spd(a: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """x with a x = rhs for a batch of symmetric positive definite (b, p, p) matrices, by Cholesky
    unrolled over the p ≤ 7 columns: numpy's batched LAPACK call costs ~20 µs per matrix (2 ms for 100),
    this ~0.3-0.5 ms whatever the batch; below SMALL_BATCH matrices LAPACK is the cheaper. Rows the
    factorisation cannot take (not positive definite to rounding) go to LAPACK."""
    if len(a) < SMALL_BATCH:  # LAPACK's cost grows with the batch, the unrolled loop's hardly does
        return np.asarray(np.linalg.solve(a, rhs[..., None])[..., 0])
    p = rhs.shape[1]
    low = np.zeros_like(a)
    with np.errstate(invalid="ignore", divide="ignore"):
        for j in range(p):
            low[:, j, j] = np.sqrt(a[:, j, j] - (low[:, j, :j] ** 2).sum(axis=1))
            below = a[:, j + 1 :, j] - np.einsum("bik,bk->bi", low[:, j + 1 :, :j], low[:, j, :j])
            low[:, j + 1 :, j] = below / low[:, j, j, None]
        y = np.zeros_like(rhs)
        for j in range(p):
            y[:, j] = (rhs[:, j] - (low[:, j, :j] * y[:, :j]).sum(axis=1)) / low[:, j, j]
        x = np.zeros_like(rhs)
        for j in reversed(range(p)):
            x[:, j] = (y[:, j] - (low[:, j + 1 :, j] * x[:, j + 1 :]).sum(axis=1)) / low[:, j, j]
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        x[bad] = np.linalg.solve(a[bad], rhs[bad][..., None])[..., 0]
    return x


def _largest_move(after: np.ndarray, before: np.ndarray) -> np.ndarray:
    """(b,) the largest change of a projected coordinate between two sets of pixel errors (b, N, C)."""
    return np.asarray(np.abs(after[..., :2] - before[..., :2]).max(axis=(1, 2)))


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
        steps = 1e-6 * np.maximum(1.0, np.abs(x))  # (b, P)
        shifted = np.repeat(x[:, None], p + 1, axis=1)
        shifted[:, 1:][:, np.arange(p), np.arange(p)] += steps
        # [:, 0] is at x itself (the IRLS weights come from there); [:, 4:] shift translation or focal only.
        err = batch.errors(shifted, rows, rotations=4)
        root = batch.root_weights(batch.robust(err[:, 0]), rows)
        r_all, costs = batch.evaluate(shifted, root, rows, err)
        r, cost = r_all[:, 0], costs[:, 0]
        jac = (r_all[:, 1:] - r[:, None]).transpose(0, 2, 1) / steps[:, None, :]  # (b, R, P)
        normal = jac.transpose(0, 2, 1) @ jac
        gradient = np.einsum("brp,br->bp", jac, r)
        diag = np.einsum("bii->bi", normal)
        scaled_eye = np.eye(p) * (diag + 1e-9)[:, None, :]  # (b, P, P)
        # fit_pose tries the damping lam, 4 lam, 16 lam, ... (8 tries) until the cost drops. Most problems
        # take the first; the others get their 7 remaining tries in one batch, the first that improves wins.
        delta = solve_spd(normal + lam[rows, None, None] * scaled_eye, -gradient)
        trial = x + delta
        moved = batch.errors(trial[:, None], rows)
        improved = batch.evaluate(trial[:, None], root, rows, moved)[1][:, 0] < cost
        # How far the accepted step moves the projected points (pixels; the MOTION_PX stop).
        motion = np.where(improved, _largest_move(moved[:, 0], err[:, 0]), np.inf)
        params[rows[improved]] = trial[improved]
        lam[rows[improved]] = np.maximum(lam[rows[improved]] / 3.0, 1e-7)
        if not improved.all():
            t = np.nonzero(~improved)[0]
            lams = lam[rows[t], None] * 4.0 ** np.arange(1, 8)  # (m, 7): exact, powers of two
            damped = normal[t, None] + lams[..., None, None] * scaled_eye[t, None]
            deltas = solve_spd(damped.reshape(-1, p, p), np.repeat(-gradient[t], 7, axis=0)).reshape(len(t), 7, p)
            trials = x[t, None] + deltas
            tried = batch.errors(trials, rows[t])
            ok = batch.evaluate(trials, root[t], rows[t], tried)[1] < cost[t, None]  # (m, 7)
            first = np.argmax(ok, axis=1)
            won = ok.any(axis=1)
            motion[t[won]] = _largest_move(tried[won, first[won]], err[t[won], 0])
            pick = np.where(won, first, 6)  # without a win, the last delta tried decides the stop
            delta[t] = deltas[np.arange(len(t)), pick]
            chosen = t[won]
            params[rows[chosen]] = trials[won, first[won]]
            lam[rows[chosen]] = np.maximum(lams[won, first[won]] / 3.0, 1e-7)
            lam[rows[t[~won]]] *= 4.0**8
            improved[chosen] = True
        done = ~improved | (np.abs(delta).max(axis=1) < 1e-8) | (motion < MOTION_PX)
        active[rows[done]] = False
    every = np.arange(n)
    err = batch.errors(params[:, None], every)
    root = batch.root_weights(batch.robust(err[:, 0]), every)
    return params, batch.evaluate(params[:, None], root, every, err)[1][:, 0]


def fit_poses(
    model_points: np.ndarray,
    image_points: np.ndarray,
    weights: np.ndarray,
    intrinsics: Intrinsics,
    *,
    fit_focal: bool,
    starts: np.ndarray | None = None,
    precision: np.ndarray | None = None,
    second: np.ndarray | None = None,
    threads: int = 1,
) -> list[PoseFit]:
    """:func:`.pose.fit_pose` for B problems sharing the photo's points ``image_points`` (68, 2), or (68, 3)
    with the detector's relative depth in pixels (NaN: none), fitted as a weak third residual per point
    (``DEPTH_WEIGHT``; :func:`.pose.fit_pose` has no depth): ``model_points`` (B, 68, 3), ``weights``
    (B, 68) or (68,), ``starts`` (B, 6) or (6,) — (B, 7) or (7,) with ``fit_focal``: the focal's log-ratio to
    ``intrinsics.focal`` as the seventh — or None for the yaw search (every problem from every
    START_YAWS start; the cheapest end wins, the first on a tie); ``precision`` (68,) scales the weights as
    in :func:`.pose.fit_pose` (with ``second``, (68,) for every run or (runs × 68,) run by run);
    ``second`` (k × 68, 2) or (k × 68, 3): further detector runs' points for the same landmarks, one run
    under the other (the mirrored photo's, :mod:`.landmark_averaging`; the second network's,
    :mod:`.second_network`), fitted as observations of their own with the same weights (the robust loss
    weighs each run's point on its own, so where the runs disagree the one the rest of the face
    contradicts yields); the residuals (2D) and robust weights reported are the first run's. ``threads``:
    the problems are shared out over up to that many threads, at least MIN_PROBLEMS_PER_THREAD each (numpy
    releases the GIL in the batch's array arithmetic; each problem's arithmetic is its own, so the results
    are the same to rounding: the solves of fewer than SMALL_BATCH rows go to LAPACK)."""
    if second is not None:
        n = np.asarray(model_points).shape[1]
        runs = 1 + len(second) // n
        if len(second) % n:
            raise ValueError(f"second: {len(second)} points are not whole runs of {n}")
        w = np.asarray(weights, dtype=np.float64)
        fits = fit_poses(np.concatenate([model_points] * runs, axis=1), _stacked(image_points, second),
                         np.concatenate([w] * runs, axis=-1), intrinsics, fit_focal=fit_focal, starts=starts,
                         precision=None if precision is None else _per_run(precision, n, runs),
                         threads=threads)  # fmt: skip
        return [PoseFit(f.pose, f.focal, f.residuals[:n], f.robust_weights[:n], f.cost) for f in fits]
    model = np.asarray(model_points, dtype=np.float64)
    image = np.asarray(image_points, dtype=np.float64)
    b = len(model)
    shares = min(threads, b // MIN_PROBLEMS_PER_THREAD)
    if shares > 1:
        return _fit_shared_out(model, image, weights, intrinsics, shares, fit_focal=fit_focal, starts=starts,
                               precision=precision)  # fmt: skip
    prior_w = np.clip(np.broadcast_to(np.asarray(weights, dtype=np.float64), (b, model.shape[1])), 0.0, 1.0)
    if precision is not None:
        prior_w = prior_w * np.clip(np.asarray(precision, dtype=np.float64), 0.0, 1.0)
    scale = max(ROBUST_SCALE_IOD * eye_distance(image[:, :2]), 0.5)
    extra = [0.0] if fit_focal else []
    if starts is not None:
        given = np.asarray(starts, dtype=np.float64)
        if given.shape[-1] == 6 + len(extra):  # the focal's log-ratio to intrinsics.focal given too
            tries = np.array(np.broadcast_to(given, (b, 6 + len(extra))))
        else:
            first = np.broadcast_to(given, (b, 6))
            tries = np.concatenate([first, np.zeros((b, len(extra)))], axis=1)
        owner = np.arange(b)
    else:
        tries = np.array([
            np.concatenate([_initial_pose(model[i], image[:, :2], prior_w[i], intrinsics, intrinsics.focal, y), extra])
            for i in range(b) for y in START_YAWS
        ])  # fmt: skip
        owner = np.repeat(np.arange(b), len(START_YAWS))
    batch = _Batch(model[owner], image, prior_w[owner], intrinsics, fit_focal, scale)
    params, costs = solve_batch(tries, batch)
    per_problem = costs.reshape(b, -1)
    best = np.arange(b) * per_problem.shape[1] + np.argmin(per_problem, axis=1)
    err = _Batch(model, image, prior_w, intrinsics, fit_focal, scale).errors(params[best][:, None], np.arange(b))[:, 0]
    distance = np.linalg.norm(err[..., :2], axis=-1)
    focal = intrinsics.focal * np.exp(params[best, 6]) if fit_focal else np.full(b, intrinsics.focal)
    robust = prior_w / (1.0 + (distance / scale) ** 2)
    return [
        PoseFit(pose=params[j, :6].copy(), focal=float(focal[i]), residuals=distance[i], robust_weights=robust[i],
                cost=float(costs[j]))
        for i, j in enumerate(best)
    ]  # fmt: skip


def _fit_shared_out(
    model: np.ndarray, image: np.ndarray, weights: np.ndarray, intrinsics: Intrinsics, shares: int, *,
    fit_focal: bool, starts: np.ndarray | None, precision: np.ndarray | None,
) -> list[PoseFit]:  # fmt: skip
    """:func:`fit_poses` of the problems split into ``shares`` consecutive parts, each on a thread of its own."""
    b = len(model)
    w = np.broadcast_to(np.asarray(weights, dtype=np.float64), (b, model.shape[1]))
    given = None if starts is None else np.asarray(starts, dtype=np.float64)
    per_problem = given is not None and given.ndim == 2
    bounds = np.linspace(0, b, shares + 1).round().astype(int)

    def part(i: int) -> list[PoseFit]:
        rows = slice(bounds[i], bounds[i + 1])
        return fit_poses(model[rows], image, w[rows], intrinsics, fit_focal=fit_focal, precision=precision,
                         starts=given[rows] if per_problem and given is not None else given)  # fmt: skip

    with ThreadPoolExecutor(shares) as pool:
        return [fit for fits in pool.map(part, range(shares)) for fit in fits]


def _per_run(precision: np.ndarray, n: int, runs: int) -> np.ndarray:
    """The precision of every run's points: (n,) shared by all runs, or (runs * n,) given per run."""
    given = np.asarray(precision, dtype=np.float64)
    return given if len(given) == n * runs else np.tile(given, runs)


def _stacked(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Both runs' points one under the other; when only one run has depth, the other's is NaN (none)."""
    return stacked_runs([first, second])


def stacked_runs(runs: list[np.ndarray]) -> np.ndarray:
    """Detector runs' points (n_i, 2) or (n_i, 3) one under the other; where some runs have depth and others
    not, those get a NaN depth (none: no depth residual for their points)."""
    arrays = [np.asarray(run, dtype=np.float64) for run in runs]
    columns = max(a.shape[1] for a in arrays)
    return np.concatenate([a if a.shape[1] == columns else np.column_stack([a, np.full(len(a), np.nan)])
                           for a in arrays])  # fmt: skip
