"""The body fit's forward kinematics: skinning transforms from the fitted root orientation and 21
body joints, with every constant prepared once on the fit's device.

``BodyModel.pose_transforms`` is general (any SMPL-X pose, any frame count) and builds its small
constants (parent tables, the pelvis, the zero hand and face rotations) on each call: on a GPU
each of those is a host-to-device copy, and the kinematic chain's "are we done" test a
device-to-host read, both of which wait for the GPU to finish its queue. The fit calls it 150 times
a photo, so :class:`FitKinematics` keeps them on the device, computes the local rotations of the
22 joints that move only (the hands, jaw and eyes are constant), and replays the chain's pointer
jumping from a precomputed index schedule: no host synchronisation in a step.

    kin = FitKinematics(body)                              # once per body and device
    transforms, joints = kin(orient, body_pose, rest_joints)
    # == body.pose_transforms(pose with that orient / body_pose, rest_joints)

Bodies: anny (the SMPL-X rotations mapped onto its bones by :class:`sigman.body.retarget.AnnyRetarget`)
and SMPL-X (its mean hand pose, when it has one, in the constant part).
"""

from __future__ import annotations

from typing import Optional

import roma
import torch
from torch import Tensor

from sigman.body.base import BodyModel
from sigman.lbs import skinning_transforms
from sigman.pose import SMPLX_PARENTS, SMPLXPose

NUM_MOVING = 22  # root + 21 body joints: what the fit moves


def jump_schedule(parents: list[int]) -> list[list[int]]:
    """The index tables of :func:`sigman.lbs.chain_products`' pointer jumping for a tree
    (``parents``, -1 for roots), computed on the host: one table per doubling step."""
    j = len(parents)
    jump = [p if p >= 0 else j for p in parents] + [j]
    steps = []
    while any(x < j for x in jump[:j]):
        steps.append(list(jump))
        jump = [jump[x] for x in jump]
    return steps


class FitKinematics:
    """Skinning transforms of ``body`` for poses that move only the root and the body joints."""

    def __init__(self, body: BodyModel) -> None:
        device, dtype = body.rest_vertices.device, body.rest_vertices.dtype
        self.body = body
        zero = SMPLXPose.zeros(1).to(device)
        if hasattr(body, "retarget"):  # anny
            self.source = body.retarget.source_joint.to(device)
            self.correction = body.retarget.correction.to(device=device, dtype=dtype)
            constant = zero.local_rotmats()[:, NUM_MOVING:]
            self.pelvis: Optional[Tensor] = body.root_position(zero, body.rest_joints[None]).to(dtype)  # [1, 3]
        elif body.name == "smplx":
            self.source = None
            self.correction = None
            constant = body._with_hand_mean(zero).local_rotmats()[:, NUM_MOVING:]
            self.pelvis = None  # the root joint's rest position
        else:
            raise ValueError(f"no fit kinematics for body '{body.name}'; known: anny, smplx")
        self.constant = constant.to(dtype)  # [1, 33, 3, 3] local rotations of the joints that stay
        self.jumps = [torch.tensor(s, device=device) for s in jump_schedule(list(SMPLX_PARENTS))]
        self.eye = torch.eye(3, device=device, dtype=dtype)[None, None]
        self.parents = body.parents.to(device)
        self.ancestors = body.ancestors.to(device=device, dtype=dtype) if getattr(body, "ancestors", None) is not None else None

    def __call__(self, orient: Tensor, body_pose: Tensor, rest_joints: Tensor) -> tuple[Tensor, Tensor]:
        """``orient [T, 3]``, ``body_pose [T, 21, 3]`` axis-angles, ``rest_joints [T, J, 3]`` ->
        skinning transforms ``[T, J, 4, 4]`` and posed joints ``[T, J, 3]`` (no translation)."""
        t = orient.shape[0]
        moving = roma.rotvec_to_rotmat(torch.cat([orient[:, None], body_pose], dim=1))  # [T, 22, 3, 3]
        prod = torch.cat([moving, self.constant.expand(t, -1, -1, -1), self.eye.expand(t, 1, 3, 3)], dim=1)
        for jump in self.jumps:
            prod = prod[:, jump] @ prod
        smplx_global = prod[:, :-1]  # [T, 55, 3, 3]
        rotations = smplx_global if self.source is None else smplx_global[:, self.source] @ self.correction
        root = rest_joints[:, 0] if self.pelvis is None else self.pelvis.expand(t, 3)
        return skinning_transforms(rotations, rest_joints, self.parents, root, ancestors=self.ancestors)
