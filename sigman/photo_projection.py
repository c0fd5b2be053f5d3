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
5. the unseen side first takes the photo's colours at its front-to-back mirror point where they are
   common on the seen side (:mod:`sigman.mirror_colors`, called by :func:`sigman.refine.refine_avatar`; those
   then count as seen below); the rest keeps the model's colours, shifted towards the photo near the seen side
   (:func:`match_unseen_colors`): each unseen Gaussian takes the kernel-weighted mean of the
   (photo - model) differences of seen Gaussians that are near it on the canonical body *and* similar
   to it in the model's colour (same garment), fading to no shift far from any of them; then garments
   (:func:`match_garments`): the model's colours are cut into connected pieces of one colour, each inside
   one body part (:func:`garment_pieces`, :mod:`sigman.body.parts`); a piece whose seen part the photo shows
   in other colours (a stripe the model painted where the suit has straps) has its unseen part filled from the colours around it
   (:func:`fill_from_surroundings`) instead of half-shifted, an unseen piece of a like colour next to a piece
   the photo confirms takes that piece's photo colour (instead of the kernel's far-reaching shift; the head's
   pieces lead no other part's), an unseen piece of a like
   colour next to a contradicted one is filled with it, and (optionally) an unseen colour that the photo
   shows nowhere on the person (:func:`implausible_colors`) is filled too; last, no unseen colour is more
   saturated than the photo shows its hue (:func:`cap_unseen_chroma`, called by
   :func:`sigman.refine.refine_avatar`: a greyscale photo gets a grey back);
