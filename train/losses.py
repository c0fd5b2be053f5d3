"""Image losses and metrics for the VAE: SSIM, PSNR, optional LPIPS, a patch discriminator, and the
face (head) region weights.

Images are ``[N, 3, H, W]`` in ``[0, 1]`` unless noted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn


# --- SSIM / PSNR -----------------------------------------------------------------------------------

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


# --- LPIPS (optional) ---------------------------------------------------------------------------

def build_lpips(net: str = "vgg") -> tuple[Optional[nn.Module], str]:
    """LPIPS if the ``lpips`` package and its backbone's ImageNet weights are on this machine
    (never downloads). Returns ``(module or None, reason)``."""
    try:
        import lpips  # noqa: F401
    except ImportError:
        return None, "the lpips package is not installed"
    backbone = {"vgg": "vgg16-*.pth", "alex": "alexnet-*.pth", "squeeze": "squeezenet1_1-*.pth"}[net]
    hub = Path(torch.hub.get_dir()) / "checkpoints"
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


# --- patch discriminator ----------------------------------------------------------------------------

class PatchDiscriminator(nn.Module):
    """A small PatchGAN (pix2pix-style): stride-2 convs with GroupNorm + LeakyReLU, one logit per patch.

    ``[N, 3, H, W]`` in ``[0, 1]`` -> ``[N, 1, H / 2**layers, W / 2**layers]`` (roughly).
    """

    def __init__(self, channels: int = 64, layers: int = 3, groups: int = 8) -> None:
        super().__init__()
        blocks: list[nn.Module] = [nn.Conv2d(3, channels, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        ch = channels
        for i in range(1, layers):
            out = channels * min(2 ** i, 8)
            blocks += [nn.Conv2d(ch, out, 4, stride=2, padding=1), nn.GroupNorm(min(groups, out), out), nn.LeakyReLU(0.2)]
            ch = out
        blocks += [nn.Conv2d(ch, ch, 3, padding=1), nn.GroupNorm(min(groups, ch), ch), nn.LeakyReLU(0.2),
                   nn.Conv2d(ch, 1, 3, padding=1)]
        self.net = nn.Sequential(*blocks)

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images * 2 - 1)


def hinge_d_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    return 0.5 * (F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean())


def hinge_g_loss(fake_logits: Tensor) -> Tensor:
    return -fake_logits.mean()


# --- face region --------------------------------------------------------------------------------

def subtree_joints(parents: Tensor, root: int) -> list[int]:
    """``root`` and every joint below it (``parents [J]``, parents listed before children)."""
    inside = {root}
    for j, p in enumerate(parents.tolist()):
        if p in inside:
            inside.add(j)
    return sorted(inside)


def head_point_index(skin_weights: Tensor, parents: Tensor, joint_names: list[str], threshold: float = 0.5) -> Tensor:
    """Template points skinned mostly (> ``threshold``) to the head and the joints below it: ``[Nh]``."""
    if "head" not in joint_names:
        raise ValueError(f"the body has no 'head' joint to find the face region (joints: {joint_names[:8]}...)")
    joints = subtree_joints(parents, joint_names.index("head"))
    weight = skin_weights[:, joints].sum(dim=1)
    return torch.nonzero(weight > threshold)[:, 0]


def region_pixel_mask(points: Tensor, viewmats: Tensor, Ks: Tensor, height: int, width: int,
                      margin: float = 0.1) -> Tensor:
    """Pixels inside the bounding box of the projection of ``points [B, M, 3]`` into each camera
    (``viewmats [B, C, 4, 4]``, ``Ks [B, C, 3, 3]``), enlarged by ``margin`` of its size:
    ``[B, C, H, W]`` float in {0, 1}. Points behind a camera are ignored."""
    cam = torch.einsum("bcij,bmj->bcmi", viewmats[..., :3, :3], points) + viewmats[..., None, :3, 3]
    pix = torch.einsum("bcij,bcmj->bcmi", Ks, cam)
    front = cam[..., 2] > 1e-3  # [B, C, M]
    uv = pix[..., :2] / pix[..., 2:3].clamp_min(1e-6)
    big = torch.finfo(uv.dtype).max
    lo = torch.where(front[..., None], uv, big).amin(dim=2)  # [B, C, 2]
    hi = torch.where(front[..., None], uv, -big).amax(dim=2)
    pad = (hi - lo).clamp_min(0) * margin
    lo, hi = lo - pad, hi + pad
    xs = torch.arange(width, device=points.device, dtype=points.dtype) + 0.5
    ys = torch.arange(height, device=points.device, dtype=points.dtype) + 0.5
    in_x = (xs >= lo[..., 0:1]) & (xs <= hi[..., 0:1])  # [B, C, W]
    in_y = (ys >= lo[..., 1:2]) & (ys <= hi[..., 1:2])  # [B, C, H]
    return (in_y[..., :, None] & in_x[..., None, :]).to(points.dtype)
