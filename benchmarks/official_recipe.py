"""The official inference recipe (spec section 8), timed stage by stage: the baseline of ``reconstruction.py``.

Every encoder on 100 tiled copies of the image (IdRank's on one), IdGen with 251 strided DDIM steps (η = 0)
and ExpGen with 1000 DDPM steps, a plain eager loop that indexes the schedule tables on every step, per-row
conditions (dense tiled contexts), fp32. Detection, ranking, decoding and writing are the same code as ours.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from bench_setup import sync

from inference_server.diffusion import NoiseSchedule
from inference_server.nets.denoiser import Denoiser
from inference_server.pipeline import EXPGEN_EXPRESSIONS, Reconstructor
from inference_server.preprocess.crops import arcface_crop, farl_crop
from inference_server.preprocess.image import load_image
from inference_server.protocol import ReconstructArgs
from inference_server.result import ReconstructionResult, write_result

#: Official demo: IdGen's broken strided DDIM makes 251 network calls; ExpGen runs full DDPM.
BASELINE_IDGEN_STEPS = 251
BASELINE_EXPGEN_STEPS = 1000


def eager_sampler(net: Denoiser, context: torch.Tensor, n: int, steps: int, *, ddpm: bool, seed: int) -> torch.Tensor:
    """The official-style loop: per-step table lookups on the device, per-row conditions, fp32."""
    schedule = NoiseSchedule.linear()
    device = context.device
    betas = schedule.betas.float().to(device)
    abar = schedule.alphas_cumprod.float().to(device)
    abar_prev = schedule.alphas_cumprod_prev.float().to(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    feature_dim = net.config.feature_dim
    x = torch.randn(n, feature_dim, generator=generator, device=device)
    dense_context = context.expand(n, -1).contiguous()  # the tiled copies: n identical dense rows
    timesteps = schedule.trailing_timesteps(steps)
    with torch.no_grad():
        for i, step in enumerate(timesteps):
            t = torch.full((n,), step, device=device, dtype=torch.int64)
            eps = net(x, t, dense_context)
            if ddpm:
                mean = (x - betas[t][:, None] / (1 - abar[t][:, None]).sqrt() * eps) / (1 - betas[t][:, None]).sqrt()
                variance = betas[t] * (1 - abar_prev[t]) / (1 - abar[t])
                noise = torch.randn(x.shape, generator=generator, device=device)
                x = mean + (variance.sqrt()[:, None] * noise if step > 0 else 0)
            else:
                a_next = abar[timesteps[i + 1]] if i + 1 < len(timesteps) else torch.ones((), device=device)
                x0 = (x - (1 - abar[t][:, None]).sqrt() * eps) / abar[t][:, None].sqrt()
                x = a_next.sqrt() * x0 + (1 - a_next).sqrt() * eps
    return x


def baseline_run(
    reconstructor: Reconstructor, args: ReconstructArgs, device: torch.device, copies: int, steps: tuple[int, int]
) -> dict[str, float]:
    """One reconstruction the official way; returns seconds per stage."""
    seconds: dict[str, float] = {}

    def clock(stage: str, start: float) -> float:
        sync(device)
        now = time.perf_counter()
        seconds[stage] = now - start
        return now

    t = time.perf_counter()
    image = load_image(args.image)
    bundle = reconstructor.bundle(device)
    flame = reconstructor.flame_layer(bundle, device)
    t = clock("load", t)
    detection = reconstructor.detector().detect(image)
    arc = arcface_crop(image.rgb, detection.points5)
    far = farl_crop(image.rgb, detection.box)
    t = clock("detect", t)
    blob = torch.from_numpy(np.ascontiguousarray(arc.blob))[None].to(device)
    img = torch.from_numpy(np.ascontiguousarray(far.tensor))[None].to(device)
    with torch.no_grad():
        idgen_ctx = bundle.idgen_context(blob.expand(copies, -1, -1, -1).contiguous())[:1]
        expgen_ctx = bundle.expgen_context(
            blob.expand(copies, -1, -1, -1).contiguous(), img.expand(copies, -1, -1, -1).contiguous()
        )[:1]
        idrank_ctx = bundle.idrank_context(blob, img)
    t = clock("encode", t)
    assert bundle.idgen.denoiser is not None and bundle.expgen.denoiser is not None
    shapes = eager_sampler(bundle.idgen.denoiser, idgen_ctx, args.n_shapes, steps[0], ddpm=False, seed=args.seed)
    t = clock("sample_shapes", t)
    with torch.no_grad():
        neutral = flame.neutral(shapes).vertices
        front = neutral[:, torch.as_tensor(bundle.front_indices, device=device)] * 1000.0
        logits = bundle.score_shapes(front, idrank_ctx)
    best = int(torch.argmax(logits))
    t = clock("rank", t)
    exps = eager_sampler(
        bundle.expgen.denoiser, expgen_ctx, args.n_expressions, steps[1], ddpm=True, seed=args.seed + 1
    )
    t = clock("sample_expressions", t)
    with torch.no_grad():
        posed = flame.with_expression(
            shapes[best : best + 1], exps[:, :EXPGEN_EXPRESSIONS], exps[:, EXPGEN_EXPRESSIONS:] * 0.5
        )
        rest = flame.neutral(shapes[best : best + 1])
    t = clock("decode", t)
    n_vertices = bundle.flame.n_vertices
    result = ReconstructionResult(
        meta={"producer": "benchmark baseline", "demo": True, "units": "metres", "seconds": {}},
        faces=bundle.flame.faces.astype(np.int32),
        template=bundle.flame.v_template.astype(np.float32),
        identity_params=shapes[best : best + 1].cpu().numpy().astype(np.float32),
        identity_scores=np.ones(1, np.float32),
        identity_vertices=neutral[best : best + 1].cpu().numpy().astype(np.float32),
        expression_params=exps[:, :EXPGEN_EXPRESSIONS].cpu().numpy().astype(np.float32),
        jaw_pose=(exps[:, EXPGEN_EXPRESSIONS:] * 0.5).cpu().numpy().astype(np.float32),
        expression_vertices=posed.vertices.cpu().numpy().astype(np.float32),
        joints=rest.rest_joints[0].cpu().numpy().astype(np.float32),
        parents=bundle.flame.parents.astype(np.int32),
        skin_weights=bundle.flame.weights.astype(np.float32),
        spread_identity=np.zeros(n_vertices, np.float32),
        spread_expression=np.zeros(n_vertices, np.float32),
    )
    try:
        write_result(args.output, result)
    except Exception:  # the baseline file is not the contract's; only its cost counts
        np.savez(args.output, vertices=result.expression_vertices)
    clock("write", t)
    return seconds