6. hair (:func:`estimate_hair_color`, :func:`head_hair_region`, :func:`apply_hair_color`): the face-derived
   shift of step 5 pulls the unseen back of the head towards the face's skin (the model tends to paint the
   whole seen head as face). The photo's hair colour is taken from the pixels around the face (inside the
   person mask, above / beside an ellipse around the face landmarks, unlike the face's skin), and the
   unseen Gaussians on the back and top of the head take it (the model's shading variation kept), and so
   do those on the temples where the model painted neither skin nor hair (:func:`head_temple_region`,
   :func:`implausible_head_colors`). A photo whose head pixels look like the face (bald, short hair,
   hidden face) changes nothing.

Everything is tensor code on the inputs' device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from sigman.color import lab_to_srgb, srgb_to_lab
from sigman.garment_colors import match_garments
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
    # garment matching (match_garments): the model's colours cut into garment pieces (garment_pieces); the unseen
    # part of a piece the photo contradicts is filled from the colours around it, an unseen piece next to a
    # confirmed one keeps the model's colour (and, optionally, an unseen colour the photo shows nowhere is filled)
    garment_match: bool = True  # False: the kernel shift alone
    garment_split_parts: bool = True  # pieces stay inside one body part (head, torso, an arm, a leg)
    garment_clusters: int = 8  # k-means clusters of the model's colours (CIELAB)
    garment_voxel: float = 0.04  # metres: a piece is connected at this spacing on the canonical body
    garment_min_seen: int = 50  # seen Gaussians a piece needs before it is changed
    garment_min_delta: float = 25.0  # CIE76 dE of the piece's mismatch below which it is left to the kernel
    # shift (a small mismatch is light and shading, which the local shift follows better)
    garment_mode_radius: float = 12.0  # CIE76 dE around the dominant photo colour
    garment_move: bool = False  # True: a piece the photo shows in one other colour moves to it; False: it is filled
    garment_move_share: float = 0.5  # the dominant photo colour's share of the seen part for a move
    garment_contradicted_share: float = 0.2  # at most this share of the seen part in the model's colour: fill
    garment_inherit_distance: float = 0.3  # metres: an unseen piece this near a decided one of its colour follows it
    garment_inherit_from_head: bool = False  # True: pieces of other parts may follow the head's (face, hair)
    garment_follow_photo: bool = True  # a piece following a kept one takes that piece's photo colour (False: its
    # own model colour, which may be another colour of the same k-means cluster: dark red beside navy)
    garment_inherit_delta: float = 15.0  # CIE76 dE: "its colour" is its k-means cluster, or model colours this close
    garment_palette_distance: float = 0.0  # CIE76 dE: an unseen colour with fewer than garment_palette_share of
    # the seen photo colours this near is filled from its surroundings (0: off, the default: on the held-out
    # subjects it moved subject 2 by -0.4 to +0.0 dB with the palette's sample size, and changed little on real photos)
    garment_palette_share: float = 0.01
    garment_palette_size: int = 1024
    # cap_unseen_chroma: an unseen colour's CIELAB chroma is at most this quantile of the seen colours of its hue
    unseen_chroma_quantile: float = 0.9  # (0: off)
    unseen_chroma_margin: float = 2.0  # plus this
    unseen_chroma_bins: int = 24  # hue sectors
    garment_fill_neighbours: int = 8  # nearest Gaussians of the fill's diffusion
    garment_fill_iterations: int = 60
    garment_fill_shading: float = 0.5  # the model's lightness variation kept on filled pieces
    near: float = 0.01
    # mirror (sigman.mirror_colors): an unseen Gaussian first takes the seen colours at its front-to-back mirror point
    mirror_strength: float = 1.0  # 0: off; else the mirrored colour's confidence is scaled by this
    mirror_neighbours: int = 8  # seen Gaussians averaged at the mirror point (also a low-pass: prints blur)
    mirror_max_distance: float = 0.03  # metres: seen Gaussians further than this from the mirror point do not count
    mirror_depth_scale: float = 0.1  # the front-to-back axis counts this much in that distance (1: a plain distance)
    mirror_max_forward: float = 0.6  # bones with a larger forward share of their direction (feet) are not mirrored
    mirror_min_share: float = 0.05  # a mirrored colour that fewer than this share of its body part's seen colours
    # come within mirror_share_delta of (a badge, a logo, a tie) counts not at all; full weight from twice the share
    mirror_share_delta: float = 15.0  # CIE76 dE
    # hair: the unseen back / top of the head takes the photo's hair colour (estimate_hair_color)
    hair: bool = True  # False: the back of the head is matched like the rest (step 5 only)
    hair_min_contrast: float = 15.0  # CIE76 dE from the face's skin above which a head pixel counts as hair
    hair_area: tuple[float, float] = (0.06, 0.2)  # hair-like head pixels, in face units squared: confidence 0 -> 1
    hair_min_pixels: int = 8  # fewer hair-like pixels than this: confidence 0
    hair_purity: float = 0.4  # the colour is the median of the hair-like pixels above this quantile of dE from
    # the skin (edge pixels blend hair and skin)
    hair_visibility: float = 0.5  # landmark visibility needed for the nose and both eyes
    hair_strength: float = 1.0  # blend towards the hair colour at full confidence, on unseen hair Gaussians
    hair_shading: float = 0.6  # the model's colour variation kept around the hair colour (CIELAB, 0: flat)
    hair_head_weight: tuple[float, float] = (0.4, 0.7)  # skin weight on the head joints: region 0 -> 1
    hair_forward_cos: tuple[float, float] = (0.35, 0.0)  # cos to the face's forward direction: region 0 -> 1
    hair_top_cos: tuple[float, float] = (0.6, 0.85)  # cos to up (the top of the head): region 0 -> 1
    # the temples (above the ears, forward to the forehead: head_temple_region) join the region only where the
    # model's colour is neither the face's skin nor the photo's hair (implausible_head_colors)
    hair_temple_cos: tuple[float, float] = (0.8, 0.55)  # above the ears: cos to forward, region 0 -> 1
    hair_temple_rise: tuple[float, float] = (0.01, 0.04)  # metres above the ears' level: the temple ramp 0 -> 1
    hair_implausible: tuple[float, float] = (25.0, 35.0)  # CIE76 dE of the model's colour from the nearer: 0 -> 1
    neck: bool = True  # the unseen neck takes the seen neck's colour where the model painted neither it nor skin
    neck_min_seen: int = 20  # seen neck Gaussians needed
    hair_nape: float = 0.7  # on Gaussians facing away from the face (cos to forward from hair_forward_cos[1] down
    # to its mirror, 2 hair_forward_cos[1] - hair_forward_cos[0]: 0 -> full), the region reaches lower (the nape,
    # behind the ears): the height ramp moves down by this fraction of the mouth-to-ears height and the
    # hair_head_weight ramp shrinks by this fraction (0: the same region all round)


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
                        config: PhotoProjectionConfig = PhotoProjectionConfig(), seed: int = 0,
                        parts: Optional[Tensor] = None) -> Tensor:
    """Shift the colours of the unseen Gaussians towards the photo's look.

    Each Gaussian ``i`` gets ``shift_i = Σ_a k_ia d_a / (prior + Σ_a k_ia)`` over seen anchors ``a``
    (``weight > seen_threshold``), ``d_a = photo colour - model colour`` and
    ``k_ia = exp(-|p_i - p_a|² / 2r² - |m_i - m_a|² / 2s²)`` (canonical positions ``p``, model colours
    ``m``): near the seen side and on the same-coloured garment the shift is the local mismatch, far
    away it fades to zero. The shift is applied with ``1 - weight``, so seen Gaussians keep the photo.

    Args:
        colors: ``[N, 3]`` after projection; model_colors: ``[N, 3]`` the model's prediction;
        weight: ``[N]`` photo weights; canonical_points: ``[N, 3]`` Gaussian centres at rest;
        parts: ``[N]`` body part ids (:func:`sigman.body.parts.point_parts`) that cut the garment pieces, or ``None``.
    Returns:
        ``[N, 3]`` colours in [0, 1].
    """
    seen = torch.nonzero(weight > config.seen_threshold)[:, 0]
    if seen.numel() == 0:
        return colors
    shift = _kernel_shift(colors, model_colors, seen, canonical_points, config, seed)
    out = (colors + (1 - weight[:, None]) * shift).clamp(0, 1)
    if not config.garment_match:
        return out
    return match_garments(out, colors, model_colors, weight, canonical_points, config, seed,
                          parts if config.garment_split_parts else None)


