"""The PyTorch rasterizer's backward (autograd) against central finite differences (double precision,
CPU), and against gsplat's CUDA backward (skips without CUDA)."""

from __future__ import annotations

import pytest
import torch

from sigman.render import look_at, intrinsics_from_fov, rasterize_gsplat, rasterize_torch
from sigman.render.rasterize_gsplat import gsplat_available

NAMES = ("means", "quats", "scales", "opacities", "colors")


def _scene(dtype: torch.dtype, device: str = "cpu", n: int = 5, size: tuple[int, int] = (14, 11)):
    """A few overlapping Gaussians in front of one camera, and random per-pixel loss weights."""
    g = torch.Generator().manual_seed(3)
    rnd = lambda *s: torch.rand(*s, generator=g, dtype=torch.float64)
    params = {
        "means": (rnd(n, 3) - 0.5) * torch.tensor([0.5, 0.4, 0.3], dtype=torch.float64),
        "quats": torch.nn.functional.normalize(rnd(n, 4) - 0.5, dim=-1),
        "scales": 0.05 + 0.08 * rnd(n, 3),
        "opacities": 0.3 + 0.5 * rnd(n),
        "colors": rnd(n, 3),
    }
    w, h = size
    viewmat = look_at(torch.tensor([[0.1, 0.05, 1.6]], dtype=torch.float64))
    K = intrinsics_from_fov(0.8, w, h).double()[None]
    weights = (rnd(h, w, 3), rnd(h, w, 1), rnd(h, w, 1))
    cast = lambda t: t.to(device=device, dtype=dtype)
    return ({k: cast(v) for k, v in params.items()}, cast(viewmat), cast(K), w, h,
            tuple(cast(t) for t in weights), cast(torch.tensor([[0.2, 0.5, 0.9]], dtype=torch.float64)))


def _loss(rasterize, params, viewmat, K, w, h, weights, background):
    rgb, alpha, depth = rasterize(params["means"], params["quats"], params["scales"], params["opacities"],
                                  params["colors"], viewmat, K, w, h, backgrounds=background)
    return (rgb[0] * weights[0]).sum() + (alpha[0] * weights[1]).sum() + 0.1 * (depth[0] * weights[2]).sum()


def test_torch_rasterizer_gradients_match_finite_differences():
    params, viewmat, K, w, h, weights, bg = _scene(torch.float64)
    leaves = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    loss = _loss(rasterize_torch, leaves, viewmat, K, w, h, weights, bg)
    assert float(loss.detach()) > 1.0  # the Gaussians are on screen
    loss.backward()
    eps = 1e-6
    g = torch.Generator().manual_seed(0)
    for name in NAMES:
        analytic = leaves[name].grad
        assert analytic.abs().max() > 1e-3, name  # a gradient that is really there
        for _ in range(2):  # directional derivatives along random directions touching every element
            direction = torch.randn(params[name].shape, generator=g, dtype=torch.float64)
            plus = {k: (v + eps * direction if k == name else v) for k, v in params.items()}
            minus = {k: (v - eps * direction if k == name else v) for k, v in params.items()}
            numeric = (_loss(rasterize_torch, plus, viewmat, K, w, h, weights, bg)
                       - _loss(rasterize_torch, minus, viewmat, K, w, h, weights, bg)) / (2 * eps)
            torch.testing.assert_close((analytic * direction).sum(), numeric, rtol=1e-6, atol=1e-7,
                                       msg=lambda m: f"{name}: {m}")


@pytest.mark.skipif(not gsplat_available(), reason="needs CUDA and gsplat")
def test_torch_rasterizer_gradients_match_gsplat():
    params, viewmat, K, w, h, weights, bg = _scene(torch.float32, "cuda", n=40, size=(64, 48))
    grads = {}
    for label, rasterize in (("torch", rasterize_torch), ("gsplat", rasterize_gsplat)):
        leaves = {k: v.clone().requires_grad_(True) for k, v in params.items()}
        _loss(rasterize, leaves, viewmat, K, w, h, weights, bg).backward()
        grads[label] = {k: v.grad for k, v in leaves.items()}
    for name in NAMES:
        a, b = grads["torch"][name], grads["gsplat"][name]
        assert b.abs().max() > 1e-4, name
        torch.testing.assert_close(a, b, rtol=2e-3, atol=2e-3 * float(b.abs().max()), msg=lambda m: f"{name}: {m}")
