"""The public rendering entry points: ``render``, ``render_turntable`` and ``image_grid``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from sigman.gaussians import Gaussians
from sigman.render.cameras import DEFAULT_FOVY, DEFAULT_SIZE, Camera, fit_orbit_to_points, orbit_cameras
from sigman.render.rasterize_gsplat import gsplat_available, rasterize_gsplat
from sigman.render.rasterize_torch import RasterSettings, rasterize_torch
from sigman.render.video import to_uint8

Backend = Literal["auto", "torch", "gsplat"]
Background = Union[None, Sequence[float], Tensor]


@dataclass
class RenderOutput:
    """Rendered views of ``C`` cameras.

    Attributes:
        rgb: ``[C, H, W, 3]`` colour composited over the background.
        alpha: ``[C, H, W, 1]`` accumulated opacity (``1 - transmittance``).
        depth: ``[C, H, W, 1]`` expected camera-space depth (metres), 0 where ``alpha == 0``.
    """

    rgb: Tensor
    alpha: Tensor
    depth: Tensor

    def images(self) -> np.ndarray:
        """``[C, H, W, 3]`` uint8 colour images."""
        return to_uint8(self.rgb)


def resolve_backend(backend: Backend, device: torch.device) -> str:
    """``"auto"`` -> ``"gsplat"`` for CUDA tensors when gsplat imports, else ``"torch"``."""
    if backend == "auto":
        return "gsplat" if device.type == "cuda" and gsplat_available() else "torch"
    if backend not in ("torch", "gsplat"):
        raise ValueError(f"unknown render backend {backend!r}: use 'auto', 'torch' or 'gsplat'")
    return backend


def _backgrounds(background: Background, cams: int, device: torch.device, dtype: torch.dtype) -> Optional[Tensor]:
    """``[C, 3]`` background colours from ``None``, an RGB triple, ``[3]`` or ``[C, 3]``."""
    if background is None:
        return None
    bg = torch.as_tensor(background, dtype=dtype, device=device)
    if bg.shape == (3,):
        return bg.expand(cams, 3)
    if bg.shape == (cams, 3):
        return bg
    raise ValueError(f"background must be RGB [3] or [C={cams}, 3], got {tuple(bg.shape)}")


def _unbatched(gaussians: Gaussians) -> Gaussians:
    if gaussians.means.dim() == 2:
        return gaussians
    if gaussians.means.dim() == 3 and gaussians.means.shape[0] == 1:
        return Gaussians(means=gaussians.means[0], quats=gaussians.quats[0], scales=gaussians.scales[0],
                         opacities=gaussians.opacities[0], colors=gaussians.colors[0],
                         skin_weights=gaussians.skin_weights)
    raise ValueError(f"render takes one set of Gaussians [N, ...]; got a batch {tuple(gaussians.means.shape[:-2])}: "
                     "render each item separately")


def render(gaussians: Gaussians, cameras: Camera, background: Background = (1.0, 1.0, 1.0),
           backend: Backend = "auto", settings: RasterSettings = RasterSettings()) -> RenderOutput:
    """Render Gaussians ``[N, ...]`` (or a batch of one) into every camera of ``cameras``.

    Args:
        gaussians: world-space Gaussians (see :mod:`sigman.gaussians`).
        cameras: ``C`` cameras; moved to the Gaussians' device.
        background: RGB in [0, 1] (``[3]`` or ``[C, 3]``), or ``None`` for black/premultiplied.
        backend: ``"torch"`` (any device, reference), ``"gsplat"`` (CUDA) or ``"auto"``.
    Returns:
        :class:`RenderOutput` with ``rgb [C, H, W, 3]``, ``alpha [C, H, W, 1]``, ``depth [C, H, W, 1]``.
    """
    g = _unbatched(gaussians)
    device = g.means.device
    dtype = g.means.dtype if g.means.is_floating_point() else torch.float32
    name = resolve_backend(backend, device)
    rasterize = rasterize_gsplat if name == "gsplat" else rasterize_torch
    rgb, alpha, depth = rasterize(
        g.means, g.quats, g.scales, g.opacities, g.colors,
        cameras.viewmats.to(device=device, dtype=dtype), cameras.Ks.to(device=device, dtype=dtype),
        cameras.width, cameras.height, _backgrounds(background, len(cameras), device, dtype), settings,
    )
    return RenderOutput(rgb=rgb, alpha=alpha, depth=depth)


@torch.no_grad()
def render_turntable(gaussians: Gaussians, n_frames: int = 60, size: int = DEFAULT_SIZE, fovy: float = DEFAULT_FOVY,
                     elevation_deg: float = 0.0, radius: Optional[float] = None,
                     target: Optional[Sequence[float]] = None,
                     start_azimuth_deg: float = 0.0, background: Background = (1.0, 1.0, 1.0),
                     backend: Backend = "auto", views_per_batch: int = 8,
                     settings: RasterSettings = RasterSettings()) -> np.ndarray:
    """A full turn around the Gaussians: uint8 frames ``[n_frames, size, size, 3]``.

    Frame 0 looks at the body's front (camera on +Z), then the camera turns towards +X. ``target``
    defaults to the bounding-box centre; ``radius`` defaults to the smallest one that keeps the
    whole body in frame for every frame.
    """
    g = _unbatched(gaussians)
    if radius is None:
        cams = fit_orbit_to_points(g.means, n_frames, fovy, size, size, elevation_deg,
                                   start_azimuth_deg=start_azimuth_deg, target=target)
    else:
        if target is None:
            means = g.means.detach()
            target = (0.5 * (means.min(dim=0).values + means.max(dim=0).values)).tolist()
        cams = orbit_cameras(n_frames, radius, elevation_deg, target, fovy, size, size, start_azimuth_deg)
    frames = []
    for i in range(0, n_frames, max(1, views_per_batch)):
        out = render(g, cams[i:i + views_per_batch], background, backend, settings)
        frames.append(out.images())
    return np.concatenate(frames, axis=0)


def image_grid(images, ncols: Optional[int] = None, pad_value: int = 255, spacing: int = 0) -> np.ndarray:
    """Tile images ``[K, H, W, 3]`` (uint8, or float in [0, 1]; numpy, torch or a list) into one
    uint8 image ``[rows * H + gaps, ncols * W + gaps, 3]``, row by row; empty cells get ``pad_value``."""
    if isinstance(images, (list, tuple)):
        images = np.stack([to_uint8(im) for im in images])
    images = to_uint8(images)
    if images.ndim == 3:
        images = images[..., None].repeat(3, axis=-1)
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"images must be [K, H, W, C] with K > 0, got {images.shape}")
    k, h, w, c = images.shape
    ncols = k if ncols is None else max(1, min(int(ncols), k))
    nrows = -(-k // ncols)
    grid = np.full((nrows * h + (nrows - 1) * spacing, ncols * w + (ncols - 1) * spacing, c), pad_value, np.uint8)
    for i in range(k):
        r, col = divmod(i, ncols)
        y, x = r * (h + spacing), col * (w + spacing)
        grid[y:y + h, x:x + w] = images[i]
    return grid
