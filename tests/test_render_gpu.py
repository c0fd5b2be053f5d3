"""GPU tests of sigman.render: the gsplat backend against the PyTorch reference rasterizer.

Run with ``python -m pytest tests/test_render_gpu.py -q -s`` to see PSNRs and timings. The first
gsplat call compiles its CUDA kernels (about a minute), which is kept out of the timings.
"""

from __future__ import annotations

import math
import time

import pytest
import torch

from sigman.gaussians import Gaussians
from sigman.render import fit_orbit_to_points, render, resolve_backend

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


def body_like_scene(n: int, device: str = "cuda", seed: int = 0) -> Gaussians:
    """Half the Gaussians on an ellipsoid shell (a surface, many pixels saturate), half in its volume."""
    g = torch.Generator().manual_seed(seed)
    shell = torch.randn(n // 2, 3, generator=g)
    shell = shell / shell.norm(dim=-1, keepdim=True)
    inner = (torch.rand(n - n // 2, 3, generator=g) - 0.5) * 1.6
    means = torch.cat([shell, inner]) * torch.tensor([0.25, 0.85, 0.15])
    return Gaussians(
        means=means,
        quats=torch.randn(n, 4, generator=g),
        scales=torch.exp(torch.randn(n, 3, generator=g) * 0.4 - 4.3),
        opacities=torch.rand(n, generator=g),
        colors=torch.rand(n, 3, generator=g),
    ).to(device)


def psnr(a: torch.Tensor, b: torch.Tensor, peak: float = 1.0) -> float:
    mse = torch.mean((a.float() - b.float()) ** 2).item()
    return float("inf") if mse == 0 else 10.0 * math.log10(peak * peak / mse)


def timed(fn, repeats: int = 3):
    torch.cuda.synchronize()
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return out, best


def test_auto_backend_is_gsplat_on_cuda():
    pytest.importorskip("gsplat")
    assert resolve_backend("auto", torch.device("cuda")) == "gsplat"


@torch.no_grad()
def test_gsplat_matches_torch_reference():
    pytest.importorskip("gsplat")
    gaussians = body_like_scene(50_000)
    cams = fit_orbit_to_points(gaussians.means, n_views=4, width=512, height=512, elevation_deg=10.0)
    render(gaussians, cams, backend="gsplat")  # compile / warm up
    render(gaussians, cams, backend="torch")
    ref, t_torch = timed(lambda: render(gaussians, cams, backend="torch"))
    fast, t_gsplat = timed(lambda: render(gaussians, cams, backend="gsplat"))

    assert fast.rgb.shape == ref.rgb.shape == (4, 512, 512, 3)
    rgb_psnr, alpha_psnr = psnr(fast.rgb, ref.rgb), psnr(fast.alpha, ref.alpha)
    both = (fast.alpha > 0.5) & (ref.alpha > 0.5)
    depth_err = (fast.depth - ref.depth).abs()[both]
    print(f"\n50k Gaussians, 4 views of 512x512: rgb PSNR {rgb_psnr:.1f} dB, alpha PSNR {alpha_psnr:.1f} dB, "
          f"depth |err| median {depth_err.median().item():.2e} m; "
          f"gsplat {t_gsplat * 1e3:.1f} ms, torch {t_torch * 1e3:.1f} ms ({t_torch / t_gsplat:.0f}x)")
    assert ref.alpha.mean() > 0.1  # the scene covers a good part of the frames
    assert rgb_psnr >= 40.0
    assert alpha_psnr >= 40.0
    assert depth_err.median() < 1e-3
