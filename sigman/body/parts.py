"""Coarse body parts (head, torso, arms, legs) for each joint of a rig and each skinned point.

A part is the kinematic subtree below one of a few SMPL-X joints (:data:`PART_ROOTS`, mapped to anny's
bones by :data:`sigman.body.retarget.SMPLX_TO_ANNY`); every joint outside those subtrees is torso. A
skinned point (a Gaussian, a vertex) belongs to the part of the joint that moves it most.

    parts = point_parts(canonical.skin_weights, body.parents, body.joint_names)   # [N] in 0..5

The photo's colour matching uses it so that one colour piece never spans the face and the torso
(the model's skin-coloured torso under a jacket is then judged by the torso's pixels alone).
"""

from __future__ import annotations

import torch
from torch import Tensor

# part id -> the SMPL-X joint whose subtree it is; id 0 (torso) is everything else
PART_NAMES: tuple[str, ...] = ("torso", "head", "left_arm", "right_arm", "left_leg", "right_leg")
PART_ROOTS: dict[str, str] = {"head": "neck", "left_arm": "left_shoulder", "right_arm": "right_shoulder",
                              "left_leg": "left_hip", "right_leg": "right_hip"}


def _root_joint_names(name: str, joint_names: list[str]) -> list[str]:
    """The rig's joint names standing for SMPL-X joint ``name`` (itself, or anny's mapped bones)."""
    if name in joint_names:
        return [name]
    from sigman.body.retarget import SMPLX_TO_ANNY

    return [b for b in SMPLX_TO_ANNY.get(name, ()) if b in joint_names]


def joint_parts(parents: Tensor, joint_names: list[str]) -> Tensor:
    """``[J]`` part id (index into :data:`PART_NAMES`) of each joint of a rig with ``parents [J]``
    (-1 at the root, parents before children or not): the nearest part root at or above it, else torso."""
    parents_l = [int(p) for p in parents.tolist()]
    roots: dict[int, int] = {}
    for part, smplx_name in PART_ROOTS.items():
        for bone in _root_joint_names(smplx_name, list(joint_names)):
            roots[list(joint_names).index(bone)] = PART_NAMES.index(part)
    out = []
    for j in range(len(parents_l)):
        k, part, guard = j, 0, 0
        while k >= 0 and guard <= len(parents_l):
            if k in roots:
                part = roots[k]
                break
            k, guard = parents_l[k], guard + 1
        out.append(part)
    return torch.tensor(out, dtype=torch.long, device=parents.device)


def point_parts(skin_weights: Tensor, parents: Tensor, joint_names: list[str]) -> Tensor:
    """``[N]`` part id of each point with ``skin_weights [N, J]``: the part of its heaviest joint."""
    if skin_weights.shape[-1] != parents.numel():
        raise ValueError(f"skin weights over {skin_weights.shape[-1]} joints, the rig has {parents.numel()}")
    return joint_parts(parents, joint_names).to(skin_weights.device)[skin_weights.argmax(dim=-1)]


__all__ = ["PART_NAMES", "PART_ROOTS", "joint_parts", "point_parts"]
