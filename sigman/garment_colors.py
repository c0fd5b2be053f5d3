"""Garment-level colour matching of an avatar's unseen side to one photo (step 5 of
:mod:`sigman.photo_projection`, after the kernel shift of :func:`~sigman.photo_projection.match_unseen_colors`).

The model paints a garment in one colour, front and back. A kernel that shifts unseen colours by the nearby
seen mismatch leaves them half way where the model was wrong (blue shorts under an orange suit turn purple;
orange legs far below a seen waist full of white straps turn pink). Here the model's colours are cut into
connected pieces of one colour (:func:`garment_pieces`), and each piece is decided as a whole:

- a piece whose seen part the photo shows in other colours, and hardly in the model's own, is **filled**:
  its unseen part takes the colours around it (:func:`fill_from_surroundings`, a harmonic fill on the
  canonical body) plus some of the model's lightness variation;
- a piece the photo confirms (its dominant photo colour within ``garment_min_delta`` of the model's) is
  **kept** under the kernel shift, and an unseen piece of a like colour next to it (within
  ``garment_inherit_distance``) takes its photo colour (``garment_follow_photo``; else it keeps the model's);
  the head's pieces (face, hair) lead no piece of another part (``garment_inherit_from_head``): the model's
  ponytail down a short-haired person's back does not stay because the hair above it was confirmed;
- optionally (``garment_move``) a piece the photo shows in one other colour **moves** to it, unseen part
  included (off by default: on the held-out subjects a front print then paints the back);
- optionally (``garment_palette_distance > 0``, off by default: fragile on the held-out subjects) an unseen
  colour the photo shows nowhere on the person (:func:`implausible_colors`) is filled too.

Tensor code on the inputs' device, except two host steps: the connected pieces (``scipy.ndimage.label`` on
a voxel grid) and the nearest neighbours of the fill (``scipy.spatial.cKDTree``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import torch
from torch import Tensor

from sigman.body.parts import PART_NAMES
from sigman.color import lab_to_srgb, srgb_to_lab

if TYPE_CHECKING:  # the config lives with the projection, which imports this module
    from sigman.photo_projection import PhotoProjectionConfig


def _kmeans_lab(lab: Tensor, k: int, seed: int, iters: int = 12, sample: int = 20000) -> Tensor:
    """``[k', 3]`` k-means centres (k' <= k: empty clusters dropped) of CIELAB colours ``[N, 3]``, from a
    seeded farthest-point start on a subsample: deterministic for a given ``seed``."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    pts = lab[torch.randperm(lab.shape[0], generator=g)[:sample].to(lab.device)] if lab.shape[0] > sample else lab
    centres = [pts[int(torch.randint(pts.shape[0], (1,), generator=g))]]
    dist = (pts - centres[0]).square().sum(-1)
    for _ in range(1, min(k, pts.shape[0])):
        centres.append(pts[int(dist.argmax())])
        dist = torch.minimum(dist, (pts - centres[-1]).square().sum(-1))
    c = torch.stack(centres)
    for _ in range(iters):
        label = torch.cdist(pts, c).argmin(-1)
        count = torch.bincount(label, minlength=c.shape[0])
        sums = torch.zeros_like(c).index_add_(0, label, pts)
        keep = count > 0
        c = sums[keep] / count[keep, None]
    return c


def _colour_mode(lab: Tensor, radius: float, sample: int = 512) -> tuple[Tensor, float]:
    """The densest colour of CIELAB colours ``[n, 3]``: the median of those within ``radius`` (dE) of the
    sample with the most such neighbours, and the fraction of all colours within that radius of it."""
    pts = lab if lab.shape[0] <= sample else lab[torch.linspace(0, lab.shape[0] - 1, sample, device=lab.device).long()]
    near = torch.cdist(pts, pts) < radius
    centre = pts[int(near.sum(-1).argmax())]
    close = (lab - centre).norm(dim=-1) < radius
    return lab[close].median(dim=0).values, float(close.float().mean())


def _components(points: Tensor, voxel: float) -> Tensor:
    """``[n]`` connected-component ids of ``points [n, 3]`` (26-connected occupied voxels of size ``voxel``)."""
    import numpy as np
    from scipy import ndimage

    cells = torch.floor((points - points.min(0).values) / voxel).long().cpu().numpy() + 1
    grid = np.zeros(tuple(cells.max(0) + 2), dtype=bool)
    grid[cells[:, 0], cells[:, 1], cells[:, 2]] = True
    labels, _ = ndimage.label(grid, structure=np.ones((3, 3, 3), dtype=bool))
    return torch.from_numpy(labels[cells[:, 0], cells[:, 1], cells[:, 2]].astype(np.int64)).to(points.device)