def hue_chroma_caps(seen_lab: Tensor, bins: int, quantile: float, min_count: int) -> Tensor:
    """``[bins]`` the ``quantile`` of the CIELAB chroma of the colours ``seen_lab [M, 3]`` in each hue sector
    (``bins`` equal sectors, each pooled with its two neighbours); a sector with fewer than ``min_count`` colours
    gets the median chroma of them all. ``seen_lab`` must not be empty."""
    chroma = seen_lab[:, 1:].norm(dim=-1)
    hue = torch.atan2(seen_lab[:, 2], seen_lab[:, 1])
    sector = ((hue / (2 * torch.pi) * bins).floor().long() % bins)
    fallback = chroma.median()
    caps = torch.empty(bins, device=seen_lab.device)
    for b in range(bins):
        pooled = chroma[(sector - b + 1) % bins <= 2]
        caps[b] = torch.quantile(pooled[:100000], quantile) if pooled.numel() >= min_count else fallback
    return caps


def cap_unseen_chroma(out: Tensor, colors: Tensor, weight: Tensor, config: PhotoProjectionConfig,
                      allowed: Optional[Tensor] = None) -> Tensor:
    """``out [N, 3]`` with no unseen colour more saturated than the photo shows its hue on the person.

    The seen Gaussians' colours (``colors [N, 3]``, the projection's, where its ``weight [N] > seen_threshold``)
    give a chroma cap per CIELAB hue (:func:`hue_chroma_caps`, ``unseen_chroma_bins`` sectors, their
    ``unseen_chroma_quantile``, interpolated between sector centres) plus ``unseen_chroma_margin``; a colour
    above the cap of its hue is desaturated to it (hue and lightness kept), applied with ``1 - weight`` (seen
    Gaussians keep the photo). A greyscale photo then gets a grey back, not the model's cyan; blue shoes seen
    in the photo stay blue behind. Off when ``unseen_chroma_quantile <= 0``. ``allowed [N, 3]``: colours whose
    own chroma each Gaussian may keep even above the cap (the colours before a refinement, which may then add
    no saturation beyond them and the cap).
    """
    seen = weight > config.seen_threshold
    if config.unseen_chroma_quantile <= 0 or int(seen.sum()) < config.garment_min_seen:
        return out
    bins = config.unseen_chroma_bins
    caps = hue_chroma_caps(srgb_to_lab(colors[seen]).float(), bins, config.unseen_chroma_quantile,
                           config.garment_min_seen) + config.unseen_chroma_margin
    lab = srgb_to_lab(out).float()
    chroma = lab[:, 1:].norm(dim=-1, keepdim=True)
    position = torch.atan2(lab[:, 2], lab[:, 1]) / (2 * torch.pi) * bins - 0.5  # sector centres at integers
    low = position.floor()
    frac = (position - low)[:, None]
    low = low.long() % bins
    cap = caps[low][:, None] * (1 - frac) + caps[(low + 1) % bins][:, None] * frac
    if allowed is not None:
        cap = torch.maximum(cap, srgb_to_lab(allowed).float()[:, 1:].norm(dim=-1, keepdim=True))
    factor = (cap / chroma.clamp_min(1e-6)).clamp(max=1.0)
    factor = 1 - (1 - weight[:, None].clamp(0, 1)) * (1 - factor)  # seen Gaussians: factor 1
    capped = lab_to_srgb(torch.cat([lab[:, :1], lab[:, 1:] * factor], dim=-1)).to(out).clamp(0, 1)
    return torch.where(factor < 1, capped, out)


