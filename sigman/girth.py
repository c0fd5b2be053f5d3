"""An avatar's thickness around its skeleton, so that the photo refinement can make the body broader or
slimmer as a whole (the back too, which the photo does not show), not only move the seen Gaussians.

    field = radial_field(canonical.means, rest_joints, body.parents)   # RadialField
    means, scales = field.thicken(canonical.means, canonical.scales, canonical.skin_weights @ girth)  # girth [J]

Each Gaussian's *radial vector* runs from the nearest point of the skeleton's bones (segments from each
joint's parent to the joint, in the canonical pose) to the Gaussian. A girth ``g`` moves it by
``g`` times that vector: ``g = 0.1`` makes the body 10 % thicker there, in every direction across the
bone. Per joint, mixed by the skin weights, so that a torso, an arm and a leg each get their own.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class RadialField:
    """Attributes:
        vectors: ``[N, 3]`` from the nearest bone point to each Gaussian, metres (canonical pose).
    """

    vectors: Tensor

    def thicken(self, means: Tensor, scales: Tensor, girth: Tensor) -> tuple[Tensor, Tensor]:
        """Canonical ``means [N, 3]`` and ``scales [N, 3]`` of these Gaussians made ``girth [N]`` (relative)
        thicker: moved along their radial vectors, and scaled so that the surface stays covered."""
        return means + girth[:, None] * self.vectors, scales * (1 + girth).clamp_min(0.5)[:, None]

    def select(self, index: Tensor) -> "RadialField":
        return RadialField(self.vectors[index])


def bone_segments(joints: Tensor, parents: Tensor) -> tuple[Tensor, Tensor]:
    """Segments ``(start [S, 3], end [S, 3])`` from each joint's parent to the joint (the root, which has
    no parent, gives none)."""
    child = torch.nonzero(parents >= 0)[:, 0]
    return joints[parents[child]], joints[child]


def nearest_bones(means: Tensor, joints: Tensor, parents: Tensor, chunk: int = 8192) -> tuple[Tensor, Tensor]:
    """For points ``means [N, 3]`` and the skeleton ``joints [J, 3]`` with ``parents [J]`` (canonical pose):
    ``(radial [N, 3], segment [N])``, the vector from the nearest point of the nearest bone segment
    (:func:`bone_segments`) to each point, and that segment's index. A skeleton with no bone gives zero
    vectors and segment ``-1``."""
    start, end = bone_segments(joints.to(means), parents.to(means.device).long())
    if start.numel() == 0:
        return torch.zeros_like(means), torch.full((means.shape[0],), -1, dtype=torch.long, device=means.device)
    axis = end - start  # [S, 3]
    length2 = axis.square().sum(-1).clamp_min(1e-12)  # [S]
    vectors, segments = [], []
    for part in means.split(chunk):
        rel = part[:, None, :] - start[None]  # [n, S, 3]
        t = ((rel * axis[None]).sum(-1) / length2[None]).clamp(0.0, 1.0)  # [n, S]
        radial = rel - t[..., None] * axis[None]  # [n, S, 3]
        nearest = radial.square().sum(-1).argmin(dim=1)  # [n]
        vectors.append(radial[torch.arange(part.shape[0], device=means.device), nearest])
        segments.append(nearest)
    return torch.cat(vectors), torch.cat(segments)


def radial_field(means: Tensor, joints: Tensor, parents: Tensor, chunk: int = 8192) -> RadialField:
    """The :class:`RadialField` of Gaussians at ``means [N, 3]`` around the skeleton ``joints [J, 3]``
    with ``parents [J]`` (``-1`` for the root), all in the canonical pose."""
    return RadialField(nearest_bones(means, joints, parents, chunk)[0])


def thickness_change(girth: Tensor, skin_weights: Tensor) -> tuple[float, float, float]:
    """``(mean, low, high)`` of the per-Gaussian relative thickness change ``skin_weights [N, J] @ girth [J]``
    (``low`` / ``high``: the 5th / 95th percentiles): how much broader (> 0) or slimmer the body became."""
    per_gaussian = skin_weights.float() @ girth.float().to(skin_weights.device)
    low, high = torch.quantile(per_gaussian, torch.tensor([0.05, 0.95], device=per_gaussian.device)).tolist()
    return float(per_gaussian.mean()), low, high
