"""Parts of the body fit: its kinematics, the world-landmark correction and scale, joint limits,
the ear markers (fast; no MediaPipe needed)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sigman.body.markers import EAR_INSET, body_markers
from sigman.fit import joint_limit_penalty, world_scale
from sigman.fit_kinematics import FitKinematics, jump_schedule
from sigman.lbs import chain_products
from sigman.observation import BLAZEPOSE_LANDMARKS
from sigman.pose import SMPLXPose
from sigman.world_landmarks import WORLD_DEPTH_BIAS, debiased_world_landmarks, facing_camera


def _random_pose(frames: int, seed: int) -> SMPLXPose:
    g = torch.Generator().manual_seed(seed)
    pose = SMPLXPose.zeros(frames)
    pose.global_orient = 0.6 * torch.randn(frames, 3, generator=g)
    pose.body_pose = 0.4 * torch.randn(frames, 21, 3, generator=g)
    return pose


def test_fit_kinematics_match_the_body_model(anny_body):
    pose = _random_pose(3, 0)
    _, rest_j = anny_body.rest(None)
    rest_j = rest_j.expand(3, -1, -1) + 0.01 * torch.randn(3, *rest_j.shape[1:], generator=torch.Generator().manual_seed(1))
    want_t, want_j = anny_body.pose_transforms(pose, rest_j)
    got_t, got_j = FitKinematics(anny_body)(pose.global_orient, pose.body_pose, rest_j)
    assert torch.allclose(got_t, want_t, atol=1e-5) and torch.allclose(got_j, want_j, atol=1e-5)


def test_fit_kinematics_match_smplx(tmp_path):
    from sigman.body import load_body_model
    from tests.smplx_fixture import write_smplx_model

    write_smplx_model(tmp_path)
    body = load_body_model("smplx", model_path=tmp_path)
    pose = _random_pose(2, 2)
    rest_j = body.rest_joints.expand(2, -1, -1)
    want_t, want_j = body.pose_transforms(pose, rest_j)
    got_t, got_j = FitKinematics(body)(pose.global_orient, pose.body_pose, rest_j)
    assert torch.allclose(got_t, want_t, atol=1e-5) and torch.allclose(got_j, want_j, atol=1e-5)


def test_jump_schedule_replays_chain_products():
    parents = [-1, 0, 1, 2, 1, 4, 0, 6, 7, 8, 9, -1, 11]
    local = torch.linalg.qr(torch.randn(2, len(parents), 3, 3, generator=torch.Generator().manual_seed(3)))[0]
    prod = torch.cat([local, torch.eye(3).expand(2, 1, 3, 3)], dim=1)
    for jump in jump_schedule(parents):
        prod = prod[:, jump] @ prod
    assert torch.allclose(prod[:, :-1], chain_products(local, torch.tensor(parents)), atol=1e-6)
    assert len(jump_schedule(parents)) == 3  # depth 5 -> ceil(log2 5) doublings


def _torso(yaw_deg: float) -> np.ndarray:
    """World landmarks (camera axes: +x right, +y down, +z away) of a torso facing the camera
    turned by ``yaw_deg`` about the vertical."""
    w = np.zeros((33, 3), np.float32)
    left = np.array([np.cos(np.radians(yaw_deg)), 0.0, np.sin(np.radians(yaw_deg))])
    for name, side, up in (("left_shoulder", 1, 0.5), ("right_shoulder", -1, 0.5), ("left_hip", 1, 0.0), ("right_hip", -1, 0.0)):
        w[BLAZEPOSE_LANDMARKS.index(name)] = side * 0.15 * left + np.array([0.0, -up, 0.0])
    return w


def test_world_depth_bias_is_removed_for_frontal_torsos_only():
    front, side, away = _torso(0.0), _torso(90.0), _torso(180.0)
    assert facing_camera(front) == pytest.approx(1.0)
    assert facing_camera(side) == pytest.approx(0.0, abs=1e-6) and facing_camera(away) == 0.0
    out = debiased_world_landmarks(front)
    assert np.allclose(out[:, 2], front[:, 2] - np.asarray(WORLD_DEPTH_BIAS), atol=1e-6)
    assert np.allclose(out[:, :2], front[:, :2]) and front[0, 2] == 0.0  # a copy; x, y untouched
    assert np.allclose(debiased_world_landmarks(side), side, atol=1e-6)
    # the measured bias: the upper body nearer the camera than the hips, the feet further
    bias = dict(zip(BLAZEPOSE_LANDMARKS, WORLD_DEPTH_BIAS))
    assert bias["left_shoulder"] < 0 < bias["left_ankle"] and bias["left_shoulder"] == bias["right_shoulder"]


def test_world_scale_undoes_the_world_landmarks_size():
    g = torch.Generator().manual_seed(4)
    centred = torch.randn(2, 33, 3, generator=g)
    weights = torch.rand(2, 33, generator=g)
    scale = world_scale(centred, centred / torch.tensor([1.3, 0.8])[:, None, None], weights)
    assert torch.allclose(scale, torch.tensor([1.3, 0.8]), atol=1e-5)
    assert float(world_scale(centred, 10 * centred, weights).min()) == pytest.approx(0.6)  # clamped


def test_joint_limits_let_knees_and_elbows_bend_one_way():
    from sigman.fit import _BODY_INDEX

    def cost(joint: str, axis: int, value: float) -> float:
        pose = torch.zeros(1, 21, 3)
        pose[0, _BODY_INDEX[joint], axis] = value
        return float(joint_limit_penalty(pose)[0])

    assert cost("left_knee", 0, 1.0) == 0.0 and cost("left_knee", 0, -1.0) == pytest.approx(1.0)
    assert cost("right_knee", 1, 1.0) == pytest.approx(0.5)
    assert cost("left_elbow", 1, -1.0) == 0.0 and cost("left_elbow", 1, 1.0) == pytest.approx(1.0)
    assert cost("right_elbow", 1, 1.0) == 0.0 and cost("right_elbow", 1, -1.0) == pytest.approx(1.0)
    assert cost("left_elbow", 2, 1.0) == pytest.approx(0.1) and cost("spine1", 0, 1.0) == 0.0


def test_ear_markers_sit_inside_the_head(anny_body):
    markers = body_markers(anny_body)
    rest_v, rest_j = anny_body.rest(None)
    canon = markers.canonical(rest_v, rest_j)[0]
    left, right = (canon[BLAZEPOSE_LANDMARKS.index(n)] for n in ("left_ear", "right_ear"))
    head = rest_v[0][(rest_v[0, :, 1] - left[1]).abs() < 0.03]
    head = head[(head[:, 0].abs() < 0.15) & (head[:, 2].abs() < 0.2 + abs(float(left[2])))]
    assert float(left[0]) > 0 > float(right[0])
    assert float(left[0]) < float(head[:, 0].max()) and float(right[0]) > float(head[:, 0].min())
    assert float(left[0] - right[0]) == pytest.approx(float(head[:, 0].max() - head[:, 0].min()) - 2 * EAR_INSET, abs=0.03)


def test_world_scale_does_not_shrink_when_the_shapes_disagree():
    """The world landmarks' shape differs from the body's (a rotation here): the scale is still the
    size ratio, where a least-squares scale would come out below 1 and pull the body smaller."""
    g = torch.Generator().manual_seed(5)
    centred = torch.randn(1, 33, 3, generator=g)
    weights = torch.ones(1, 33)
    c, s = math.cos(0.8), math.sin(0.8)
    rot = torch.tensor([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
    assert float(world_scale(centred, 0.9 * centred @ rot.T, weights)[0]) == pytest.approx(1 / 0.9, rel=1e-4)