@dataclass
class GarmentPieces:
    """:func:`garment_pieces`' decision for each Gaussian.

    Attributes:
        piece: ``[N]`` piece id (a colour cluster's connected part on the canonical body).
        move: ``[N, 3]`` CIELAB shift of moved pieces (0 elsewhere); moved: ``[N]`` bool.
        fill: ``[N]`` bool, Gaussians of pieces the photo contradicts without one clear colour.
    """

    piece: Tensor
    move: Tensor
    moved: Tensor
    fill: Tensor


def _inherit(decided: list, undecided: list, points: Tensor, distance: float, max_delta: float,
             follow_photo: bool = False) -> list:
    """The undecided pieces (``(members, cluster, model colour)``) within ``distance`` of a decided one of a like
    colour (``(members, decision, delta, cluster, model colour)``: the same k-means cluster, or model colours
    within ``max_delta`` dE), each with the decision of the nearest such piece: a kept piece's follower moves
    to that piece's photo colour (``follow_photo``) or keeps its own model colour (a zero move). One k-d tree
    per set of like pieces, shared by the pieces that have it."""
    import numpy as np
    from scipy.spatial import cKDTree

    pts = points.double().cpu().numpy()
    d_cluster = np.array([d[3] for d in decided])
    d_colour = torch.stack([d[4] for d in decided]).cpu()
    trees: dict[bytes, tuple] = {}
    out = []
    for members, cluster, colour in undecided:
        like = (d_cluster == cluster) | ((d_colour - colour.cpu()).norm(dim=-1) <= max_delta).numpy()
        if not like.any():
            continue
        key = like.tobytes()
        if key not in trees:
            chosen = np.nonzero(like)[0]
            owner = np.concatenate([np.full(decided[i][0].numel(), i) for i in chosen])
            trees[key] = (cKDTree(pts[torch.cat([decided[i][0] for i in chosen]).cpu().numpy()]), owner)
        tree, owner = trees[key]
        gap, hit = tree.query(pts[members.cpu().numpy()], k=1)
        nearest = int(gap.argmin())
        if float(gap[nearest]) <= distance:
            _, decision, delta, _, leader_colour = decided[int(owner[hit[nearest]])]
            if decision == "keep":  # following a kept piece: the model's colour, which the photo confirmed there,
                # or (follow_photo) the photo's colour of that piece
                delta = (leader_colour + delta - colour).to(delta) if follow_photo else delta * 0
                decision = "move"
            out.append((members, decision, delta))
    return out


