"""gsplat backend: a thin wrapper over ``gsplat.rasterization`` (CUDA only).

gsplat is imported lazily, so importing sigman never compiles or loads CUDA code. Its kernels are
compiled on first use (about a minute) and cached by torch's extension loader.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from sigman.render.rasterize_torch import RasterSettings


def gsplat_available() -> bool:
    """True when gsplat imports and CUDA is usable (its kernels may still need compiling)."""
    if not torch.cuda.is_available():
        return False
    try:
        import gsplat  # noqa: F401
    except ImportError:
        return False
    return True


def rasterize_gsplat(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor,
                     viewmats: Tensor, Ks: Tensor, width: int, height: int, backgrounds: Optional[Tensor] = None,
                     settings: RasterSettings = RasterSettings()) -> Tuple[Tensor, Tensor, Tensor]:
    """Render ``N`` Gaussians into ``C`` cameras with gsplat (same contract as
    :func:`sigman.render.rasterize_torch.rasterize_torch`).

    Args:
        means: ``[N, 3]``. quats: ``[N, 4]`` (w, x, y, z). scales: ``[N, 3]``. opacities: ``[N]``.
        colors: ``[N, D]``. viewmats: ``[C, 4, 4]`` world-to-camera (OpenCV). Ks: ``[C, 3, 3]``.
        backgrounds: ``[C, D]`` or ``None``.
    Returns:
        colors ``[C, H, W, D]``, alphas ``[C, H, W, 1]``, expected depths ``[C, H, W, 1]``.
    """
    if not means.is_cuda:
        raise RuntimeError("the gsplat backend needs the Gaussians on a CUDA device; use backend='torch' on CPU")
    try:
        from gsplat import rasterization
    except ImportError as err:
        raise ImportError("the gsplat backend needs gsplat (pip install gsplat==1.5.3)") from err

    device, dtype = means.device, torch.float32  # gsplat's kernels are float32
    renders, alphas, _ = rasterization(
        means.to(dtype), quats.to(dtype), scales.to(dtype), opacities.to(dtype), colors.to(dtype),
        viewmats.to(device=device, dtype=dtype), Ks.to(device=device, dtype=dtype), int(width), int(height),
        near_plane=settings.near_plane, far_plane=settings.far_plane, radius_clip=settings.radius_clip,
        eps2d=settings.eps2d, packed=False, rasterize_mode="classic", render_mode="RGB+ED",
        backgrounds=None if backgrounds is None else backgrounds.to(device=device, dtype=dtype),
    )
    return renders[..., :-1], alphas, renders[..., -1:]
