"""The release's template for the photo refinement (:mod:`sigman.refine`): its surface (normals, site
sizes, neighbours on the body mesh) and a differentiable one-frame posing.

The release scales each posed Gaussian by the spacing of the *posed* centres (a k-nearest-neighbour
search, :mod:`sigman.official.knn_scale`), which has no gradient and is slow to redo at every step. The
refinement changes the pose only slightly, so :func:`release_poser` measures the posed / canonical
spacing ratio once, at the fitted pose, and keeps it: at that pose it poses exactly as
:meth:`~sigman.official.gaussians.ReleaseGaussianHead.pose`.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import Tensor

from sigman.gaussians import Gaussians
from sigman.official.gaussians import ReleaseGaussianHead
from sigman.official.knn_scale import release_spacing
from sigman.photo_projection import AvatarSurface, mesh_point_normals
from sigman.pose import SMPLXPose

NEIGHBOURS = 4  # neighbour pairs per point for the colour smoothness


def neighbour_pairs(points: Tensor, k: int = NEIGHBOURS) -> Tensor:
    """``[P, 2]`` unique index pairs ``(i, j), i < j`` of each point of ``points [N, 3]`` and its ``k``
    nearest others."""
    from scipy.spatial import cKDTree

    pts = points.detach().double().cpu().numpy()
    _, idx = cKDTree(pts).query(pts, k=min(k + 1, len(pts)))
    i = np.repeat(np.arange(len(pts)), idx.shape[1] - 1)
    j = idx[:, 1:].reshape(-1)
    pairs = np.unique(np.sort(np.stack([i, j], axis=1), axis=1), axis=0)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    return torch.from_numpy(pairs).long().to(points.device)


def release_surface(head: ReleaseGaussianHead, canonical: Gaussians) -> AvatarSurface:
    """The :class:`~sigman.photo_projection.AvatarSurface` of the release's Gaussians ``canonical``
    (from :meth:`~sigman.official.gaussians.ReleaseGaussianHead.canonical`): the deforming body's mesh,
    normals mixed from its vertex normals as the template mixes vertices, sites as large as the
    Gaussians' spacing, neighbours by distance on the template."""
    template = head.template
    if canonical.num_gaussians != template.num_points:
        raise ValueError(f"{canonical.num_gaussians} Gaussians but the release's template has {template.num_points} points")
    faces = head.body.faces
    return AvatarSurface(faces=faces, footprints=release_spacing(canonical.means.detach()),
                         neighbour_pairs=neighbour_pairs(template.positions),
                         point_normals=mesh_point_normals(faces, template.mix))


def release_poser(head: ReleaseGaussianHead, canonical: Gaussians, rest_joints: Tensor, pose: SMPLXPose):
    """A :data:`sigman.refine.Poser` posing like the release (blend-shape offsets, skinning), with the
    scale ratio posed / canonical spacing of ``canonical`` at ``pose`` (frame 0) held fixed."""
    with torch.no_grad():
        posed = head.pose(canonical, pose.frame(0), rest_joints)
    ratio = (posed.scales[0] / canonical.scales.clamp_min(1e-12)).detach()  # [N, 3]

    def poser(g: Gaussians, p: SMPLXPose, index: Optional[Tensor] = None) -> Gaussians:
        means, quats = head.skin(g, p, rest_joints, index)
        r = ratio if index is None else ratio[index]
        return Gaussians(means=means[0], quats=quats[0], scales=g.scales * r, opacities=g.opacities,
                         colors=g.colors, skin_weights=g.skin_weights)

    return poser