@torch.no_grad()
def garment_pieces(colors: Tensor, model_colors: Tensor, weight: Tensor, canonical_points: Tensor,
                   config: "PhotoProjectionConfig", seed: int = 0, parts: Optional[Tensor] = None) -> GarmentPieces:
    """Cut the model's Gaussians into garment pieces and decide, for each, what its unseen part becomes.

    The model paints a garment in one colour, front and back; when the photo shows the front in another,
    the back should follow entirely, not half way (a kernel's fading shift turns blue trousers under an
    orange suit purple). A piece is a connected part of one colour: the model's colours are clustered
    (k-means in CIELAB, ``garment_clusters``) and each cluster split into parts connected on the canonical
    body (voxels of ``garment_voxel``: dark gloves and dark shoes are two pieces). With enough of it seen
    (``garment_min_seen``) and its mismatch large (``garment_min_delta``), a piece

    - **moves** by (its seen Gaussians' dominant photo colour, :func:`_colour_mode`) - (their model colours'
      median) when that colour holds ``garment_move_share`` of the seen part: the model's variation inside
      the piece (shading, prints) is kept;
    - is **filled** from the pieces around it when the photo shows it in no one colour and hardly in the
      model's own (at most ``garment_contradicted_share``): the model's colour is wrong and nothing says
      which is right (a suit's straps and badges where the model painted a stripe).

    A yes-or-no choice per piece, so that no piece ends half way; the rest is left to the kernel shift.

    Args:
        colors: ``[N, 3]`` after projection; model_colors: ``[N, 3]`` the model's; weight: ``[N]`` photo weights;
        canonical_points: ``[N, 3]`` Gaussian centres at rest; parts: ``[N]`` body part ids
        (:func:`sigman.body.parts.point_parts`) or ``None``: a piece then stays inside one part, so the model's
        skin colour on a jacketed torso is judged by the torso's pixels, not by the face's.
    """
    model_lab = srgb_to_lab(model_colors).float()
    photo_lab = srgb_to_lab(colors).float()
    colour_label = torch.cdist(model_lab, _kmeans_lab(model_lab, config.garment_clusters, seed)).argmin(-1)
    label = colour_label  # the pieces' split: colour cluster, or (colour cluster, body part)
    if parts is not None:
        label = colour_label * (int(parts.max()) + 1) + parts.to(colour_label.device).long()
    seen = weight > config.seen_threshold
    n = model_lab.shape[0]
    piece = torch.zeros(n, dtype=torch.long, device=model_lab.device)
    move = torch.zeros_like(model_lab)
    moved = torch.zeros(n, dtype=torch.bool, device=model_lab.device)
    fill = torch.zeros_like(moved)
    next_id = 0
    # (members, "keep" | "move" | "fill", delta, colour cluster, model colour), (members, colour cluster, model colour)
    decided, undecided = [], []
    for value in torch.unique(label).tolist():
        index = torch.nonzero(label == value)[:, 0]
        c = int(colour_label[index[0]])
        components = _components(canonical_points[index].float(), config.garment_voxel)
        piece[index] = components + next_id
        next_id += int(components.max()) + 1
        order = torch.argsort(components)
        counts = torch.bincount(components).tolist()
        for members in torch.split(index[order], [k for k in counts if k > 0]):
            looked = members[seen[members]]
            if looked.numel() < config.garment_min_seen:
                undecided.append((members, c, model_lab[members].median(dim=0).values))
                continue
            model_median = model_lab[looked].median(dim=0).values
            mode, share = _colour_mode(photo_lab[looked], config.garment_mode_radius)
            delta = mode - model_median
            own = float(((photo_lab[looked] - model_median).norm(dim=-1) < config.garment_mode_radius).float().mean())
            large = float(delta.norm()) >= config.garment_min_delta
            if share >= config.garment_move_share and not large:
                decided.append((members, "keep", delta, c, model_median))
            elif share >= config.garment_move_share and config.garment_move:
                decided.append((members, "move", delta, c, model_median))
            elif large and own <= config.garment_contradicted_share:
                decided.append((members, "fill", delta, c, model_median))
    # an unseen piece near a decided piece of a like colour (the legs below a suit's seen waist, cut off from it
    # by the model's shorts; a skin-coloured back beside a contradicted skin-coloured front) is the same garment:
    # it follows that piece
    if decided and undecided and config.garment_inherit_distance > 0:
        groups = [(decided, undecided)]
        if parts is not None and not config.garment_inherit_from_head:
            # the head's pieces (face, hair) lead no other part's: a ponytail or a bare back is not the face's
            head = PART_NAMES.index("head")
            in_head = lambda piece: int(parts[piece[0][0]]) == head
            groups = [([d for d in decided if in_head(d) == h], [u for u in undecided if in_head(u) == h])
                      for h in (True, False)]
        followers = [f for leaders, group in groups if leaders and group
                     for f in _inherit(leaders, group, canonical_points, config.garment_inherit_distance,
                                       config.garment_inherit_delta, config.garment_follow_photo)]
        decided = [d[:3] for d in decided] + followers
    for members, decision, delta, *_ in decided:
        if decision == "move":
            move[members], moved[members] = delta, True
        elif decision == "fill":
            fill[members] = True
    return GarmentPieces(piece=piece, move=move, moved=moved, fill=fill)


def implausible_colors(lab: Tensor, palette: Tensor, config: "PhotoProjectionConfig") -> Tensor:
    """``[N]`` bool: the CIELAB colours ``lab [N, 3]`` that fewer than ``garment_palette_share`` of the colours of
    ``palette [M, 3]`` (the person's seen photo colours; at most ``garment_palette_size`` of them, evenly picked)
    come within ``garment_palette_distance`` (dE) of: a colour the photo shows nowhere on the person, or only in
    a few edge pixels (the model's green shoulders under an orange suit).
    All False when the palette is empty or the check is off (distance <= 0)."""
    if palette.shape[0] == 0 or config.garment_palette_distance <= 0:
        return torch.zeros(lab.shape[0], dtype=torch.bool, device=lab.device)
    share = palette_share(lab, palette, config.garment_palette_distance, config.garment_palette_size)
    return share < config.garment_palette_share