def _kernel_shift(colors: Tensor, model_colors: Tensor, seen: Tensor, canonical_points: Tensor,
                  config: PhotoProjectionConfig, seed: int) -> Tensor:
    """``[N, 3]`` the kernel-weighted seen-side mismatch of :func:`match_unseen_colors` (RGB)."""
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
    return shift


# --- hair -------------------------------------------------------------------------------------------

# BlazePose landmark indices (sigman.observation.BLAZEPOSE_LANDMARKS)
NOSE, LEFT_EYE, RIGHT_EYE, LEFT_EAR, RIGHT_EAR, MOUTH_LEFT, MOUTH_RIGHT = 0, 2, 5, 7, 8, 9, 10


def _ramp(x: Tensor, low: float, high: float) -> Tensor:
    """0 at ``low``, 1 at ``high`` (either order), linear between."""
    return ((x - low) / (high - low if high != low else 1e-6)).clamp(0, 1)


@dataclass
class HairEstimate:
    """The photo's hair colour (:func:`estimate_hair_color`).

    Attributes:
        color: ``[3]`` RGB in [0, 1], the median (CIELAB) of the hair-like head pixels.
        skin: ``[3]`` RGB, the face's median colour.
        confidence: ``[]`` in [0, 1]: 0 when the head pixels look like the face (bald, short hair) or too few.
        pixels: ``[]`` how many hair-like pixels were found.
        region: ``[H, W]`` bool, the head pixels looked at (outside the face); ``hair``: ``[H, W]`` the hair-like ones.
    """

    color: Tensor
    skin: Tensor
    confidence: Tensor
    pixels: Tensor
    region: Tensor
    hair: Tensor


