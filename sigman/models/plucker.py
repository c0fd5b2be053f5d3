"""Plücker ray embeddings of camera pixels (the 6 ray channels of the VAE's view input).

Cameras follow :mod:`sigman.render.cameras`: ``viewmats [..., 4, 4]`` are world-to-camera in the
OpenCV convention (+X right, +Y down, +Z forward), ``x_cam = R @ x_world + t``; ``Ks [..., 3, 3]``
are pixel intrinsics, pixel ``(col, row)`` has its centre at ``(col + 0.5, row + 0.5)``.

Each pixel's ray has origin ``o`` (the camera centre, world) and unit direction ``d`` (world).
Channel order is the release's: **moment first, then direction** — ``[o x d, d]``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

#: Field of view (radians) of the release's cameras: fx = fy = 1100 px on 1024 px images.
RELEASE_FOVY = 0.8712626851529752


def pixel_rays(viewmats: Tensor, Ks: Tensor, height: int, width: int) -> tuple[Tensor, Tensor]:
    """World-space ray origins and unit directions through every pixel centre.

    Args:
        viewmats: ``[..., 4, 4]`` world-to-camera (OpenCV).
        Ks: ``[..., 3, 3]`` intrinsics (broadcast against ``viewmats``' leading dims).
    Returns:
        origins ``[..., H, W, 3]`` and directions ``[..., H, W, 3]`` (unit length).
    """
    lead = torch.broadcast_shapes(viewmats.shape[:-2], Ks.shape[:-2])
    viewmats = viewmats.expand(*lead, 4, 4).to(torch.float32)
    Ks = Ks.expand(*lead, 3, 3).to(viewmats)
    rows = torch.arange(height, dtype=viewmats.dtype, device=viewmats.device) + 0.5
    cols = torch.arange(width, dtype=viewmats.dtype, device=viewmats.device) + 0.5
    v, u = torch.meshgrid(rows, cols, indexing="ij")  # [H, W]
    pix = torch.stack([u, v, torch.ones_like(u)], dim=-1)  # [H, W, 3]
    cam_dirs = torch.einsum("...ij,hwj->...hwi", torch.linalg.inv(Ks), pix)  # [..., H, W, 3]
    rot = viewmats[..., :3, :3]
    trans = viewmats[..., :3, 3]
    dirs = torch.einsum("...ji,...hwj->...hwi", rot, cam_dirs)  # R^T d_cam
    dirs = dirs / dirs.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    centres = -torch.einsum("...ji,...j->...i", rot, trans)  # -R^T t
    origins = centres[..., None, None, :].expand_as(dirs)
    return origins, dirs


def plucker_rays(viewmats: Tensor, Ks: Tensor, height: int, width: int) -> Tensor:
    """Plücker embedding ``[o x d, d]`` of every pixel's ray.

    Args:
        viewmats: ``[..., 4, 4]`` world-to-camera (OpenCV), e.g. ``[B, V, 4, 4]``.
        Ks: ``[..., 3, 3]`` intrinsics for ``height x width`` images.
    Returns:
        ``[..., 6, H, W]``: channels 0-2 the moment ``o x d``, channels 3-5 the unit direction ``d``.
    """
    origins, dirs = pixel_rays(viewmats, Ks, height, width)
    emb = torch.cat([torch.linalg.cross(origins, dirs, dim=-1), dirs], dim=-1)  # [..., H, W, 6]
    return emb.movedim(-1, -3).contiguous()


def release_ray_intrinsics(size: int, fovy: float = RELEASE_FOVY) -> Tensor:
    """The intrinsics the release *effectively* used for its VAE's Plücker rays.

    The release builds its ray embeddings with a helper that expects the field of view in degrees
    but is passed the radians value ``0.8713``, so its focal length is
    ``0.5 * size / tan(0.5 * radians(0.8713))`` (~65.8 x ``size`` pixels): the rays of a view are
    nearly parallel. The official VAE weights were trained on those rays, so use this ``K`` (with
    the true camera poses) when feeding the official encoder; use the true intrinsics otherwise.
    Returns ``[3, 3]`` for ``size x size`` images.
    """
    focal = 0.5 * size / math.tan(0.5 * math.radians(fovy))
    return torch.tensor([[focal, 0.0, 0.5 * size], [0.0, focal, 0.5 * size], [0.0, 0.0, 1.0]])
