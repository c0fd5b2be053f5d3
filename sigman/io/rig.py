"""The skeleton a rigged avatar carries."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Rig:
    """Joint tree of a rigged avatar. Joint frames are world-aligned in the canonical pose, so the
    inverse bind matrix of joint ``j`` is a pure translation by ``-rest_joints[j]``."""

    joint_names: list[str]
    parents: Tensor  # [J] long, -1 for the root
    rest_joints: Tensor  # [J, 3] canonical joint positions (metres)
    body_model: str  # name of the body model whose poses drive it ("anny", "smplx")

    def __post_init__(self) -> None:
        j = len(self.joint_names)
        self.parents = torch.as_tensor(self.parents, dtype=torch.long)
        self.rest_joints = torch.as_tensor(self.rest_joints, dtype=torch.float32)
        if self.parents.shape != (j,) or self.rest_joints.shape != (j, 3):
            raise ValueError(f"rig with {j} joints needs parents [{j}] and rest_joints [{j}, 3], got "
                             f"{tuple(self.parents.shape)} and {tuple(self.rest_joints.shape)}")
