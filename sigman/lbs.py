"""Linear blend skinning shared by every body model and by the Gaussians.

The canonical (rest) frames of all joints are world-aligned, so a joint's skinning transform is
``x -> R_j x + t_j`` with ``R_j`` its accumulated world rotation and ``t_j`` chosen so the joint's
own rest position lands on its posed position (SMPL's ``A`` matrices).
"""

from __future__ import annotations

from typing import Optional

import roma
import torch
from torch import Tensor


def ancestor_matrix(parents: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """``A [J, J]`` with ``A[j, k] = 1`` when ``k`` is ``j`` or one of its ancestors (``parents [J]``,
    -1 for roots, parents before children). ``A = (I - P)^-1`` for the parent matrix ``P``, so a sum
    of per-joint terms down each chain is one product ``A @ terms``."""
    j = parents.shape[0]
    if bool((parents >= torch.arange(j, device=parents.device)).any()):
        raise ValueError("parents must come before children (and roots have parent -1)")
    p = torch.zeros(j, j, dtype=dtype, device=parents.device)
    child = torch.nonzero(parents >= 0)[:, 0]
    p[child, parents[child]] = 1.0
    eye = torch.eye(j, dtype=dtype, device=parents.device)
    return torch.linalg.solve_triangular(eye - p, eye, upper=False, unitriangular=True).round()


def chain_products(local: Tensor, parents: Tensor) -> Tensor:
    """World rotations from local ones along a kinematic tree: ``G_j = G_parent(j) @ L_j``.

    ``local [B, J, 3, 3]``, ``parents [J]`` (-1 for roots) -> ``[B, J, 3, 3]``. Uses pointer jumping:
    ``ceil(log2(depth))`` batched products instead of one product per joint.
    """
    b, j = local.shape[:2]
    device = local.device
    eye = torch.eye(3, dtype=local.dtype, device=device).expand(b, 1, 3, 3)
    # index j (one past the last joint) stands for "no ancestor": identity, pointing at itself
    jump = torch.cat([parents.to(device).long(), torch.tensor([-1], device=device)])
    jump = torch.where(jump < 0, torch.full_like(jump, j), jump)
    prod = torch.cat([local, eye], dim=1)  # [B, J + 1, 3, 3]
    while bool((jump[:j] < j).any()):
        prod = prod[:, jump] @ prod
        jump = jump[jump]
    return prod[:, :j]


def skinning_transforms(global_rotations: Tensor, rest_joints: Tensor, parents: Tensor,
                        root_position: Tensor, ancestors: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
    """Skinning transforms from world rotations of each joint.

    Args:
        global_rotations: ``[B, J, 3, 3]`` accumulated world rotation of each joint.
        rest_joints: ``[B, J, 3]`` (or ``[J, 3]``) joint positions in the canonical pose.
        parents: ``[J]`` parent index, -1 for roots.
        root_position: ``[B, 3]`` posed position of the root joint(s).
        ancestors: ``[J, J]`` :func:`ancestor_matrix` of ``parents``, when the caller keeps it
            (body models do); computed here otherwise.

    Returns:
        transforms ``[B, J, 4, 4]`` mapping canonical points to posed points, and the posed joint
        positions ``[B, J, 3]``.
    """
    b, j = global_rotations.shape[:2]
    rest = rest_joints.expand(b, j, 3) if rest_joints.dim() == 2 else rest_joints
    rest = rest.to(global_rotations.dtype)
    parents = parents.to(rest.device)
    is_root = parents < 0
    parent = torch.where(is_root, torch.zeros_like(parents), parents)
    # each joint's step from its parent, rotated by the parent's world rotation; roots: their position
    bone = (rest - rest[:, parent])[..., None]  # [B, J, 3, 1]
    step = (global_rotations[:, parent] @ bone)[..., 0]  # [B, J, 3]
    step = torch.where(is_root[None, :, None], root_position[:, None].to(rest.dtype), step)
    if ancestors is None:
        ancestors = ancestor_matrix(parents)
    posed = ancestors.to(rest) @ step  # [B, J, 3]: sums of the steps down each chain
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
