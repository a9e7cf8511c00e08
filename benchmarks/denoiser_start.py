"""Why the DEMO recipe starts its denoisers at ε̂ = x_t: a short run on a known Gaussian prior.

Data: 300 coefficients, the first 32 with σ = 1 and the rest σ = 0.3 (the synthetic renders' shape prior),
no image (a zero context). Two DEMO-size IdGen denoisers train with the same data, noise, AdamW and
warm-up + cosine schedule: one from PyTorch's default initialisation, one from
``start_at_identity``. For a Gaussian prior the exact ε-optimum is known per coordinate, slope
sqrt(1 − ᾱ_t) / (ᾱ_t σ² + 1 − ᾱ_t) of ε̂ on x_t; the samplers need it most at t ≈ T, where
sqrt(ᾱ_T) = 0.079 multiplies ε errors by 12.6. Printed: the learned slopes against the optimum at a
few t, and the std of 256 samples per sampler against σ (ratios; 1.0 is right).

Run: ``.venv/bin/python benchmarks/denoiser_start.py [--steps 400]`` (about 2 minutes per start on one
core at 400 steps).
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from inference_server.diffusion import NoiseSchedule, sample
from inference_server.nets.denoiser import Denoiser
from inference_server.train.initialisation import start_at_identity
from inference_server.train.presets import PRESETS
from inference_server.train.trainer import warmup_cosine

STRONG = 32
SIGMA = torch.cat([torch.ones(STRONG), torch.full((300 - STRONG,), 0.3)])
SAMPLERS = (("ddim", 25, 1.0), ("dpmsolver_sde", 20, 0.0), ("ddpm", None, 0.0))


def train_on_prior(identity: bool, steps: int, rows: int, lr: float) -> tuple[Denoiser, float]:
    torch.manual_seed(0)
    net = Denoiser(PRESETS["demo"].idgen)
    if identity:
        start_at_identity(net)
    abar = torch.as_tensor(NoiseSchedule.linear().alphas_cumprod, dtype=torch.float32)
    optimiser = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    warmup = max(1, steps // 20)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda k: warmup_cosine(k, warmup=warmup, total=steps))
    generator = torch.Generator().manual_seed(0)
    context = torch.zeros(rows, 512)
    began = time.perf_counter()
    for _ in range(steps):
        x0 = torch.randn(rows, 300, generator=generator) * SIGMA
        t = torch.randint(0, 1000, (rows,), generator=generator)
        noise = torch.randn(rows, 300, generator=generator)
        a = abar[t][:, None]
        loss = (net(a.sqrt() * x0 + (1 - a).sqrt() * noise, t, context) - noise).abs().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        scheduler.step()
    return net.eval(), time.perf_counter() - began


@torch.no_grad()
def slopes(net: Denoiser, t: int) -> tuple[float, float, float, float]:
    """Learned and optimal slopes of ε̂ on x_t: (σ=1 learned, optimal, σ=0.3 learned, optimal)."""
    abar = float(NoiseSchedule.linear().alphas_cumprod[t])
    generator = torch.Generator().manual_seed(1)
    x0 = torch.randn(2048, 300, generator=generator) * SIGMA
    xt = math.sqrt(abar) * x0 + math.sqrt(1 - abar) * torch.randn(2048, 300, generator=generator)
    eps = net(xt, torch.full((2048,), t), torch.zeros(2048, 512))
    slope = (eps * xt).sum(0) / (xt * xt).sum(0)
    optimum = math.sqrt(1 - abar) / (abar * SIGMA**2 + 1 - abar)
    return float(slope[:STRONG].mean()), float(optimum[0]), float(slope[STRONG:].mean()), float(optimum[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--lr", type=float, default=2e-3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for identity in (False, True):
        net, seconds = train_on_prior(identity, args.steps, args.rows, args.lr)
        label = "identity start" if identity else "default start (baseline)"
        print(f"\n== {label}: {args.steps} steps x {args.rows} rows in {seconds:.0f} s")
        for t in (999, 900, 500, 100):
            strong, strong_opt, weak, weak_opt = slopes(net, t)
            print(f"t={t:4d} slope sigma=1 {strong:.3f} (optimum {strong_opt:.3f})   "
                  f"sigma=0.3 {weak:.3f} (optimum {weak_opt:.3f})")  # fmt: skip
        with torch.no_grad():
            for name, steps, eta in SAMPLERS:
                x = sample(net, torch.zeros(1, 512), 256, 300, sampler=name, steps=steps, eta=eta, seed=2)
                std = x.std(0)
                print(f"{name:14s} sample std / sigma: sigma=1 {float(std[:STRONG].mean()):.2f}   "
                      f"sigma=0.3 {float(std[STRONG:].mean()) / 0.3:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
