"""The one interface every skinned parametric body in sigman implements.

A body model holds a canonical (rest) mesh with UVs, a joint tree and skinning weights. Its
``forward`` maps an :class:`~sigman.pose.SMPLXPose` (and a model-specific shape vector) to posed
vertices and per-joint skinning transforms. Joint frames are world-aligned at rest, so the
transforms apply to any point with skinning weights: the Gaussians use the same ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn

from sigman.lbs import ancestor_matrix, lbs_points, skinning_transforms
from sigman.pose import SMPLXPose


@dataclass
class BodyOutput:
    vertices: Tensor  # [B, V, 3] posed
    joints: Tensor  # [B, J, 3] posed joint positions
    transforms: Tensor  # [B, J, 4, 4] canonical -> posed
    rest_vertices: Tensor  # [B, V, 3] canonical, this shape
    rest_joints: Tensor  # [B, J, 3] canonical, this shape


class BodyModel(nn.Module):
    """Base class. Subclasses fill the buffers in ``__init__`` through :meth:`_set_assets` and
    implement :meth:`global_rotations`, :meth:`root_position` and (for shape) :meth:`rest`."""

    name: str = "body"
    joint_names: list[str]
    shape_dim: int = 0

    def _set_assets(self, *, rest_vertices: Tensor, faces: Tensor, uvs: Tensor, face_uvs: Tensor,
                    rest_joints: Tensor, parents: Tensor, skin_weights: Tensor,
                    joint_names: list[str]) -> None:
        """Register the canonical assets (float32 / int64)."""
        v, j = rest_vertices.shape[0], rest_joints.shape[0]
        if skin_weights.shape != (v, j):
            raise ValueError(f"skin_weights must be [{v}, {j}], got {tuple(skin_weights.shape)}")
        if faces.shape != face_uvs.shape:
            raise ValueError("faces and face_uvs must both be [F, 3]")
        self.joint_names = list(joint_names)
        self.register_buffer("rest_vertices", rest_vertices.float(), persistent=False)  # [V, 3]
        self.register_buffer("faces", faces.long(), persistent=False)  # [F, 3]
        self.register_buffer("uvs", uvs.float(), persistent=False)  # [T, 2] in [0, 1], v up
        self.register_buffer("face_uvs", face_uvs.long(), persistent=False)  # [F, 3] into uvs
        self.register_buffer("rest_joints", rest_joints.float(), persistent=False)  # [J, 3]
        self.register_buffer("parents", parents.long(), persistent=False)  # [J]
        self.register_buffer("ancestors", ancestor_matrix(parents.long()), persistent=False)  # [J, J]
        self.register_buffer("skin_weights", skin_weights.float(), persistent=False)  # [V, J]

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    @property
    def num_vertices(self) -> int:
        return self.rest_vertices.shape[0]

    def default_shape(self, batch: int = 1) -> Tensor:
        """The shape vector of the canonical assets: ``[B, shape_dim]``."""
        return torch.zeros(batch, self.shape_dim, device=self.rest_vertices.device)

    def rest(self, shape: Optional[Tensor]) -> tuple[Tensor, Tensor]:
        """Canonical vertices ``[B, V, 3]`` and joints ``[B, J, 3]`` for ``shape [B, S]``
        (``None``: the default shape)."""
        b = 1 if shape is None else shape.shape[0]
        return (self.rest_vertices.expand(b, -1, -1), self.rest_joints.expand(b, -1, -1))

    def canonical_pose(self) -> SMPLXPose:
        """The SMPL-X pose that leaves the canonical body where it is (identity transforms)."""
        pose = SMPLXPose.zeros(1)
        pose.transl[0] = self.rest_joints[0].cpu() - self.root_position(SMPLXPose.zeros(1).to(self.rest_joints.device), self.rest_joints[None])[0].cpu()
        return pose

    def global_rotations(self, pose: SMPLXPose) -> Tensor:
        """World rotation of each of this model's joints, ``[T, J, 3, 3]``."""
        raise NotImplementedError

    def root_position(self, pose: SMPLXPose, rest_joints: Tensor) -> Tensor:
        """Posed position of the root joint, ``[T, 3]``."""
        return rest_joints[:, 0] + pose.transl.to(rest_joints)

    def pose_correctives(self, pose: SMPLXPose, shape: Optional[Tensor]) -> Optional[Tensor]:
        """Optional pose-dependent vertex offsets in the canonical frame, ``[T, V, 3]``."""
        return None

    def pose_transforms(self, pose: SMPLXPose, rest_joints: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        """Skinning transforms ``[T, J, 4, 4]`` and posed joints ``[T, J, 3]`` for a pose, given the
        canonical joints of the subject (``rest_joints [J, 3]`` or ``[T, J, 3]``; default: the
        canonical body). This is all that reposing Gaussians needs."""
        pose = pose.to(self.rest_vertices.device)
        t = pose.num_frames
        rest_joints = self.rest_joints if rest_joints is None else rest_joints.to(self.rest_vertices)
        rest_joints = rest_joints.expand(t, -1, -1) if rest_joints.dim() == 2 else rest_joints.expand(t, -1, -1)
        rotations = self.global_rotations(pose).to(rest_joints.dtype)
        return skinning_transforms(rotations, rest_joints, self.parents, self.root_position(pose, rest_joints),
                                   ancestors=self.ancestors)

    def forward(self, pose: SMPLXPose, shape: Optional[Tensor] = None) -> BodyOutput:
        pose = pose.to(self.rest_vertices.device)
        t = pose.num_frames
        rest_vertices, rest_joints = self.rest(shape)
        if rest_vertices.shape[0] == 1 and t > 1:
            rest_vertices, rest_joints = rest_vertices.expand(t, -1, -1), rest_joints.expand(t, -1, -1)
        transforms, joints = self.pose_transforms(pose, rest_joints)
        canonical = rest_vertices
        correctives = self.pose_correctives(pose, shape)
        if correctives is not None:
            canonical = canonical + correctives
        vertices = lbs_points(canonical, self.skin_weights, transforms)
        return BodyOutput(vertices, joints, transforms, rest_vertices, rest_joints)
