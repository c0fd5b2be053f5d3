"""Pure-PyTorch EWA splatting: the reference rasterizer (and the CPU path).

It reproduces gsplat 1.5.3's ``rasterization(..., packed=False, rasterize_mode="classic",
render_mode="RGB+ED")`` — same projection, culling, blur, sorting, alpha rule and transmittance
cut-off (checked against gsplat's CUDA sources and its ``cuda/_torch_impl.py``):

1. *Projection* (``project_gaussians``): camera-space means; covariance ``R S S^T R^T`` from the
   normalised quaternion; EWA 2D covariance ``J W Σ W^T J^T`` with the Jacobian's ``x/z, y/z`` clamped
   to 1.3x the field of view; ``eps2d`` added to the diagonal.
2. *Culling*: depth outside ``[near, far]``, non-positive determinant, opacity ``< 1/255``, or a
   bounding box entirely off-screen. The box half-size is ``ceil(extend * sqrt(Σ2d_ii))`` with the
   opacity-aware ``extend = min(3.33, sqrt(2 ln(255 · opacity)))``, so outside the box ``alpha < 1/255``.
3. *Compositing*: for each pixel centre ``p = (j + .5, i + .5)``, Gaussians front to back (depth,
   ties by index), ``alpha = min(0.999, o · exp(-½ dᵀ Σ2d⁻¹ d))``; ``alpha < 1/255`` is skipped; a
   Gaussian that would bring the transmittance to ``<= 1e-4`` is dropped, with every one behind it.
   Output colour ``Σ w_i c_i + T · background``, alpha ``1 - T``, expected depth ``Σ w_i z_i / alpha``.

Compositing runs per screen tile (``tile_size²`` pixels) on only the Gaussians whose box touches
the tile, several tiles and a chunk of Gaussians at a time: every step is a batched tensor op of at
most ``chunk_elements`` (pixels x Gaussians) entries, so memory stays bounded and there is no
per-pixel Python loop. Tiles whose pixels are all saturated stop early. Differentiable through
autograd (slowly); works on any device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

ALPHA_THRESHOLD = 1.0 / 255.0  # gsplat: contributions below this are skipped
ALPHA_MAX = 0.999  # gsplat clamps every splat's alpha to this
T_MIN = 1e-4  # gsplat: a pixel is done before its transmittance would reach this
MAX_EXTEND = 3.33  # gsplat: box half-size in standard deviations (before the opacity-aware bound)
_SIGMA_MAX = 40.0  # exp(-40) * opacity < 1/255: such splats are skipped anyway
_LOG_T_MIN = -30.0  # relative transmittance floor inside a chunk; far below T_MIN / T0 (T0 > T_MIN)


@dataclass(frozen=True)
class RasterSettings:
    """Rasterization options (defaults = gsplat's).

    ``near_plane``, ``far_plane``, ``eps2d`` and ``radius_clip`` are passed to both backends. The
    last three only steer the PyTorch backend's speed and memory (gsplat keeps its 16-pixel tiles);
    its results do not depend on them.
    """

    near_plane: float = 0.01
    far_plane: float = 1e10
    eps2d: float = 0.3
    radius_clip: float = 0.0
    tile_size: int = 8  # PyTorch backend: screen tile edge in pixels
    chunk_gaussians: int = 128  # PyTorch backend: Gaussians per tile composited in one step
    chunk_elements: int = 1 << 20  # PyTorch backend: pixels x Gaussians per step (bounds memory)


@dataclass
class Projection:
    """Screen-space Gaussians for ``C`` cameras; entries with ``radii == 0`` are culled.

    Attributes:
        means2d: ``[C, N, 2]`` pixel coordinates of the projected means.
        conics: ``[C, N, 3]`` upper triangle ``(a, b, c)`` of the inverse blurred 2D covariance.
        depths: ``[C, N]`` camera-space z.
        radii: ``[C, N, 2]`` int32 box half-sizes in pixels (0 = culled).
        covars2d: ``[C, N, 2, 2]`` blurred 2D covariances (``eps2d`` included).
    """

    means2d: Tensor
    conics: Tensor
    depths: Tensor
    radii: Tensor
    covars2d: Tensor

    @property
    def visible(self) -> Tensor:
        """``[C, N]`` bool: not culled."""
        return (self.radii > 0).all(dim=-1)


def quat_to_rotmat(quats: Tensor) -> Tensor:
    """``[..., 3, 3]`` rotation matrices of quaternions ``(w, x, y, z) [..., 4]`` (normalised here)."""
    w, x, y, z = F.normalize(quats, dim=-1).unbind(-1)
    rot = torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], dim=-1)
    return rot.reshape(*quats.shape[:-1], 3, 3)


def quat_scale_to_covar(quats: Tensor, scales: Tensor) -> Tensor:
    """``[..., 3, 3]`` covariances ``R diag(s²) Rᵀ`` from quaternions ``[..., 4]`` and std-devs ``[..., 3]``."""
    m = quat_to_rotmat(quats) * scales[..., None, :]
    return m @ m.transpose(-1, -2)


def project_gaussians(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, viewmats: Tensor,
                      Ks: Tensor, width: int, height: int,
                      settings: RasterSettings = RasterSettings()) -> Projection:
    """EWA projection of ``N`` Gaussians into ``C`` pinhole cameras, with gsplat's culling.

    Args:
        means: ``[N, 3]`` world positions. quats: ``[N, 4]`` (w, x, y, z). scales: ``[N, 3]`` std-devs.
        opacities: ``[N]`` in [0, 1] (for the opacity-aware box and culling).
        viewmats: ``[C, 4, 4]`` world-to-camera (OpenCV axes). Ks: ``[C, 3, 3]``.
    """
    rot, trans = viewmats[:, :3, :3], viewmats[:, :3, 3]
    means_c = torch.einsum("cij,nj->cni", rot, means) + trans[:, None, :]  # [C, N, 3]
    x, y, z = means_c.unbind(-1)
    in_depth = (z >= settings.near_plane) & (z <= settings.far_plane)
    z = torch.where(in_depth, z, torch.ones_like(z))  # keeps culled entries finite (and their grads)

    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]  # [C, 1]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    tan_fovx, tan_fovy = 0.5 * width / fx, 0.5 * height / fy
    lim_x_pos, lim_x_neg = (width - cx) / fx + 0.3 * tan_fovx, cx / fx + 0.3 * tan_fovx
    lim_y_pos, lim_y_neg = (height - cy) / fy + 0.3 * tan_fovy, cy / fy + 0.3 * tan_fovy
    tx = z * torch.minimum(torch.maximum(x / z, -lim_x_neg), lim_x_pos)
    ty = z * torch.minimum(torch.maximum(y / z, -lim_y_neg), lim_y_pos)
    zero = torch.zeros_like(z)
    jac = torch.stack([fx / z, zero, -fx * tx / (z * z), zero, fy / z, -fy * ty / (z * z)], dim=-1)
    jac = jac.reshape(*z.shape, 2, 3)  # [C, N, 2, 3]

    half = quat_to_rotmat(quats) * scales[..., None, :]  # [N, 3, 3], covar = half @ half^T
    proj = jac @ torch.einsum("cij,njk->cnik", rot, half)  # [C, N, 2, 3]
    eye = torch.eye(2, dtype=means.dtype, device=means.device)
    covars2d = proj @ proj.transpose(-1, -2) + settings.eps2d * eye  # [C, N, 2, 2]
    a, b, c = covars2d[..., 0, 0], 0.5 * (covars2d[..., 0, 1] + covars2d[..., 1, 0]), covars2d[..., 1, 1]
    det = a * c - b * b
    det_safe = torch.where(det > 0, det, torch.ones_like(det))
    conics = torch.stack([c / det_safe, -b / det_safe, a / det_safe], dim=-1)
    means2d = torch.stack([fx * x / z + cx, fy * y / z + cy], dim=-1)

    with torch.no_grad():
        opac = opacities.detach().expand(z.shape)
        extend = torch.sqrt(2.0 * torch.log((opac / ALPHA_THRESHOLD).clamp_min(1.0))).clamp_max(MAX_EXTEND)
        radii = torch.ceil(extend[..., None] * torch.stack([a, c], dim=-1).clamp_min(0).sqrt())  # [C, N, 2]
        mx, my = means2d[..., 0], means2d[..., 1]
        valid = (in_depth & (det > 0) & (opac >= ALPHA_THRESHOLD)
                 & ~((radii[..., 0] <= settings.radius_clip) & (radii[..., 1] <= settings.radius_clip))
                 & (mx + radii[..., 0] > 0) & (mx - radii[..., 0] < width)
                 & (my + radii[..., 1] > 0) & (my - radii[..., 1] < height))
        radii = torch.where(valid[..., None], radii, torch.zeros_like(radii)).to(torch.int32)
    return Projection(means2d=means2d, conics=conics, depths=means_c[..., 2], radii=radii, covars2d=covars2d)


# --- tile binning ---------------------------------------------------------------------------

@dataclass
class _Bins:
    """Intersections of (camera, Gaussian) entries with screen tiles, grouped by tile, front to back."""

    entry: Tensor  # [n_isects] entry index per intersection, sorted by (tile, depth, entry)
    offsets: Tensor  # [n_tiles_total] first intersection of each tile
    counts: Tensor  # [n_tiles_total] intersections per tile


def _bin_entries(cam: Tensor, means2d: Tensor, radii: Tensor, depths: Tensor, n_cams: int, tile_size: int,
                 tiles_x: int, tiles_y: int) -> _Bins:
    """Tile binning. ``cam [M]`` camera ids; ``means2d [M, 2]``; ``radii [M, 2]``; ``depths [M]``."""
    device = means2d.device
    r = radii.to(means2d.dtype)
    lo = torch.floor((means2d - r) / tile_size).long()
    hi = torch.ceil((means2d + r) / tile_size).long()
    limit = torch.tensor([tiles_x, tiles_y], device=device)
    lo = torch.minimum(lo.clamp_min(0), limit)
    hi = torch.minimum(hi.clamp_min(0), limit)
    span = hi - lo  # [M, 2]
    per_entry = span[:, 0] * span[:, 1]
    # front to back: entries by depth, ties by (camera, Gaussian) order, as gsplat's stable sort
    order = torch.sort(depths.detach(), stable=True).indices
    per_sorted = per_entry[order]
    n_isects = int(per_sorted.sum())
    entry = torch.repeat_interleave(order, per_sorted, output_size=n_isects)
    first = torch.cumsum(per_sorted, 0) - per_sorted
    local = torch.arange(n_isects, device=device) - torch.repeat_interleave(first, per_sorted, output_size=n_isects)
    width_e = span[entry, 0]
    tx = lo[entry, 0] + local % width_e.clamp_min(1)
    ty = lo[entry, 1] + local // width_e.clamp_min(1)
    tile = (cam[entry] * tiles_y + ty) * tiles_x + tx
    tile, perm = torch.sort(tile, stable=True)
    entry = entry[perm]
    counts = torch.bincount(tile, minlength=n_cams * tiles_x * tiles_y)
    offsets = torch.cumsum(counts, 0) - counts
    return _Bins(entry=entry, offsets=offsets, counts=counts)


# --- compositing ----------------------------------------------------------------------------

def _composite_chunk(px: Tensor, py: Tensor, mean: Tensor, conic: Tensor, opac: Tensor, feats: Tensor,
                     T0: Tensor, done: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """Front-to-back compositing of one chunk of sorted Gaussians over ``s`` tiles of ``P`` pixels.

    Args:
        px, py: ``[s, P]`` pixel centres. mean: ``[s, K, 2]``; conic: ``[s, K, 3]``;
        opac: ``[s, K]`` (0 for padding); feats: ``[s, K, F]``.
        T0: ``[s, P]`` transmittance so far; done: ``[s, P]`` bool, pixel already saturated.
    Returns:
        contribution ``[s, P, F]``, new transmittance ``[s, P]``, new done ``[s, P]``.
    """
    dx = px[:, :, None] - mean[:, None, :, 0]  # [s, P, K]
    dy = py[:, :, None] - mean[:, None, :, 1]
    ca, cb, cc = conic[:, None, :, 0], conic[:, None, :, 1], conic[:, None, :, 2]
    sigma = 0.5 * (ca * dx * dx + cc * dy * dy) + cb * dx * dy
    # Clamping sigma (where alpha < 1/255 anyway) and working in log space below keep every value
    # far from float32's denormal range, which is 10-100x slower on CPUs.
    alpha = (opac[:, None, :] * torch.exp(-sigma.clamp_max(_SIGMA_MAX))).clamp_max(ALPHA_MAX)
    alpha = torch.where((sigma >= 0) & (alpha >= ALPHA_THRESHOLD), alpha, torch.zeros_like(alpha))
    # transmittance after each Gaussian; monotone, so "kept" is a prefix along K
    log_t = torch.cumsum(torch.log1p(-alpha), dim=-1).clamp_min(_LOG_T_MIN)
    t_after = T0[:, :, None] * torch.exp(log_t)
    keep = (t_after > T_MIN) & ~done[:, :, None]
    t_before = torch.cat([T0[:, :, None], t_after[..., :-1]], dim=-1)
    weights = torch.where(keep, alpha * t_before, torch.zeros_like(alpha))
    contrib = torch.bmm(weights, feats)  # [s, P, F]
    n_kept = keep.sum(-1)
    last = t_after.gather(-1, (n_kept - 1).clamp_min(0)[..., None])[..., 0]
    T_new = torch.where(n_kept > 0, last, T0)
    return contrib, T_new, done | ~keep[..., -1]


def _composite_tiles(bins: _Bins, means2d: Tensor, conics: Tensor, opacities: Tensor, feats: Tensor,
                     tile_size: int, tiles_x: int, tiles_per_cam: int, width: int, height: int,
                     settings: RasterSettings) -> Tuple[Tensor, Tensor, Tensor]:
    """Composite every non-empty tile. Returns tile ids ``[n]``, features ``[n, P, F]``, T ``[n, P]``."""
    device, dtype = means2d.device, means2d.dtype
    pix = tile_size * tile_size
    packed = torch.cat([means2d, conics, opacities[:, None], feats], dim=-1)  # [M, 6 + F]: one gather per step
    lx = (torch.arange(pix, device=device) % tile_size).to(dtype) + 0.5
    ly = (torch.arange(pix, device=device) // tile_size).to(dtype) + 0.5
    counts_all = bins.counts
    nonempty = torch.nonzero(counts_all > 0)[:, 0]
    order = torch.sort(counts_all[nonempty], descending=True, stable=True).indices
    tiles_sorted = nonempty[order]
    counts_sorted = counts_all[tiles_sorted].tolist()
    n_isects = bins.entry.numel()

    out_tiles: List[Tensor] = []
    out_feats: List[Tensor] = []
    out_T: List[Tensor] = []
    i = 0
    while i < len(counts_sorted):
        kmax = counts_sorted[i]
        kc = max(1, min(settings.chunk_gaussians, kmax))
        b = max(1, settings.chunk_elements // (pix * kc))
        tiles = tiles_sorted[i:i + b]
        i += b
        n = tiles.numel()
        cnt, start = counts_all[tiles], bins.offsets[tiles]
        local_tile = tiles % tiles_per_cam
        px = (local_tile % tiles_x * tile_size).to(dtype)[:, None] + lx  # [n, P]
        py = (local_tile // tiles_x * tile_size).to(dtype)[:, None] + ly
        acc = torch.zeros(n, pix, feats.shape[-1], device=device, dtype=feats.dtype)
        T = torch.ones(n, pix, device=device, dtype=dtype)
        done = (px > width) | (py > height)  # pixels of edge tiles outside the image never hold a tile back
        ks = torch.arange(kc, device=device)
        for k0 in range(0, kmax, kc):
            active = (cnt > k0) & ~done.all(dim=-1)
            sel = torch.nonzero(active)[:, 0]
            if sel.numel() == 0:
                break
            k = k0 + ks  # [kc]
            in_range = k[None, :] < cnt[sel, None]  # [s, kc]
            pos = (start[sel, None] + k[None, :]).clamp_max(n_isects - 1)
            g = packed[bins.entry[pos]]  # [s, kc, 6 + F]
            op = torch.where(in_range, g[..., 5], torch.zeros_like(g[..., 5]))
            contrib, T_sel, done_sel = _composite_chunk(px[sel], py[sel], g[..., 0:2], g[..., 2:5], op, g[..., 6:],
                                                        T[sel], done[sel])
            acc = acc.index_add(0, sel, contrib)
            T = T.index_copy(0, sel, T_sel)
            done = done.index_copy(0, sel, done_sel)
        out_tiles.append(tiles)
        out_feats.append(acc)
        out_T.append(T)
    if not out_tiles:
        empty = torch.zeros(0, pix, device=device, dtype=dtype)
        return torch.zeros(0, dtype=torch.long, device=device), empty[..., None].expand(0, pix, feats.shape[-1]), empty
    return torch.cat(out_tiles), torch.cat(out_feats), torch.cat(out_T)


def _untile(values: Tensor, cams: int, tiles_y: int, tiles_x: int, tile_size: int, height: int, width: int) -> Tensor:
    """``[C * ty * tx, P, F]`` per-tile values to images ``[C, H, W, F]``."""
    f = values.shape[-1]
    img = values.reshape(cams, tiles_y, tiles_x, tile_size, tile_size, f).permute(0, 1, 3, 2, 4, 5)
    return img.reshape(cams, tiles_y * tile_size, tiles_x * tile_size, f)[:, :height, :width]


def rasterize_torch(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor,
                    viewmats: Tensor, Ks: Tensor, width: int, height: int, backgrounds: Optional[Tensor] = None,
                    settings: RasterSettings = RasterSettings()) -> Tuple[Tensor, Tensor, Tensor]:
    """Render ``N`` Gaussians into ``C`` cameras (gsplat ``RGB+ED`` semantics, in PyTorch).

    Args:
        means: ``[N, 3]``. quats: ``[N, 4]`` (w, x, y, z). scales: ``[N, 3]`` std-devs.
        opacities: ``[N]``. colors: ``[N, D]`` (any D, usually RGB).
        viewmats: ``[C, 4, 4]`` world-to-camera (OpenCV). Ks: ``[C, 3, 3]``.
        backgrounds: ``[C, D]`` or ``None`` (black / transparent).
    Returns:
        colors ``[C, H, W, D]``, alphas ``[C, H, W, 1]``, expected depths ``[C, H, W, 1]``
        (0 where nothing was drawn).
    """
    n, cams = means.shape[0], viewmats.shape[0]
    d = colors.shape[-1]
    if colors.shape != (n, d) or opacities.shape != (n,):
        raise ValueError(f"colors must be [N, D] and opacities [N] for N={n}, got {tuple(colors.shape)}, "
                         f"{tuple(opacities.shape)}")
    device, dtype = means.device, means.dtype
    viewmats, Ks = viewmats.to(device=device, dtype=dtype), Ks.to(device=device, dtype=dtype)
    ts = int(settings.tile_size)
    tiles_x, tiles_y = math.ceil(width / ts), math.ceil(height / ts)
    tiles_per_cam = tiles_x * tiles_y

    proj = project_gaussians(means, quats, scales, opacities, viewmats, Ks, width, height, settings)
    cam_idx, g_idx = torch.nonzero(proj.visible, as_tuple=True)  # entries ordered by (camera, Gaussian)
    means2d, conics = proj.means2d[cam_idx, g_idx], proj.conics[cam_idx, g_idx]
    depths = proj.depths[cam_idx, g_idx]
    feats = torch.cat([colors[g_idx].to(dtype), depths[:, None]], dim=-1)  # [M, D + 1]

    bins = _bin_entries(cam_idx, means2d, proj.radii[cam_idx, g_idx], depths, cams, ts,
                        tiles_x, tiles_y)
    tiles, tile_feats, tile_T = _composite_tiles(bins, means2d, conics, opacities[g_idx].to(dtype), feats,
                                                 ts, tiles_x, tiles_per_cam, width, height, settings)
    pix = ts * ts
    total = cams * tiles_per_cam
    acc = torch.zeros(total, pix, d + 1, device=device, dtype=dtype).index_copy(0, tiles, tile_feats)
    T = torch.ones(total, pix, device=device, dtype=dtype).index_copy(0, tiles, tile_T)
    acc = _untile(acc, cams, tiles_y, tiles_x, ts, height, width)  # [C, H, W, D + 1]
    T = _untile(T[..., None], cams, tiles_y, tiles_x, ts, height, width)  # [C, H, W, 1]

    alpha = 1.0 - T
    rgb = acc[..., :d]
    if backgrounds is not None:
        rgb = rgb + T * backgrounds.to(device=device, dtype=dtype)[:, None, None, :]
    depth = acc[..., d:] / alpha.clamp_min(1e-10)
    return rgb, alpha, depth
