"""Image metrics: PSNR, SSIM (whole image and foreground-masked) and the optional LPIPS.

Used by the evaluation (:mod:`sigman.evaluation`, ``scripts/eval_*.py``) and by the VAE training's
losses and logs (``train/losses.py``). Images are ``[N, 3, H, W]`` in ``[0, 1]`` and masks
``[N, 1, H, W]`` in ``[0, 1]`` unless noted. Per-image results are ``[N]``:

============  ===================================================================================
``psnr``      PSNR (dB) of the whole image (identical images: 100 dB, the MSE floor of 1e-10)
``ssim``      SSIM of the whole image (Gaussian window 11, sigma 1.5)
``psnr_fg``   PSNR over the pixels of the true foreground mask (mask-weighted MSE)
``ssim_fg``   the SSIM map's mean weighted by the true mask at each window's centre
``lpips``     LPIPS (VGG) of the whole image, only when :func:`optional_lpips` finds it offline
============  ===================================================================================
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SSIM_WINDOW = 11  # ssim's default window
METRICS = ("psnr", "ssim", "psnr_fg", "ssim_fg", "lpips")  # what image_metrics can return, in print order


def _gaussian_window(size: int, sigma: float, channels: int, device, dtype) -> Tensor:
    x = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-x.square() / (2 * sigma * sigma))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


def ssim(x: Tensor, y: Tensor, window: int = 11, sigma: float = 1.5, data_range: float = 1.0,
         weight: Optional[Tensor] = None) -> Tensor:
    """Structural similarity per image (Wang et al. 2004: Gaussian window 11 / sigma 1.5, K1 = 0.01,
    K2 = 0.03), ``[N]``. The window shrinks for images smaller than it. ``weight [N, 1, H', W']``
    (optional, at the valid-convolution size or full size, resized) weights the SSIM map's mean."""
    c = x.shape[1]
    window = min(window, x.shape[-1], x.shape[-2])
    w = _gaussian_window(window, sigma, c, x.device, x.dtype)
    conv = lambda t: F.conv2d(t, w, groups=c)
    mu_x, mu_y = conv(x), conv(y)
    sxx = conv(x * x) - mu_x.square()
    syy = conv(y * y) - mu_y.square()
    sxy = conv(x * y) - mu_x * mu_y
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x.square() + mu_y.square() + c1) * (sxx + syy + c2))
    s = s.mean(dim=1, keepdim=True)  # [N, 1, h, w]
    if weight is None:
        return s.flatten(1).mean(dim=1)
    if weight.shape[-2:] != s.shape[-2:]:
        weight = F.interpolate(weight, size=s.shape[-2:], mode="bilinear", align_corners=False)
    return (s * weight).flatten(1).sum(1) / weight.flatten(1).sum(1).clamp_min(1e-8)


def psnr(x: Tensor, y: Tensor, data_range: float = 1.0) -> Tensor:
    """Peak signal-to-noise ratio per image (dB), ``[N]``."""
    mse = (x - y).square().flatten(1).mean(dim=1).clamp_min(1e-10)
    return 10.0 * torch.log10(data_range ** 2 / mse)


def build_lpips(net: str = "vgg") -> tuple[Optional[nn.Module], str]:
    """LPIPS if the ``lpips`` package and its backbone's ImageNet weights are on this machine
    (never downloads). Returns ``(module or None, reason)``."""
    try:
        import lpips  # noqa: F401
    except ImportError:
        return None, "the lpips package is not installed"
    backbone = {"vgg": "vgg16-*.pth", "alex": "alexnet-*.pth", "squeeze": "squeezenet1_1-*.pth"}[net]
    from torch.hub import get_dir  # only where cached weights would be: nothing is fetched

    hub = Path(get_dir()) / "checkpoints"
    if not any(hub.glob(backbone)):
        return None, f"the {net} backbone weights ({backbone}) are not in {hub} and are never downloaded"
    try:
        import lpips

        model = lpips.LPIPS(net=net, verbose=False).eval().requires_grad_(False)
    except Exception as err:  # noqa: BLE001 - anything that stops LPIPS just leaves it out
        return None, f"LPIPS failed to load ({err.__class__.__name__}: {err})"
    return model, "ok"


def lpips_loss(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Mean LPIPS distance of images in ``[0, 1]`` (LPIPS expects ``[-1, 1]``)."""
    return model(x * 2 - 1, y * 2 - 1).mean()


def masked_psnr(pred: Tensor, gt: Tensor, mask: Tensor, data_range: float = 1.0) -> Tensor:
    """PSNR over the pixels weighted by ``mask [N, 1, H, W]``: ``[N]`` (NaN for an empty mask)."""
    weight = mask.expand_as(pred)
    total = weight.flatten(1).sum(1)
    mse = ((pred - gt).square() * weight).flatten(1).sum(1) / total.clamp_min(1e-8)
    out = 10.0 * torch.log10(data_range ** 2 / mse.clamp_min(1e-10))
    return torch.where(total > 0, out, torch.full_like(out, math.nan))


def masked_ssim(pred: Tensor, gt: Tensor, mask: Tensor, window: int = SSIM_WINDOW) -> Tensor:
    """SSIM map mean weighted by ``mask [N, 1, H, W]`` at each window's centre: ``[N]`` (NaN for an
    empty mask). The mask is cropped to the valid-convolution region of the SSIM map."""
    h, w = pred.shape[-2:]
    win = min(window, h, w)
    start = (win - 1) // 2
    weight = mask[..., start:start + h - win + 1, start:start + w - win + 1]
    out = ssim(pred, gt, window=window, weight=weight)
    return torch.where(weight.flatten(1).sum(1) > 0, out, torch.full_like(out, math.nan))


def image_metrics(pred: Tensor, gt: Tensor, mask: Optional[Tensor] = None,
                  lpips_model: Optional[nn.Module] = None) -> dict[str, Tensor]:
    """Per-image metrics of ``pred`` against ``gt`` (both ``[N, 3, H, W]`` in [0, 1]): ``psnr``, ``ssim``,
    with ``mask [N, 1, H, W]`` also ``psnr_fg``, ``ssim_fg``, with ``lpips_model`` also ``lpips``.
    Each ``[N]`` float32 on the CPU."""
    if pred.shape != gt.shape or pred.dim() != 4:
        raise ValueError(f"pred and gt must both be [N, 3, H, W], got {tuple(pred.shape)} and {tuple(gt.shape)}")
    pred, gt = pred.float().clamp(0, 1), gt.float().clamp(0, 1)
    out = {"psnr": psnr(pred, gt), "ssim": ssim(pred, gt)}
    if mask is not None:
        mask = mask.float()
        out["psnr_fg"] = masked_psnr(pred, gt, mask)
        out["ssim_fg"] = masked_ssim(pred, gt, mask)
    if lpips_model is not None:
        with torch.no_grad():
            out["lpips"] = torch.stack([lpips_loss(lpips_model, p[None], g[None]) for p, g in zip(pred, gt)])
    return {k: v.detach().float().cpu() for k, v in out.items()}


def optional_lpips(device: Union[str, torch.device]) -> tuple[Optional[nn.Module], str]:
    """LPIPS (VGG) on ``device`` if the ``lpips`` package and its weights are on this machine (never
    downloads): ``(model or None, reason it is missing or "ok")``."""
    model, reason = build_lpips("vgg")
    return (model.to(device) if model is not None else None), reason
