"""The skeleton a rigged avatar carries (what :mod:`sigman.io.gltf` writes beside the Gaussians)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor


@dataclass
class Rig:
    """Joint tree of a rigged avatar in its canonical (rest) pose.

    Joint frames are world-aligned at rest, so the inverse bind matrix of joint ``j`` is a pure
    translation by ``-rest_joints[j]`` and the skinning transforms of
    :meth:`sigman.body.BodyModel.pose_transforms` apply unchanged.

    Args:
        joint_names: ``J`` names, in the body model's joint order (the skin-weight columns).
        parents: ``[J]`` long, index of each joint's parent, ``-1`` for a root.
        rest_joints: ``[J, 3]`` world positions of the joints in the canonical pose (metres).
        body_model: name of the body model whose poses drive it (``"anny"``, ``"smplx"``).
        vertices: optional ``[V, 3]`` canonical body-mesh vertices (the subject's shape).
        faces: optional ``[F, 3]`` long triangle indices into ``vertices``.
    """

    joint_names: list[str]
    parents: Tensor  # [J] long, -1 for a root
    rest_joints: Tensor  # [J, 3] float32
    body_model: str
    vertices: Optional[Tensor] = None  # [V, 3] float32
    faces: Optional[Tensor] = None  # [F, 3] long

    def __post_init__(self) -> None:
        self.joint_names = [str(name) for name in self.joint_names]
        j = len(self.joint_names)
        self.parents = torch.as_tensor(self.parents, dtype=torch.long).detach().cpu()
        self.rest_joints = torch.as_tensor(self.rest_joints).detach().cpu().float()
        if j == 0:
            raise ValueError("a rig needs at least one joint")
        if self.parents.shape != (j,) or self.rest_joints.shape != (j, 3):
            raise ValueError(f"rig with {j} joints needs parents [{j}] and rest_joints [{j}, 3], got "
                             f"{tuple(self.parents.shape)} and {tuple(self.rest_joints.shape)}")
        if not torch.isfinite(self.rest_joints).all():
            raise ValueError("rig rest_joints contain NaN or Inf")
        _check_tree(self.parents.tolist())
        if (self.vertices is None) != (self.faces is None):
            raise ValueError("a rig's body mesh needs both vertices and faces (or neither)")
        if self.vertices is not None:
            self.vertices = torch.as_tensor(self.vertices).detach().cpu().float()
            self.faces = torch.as_tensor(self.faces).detach().cpu().long()
            if self.vertices.dim() != 2 or self.vertices.shape[1] != 3:
                raise ValueError(f"rig vertices must be [V, 3], got {tuple(self.vertices.shape)}")
            if self.faces.dim() != 2 or self.faces.shape[1] != 3:
                raise ValueError(f"rig faces must be [F, 3], got {tuple(self.faces.shape)}")
            if self.faces.numel() and (int(self.faces.min()) < 0 or int(self.faces.max()) >= len(self.vertices)):
                raise ValueError(f"rig faces index outside the {len(self.vertices)} vertices")

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)


def _check_tree(parents: list[int]) -> None:
    """Raise unless ``parents`` describes a forest (every chain reaches a root, no cycles)."""
    j = len(parents)
    bad = [i for i, p in enumerate(parents) if not -1 <= p < j or p == i]
    if bad:
        raise ValueError(f"rig joint {bad[0]} has an invalid parent {parents[bad[0]]} (joints are 0..{j - 1}, -1 = root)")
    depth = [-1] * j
    for start in range(j):
        chain, i = [], start
        while i >= 0 and depth[i] < 0:
            if i in chain:
                raise ValueError(f"rig parents form a cycle through joint {i}")
            chain.append(i)
            i = parents[i]
        base = depth[i] if i >= 0 else -1
        for k, joint in enumerate(reversed(chain)):
            depth[joint] = base + 1 + k
