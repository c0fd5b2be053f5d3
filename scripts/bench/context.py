"""What the stages of one config share (:class:`Context`) and the sampling helpers they all use."""

from __future__ import annotations

import argparse
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
from torch import Tensor

from sigman.fast import FastDiT, FastOptions
from sigman.gaussians import Gaussians
from sigman.pipeline import SigmanPipeline
from sigman.presets import resolve_pose
from sigman.render import Camera, fit_orbit_to_points, render
from sigman.sampling import sample

from .models import BuiltPipeline
from .results import Run
from .timing import Stat, measure


@dataclass
class Context:
    """What the sections of one config share."""

    name: str
    built: BuiltPipeline
    device: torch.device
    args: argparse.Namespace
    run: Run
    features: Optional[Tensor] = None  # [1, C, h, w] encoder output
    canonical: Optional[Gaussians] = None
    rest_joints: Optional[Tensor] = None
    camera: Optional[Camera] = None
    fast: Optional[FastDiT] = None
    ddim_latents: Optional[Tensor] = None  # optimized DDIM result, [1, C, h, w] in the DiT's space

    @property
    def pipe(self) -> SigmanPipeline:
        return self.built.pipe

    def measure(self, fn: Callable[[], Any], repeats: Optional[int] = None) -> Stat:
        return measure(fn, self.device, repeats or self.args.repeats, self.args.warmup, self.run.budget)

    def latent_shape(self) -> tuple[int, int, int, int]:
        return (1, *self.pipe.vae.config.latent_shape)

    def sampler_kwargs(self, steps: int, sampler: str) -> dict:
        return dict(steps=steps, guidance=self.pipe.config.guidance, sampler=sampler, seed=self.args.seed,
                    guidance_schedule=self.pipe.config.guidance_schedule)


def features(ctx: Context) -> Tensor:
    if ctx.features is None:
        cfg = ctx.pipe.dit.config
        c, h, w = cfg.condition_channels, cfg.condition_size, cfg.condition_size
        g = torch.Generator(device="cpu").manual_seed(ctx.args.seed)
        ctx.features = torch.randn(1, c, h, w, generator=g, device="cpu").to(ctx.device, ctx.pipe.dtype)
    return ctx.features


def cfg_inputs(ctx: Context, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
    """One sampling step's DiT inputs for batched CFG: latents ``[2, C, H, W]``, t ``[2]``, features."""
    g = torch.Generator(device="cpu").manual_seed(ctx.args.seed + 1)
    x = torch.randn(ctx.latent_shape(), generator=g, device="cpu").to(ctx.device, dtype)
    f = features(ctx).to(dtype)
    t = torch.full((2,), 500, device=ctx.device, dtype=torch.long)
    return torch.cat([x, x]), t, torch.cat([torch.zeros_like(f), f])


def run_sampler(ctx: Context, model: Callable, steps: int, sampler: str, batch_cfg: bool = True,
                autocast: bool = False) -> Tensor:
    ctx_manager = torch.autocast(ctx.device.type, dtype=torch.bfloat16) if autocast else nullcontext()
    with torch.no_grad(), ctx_manager:
        return sample(model, features(ctx), ctx.latent_shape(), batch_cfg=batch_cfg, **ctx.sampler_kwargs(steps, sampler))


@contextmanager
def no_tf32():
    """Strict fp32 matmuls and convolutions (for the reference run)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def fast_options(args: argparse.Namespace) -> FastOptions:
    return FastOptions(compile=args.compile, compile_mode=args.compile_mode, cuda_graphs=args.cuda_graphs)


def posed_first(ctx: Context) -> Gaussians:
    posed = ctx.pipe.pose_gaussians(ctx.canonical, ctx.rest_joints, resolve_pose(ctx.args.pose))
    return posed.with_(means=posed.means[0], quats=posed.quats[0], scales=posed.scales[0],
                       opacities=posed.opacities[0], colors=posed.colors[0]).to(torch.float32)


def render_latents(ctx: Context, scaled: Tensor) -> Tensor:
    """``[H, W, 3]`` render of the avatar decoded from DiT-space latents (fixed camera)."""
    pipe = ctx.pipe
    canonical, rest_joints = pipe.decode_gaussians(scaled.float() / pipe.vae.config.latent_scaling_factor)
    posed = pipe.pose_gaussians(canonical, rest_joints, resolve_pose(ctx.args.pose))
    g = posed.with_(means=posed.means[0], quats=posed.quats[0], scales=posed.scales[0],
                    opacities=posed.opacities[0], colors=posed.colors[0]).to(torch.float32)
    camera = ctx.camera or fit_orbit_to_points(g.means, n_views=1, width=512, height=512).to(ctx.device)
    with torch.no_grad():
        return render(g, camera, background=(pipe.config.background,) * 3).rgb[0].clamp(0, 1)