def palette_share(lab: Tensor, palette: Tensor, distance: float, size: int) -> Tensor:
    """``[N]`` the share of the colours of ``palette [M, 3]`` (CIELAB, at most ``size`` of them, evenly picked)
    within ``distance`` (CIE76 dE) of each colour of ``lab [N, 3]``. ``palette`` must not be empty."""
    if palette.shape[0] > size:
        palette = palette[torch.linspace(0, palette.shape[0] - 1, size, device=palette.device).long()]
    return torch.cat([(torch.cdist(lab[i:i + 8192], palette) < distance).float().mean(-1)
                      for i in range(0, lab.shape[0], 8192)])


def fill_from_surroundings(lab: Tensor, unknown: Tensor, points: Tensor, neighbours: int, iterations: int) -> Tensor:
    """``[N, 3]`` colours with the ``unknown [N]`` ones replaced by a diffusion of the known ones around them
    (starting from the nearest known colour, each step an unknown colour becomes the mean of its ``neighbours``
    nearest on the body in ``points``; the known colours are held): a harmonic fill of holes in a colour field.
    The nearest neighbours come from k-d trees on the host; the steps run on ``lab``'s device."""
    if not bool(unknown.any()) or bool(unknown.all()):
        return lab
    from scipy.spatial import cKDTree

    pts = points.detach().double().cpu().numpy()
    hole_mask = unknown.cpu().numpy()
    _, idx = cKDTree(pts).query(pts[hole_mask], k=min(neighbours + 1, pts.shape[0]))  # the first is the hole itself
    known = torch.nonzero(~unknown)[:, 0]
    _, nearest = cKDTree(pts[~hole_mask]).query(pts[hole_mask], k=1)
    holes = torch.nonzero(unknown)[:, 0]
    hole_idx = torch.from_numpy(idx[:, 1:].astype("int64")).to(lab.device)
    out = lab.clone()
    out[holes] = lab[known[torch.from_numpy(nearest).long().to(known.device)]]  # start from the nearest known colour
    for _ in range(iterations):
        out[holes] = out[hole_idx].mean(1)
    return out


@torch.no_grad()
def match_garments(out: Tensor, colors: Tensor, model_colors: Tensor, weight: Tensor, canonical_points: Tensor,
                   config: "PhotoProjectionConfig", seed: int = 0, parts: Optional[Tensor] = None) -> Tensor:
    """The kernel-shifted colours ``out [N, 3]`` with the unseen parts of moved and filled garment pieces
    (:func:`garment_pieces`) replaced: moved ones by the model's colour plus the piece's shift, filled
    ones by :func:`fill_from_surroundings` of everything else (plus ``garment_fill_shading`` of the model's
    lightness variation inside the piece). Seen Gaussians keep the photo (blend by ``1 - weight``).
    ``parts [N]``: body part ids that cut the pieces (see :func:`garment_pieces`), or ``None``."""
    device = colors.device
    pieces = garment_pieces(colors.cpu(), model_colors.cpu(), weight.cpu(), canonical_points.cpu(), config, seed,
                            None if parts is None else parts.cpu())
    pieces = GarmentPieces(*(t.to(device) for t in (pieces.piece, pieces.move, pieces.moved, pieces.fill)))
    model_lab = srgb_to_lab(model_colors).float()
    target = srgb_to_lab(out).float()
    target[pieces.moved] = model_lab[pieces.moved] + pieces.move[pieces.moved]
    unseen = weight <= config.seen_threshold
    unknown = pieces.fill & unseen
    if config.garment_palette_distance > 0:
        odd = torch.zeros_like(unseen)
        odd[unseen] = implausible_colors(target[unseen], srgb_to_lab(colors[~unseen]).float(), config)
        unknown |= odd & unseen
    target = fill_from_surroundings(target, unknown, canonical_points.float(), config.garment_fill_neighbours,
                                    config.garment_fill_iterations)
    holes = torch.nonzero(unknown)[:, 0]
    hole_piece = pieces.piece[holes]
    for k in torch.unique(hole_piece).tolist():
        members = holes[hole_piece == k]
        lightness = model_lab[members, 0]
        target[members, 0] += config.garment_fill_shading * (lightness - lightness.median())
    changed = (pieces.moved | unknown)[:, None]
    blended = colors + (1 - weight[:, None]) * (lab_to_srgb(target).to(colors) - colors)
    return torch.where(changed, blended.clamp(0, 1), out)