@torch.no_grad()
def estimate_hair_color(photo: Tensor, mask: Tensor, landmarks: Tensor, visibility: Optional[Tensor] = None,
                        config: PhotoProjectionConfig = PhotoProjectionConfig()) -> Optional[HairEstimate]:
    """The hair colour of the person in ``photo``, from the pixels around the face.

    The face frame comes from the BlazePose face landmarks: the eyes' midpoint, "up" from the mouth to
    the eyes (head tilt), and a face unit ``u`` (the eye-to-mouth distance, at least ~the eyes' and
    half the ears' spacing). The face's skin is the median of the pixels in a small ellipse on the cheeks
    and nose; the head region is the person mask (eroded) from a little below the eyes to 2.6 u above
    them, within 1.7 u to the sides, outside an ellipse around the face (chin to the lower forehead: the
    forehead's skin is told from hair by its colour). Its pixels at least ``hair_min_contrast`` (CIE76)
    from the skin are hair-like; the median (CIELAB) of the farthest of them from the skin (above the
    ``hair_purity`` quantile: edge pixels blend hair and skin) is the hair colour, and the confidence ramps with
    their area in face units squared (``hair_area``): a bald head or a hairline out of sight gives 0.

    Args:
        photo: ``[H, W, 3]`` RGB in [0, 1]; mask: ``[H, W]`` person mask in [0, 1].
        landmarks: ``[33, 2]`` BlazePose landmarks, pixels; visibility: ``[33]`` in [0, 1] (``None``: all seen).
    Returns:
        a :class:`HairEstimate`, or ``None`` when the face is not seen (nose or an eye below
        ``hair_visibility``) or its landmarks are degenerate.
    """
    device, dtype = photo.device, torch.float32
    h, w = mask.shape
    pts = landmarks.to(device, dtype).reshape(-1, 2)
    vis = torch.ones(pts.shape[0], device=device, dtype=dtype) if visibility is None else visibility.to(device, dtype).reshape(-1)
    if pts.shape[0] < 11 or float(vis[[NOSE, LEFT_EYE, RIGHT_EYE]].min()) < config.hair_visibility:
        return None
    eye_c = 0.5 * (pts[LEFT_EYE] + pts[RIGHT_EYE])
    mouth_seen = float(vis[[MOUTH_LEFT, MOUTH_RIGHT]].min()) >= config.hair_visibility
    mouth_c = 0.5 * (pts[MOUTH_LEFT] + pts[MOUTH_RIGHT]) if mouth_seen else eye_c + 2.0 * (pts[NOSE] - eye_c)
    down = mouth_c - eye_c
    d = float(down.norm())
    unit = max(d, 1.1 * float((pts[LEFT_EYE] - pts[RIGHT_EYE]).norm()))
    if float(vis[[LEFT_EAR, RIGHT_EAR]].min()) >= config.hair_visibility:
        unit = max(unit, 0.45 * float((pts[LEFT_EAR] - pts[RIGHT_EAR]).norm()))
    if unit < 1.0 or d < 1e-3:
        return None
    up = -down / d
    side = torch.stack([-up[1], up[0]])
    ys, xs = torch.meshgrid(torch.arange(h, device=device, dtype=dtype) + 0.5,
                            torch.arange(w, device=device, dtype=dtype) + 0.5, indexing="ij")
    rel = torch.stack([xs, ys], dim=-1) - eye_c  # [H, W, 2]
    a = (rel @ up) / unit  # face units above the eyes
    b = (rel @ side) / unit  # face units to the side
    erode = max(1, int(round(config.erode_fraction * person_height_pixels(mask))))
    person = erode_mask(mask.to(device, dtype), erode) > 0.5
    face = (b / 0.95).square() + ((a + 0.5) / 1.25).square() <= 1.0  # chin (-1.75 u) to the forehead (+0.75 u)
    cheeks = (b / 0.6).square() + ((a + 0.5) / 0.6).square() <= 1.0
    region = person & ~face & (a > -0.3) & (a < 2.6) & (b.abs() < 1.7)
    skin_px = photo[person & cheeks]
    if skin_px.shape[0] < 4:
        return None
    lab = srgb_to_lab(photo).to(dtype)
    skin_lab = lab[person & cheeks].median(dim=0).values
    contrast = (lab - skin_lab).norm(dim=-1)
    hair = region & (contrast > config.hair_min_contrast)
    count = hair.sum()
    area = count.to(dtype) / (unit * unit)
    confidence = _ramp(area, *config.hair_area) * (count >= config.hair_min_pixels).to(dtype)
    if int(count) > 0:
        c = contrast[hair]
        pure = c >= torch.quantile(c, config.hair_purity)
        hair_lab = lab[hair][pure].median(dim=0).values
    else:
        hair_lab = skin_lab
    return HairEstimate(color=lab_to_srgb(hair_lab), skin=lab_to_srgb(skin_lab), confidence=confidence, pixels=count,
                        region=region, hair=hair)


