"""A motion as keyframes on the skeleton, the way glTF animates a skin.

glTF moves a skinned mesh by animating its joint nodes: each node has a local rotation (relative
to its parent) and a translation, the joint's world matrix is the product down its chain, and a
vertex moves by ``world_j @ inverse_bind_j``. sigman's joint frames are world-aligned at rest
(the inverse bind matrix is a translation by ``-rest_joint``), so a pose with world rotations
``R_j`` becomes the local rotations ``R_parent^T R_j``, and the root's translation is the posed
root position. That is exactly what :func:`sigman.lbs.skinning_transforms` computes, so a glTF
viewer plays the same motion as sigman's own reposing (up to the skin weights it keeps).
"""

from __future__ import annotations

from dataclasses import dataclass

import roma
import torch
from torch import Tensor


@dataclass
class SkeletonAnimation:
    """Keyframes of one motion.

    Args:
        name: the clip name (e.g. the motion preset).
        times: ``[T]`` seconds, increasing.
        rotations: ``[T, J, 4]`` unit ``(w, x, y, z)`` local rotation of each joint (relative to its
            parent; for a root, relative to the world), signs continuous over time.
        translations: ``[T, J, 3]`` node translations; only roots change (the others keep their
            rest offset from the parent), so the writer animates the roots' only.
    """

    name: str
    times: Tensor  # [T]
    rotations: Tensor  # [T, J, 4] (w, x, y, z)
    translations: Tensor  # [T, J, 3]

    def __post_init__(self) -> None:
        t = self.times.shape[0]
        if t == 0 or self.rotations.shape[0] != t or self.translations.shape[0] != t:
            raise ValueError(f"an animation needs T >= 1 frames for times, rotations and translations, got "
                             f"{tuple(self.times.shape)}, {tuple(self.rotations.shape)}, {tuple(self.translations.shape)}")
        if t > 1 and not bool((self.times[1:] > self.times[:-1]).all()):
            raise ValueError("animation times must increase")

    @property
    def num_frames(self) -> int:
        return self.times.shape[0]


def continuous_signs(quats: Tensor) -> Tensor:
    """``[T, J, 4]`` quaternions with each frame's sign chosen nearest the previous frame's, so
    that interpolating between keyframes takes the short way."""
    out = quats.clone()
    for t in range(1, out.shape[0]):
        flip = (out[t] * out[t - 1]).sum(-1) < 0
        out[t][flip] = -out[t][flip]
    return out


def skeleton_animation(body, pose, rest_joints: Tensor, name: str = "motion") -> SkeletonAnimation:
    """Keyframes of ``pose`` (an :class:`~sigman.pose.SMPLXPose`, ``T`` frames at ``pose.fps``)
    on the skeleton of ``body`` with the subject's ``rest_joints [J, 3]``."""
    rest_joints = rest_joints.detach().to(body.rest_vertices)
    with torch.no_grad():
        pose = pose.to(body.rest_vertices.device)
        world = body.global_rotations(pose).to(torch.float64)  # [T, J, 3, 3]
        _, posed = body.pose_transforms(pose, rest_joints)  # [T, J, 3]
    parents = body.parents.cpu()
    is_root = parents < 0
    parent_world = world[:, parents.clamp_min(0)]
    local = torch.where(is_root[None, :, None, None].to(world.device), world, parent_world.transpose(-1, -2) @ world)
    quats = roma.rotmat_to_unitquat(local.cpu())[..., [3, 0, 1, 2]]  # xyzw -> wxyz
    rest = rest_joints.cpu().double()
    offsets = rest - torch.where(is_root[:, None], torch.zeros_like(rest), rest[parents.clamp_min(0)])
    translations = offsets.expand(pose.num_frames, -1, -1).clone()
    translations[:, is_root] = posed.cpu().double()[:, is_root]
    times = torch.arange(pose.num_frames, dtype=torch.float64) / float(pose.fps)
    return SkeletonAnimation(name=name, times=times.float(), rotations=continuous_signs(quats.float()),
                             translations=translations.float())
