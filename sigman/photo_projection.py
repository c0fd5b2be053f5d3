"""Carry one photo's pixels onto an avatar's Gaussians (one Gaussian per UV texel).

Given the fitted body (shape), its pose in the photo and the photo's camera:

1. the posed Gaussians' centres are projected into the photo (pixel + depth);
2. visibility: a depth test against a z-buffer of the posed body *mesh*
   (:func:`sigman.data.uv_projection.rasterize_depth`), with a small slack, so Gaussians on an
   occluded surface (the back, an arm's far side) get no photo colour;
3. weight: a ramp of the cosine between the posed surface normal and the direction to the camera
   (0 below ``cos_low``, 1 above ``cos_high``: grazing views blend with the model), times the
   person mask eroded by ``erode_fraction`` of the person's height (edge pixels mix in the background);
4. colour: a mip-mapped (trilinear) photo sample at a level matching the Gaussian's footprint;
   ``colour = w * photo + (1 - w) * model``;
5. the unseen side keeps the model's colours, shifted towards the photo near the seen side
   (:func:`match_unseen_colors`): each unseen Gaussian takes the kernel-weighted mean of the
   (photo - model) differences of seen Gaussians that are near it on the canonical body *and* similar
   to it in the model's colour (same garment), fading to no shift far from any of them.

Everything is tensor code on the inputs' device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from sigman.data.uv_projection import _pyramid, _sample_trilinear, posed_texels, rasterize_depth
from sigman.gaussians import Gaussians
from sigman.render.cameras import Camera
from sigman.uv import UVTemplate, vertex_normals


@dataclass(frozen=True)
class PhotoProjectionConfig:
    """How the photo's pixels are matched to the avatar's Gaussians."""

    cos_low: float = 0.15  # normal . view below this: the photo is not used
    cos_high: float = 0.5  # above this: full photo weight
    erode_fraction: float = 0.006  # mask erosion, fraction of the person's height in the photo
    depth_tolerance: float = 0.03  # metres of slack in the depth test (Gaussian offsets, fit error)
    zbuffer_size: int = 384  # z-buffer long side, pixels
    max_mip_levels: int = 5
    seen_threshold: float = 0.5  # weight above which a Gaussian counts as seen (for colour matching)
    match_radius: float = 0.25  # metres: spatial scale of the unseen-side colour shift
    match_color_sigma: float = 0.12  # model-colour similarity scale of the shift (same garment)
    match_prior: float = 0.05  # kernel mass of "no shift": far from the seen side the shift fades out
    match_anchors: int = 3000  # seen Gaussians used as anchors for the shift
    match_neighbours: int = 32
    near: float = 0.01


@dataclass
class AvatarSurface:
    """Where an avatar's ``N`` Gaussians sit on its body mesh: what the projection and the refinement
    need beyond the Gaussians. :meth:`from_uv` for sigman's UV template (a Gaussian per texel);
    :func:`sigman.official.surface.release_surface` for the release's template.

    Attributes:
        faces: ``[F, 3]`` the body mesh's triangles (the visibility z-buffer).
        footprints: ``[N]`` each Gaussian's site size on the body, metres.
        neighbour_pairs: ``[P, 2]`` index pairs of neighbouring Gaussians (colour smoothness).
        point_normals: ``posed vertices [1, V, 3] -> [N, 3]`` unit surface normals at the Gaussians' sites.
    """

    faces: Tensor
    footprints: Tensor
    neighbour_pairs: Tensor
    point_normals: Callable[[Tensor], Tensor]

    @staticmethod
    def from_uv(template: UVTemplate) -> "AvatarSurface":
        return AvatarSurface(template.faces, template.footprints, uv_neighbour_pairs(template),
                             lambda vertices: posed_texels(template, vertices)[1][0])

    def to(self, device) -> "AvatarSurface":
        return AvatarSurface(self.faces.to(device), self.footprints.to(device), self.neighbour_pairs.to(device),
                             self.point_normals)


def as_surface(template: Union[UVTemplate, AvatarSurface]) -> AvatarSurface:
    """``template`` as an :class:`AvatarSurface` (a UV template is converted)."""
    return template if isinstance(template, AvatarSurface) else AvatarSurface.from_uv(template)


def mesh_point_normals(faces: Tensor, mix: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """``point_normals`` for Gaussians whose sites are fixed mixes of mesh vertices: the mesh's vertex
    normals mixed by ``mix ([..., V, 3] -> [..., N, 3])``, normalised."""
    def normals(vertices: Tensor) -> Tensor:
        n = mix(vertex_normals(vertices, faces.to(vertices.device)))[0]
        return n / n.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return normals


@dataclass
class PhotoProjection:
    """Per-Gaussian result of projecting a photo (``N`` Gaussians).

    Attributes:
        colors: ``[N, 3]`` photo colour (model colour where unseen).
        weight: ``[N]`` in [0, 1]: how much the photo is trusted there (0 = unseen).
        visible: ``[N]`` bool: in front, in frame, not occluded (before the angle and mask weights).
        cos: ``[N]`` cosine between the posed normal and the direction to the camera.
        pixels: ``[N, 2]`` pixel positions in the photo.
    """

    colors: Tensor
    weight: Tensor
    visible: Tensor
    cos: Tensor
    pixels: Tensor


def erode_mask(mask: Tensor, pixels: int) -> Tensor:
    """Min-filter ``mask [H, W]`` over a ``(2 pixels + 1)²`` window (``pixels <= 0``: unchanged)."""
    if pixels <= 0:
        return mask
    return -F.max_pool2d(-mask[None, None], 2 * pixels + 1, stride=1, padding=pixels)[0, 0]


def person_height_pixels(mask: Tensor) -> float:
    """Height in pixels of the rows where ``mask [H, W]`` is above one half (0 for an empty mask)."""
    rows = torch.nonzero((mask > 0.5).any(dim=1))[:, 0]
    return float(rows.max() - rows.min() + 1) if rows.numel() else 0.0


@torch.no_grad()
def project_photo(template: Union[UVTemplate, AvatarSurface], posed_vertices: Tensor, posed: Gaussians, photo: Tensor, mask: Tensor,
                  camera: Camera, config: PhotoProjectionConfig = PhotoProjectionConfig()) -> PhotoProjection:
    """Photo colours and trust weights of the posed Gaussians.

    Args:
        template: the UV template the Gaussians were built on (texel ``i`` = Gaussian ``i``), or an
            :class:`AvatarSurface`.
        posed_vertices: ``[V, 3]`` the fitted body mesh in the photo's pose (world frame).
        posed: the posed Gaussians ``[N, ...]`` (centres with the model's offsets; colours = the model's).
        photo: ``[H, W, 3]`` RGB in [0, 1]; mask: ``[H, W]`` person mask in [0, 1].
        camera: one camera at the photo's size (``width = W``, ``height = H``).
    """
    h, w = mask.shape
    if photo.shape != (h, w, 3):
        raise ValueError(f"photo must be [H, W, 3] matching the mask [{h}, {w}], got {tuple(photo.shape)}")
    if len(camera) != 1 or (camera.width, camera.height) != (w, h):
        raise ValueError(f"camera must be one view of the photo's size {w}x{h}, got {len(camera)} of "
                         f"{camera.width}x{camera.height}")
    device, dtype = posed.means.device, torch.float32
    surface = as_surface(template).to(device)
    cam = camera.to(device=device, dtype=dtype)
    verts = posed_vertices.to(device=device, dtype=dtype).reshape(1, -1, 3)
    normals = surface.point_normals(verts).to(dtype)  # [N, 3]
    means = posed.means.detach().to(dtype)
    n = means.shape[0]
    if normals.shape[0] != n:
        raise ValueError(f"{n} Gaussians but the surface has {normals.shape[0]} sites")

    vm, K = cam.viewmats[0], cam.Ks[0]
    local = means @ vm[:3, :3].T + vm[:3, 3]
    z = local[:, 2]
    zc = z.clamp_min(config.near)
    pix = torch.stack([K[0, 0] * local[:, 0] / zc + K[0, 2], K[1, 1] * local[:, 1] / zc + K[1, 2]], dim=-1)
    to_cam = cam.positions[0] - means
    cos = (to_cam * normals).sum(-1) / to_cam.norm(dim=-1).clamp_min(1e-12)

    # depth test against the posed mesh's z-buffer (reduced size, same framing)
    scale = config.zbuffer_size / max(w, h)
    zw, zh = max(1, round(w * scale)), max(1, round(h * scale))
    zK = K.clone()
    zK[0] *= zw / w
    zK[1] *= zh / h
    zbuf = rasterize_depth(verts, surface.faces, vm[None, None], zK[None, None], zw, zh, config.near)[0, 0]
    zx = (pix[:, 0] * (zw / w)).long().clamp(0, zw - 1)
    zy = (pix[:, 1] * (zh / h)).long().clamp(0, zh - 1)
    surface_depth = zbuf[zy, zx]
    slack = config.depth_tolerance + 2.0 * z / float(zK[1, 1])  # plus two z-buffer pixels of world size
    inside = (z > config.near) & (pix[:, 0] >= 0) & (pix[:, 0] < w) & (pix[:, 1] >= 0) & (pix[:, 1] < h)
    visible = inside & (z <= surface_depth + slack)

    # mask eroded by a fraction of the person's height, sampled with the colour
    erode = int(round(config.erode_fraction * person_height_pixels(mask)))
    stack = torch.cat([photo.to(device, dtype).permute(2, 0, 1), erode_mask(mask.to(device, dtype), erode)[None]])
    footprint = surface.footprints.to(dtype) * K[1, 1] / zc
    level = torch.log2(footprint.clamp_min(1.0))
    pyramid = _pyramid(stack[None], config.max_mip_levels)
    samples = _sample_trilinear(pyramid, pix[None], level[None], w, h)[0]  # [4, N]
    ramp = ((cos - config.cos_low) / max(config.cos_high - config.cos_low, 1e-6)).clamp(0, 1)
    weight = torch.where(visible, ramp * samples[3].clamp(0, 1), torch.zeros_like(ramp))
    model = posed.colors.detach().to(dtype)
    colors = weight[:, None] * samples[:3].T.clamp(0, 1) + (1 - weight[:, None]) * model
    return PhotoProjection(colors=colors, weight=weight, visible=visible, cos=cos, pixels=pix)


@torch.no_grad()
def match_unseen_colors(colors: Tensor, model_colors: Tensor, weight: Tensor, canonical_points: Tensor,
                        config: PhotoProjectionConfig = PhotoProjectionConfig(), seed: int = 0) -> Tensor:
    """Shift the colours of the unseen Gaussians towards the photo's look.

    Each Gaussian ``i`` gets ``shift_i = Σ_a k_ia d_a / (prior + Σ_a k_ia)`` over seen anchors ``a``
    (``weight > seen_threshold``), ``d_a = photo colour - model colour`` and
    ``k_ia = exp(-|p_i - p_a|² / 2r² - |m_i - m_a|² / 2s²)`` (canonical positions ``p``, model colours
    ``m``): near the seen side and on the same-coloured garment the shift is the local mismatch, far
    away it fades to zero. The shift is applied with ``1 - weight``, so seen Gaussians keep the photo.

    Args:
        colors: ``[N, 3]`` after projection; model_colors: ``[N, 3]`` the model's prediction;
        weight: ``[N]`` photo weights; canonical_points: ``[N, 3]`` Gaussian centres at rest.
    Returns:
        ``[N, 3]`` colours in [0, 1].
    """
    seen = torch.nonzero(weight > config.seen_threshold)[:, 0]
    if seen.numel() == 0:
        return colors
    if seen.numel() > config.match_anchors:
        g = torch.Generator(device="cpu").manual_seed(seed)
        seen = seen[torch.randperm(seen.numel(), generator=g)[:config.match_anchors].to(seen.device)]
    delta = (colors - model_colors)[seen]  # [A, 3]
    feats = torch.cat([canonical_points / config.match_radius, model_colors / config.match_color_sigma], dim=-1)
    anchors = feats[seen]
    k = min(config.match_neighbours, seen.numel())
    shift = torch.zeros_like(colors)
    for start in range(0, colors.shape[0], 8192):
        d2 = torch.cdist(feats[start:start + 8192], anchors).square()  # [c, A]
        near, idx = torch.topk(d2, k, dim=-1, largest=False)
        kern = torch.exp(-0.5 * near)  # [c, k]
        shift[start:start + 8192] = (kern[..., None] * delta[idx]).sum(1) / (config.match_prior + kern.sum(-1, keepdim=True))
    return (colors + (1 - weight[:, None]) * shift).clamp(0, 1)


def background_color(photo: Tensor, mask: Tensor) -> Tensor:
    """``[3]`` the photo's background colour: the median outside the mask (white when there is none)."""
    outside = mask < 0.5
    if not bool(outside.any()):
        return torch.ones(3, dtype=photo.dtype, device=photo.device)
    return photo[outside].median(dim=0).values


def uv_neighbour_pairs(template: UVTemplate) -> Tensor:
    """``[P, 2]`` Gaussian index pairs of covered texels that are right / down neighbours on the UV grid."""
    r = template.resolution
    lookup = torch.full((r * r,), -1, dtype=torch.long, device=template.texel_index.device)
    lookup[template.texel_index] = torch.arange(template.num_points, device=lookup.device)
    grid = lookup.view(r, r)
    pairs = []
    for a, b in ((grid[:, :-1], grid[:, 1:]), (grid[:-1, :], grid[1:, :])):
        ok = (a >= 0) & (b >= 0)
        pairs.append(torch.stack([a[ok], b[ok]], dim=-1))
    return torch.cat(pairs)