def _head_directions(points: Tensor, ears: Tensor, nose: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """From the ears' midpoint ``centre [3]``: offsets ``rel [N, 3]``, unit directions ``[N, 3]`` and
    their cosines ``[N]`` to the face's forward direction (the ears' midpoint to the nose, horizontal)."""
    centre = ears.float().mean(0).to(points)
    forward = nose.float().to(points) - centre
    forward = torch.stack([forward[0], torch.zeros_like(forward[1]), forward[2]])
    forward = forward / forward.norm().clamp_min(1e-9)
    rel = points - centre
    direction = rel / rel.norm(dim=-1, keepdim=True).clamp_min(1e-9)
    return centre, rel, direction, direction @ forward


@torch.no_grad()
def head_hair_region(canonical_points: Tensor, head_weight: Tensor, ears: Tensor, nose: Tensor, mouth: Tensor,
                     config: PhotoProjectionConfig = PhotoProjectionConfig()) -> Tensor:
    """How much each Gaussian is on the back / top of the head (where hair grows): ``[N]`` in [0, 1].

    In the canonical frame: the skin weight on the head joints ramps by ``hair_head_weight``; the
    direction from the ears' midpoint to the Gaussian, against the face's forward direction (ears'
    midpoint to the nose, made horizontal), ramps by ``hair_forward_cos`` (the back and the sides), or
    against up by ``hair_top_cos`` (the top); and the height ramps from the mouth's level (0) to the ears' (1).
    On the back (facing away from the face) both ramps reach lower, by ``hair_nape`` (the nape, behind the ears).

    Args:
        canonical_points: ``[N, 3]`` Gaussian centres at rest (+y up); head_weight: ``[N]`` skin weight on the head joints.
        ears: ``[2, 3]`` the canonical ear landmarks; nose: ``[3]``; mouth: ``[3]`` (the mouth's midpoint).
    """
    pts = canonical_points.float()
    centre, _, direction, cos_forward = _head_directions(pts, ears, nose)
    facing = torch.maximum(_ramp(cos_forward, *config.hair_forward_cos), _ramp(direction[:, 1], *config.hair_top_cos))
    side, turned = config.hair_forward_cos
    back = config.hair_nape * _ramp(cos_forward, turned, 2 * turned - side)  # 0 (sides, front) -> hair_nape (back)
    height = _ramp(pts[:, 1] + back * (float(centre[1]) - float(mouth[1])), float(mouth[1]), float(centre[1]))
    on_head = _ramp(head_weight.float().to(pts) / (1 - back).clamp_min(1e-3), *config.hair_head_weight)
    return on_head * facing * height


def head_temple_region(canonical_points: Tensor, head_weight: Tensor, ears: Tensor, nose: Tensor,
                       config: PhotoProjectionConfig = PhotoProjectionConfig()) -> Tensor:
    """How much each Gaussian is on a temple or the side of the head above the ears, forward up to the
    forehead (which :func:`head_hair_region` leaves out): ``[N]`` in [0, 1]. The direction from the ears'
    midpoint against the face's forward direction ramps by ``hair_temple_cos``, the height above the ears'
    level by ``hair_temple_rise``, the head skin weight by ``hair_head_weight``. Arguments as there."""
    pts = canonical_points.float()
    _, rel, _, cos_forward = _head_directions(pts, ears, nose)
    on_head = _ramp(head_weight.float().to(pts), *config.hair_head_weight)
    return on_head * _ramp(cos_forward, *config.hair_temple_cos) * _ramp(rel[:, 1], *config.hair_temple_rise)


def _implausible(model_lab: Tensor, references_lab: Tensor, config: PhotoProjectionConfig) -> Tensor:
    """``[N]`` in [0, 1]: CIE76 dE of each model colour ``[N, 3]`` (CIELAB) from the nearest of the
    references ``[K, 3]`` (CIELAB), ramped by ``hair_implausible``."""
    return _ramp(torch.cdist(model_lab, references_lab.to(model_lab)).amin(dim=-1), *config.hair_implausible)


def implausible_head_colors(model_colors: Tensor, hair: HairEstimate,
                            config: PhotoProjectionConfig = PhotoProjectionConfig()) -> Tensor:
    """``[N]`` in [0, 1]: how far the model's colours ``[N, 3]`` are from both the face's skin and the
    hair of the photo (``hair_implausible``, CIE76 dE of the nearer of the two): 0 where the model
    painted the person's skin or hair, 1 where it painted something else (a green scalp)."""
    lab = srgb_to_lab(model_colors.float())
    return _implausible(lab, srgb_to_lab(torch.stack([hair.skin, hair.color]).to(lab)), config)


@torch.no_grad()
def match_implausible_neck(colors: Tensor, model_colors: Tensor, weight: Tensor, neck_weight: Tensor, skin: Tensor,
                           config: PhotoProjectionConfig = PhotoProjectionConfig()) -> Tensor:
    """The unseen neck Gaussians whose model colour is neither the face's ``skin [3]`` nor the seen neck's
    colour (the model's garbage, e.g. a green collar behind) take the seen neck's colour (its median in
    CIELAB; of the model's colour only its lightness variation is kept, by ``hair_shading``); the rest is
    unchanged.

    Args:
        colors: ``[N, 3]`` after projection and the hair step; model_colors: ``[N, 3]``; weight: ``[N]``
        photo weights; neck_weight: ``[N]`` skin weight on the body's neck joints; skin: the photo's face skin.
    Returns:
        ``[N, 3]`` colours in [0, 1].
    """
    seen = (weight > config.seen_threshold) & (neck_weight > 0.5)
    if int(seen.sum()) < config.neck_min_seen:
        return colors
    seen_lab = srgb_to_lab(colors[seen].float()).median(dim=0).values
    model_lab = srgb_to_lab(model_colors.float())
    skin_lab = srgb_to_lab(skin.to(model_lab).reshape(1, 3))[0]
    odd = _implausible(model_lab, torch.stack([skin_lab, seen_lab]), config)
    on_neck = _ramp(neck_weight.float(), *config.hair_head_weight)
    alpha = ((1 - weight.float()) * on_neck * odd).clamp(0, 1)
    if not bool((alpha > 0).any()):
        return colors
    r = alpha[:, None]
    mean = (r * model_lab).sum(0) / r.sum().clamp_min(1e-9)
    shade = torch.zeros_like(model_lab)
    shade[:, 0] = config.hair_shading * (model_lab[:, 0] - mean[0])  # the model's lightness only: not its hue
    target = lab_to_srgb(seen_lab + shade).to(colors)
    return (colors + alpha.to(colors)[:, None] * (target - colors)).clamp(0, 1)


@torch.no_grad()
def apply_hair_color(colors: Tensor, model_colors: Tensor, weight: Tensor, region: Tensor, hair: HairEstimate,
                     config: PhotoProjectionConfig = PhotoProjectionConfig()) -> Tensor:
    """Blend the unseen hair Gaussians towards the photo's hair colour.

    The target keeps the model's variation around its mean over the region (CIELAB, times
    ``hair_shading``): ``target_i = hair + shading (m_i - mean(m))``; the blend weight is
    ``hair_strength x confidence x region_i x (1 - weight_i)``, so seen Gaussians keep the photo.

    Args:
        colors: ``[N, 3]`` after projection and :func:`match_unseen_colors`; model_colors: ``[N, 3]`` the model's;
        weight: ``[N]`` photo weights; region: ``[N]`` :func:`head_hair_region`; hair: the photo's estimate.
    Returns:
        ``[N, 3]`` colours in [0, 1].
    """
    alpha = (config.hair_strength * hair.confidence.to(colors) * region.to(colors) * (1 - weight.to(colors))).clamp(0, 1)
    if not bool((alpha > 0).any()):
        return colors
    model_lab = srgb_to_lab(model_colors).float()
    r = region.float()[:, None]
    mean = (r * model_lab).sum(0) / r.sum().clamp_min(1e-9)
    target = lab_to_srgb(srgb_to_lab(hair.color.to(model_lab)) + config.hair_shading * (model_lab - mean)).to(colors)
    return (colors + alpha[:, None] * (target - colors)).clamp(0, 1)


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
