"""Coarse body parts of a rig's joints and of skinned points (sigman.body.parts)."""

from __future__ import annotations

import pytest
import torch

from sigman.body.parts import PART_NAMES, joint_parts, point_parts


def _names(parts: torch.Tensor) -> list[str]:
    return [PART_NAMES[int(p)] for p in parts]


def test_smplx_named_joints_fall_into_their_subtrees():
    names = ["pelvis", "spine1", "neck", "head", "left_collar", "left_shoulder", "left_elbow", "right_shoulder",
             "left_hip", "left_knee", "right_hip"]
    parents = torch.tensor([-1, 0, 1, 2, 1, 4, 5, 1, 0, 8, 0])
    assert _names(joint_parts(parents, names)) == ["torso", "torso", "head", "head", "torso", "left_arm", "left_arm",
                                                   "right_arm", "left_leg", "left_leg", "right_leg"]


def test_anny_bones_are_mapped_through_the_retarget_table():
    names = ["root", "spine01", "neck01", "head", "clavicle.L", "upperarm01.L", "wrist.L", "upperleg01.R", "foot.R"]
    parents = torch.tensor([-1, 0, 1, 2, 1, 4, 5, 0, 7])
    assert _names(joint_parts(parents, names)) == ["torso", "torso", "head", "head", "torso", "left_arm", "left_arm",
                                                   "right_leg", "right_leg"]


def test_a_point_takes_the_part_of_its_heaviest_joint():
    names = ["pelvis", "neck", "left_hip"]
    parents = torch.tensor([-1, 0, 0])
    weights = torch.tensor([[0.6, 0.4, 0.0], [0.3, 0.7, 0.0], [0.2, 0.0, 0.8]])
    assert _names(point_parts(weights, parents, names)) == ["torso", "head", "left_leg"]
    with pytest.raises(ValueError, match="over 2 joints, the rig has 3"):
        point_parts(weights[:, :2], parents, names)
