"""Linear blend skinning shared by every body model and by the Gaussians.

The canonical (rest) frames of all joints are world-aligned, so a joint's skinning transform is
``x -> R_j x + t_j`` with ``R_j`` its accumulated world rotation and ``t_j`` chosen so the joint's
own rest position lands on its posed position (SMPL's ``A`` matrices).
"""

from __future__ import annotations

import roma
import torch
from torch import Tensor


def joint_depths(parents: Tensor) -> list[Tensor]:
    """Group joints by tree depth: ``levels[d]`` holds the indices of joints at depth ``d``.
    ``parents [J]`` with -1 for the root and every parent listed before its children."""
    depth = [0] * len(parents)
    for j, p in enumerate(parents.tolist()):
        if p >= j:
            raise ValueError(f"joint {j} lists parent {p}: parents must come before children")
        depth[j] = 0 if p < 0 else depth[p] + 1
    levels = [[] for _ in range(max(depth) + 1)]
    for j, d in enumerate(depth):
        levels[d].append(j)
    return [torch.tensor(level, dtype=torch.long) for level in levels]


def skinning_transforms(global_rotations: Tensor, rest_joints: Tensor, parents: Tensor,
                        root_position: Tensor) -> tuple[Tensor, Tensor]:
    """Skinning transforms from world rotations of each joint.

    Args:
        global_rotations: ``[B, J, 3, 3]`` accumulated world rotation of each joint.
        rest_joints: ``[B, J, 3]`` (or ``[J, 3]``) joint positions in the canonical pose.
        parents: ``[J]`` parent index, -1 for roots.
        root_position: ``[B, 3]`` posed position of the root joint(s).

    Returns:
        transforms ``[B, J, 4, 4]`` mapping canonical points to posed points, and the posed joint
        positions ``[B, J, 3]``.
    """
    b, j = global_rotations.shape[:2]
    rest = rest_joints.expand(b, j, 3) if rest_joints.dim() == 2 else rest_joints
    rest = rest.to(global_rotations.dtype)
    posed = torch.empty_like(rest)
    for level in joint_depths(parents.cpu()):
        level = level.to(rest.device)
        par = parents.to(rest.device)[level]
        if (par < 0).all():
            posed[:, level] = root_position[:, None].to(rest.dtype).expand(b, len(level), 3)
            continue
        bone = (rest[:, level] - rest[:, par])[..., None]  # [B, L, 3, 1]
        posed[:, level] = posed[:, par] + (global_rotations[:, par] @ bone)[..., 0]
    transforms = torch.zeros(b, j, 4, 4, dtype=rest.dtype, device=rest.device)
    transforms[..., :3, :3] = global_rotations
    transforms[..., :3, 3] = posed - (global_rotations @ rest[..., None])[..., 0]
    transforms[..., 3, 3] = 1.0
    return transforms, posed


def lbs_points(points: Tensor, weights: Tensor, transforms: Tensor) -> Tensor:
    """Skin points: ``points [N, 3]`` or ``[B, N, 3]``, ``weights [N, J]``,
    ``transforms [B, J, 4, 4]`` -> ``[B, N, 3]``."""
    blended = blend_transforms(weights, transforms)  # [B, N, 3, 4]
    if points.dim() == 2:
        points = points.expand(blended.shape[0], -1, -1)
    return (blended[..., :3] @ points[..., None].to(blended.dtype))[..., 0] + blended[..., 3]


def blend_transforms(weights: Tensor, transforms: Tensor) -> Tensor:
    """Per-point blended affine transforms: ``weights [N, J]``, ``transforms [B, J, 4, 4]`` ->
    ``[B, N, 3, 4]``."""
    b, j = transforms.shape[:2]
    flat = transforms[..., :3, :].reshape(b, j, 12)
    return (weights.to(flat.dtype) @ flat).reshape(b, -1, 3, 4)


def blend_rotations(weights: Tensor, rotations: Tensor) -> Tensor:
    """Per-point rotation from skinning: the weighted average of the joint quaternions, each flipped
    to the hemisphere of the point's dominant joint, normalised. Exact where one joint dominates and
    the first-order match of LBS elsewhere, without an SVD per point.

    Args:
        weights: ``[N, J]``; rotations: ``[B, J, 3, 3]``.
    Returns:
        ``[B, N, 4]`` unit quaternions ``(w, x, y, z)``.
    """
    q = roma.rotmat_to_unitquat(rotations)  # [B, J, 4] (x, y, z, w)
    dominant = weights.argmax(dim=-1)  # [N]
    dots = q @ q.transpose(-1, -2)  # [B, J, J]
    signs = torch.where(dots[:, dominant] < 0, -1.0, 1.0).to(q.dtype)  # [B, N, J]
    blended = (weights.to(q.dtype)[None] * signs) @ q  # [B, N, 4]
    blended = blended / blended.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return xyzw_to_wxyz(blended)


def xyzw_to_wxyz(q: Tensor) -> Tensor:
    return torch.cat([q[..., 3:], q[..., :3]], dim=-1)


def wxyz_to_xyzw(q: Tensor) -> Tensor:
    return torch.cat([q[..., 1:], q[..., :1]], dim=-1)


def quat_multiply(a: Tensor, b: Tensor) -> Tensor:
    """Hamilton product of ``(w, x, y, z)`` quaternions (broadcasting)."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack([
        aw * bw - ax * bx - ay * by - az * bz,
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
    ], dim=-1)
