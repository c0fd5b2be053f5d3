"""Decoded UV maps -> the release's Gaussians, and posing them as the release does.

The release (``core/modules/autoencoder.py`` ``VAE.decode_uv``, its deformer
``core/modules/deformers/smplx_deformer.py`` and the fast-SNARF ``forward_skinning``):

1. samples the decoded maps at the template's UVs (``smplx_uvcoord``; bilinear, border,
   ``align_corners=False``),
2. puts each Gaussian at its template point plus the decoded offset, in the release's canonical
   pose (T-pose, PCA hands, lifted 0.35 m),
3. un-poses it with the neutral model's transforms of that canonical pose (blended with the
   point's weights) and removes the canonical pose's blend-shape offsets: the rest frame,
4. adds the shape (betas and expression) and pose blend-shape offsets of the target pose, mixed
   from the male model's vertices to the points as the template's corners say, and skins it with
   the neutral model's transforms of the target pose,
5. rotates each Gaussian by ``posed blend @ un-pose blend @ F @ exp(r)`` (``F`` the face's tangent
   frame, ``r = (sigmoid - 0.5) pi`` the decoded axis-angle),
6. and scales it by ``(scale + 1) * sqrt(distCUDA2(posed centres))`` (:mod:`knn_scale`).

Here the rotation is held as a unit quaternion: the reflection of ``F`` is folded into the frame
and the local rotation (:func:`~sigman.official.frames.fold_rotation`, same covariance), and the
blended skinning rotations are sigman's normalised quaternion blend (the release multiplies the
blended, not quite orthogonal, matrices; the two agree wherever one joint dominates).

Skinning weights: as the release, the points in the face, hands and "outside" regions take the
template's weights (the mean of the male model's weights over each face's corners) and all other
points the weights of fast-SNARF's voxel grid at their canonical position
(:mod:`sigman.official.skinning`), so they depend on the decoded offsets.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from sigman.gaussians import Gaussians
from sigman.lbs import blend_rotations, blend_transforms, quat_multiply
from sigman.official.frames import fold_rotation
from sigman.official.knn_scale import release_spacing
from sigman.official.skinning import VoxelSkinning, release_skin_weights
from sigman.official.template import CANONICAL_TRANSL, ReleaseTemplate, check_against_checkpoint
from sigman.pose import SMPLXPose


def release_root(pose: SMPLXPose) -> SMPLXPose:
    """The release's root for its pose files (``prepare_deformer``, 188-value branch): no global
    rotation, the body lifted 0.35 m (``transl = (0, 0.35, 0)``), whatever the file says. The
    release's calibrated cameras look at the body placed so."""
    t = pose.num_frames
    return dataclasses.replace(pose, global_orient=torch.zeros(t, 3),
                               transl=torch.tensor(CANONICAL_TRANSL).expand(t, 3).clone())


def _apply(blended: Tensor, points: Tensor) -> Tensor:
    """``blended [B, N, 3, 4]`` affine transforms applied to ``points [B, N, 3]``."""
    return (blended[..., :3] @ points[..., None].to(blended))[..., 0] + blended[..., 3]


@dataclass
class ReleaseDecoded:
    """The decoded Gaussians in the rest frame, before the shape, pose and spacing are applied."""

    rest_means: Tensor  # [B, N, 3] rest frame (zero pose, no translation, template shape)
    rest_quats: Tensor  # [B, N, 4] (w, x, y, z)
    scale_factor: Tensor  # [B, N, 3] (scale + 1) in (0, 2)
    opacity: Tensor  # [B, N]
    rgb: Tensor  # [B, N, 3]
    skin_weights: Tensor  # [B, N, J] the release's per-point weights (voxel grid / template)


