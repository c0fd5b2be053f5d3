"""The Gaussian container and its construction from UV attribute maps.

Conventions (shared by every module of sigman):

- ``means``      ``[..., N, 3]`` world positions (metres).
- ``quats``      ``[..., N, 4]`` unit quaternions ``(w, x, y, z)``, local-to-world rotation.
- ``scales``     ``[..., N, 3]`` standard deviations along the local axes (metres, > 0).
- ``opacities``  ``[..., N]``    in ``[0, 1]``.
- ``colors``     ``[..., N, 3]`` linear RGB in ``[0, 1]`` (degree-0 colour; ``.ply`` export stores
  it as the SH DC term).
- ``skin_weights`` ``[N, J]`` optional per-Gaussian linear-blend-skinning weights (rows sum to 1).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Optional

import torch
from torch import Tensor


@dataclass
class Gaussians:
    means: Tensor  # [..., N, 3]
    quats: Tensor  # [..., N, 4] (w, x, y, z)
    scales: Tensor  # [..., N, 3]
    opacities: Tensor  # [..., N]
    colors: Tensor  # [..., N, 3]
    skin_weights: Optional[Tensor] = None  # [N, J]

    def __post_init__(self) -> None:
        n = self.means.shape[-2]
        checks = {
            "means": (self.means, 3),
            "quats": (self.quats, 4),
            "scales": (self.scales, 3),
            "colors": (self.colors, 3),
        }
        for name, (tensor, width) in checks.items():
            if tensor.shape[-1] != width or tensor.shape[-2] != n:
                raise ValueError(f"Gaussians.{name} must be [..., {n}, {width}], got {tuple(tensor.shape)}")
        if self.opacities.shape[-1] != n:
            raise ValueError(f"Gaussians.opacities must be [..., {n}], got {tuple(self.opacities.shape)}")
        if self.skin_weights is not None and self.skin_weights.shape[0] != n:
            raise ValueError(f"Gaussians.skin_weights must be [{n}, J], got {tuple(self.skin_weights.shape)}")

    @property
    def num_gaussians(self) -> int:
        return self.means.shape[-2]

    @property
    def device(self) -> torch.device:
        return self.means.device

    def to(self, *args, **kwargs) -> "Gaussians":
        return Gaussians(**{f.name: (None if getattr(self, f.name) is None else getattr(self, f.name).to(*args, **kwargs)) for f in fields(self)})

    def detach(self) -> "Gaussians":
        return Gaussians(**{f.name: (None if getattr(self, f.name) is None else getattr(self, f.name).detach()) for f in fields(self)})

    def select(self, index: Tensor) -> "Gaussians":
        """Keep the Gaussians picked by ``index`` (bool mask or indices over N)."""
        return Gaussians(
            means=self.means[..., index, :],
            quats=self.quats[..., index, :],
            scales=self.scales[..., index, :],
            opacities=self.opacities[..., index],
            colors=self.colors[..., index, :],
            skin_weights=None if self.skin_weights is None else self.skin_weights[index],
        )

    def with_(self, **changes) -> "Gaussians":
        return replace(self, **changes)


# --- construction ---------------------------------------------------------------------------

def quat_from_normals(normals: Tensor) -> Tensor:
    """Quaternions ``(w, x, y, z)`` of the smallest rotations taking +Z onto ``normals [..., 3]``."""
    n = normals / normals.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    w = 1.0 + n[..., 2]
    q = torch.stack([w, -n[..., 1], n[..., 0], torch.zeros_like(w)], dim=-1)
    flipped = w < 1e-6  # normal = -Z: half-turn about X
    q = torch.where(flipped[..., None], torch.tensor([0.0, 1.0, 0.0, 0.0], dtype=q.dtype, device=q.device), q)
    return q / q.norm(dim=-1, keepdim=True)


def surface_gaussians(template, color=(0.8, 0.65, 0.55), opacity: float = 1.0,
                      thickness: float = 0.1, rest_vertices: Optional[Tensor] = None) -> Gaussians:
    """Flat Gaussians tiling the body surface of a :class:`~sigman.uv.UVTemplate` (no learned
    attributes): each texel's Gaussian lies in the tangent plane with a footprint that covers its
    texel. Useful to render the bare body and as the VAE's initialisation.

    ``rest_vertices [V, 3]`` (optional) places them on another body shape.
    """
    positions = template.positions if rest_vertices is None else template.positions_for(rest_vertices)
    n = template.num_points
    footprint = template.footprints * 0.6  # [N] std-dev so neighbouring texels overlap
    scales = torch.stack([footprint, footprint, footprint * thickness], dim=-1)
    return Gaussians(
        means=positions,
        quats=quat_from_normals(template.normals),
        scales=scales,
        opacities=torch.full((n,), float(opacity), device=positions.device),
        colors=torch.tensor(color, dtype=positions.dtype, device=positions.device).expand(n, 3).clone(),
        skin_weights=template.skin_weights,
    )


def gaussians_from_attributes(template_points: Tensor, offset: Tensor, scale: Tensor, quat: Tensor,
                              opacity: Tensor, rgb: Tensor, skin_weights: Optional[Tensor] = None) -> Gaussians:
    """Canonical Gaussians from decoded (already activated) per-point attributes.

    Args:
        template_points: ``[N, 3]`` or ``[B, N, 3]`` canonical template positions.
        offset: ``[B, N, 3]`` metres, added to the template points (SIGMAN's geometry offsets).
        scale: ``[B, N, 3]`` metres (> 0). quat: ``[B, N, 4]`` unit ``(w, x, y, z)``.
        opacity: ``[B, N]`` in ``[0, 1]``. rgb: ``[B, N, 3]`` in ``[0, 1]``.
    """
    return Gaussians(means=template_points + offset, quats=quat / quat.norm(dim=-1, keepdim=True).clamp_min(1e-12),
                     scales=scale, opacities=opacity, colors=rgb, skin_weights=skin_weights)


# --- reposing -------------------------------------------------------------------------------

def repose(gaussians: Gaussians, transforms: Tensor) -> Gaussians:
    """Linear blend skinning of canonical Gaussians (means and rotations).

    Args:
        gaussians: canonical Gaussians ``[N, ...]`` (or ``[B, N, ...]``) with ``skin_weights [N, J]``.
        transforms: ``[B, J, 4, 4]`` skinning transforms from :class:`~sigman.body.BodyModel`.
    Returns:
        posed Gaussians ``[B, N, ...]`` (scales, opacities and colours unchanged).
    """
    from sigman.lbs import blend_rotations, lbs_points, quat_multiply

    if gaussians.skin_weights is None:
        raise ValueError("these Gaussians have no skin_weights: build them from a UV template to repose them")
    b = transforms.shape[0]
    means = lbs_points(gaussians.means, gaussians.skin_weights, transforms)
    rotations = blend_rotations(gaussians.skin_weights, transforms[..., :3, :3])
    quats = quat_multiply(rotations, gaussians.quats.to(rotations))
    batched = gaussians.means.dim() == 3

    def expand(t: Tensor) -> Tensor:
        return t if batched else t.expand(b, *t.shape)

    return Gaussians(
        means=means.to(gaussians.means.dtype), quats=quats.to(gaussians.quats.dtype),
        scales=expand(gaussians.scales), opacities=expand(gaussians.opacities),
        colors=expand(gaussians.colors), skin_weights=gaussians.skin_weights,
    )
