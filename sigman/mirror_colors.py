"""The unseen back of a body from its seen front: photo colours mirrored through the body's coronal plane.

Clothes are mostly alike front and back: a striped shirt is striped behind too, trousers are one colour
all round, a sock's band goes round the leg. Each unseen Gaussian looks at its *mirror point*, its own
position reflected front to back about the bone it sits on (in the canonical pose, where the body faces
``+z``), and takes the mean photo colour of the seen Gaussians of its body part nearest to that point, with
the front-to-back axis counting ``mirror_depth_scale`` as much as the others (the torso's bones lie nearer its
back, so the mirror point of the back falls inside the chest: the partner is the seen surface straight ahead).
The mean over several neighbours is also a low-pass filter: stripes and colour blocks come through,
small prints (letters, a badge) blur.

    colors, weight = mirror_seen_colors(projection.colors, projection.weight, canonical.means,
                                        rest_joints, body.parents, parts, config)

The result is a pseudo-observation of the back, with its own confidence as a weight, that the colour
matching of the unseen side then treats like the photo (:func:`sigman.photo_projection.match_unseen_colors`).
The head is left out (the back of the head is hair, not a mirrored face), and so are points on bones that
run front to back (the feet), where a front-to-back mirror means nothing.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from sigman.color import srgb_to_lab
from sigman.garment_colors import palette_share
from sigman.girth import bone_segments, nearest_bones

HEAD_PART = 1  # sigman.body.parts.PART_NAMES.index("head")
_PART_SPACING = 100.0  # metres between the parts' copies in the search space (no cross-part neighbour)


def coronal_mirror(points: Tensor, joints: Tensor, parents: Tensor, max_forward: float = 0.6,
                   chunk: int = 8192) -> tuple[Tensor, Tensor]:
    """Reflect canonical ``points [N, 3]`` front to back about their nearest bone.

    The nearest bone is the nearest segment from a joint's parent to the joint (``joints [J, 3]``,
    ``parents [J]``, canonical pose, ``+z`` forward). The reflection flips the point's forward offset from
    that segment: ``p' = p - 2 (r . z) z`` with ``r`` the vector from the segment's nearest point to ``p``.

    Returns:
        ``(mirrored [N, 3], valid [N] bool)``; ``valid`` is False where the bone's direction has a forward
        component above ``max_forward`` (feet and toes: no front and back to swap).
    """
    radial, segment = nearest_bones(points, joints, parents, chunk)
    if bool((segment < 0).all()):
        return points.clone(), torch.zeros(points.shape[0], dtype=torch.bool, device=points.device)
    start, end = bone_segments(joints.to(points), parents.to(points.device).long())
    axis = end - start  # [S, 3]
    forward_share = axis[:, 2].abs() / axis.norm(dim=-1).clamp_min(1e-6)  # [S]
    mirrored = points.clone()
    mirrored[:, 2] = points[:, 2] - 2 * radial[:, 2]
    return mirrored, forward_share[segment] <= max_forward


def common_color_share(partner: Tensor, colors: Tensor, seen: Tensor, part_ids: Tensor, partner_parts: Tensor,
                       config, palette_size: int = 1024) -> Tensor:
    """``[Q]`` in [0, 1]: how common each mirrored colour ``partner [Q, 3]`` is on the seen side of its body part.

    The share of the part's seen colours (``colors [N, 3]`` where ``seen [N]``, at most ``palette_size`` of
    them, evenly picked) within ``mirror_share_delta`` (CIE76 dE) of the colour, ramped from 0 at
    ``mirror_min_share`` to 1 at twice that: a garment's main colours and stripes pass, the front's small
    features (a badge, a logo, a tie) do not reach the back. All ones when ``mirror_min_share <= 0``."""
    out = torch.ones(partner.shape[0], device=partner.device)
    if config.mirror_min_share <= 0:
        return out
    partner_lab = srgb_to_lab(partner).float()
    for part in torch.unique(partner_parts).tolist():
        rows = torch.nonzero(partner_parts == part)[:, 0]
        palette = torch.nonzero(seen & (part_ids == part))[:, 0]
        if palette.numel() == 0:  # nothing of this part is seen: no partner can be trusted
            out[rows] = 0.0
            continue
        share = palette_share(partner_lab[rows], srgb_to_lab(colors[palette]).float(), config.mirror_share_delta,
                              palette_size)
        low = config.mirror_min_share
        out[rows] = ((share - low) / low).clamp(0, 1)
    return out


@torch.no_grad()
def mirror_seen_colors(colors: Tensor, weight: Tensor, canonical_points: Tensor, rest_joints: Tensor,
                       parents: Tensor, parts: Optional[Tensor], config) -> tuple[Tensor, Tensor]:
    """The photo's colours mirrored onto the unseen side (see the module docstring).

    Args:
        colors: ``[N, 3]`` after projection (seen Gaussians hold the photo); weight: ``[N]`` photo weights;
        canonical_points: ``[N, 3]`` Gaussian centres at rest; rest_joints: ``[J, 3]``; parents: ``[J]``;
        parts: ``[N]`` body part ids (:func:`sigman.body.parts.point_parts`) or ``None`` (one part; the head
            is then not left out);
        config: a :class:`~sigman.photo_projection.PhotoProjectionConfig` (``mirror_*`` fields,
            ``seen_threshold``).
    Returns:
        ``(colors [N, 3], weight [N])``: an unseen Gaussian with a mirror partner gets
        ``c + (1 - w) q (partner - c)`` and weight ``w + (1 - w) q``, where ``q`` is the share of its
        ``mirror_neighbours`` seen neighbours within ``mirror_max_distance`` of the mirror point (depth scaled
        by ``mirror_depth_scale``) times their mean weight, times ``mirror_strength``; the others are returned
        unchanged.
    """
    device = colors.device
    seen = weight > config.seen_threshold
    if not bool(seen.any()) or bool(seen.all()) or config.mirror_strength <= 0:
        return colors, weight
    from scipy.spatial import cKDTree

    part_ids = torch.zeros(colors.shape[0], dtype=torch.long, device=device) if parts is None else parts.to(device).long()
    mirrored, valid = coronal_mirror(canonical_points.float(), rest_joints.float(), parents, config.mirror_max_forward)
    candidates = ~seen & valid
    if parts is not None:
        candidates &= part_ids != HEAD_PART
    if not bool(candidates.any()):
        return colors, weight
    offset = torch.zeros(colors.shape[0], 3, device=device)
    offset[:, 0] = part_ids.float() * _PART_SPACING
    seen_idx = torch.nonzero(seen)[:, 0]
    query_idx = torch.nonzero(candidates)[:, 0]
    # depth counts mirror_depth_scale as much as the other axes (see the module docstring)
    stretch = torch.tensor([1.0, 1.0, config.mirror_depth_scale], device=device)
    tree = cKDTree(((canonical_points.float() + offset) * stretch)[seen_idx].double().cpu().numpy())
    k = min(config.mirror_neighbours, seen_idx.numel())
    dist, idx = tree.query(((mirrored + offset) * stretch)[query_idx].double().cpu().numpy(), k=k,
                           distance_upper_bound=config.mirror_max_distance)
    dist = torch.from_numpy(dist).reshape(-1, k).to(device)
    idx = torch.from_numpy(idx).reshape(-1, k).to(device)
    found = torch.isfinite(dist)  # [Q, k]; a missing neighbour has index len(seen_idx)
    safe = torch.where(found, idx, torch.zeros_like(idx))
    neighbours = seen_idx[safe]  # [Q, k]
    share = found.float().mean(-1)
    n_found = found.float().sum(-1).clamp_min(1)
    partner = (colors[neighbours] * found[..., None]).sum(1) / n_found[:, None]  # [Q, 3]
    partner_weight = (weight[neighbours] * found).sum(-1) / n_found
    common = common_color_share(partner, colors, seen, part_ids, part_ids[query_idx], config)
    q = (share * partner_weight * common * config.mirror_strength).clamp(0, 1)
    w = weight[query_idx]
    out_colors, out_weight = colors.clone(), weight.clone()
    blend = ((1 - w) * q)[:, None]
    out_colors[query_idx] = colors[query_idx] + blend * (partner - colors[query_idx])
    out_weight[query_idx] = w + (1 - w) * q
    return out_colors.clamp(0, 1), out_weight


__all__ = ["coronal_mirror", "mirror_seen_colors"]