class ReleaseGaussianHead:
    """The release's template, weights and deformer, for one pair of SMPL-X bodies.

    Args:
        template: :class:`~sigman.official.template.ReleaseTemplate`.
        template_body: the male SMPL-X body the template was built from (weights, blend shapes).
        deformer_body: the neutral SMPL-X body whose transforms pose the points.
        template_canonical: the release's canonical pose for the male model.
        deformer_canonical: the release's canonical pose for the neutral model.
    """

    def __init__(self, template: ReleaseTemplate, template_body, deformer_body,
                 deformer_canonical: SMPLXPose) -> None:
        self.template = template
        self.template_body = template_body
        self.body = deformer_body
        device = deformer_body.rest_vertices.device
        self.template_weights = template.mix(template_body.skin_weights.to(device))  # [N, J]
        with torch.no_grad():
            cano = deformer_body(deformer_canonical)
        self.voxels = VoxelSkinning(cano.vertices[0], deformer_body.skin_weights)
        self.inverse_canonical = torch.linalg.inv(cano.transforms[0])  # [J, 4, 4]
        self.canonical_offsets = self.blend_shape_offsets(deformer_canonical, None)  # [1, N, 3]

    def check(self, uvcoord: Tensor) -> float:
        """:func:`~sigman.official.template.check_against_checkpoint` against the VAE's buffer."""
        return check_against_checkpoint(self.template, uvcoord)

    @property
    def num_points(self) -> int:
        return self.template.num_points

    def blend_shape_offsets(self, pose: SMPLXPose, betas: Optional[Tensor]) -> Tensor:
        """Shape, expression and pose blend-shape offsets at the points ``[T, N, 3]`` (the male
        model's vertex offsets mixed to the points, as the release's ``init_spdir`` / ``init_podir``)."""
        body = self.template_body
        offsets = body.pose_correctives(pose, None)  # [T, V, 3] posedirs + expression
        if betas is not None:
            offsets = offsets + torch.einsum("bl,mkl->bmk", betas.to(offsets), body.shapedirs)
        return self.template.mix(offsets)

    def decode(self, vae, latents: Tensor) -> ReleaseDecoded:
        """``latents [B, C, h, w]`` (unscaled) -> the rest-frame Gaussians."""
        samples = vae.sample_points(vae.decode(latents.float()), self.template.uv.to(latents.device))  # [B, N, 13]
        attrs = vae.activate(samples, point_spacing=torch.ones(samples.shape[:-1], device=samples.device))
        b = samples.shape[0]
        cano = self.template.positions.to(samples) + attrs["offset"]  # release's canonical pose
        weights = release_skin_weights(self.voxels, cano, self.template_weights, self.template.deformer_mask)
        inverse = self.inverse_canonical.to(samples)
        unpose = torch.einsum("bnj,jxy->bnxy", weights, inverse[:, :3, :])  # [B, N, 3, 4]
        rest = _apply(unpose, cano) - self.canonical_offsets.to(samples)
        local = fold_rotation(self.template.frames.to(samples).expand(b, -1, -1, -1), attrs["rotvec"])
        unpose_quats = torch.cat([blend_rotations(weights[i], inverse[None, :, :3, :3]) for i in range(b)])
        quats = quat_multiply(unpose_quats.to(local), local)
        return ReleaseDecoded(rest, quats, attrs["scale"], attrs["opacity"], attrs["rgb"].clamp(0, 1), weights)

    def canonical(self, decoded: ReleaseDecoded, betas: Optional[Tensor] = None) -> tuple[Gaussians, Tensor]:
        """Canonical Gaussians (sigman's rest frame, the subject's shape; scales from the spacing of
        these points) with skinning weights, and the subject's rest joints ``[J, 3]``: what the
        app reposes and exports."""
        means = decoded.rest_means[0]
        if betas is not None:
            shape = torch.einsum("bl,mkl->bmk", betas.to(means), self.template_body.shapedirs)
            means = means + self.template.mix(shape)[0]
        scales = decoded.scale_factor[0] * release_spacing(means)[..., None].to(means)
        g = Gaussians(means=means, quats=decoded.rest_quats[0], scales=scales, opacities=decoded.opacity[0],
                      colors=decoded.rgb[0], skin_weights=decoded.skin_weights[0])
        _, rest_joints = self.body.rest(betas)
        return g, rest_joints[0]

    def pose(self, canonical: Gaussians, pose: SMPLXPose, rest_joints: Tensor) -> Gaussians:
        """Posed Gaussians ``[T, N, ...]`` as the release places them: the canonical Gaussians of
        :meth:`canonical` plus the pose's blend-shape offsets, skinned, and scaled by the spacing of
        the posed centres (per frame) instead of the canonical ones."""
        pose = pose.to(canonical.means.device)
        t = pose.num_frames
        means, quats = self.skin(canonical, pose, rest_joints)
        factor = canonical.scales / release_spacing(canonical.means)[..., None].to(canonical.scales)
        scales = factor * release_spacing(means)[..., None].to(means)
        return Gaussians(means=means, quats=quats, scales=scales, opacities=canonical.opacities.expand(t, -1),
                         colors=canonical.colors.expand(t, -1, -1), skin_weights=canonical.skin_weights)

    def skin(self, canonical: Gaussians, pose: SMPLXPose, rest_joints: Tensor,
             index: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        """Posed centres and rotations ``[T, M, 3]``, ``[T, M, 4]`` of :meth:`pose` (no scales), differentiable;
        ``canonical`` may hold only the points ``index [M]`` of the template's ``N`` (``None``: all)."""
        transforms, _ = self.body.pose_transforms(pose, rest_joints)  # [T, J, 4, 4]
        weights = canonical.skin_weights
        blended = blend_transforms(weights, transforms)  # [T, M, 3, 4]
        offsets = self.blend_shape_offsets(pose, None)  # [T, N, 3]
        points = canonical.means + (offsets if index is None else offsets[:, index])
        quats = quat_multiply(blend_rotations(weights, transforms[..., :3, :3]), canonical.quats)
        return _apply(blended, points), quats
