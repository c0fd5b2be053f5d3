"""SMPL-X -> anny: one pose file drives either body.

Correspondence (SMPL-X joint -> anny bones it rotates). anny bones not listed (``pelvis.L/R``,
``spine05``, ``spine03``, ``shoulder01``, the ``*02`` twist bones, ``neck02/03``, metacarpals and
the distal toe bones) follow their parent rigidly. SMPL-X's ``jaw`` has no anny bone in the
default rig and is ignored.

Rest poses differ: SMPL-X's zero pose is a T-pose, anny's rest is an A-pose with bent elbows. A
fixed per-bone correction ``C_b`` (the smallest rotation taking the anny bone's rest direction to
its T-pose direction, for the upper arm, forearm and hand) makes the SMPL-X zero pose a T-pose on
anny too. The world rotation of anny bone ``b`` is then ``G_j C_b`` with ``G_j`` the SMPL-X global
rotation of its joint.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sigman.pose import SMPLX_JOINT_NAMES

_FINGERS = {"thumb": 1, "index": 2, "middle": 3, "ring": 4, "pinky": 5}

SMPLX_TO_ANNY: dict[str, tuple[str, ...]] = {
    "pelvis": ("root",),
    "left_hip": ("upperleg01.L",), "right_hip": ("upperleg01.R",),
    "left_knee": ("lowerleg01.L",), "right_knee": ("lowerleg01.R",),
    "left_ankle": ("foot.L",), "right_ankle": ("foot.R",),
    "left_foot": tuple(f"toe{i}-1.L" for i in range(1, 6)),
    "right_foot": tuple(f"toe{i}-1.R" for i in range(1, 6)),
    "spine1": ("spine04",), "spine2": ("spine02",), "spine3": ("spine01",),
    "neck": ("neck01",), "head": ("head",),
    "left_collar": ("clavicle.L",), "right_collar": ("clavicle.R",),
    "left_shoulder": ("upperarm01.L",), "right_shoulder": ("upperarm01.R",),
    "left_elbow": ("lowerarm01.L",), "right_elbow": ("lowerarm01.R",),
    "left_wrist": ("wrist.L",), "right_wrist": ("wrist.R",),
    "left_eye_smplhf": ("eye.L",), "right_eye_smplhf": ("eye.R",),
    **{f"{side}_{finger}{k}": (f"finger{n}-{k}.{side[0].upper()}",)
       for side in ("left", "right") for finger, n in _FINGERS.items() for k in (1, 2, 3)},
}

# anny bone -> (child bone it aims at, T-pose direction in sigman's frame).
T_POSE_AIMS: dict[str, tuple[str, tuple[float, float, float]]] = {
    "upperarm01.L": ("lowerarm01.L", (1.0, 0.0, 0.0)),
    "lowerarm01.L": ("wrist.L", (1.0, 0.0, 0.0)),
    "wrist.L": ("finger3-1.L", (1.0, 0.0, 0.0)),
    "upperarm01.R": ("lowerarm01.R", (-1.0, 0.0, 0.0)),
    "lowerarm01.R": ("wrist.R", (-1.0, 0.0, 0.0)),
    "wrist.R": ("finger3-1.R", (-1.0, 0.0, 0.0)),
}


def rotation_between(a: Tensor, b: Tensor) -> Tensor:
    """Smallest rotation taking unit vector ``a [3]`` to unit vector ``b [3]``: ``[3, 3]``."""
    a = a / a.norm()
    b = b / b.norm()
    v = torch.linalg.cross(a, b)
    c = torch.dot(a, b)
    if c < -1 + 1e-8:  # opposite: any half-turn about an axis orthogonal to a
        axis = torch.linalg.cross(a, torch.tensor([1.0, 0.0, 0.0], dtype=a.dtype))
        if axis.norm() < 1e-6:
            axis = torch.linalg.cross(a, torch.tensor([0.0, 1.0, 0.0], dtype=a.dtype))
        axis = axis / axis.norm()
        return 2 * torch.outer(axis, axis) - torch.eye(3, dtype=a.dtype)
    vx = torch.tensor([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]], dtype=a.dtype)
    return torch.eye(3, dtype=a.dtype) + vx + vx @ vx / (1 + c)


class AnnyRetarget(torch.nn.Module):
    """Maps SMPL-X global joint rotations ``[T, 55, 3, 3]`` to anny bone rotations ``[T, J, 3, 3]``."""

    def __init__(self, bone_names: list[str], parents: Tensor, rest_joints: Tensor) -> None:
        super().__init__()
        index = {name: i for i, name in enumerate(bone_names)}
        smplx_index = {name: i for i, name in enumerate(SMPLX_JOINT_NAMES)}
        mapped: dict[int, int] = {}
        for joint, bones in SMPLX_TO_ANNY.items():
            for bone in bones:
                if bone not in index:
                    raise ValueError(f"anny rig has no bone '{bone}' (mapped from SMPL-X '{joint}')")
                mapped[index[bone]] = smplx_index[joint]
        correction = torch.eye(3).repeat(len(bone_names), 1, 1)
        rest = rest_joints.double()
        for bone, (child, target) in T_POSE_AIMS.items():
            b, c = index[bone], index[child]
            correction[b] = rotation_between(rest[c] - rest[b], torch.tensor(target, dtype=torch.float64)).float()
        source_joint = torch.zeros(len(bone_names), dtype=torch.long)
        source_correction = torch.eye(3).repeat(len(bone_names), 1, 1)
        for b, p in enumerate(parents.tolist()):
            if b in mapped:
                source_joint[b], source_correction[b] = mapped[b], correction[b]
            elif p >= 0:
                source_joint[b], source_correction[b] = source_joint[p], source_correction[p]
            else:
                raise ValueError(f"anny root bone '{bone_names[b]}' has no SMPL-X joint")
        self.register_buffer("source_joint", source_joint, persistent=False)  # [J]
        self.register_buffer("correction", source_correction, persistent=False)  # [J, 3, 3]
        self.mapped_bones = {bone_names[b]: SMPLX_JOINT_NAMES[j] for b, j in mapped.items()}
        # desired SMPL-X global rotation per joint for the canonical (rest) pose: C^-1 of its bones
        canonical_global = torch.eye(3).repeat(len(SMPLX_JOINT_NAMES), 1, 1)
        for b, j in sorted(mapped.items()):
            canonical_global[j] = correction[b].T
        self.register_buffer("canonical_global", canonical_global, persistent=False)  # [55, 3, 3]

    def canonical_local_rotations(self) -> Tensor:
        """SMPL-X local rotations ``[55, 3, 3]`` under which every anny bone keeps its rest
        orientation (unmapped SMPL-X joints such as the jaw keep a zero local rotation)."""
        from sigman.pose import SMPLX_PARENTS

        g = self.canonical_global.detach().cpu().clone()
        local = torch.eye(3, dtype=g.dtype).repeat(len(SMPLX_PARENTS), 1, 1)
        for j, p in enumerate(SMPLX_PARENTS):
            if p < 0:
                local[j] = g[j]
                continue
            if not torch.equal(g[j], torch.eye(3, dtype=g.dtype)) or j in self.source_joint.tolist():
                local[j] = g[p].T @ g[j]
            else:  # joint drives no bone: no local rotation, inherits the parent's
                g[j] = g[p]
        return local

    def global_rotations(self, smplx_global: Tensor) -> Tensor:
        """``smplx_global [T, 55, 3, 3]`` -> anny world bone rotations ``[T, J, 3, 3]``."""
        return smplx_global[:, self.source_joint] @ self.correction.to(smplx_global)
