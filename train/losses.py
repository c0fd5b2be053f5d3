"""Image losses for the VAE: a patch discriminator, the face (head) region weights, and (from
:mod:`sigman.metrics`) SSIM, PSNR and the optional LPIPS.

Images are ``[N, 3, H, W]`` in ``[0, 1]`` unless noted.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sigman.metrics import build_lpips, lpips_loss, psnr, ssim  # noqa: F401 - the VAE's losses and logs use them


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
