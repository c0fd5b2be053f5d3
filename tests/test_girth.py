"""sigman.girth: the radial field around the skeleton, and the refinement making a broader or slimmer
body as a whole (the side the photo does not show follows)."""

from __future__ import annotations

import math

import pytest
import torch

from sigman.gaussians import surface_gaussians
from sigman.girth import bone_segments, radial_field
from sigman.pose import SMPLXPose
from sigman.refine import RefineConfig, posed_frame, refine_avatar
from sigman.render import Camera, intrinsics_from_fov, look_at, render

SIZE = 96


def test_radial_field_points_from_the_nearest_bone():
    joints = torch.tensor([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0]])  # an "L": up, then right
    parents = torch.tensor([-1, 0, 1])
    start, end = bone_segments(joints, parents)
    assert start.shape == (2, 3) and torch.equal(end, joints[1:])
    points = torch.tensor([[0.2, 0.5, 0.0],     # beside the vertical bone
                           [0.5, 1.3, 0.1],     # above the horizontal one
                           [-0.3, -0.4, 0.0]])  # below the root: the nearest point is the bone's end
    field = radial_field(points, joints, parents, chunk=2)
    expected = torch.tensor([[0.2, 0.0, 0.0], [0.0, 0.3, 0.1], [-0.3, -0.4, 0.0]])
    assert torch.allclose(field.vectors, expected, atol=1e-6)
    means, scales = field.thicken(points, torch.ones(3, 3), torch.full((3,), 0.5))
    assert torch.allclose(means, points + 0.5 * expected) and torch.allclose(scales, torch.full((3, 3), 1.5))
    assert torch.allclose(field.select(torch.tensor([1])).vectors, expected[1:2], atol=1e-6)


def _iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a & b).sum() / (a | b).sum())


@pytest.mark.parametrize("true_girth", [0.2, -0.1])
def test_refinement_gives_the_unseen_side_the_photos_build(anny_body, uv64, true_girth):
    body, template = anny_body, uv64
    rest_joints, pose = body.rest_joints, SMPLXPose.zeros(1)
    points = template.positions
    colors = torch.stack([0.5 + 0.4 * torch.sin(points[:, 1] * 25), 0.5 + 0.4 * torch.cos(points[:, 0] * 30),
                          (points[:, 1] + 1) / 2.5], dim=-1).clamp(0, 1)
    model = surface_gaussians(template).with_(colors=colors)
    vectors = radial_field(model.means, rest_joints, body.parents).vectors
    person = model.with_(means=model.means + true_girth * vectors, scales=model.scales * (1 + true_girth))
    posed_person = posed_frame(person, body, rest_joints, pose)
    centre = 0.5 * (posed_person.means.min(0).values + posed_person.means.max(0).values)

    def camera(angle: float) -> Camera:
        eye = centre + 2.6 * torch.tensor([math.sin(angle), 0.0, math.cos(angle)])
        return Camera(look_at(eye[None], centre), intrinsics_from_fov(0.8713, SIZE, SIZE), SIZE, SIZE)

    def silhouette(g, cam) -> torch.Tensor:
        return render(g, cam).alpha[0, ..., 0] > 0.5

    front, side = camera(0.0), camera(math.pi / 2)
    shot = render(posed_person, front, background=(1.0, 1.0, 1.0))
    photo, mask = shot.rgb[0], (shot.alpha[0, ..., 0] > 0.5).float()
    truth_side = silhouette(posed_person, side)
    scores = {}
    for girth in (False, True):
        config = RefineConfig(steps=30, align_steps=0, render_size=SIZE, optimize_pose=False, optimize_camera=False,
                              optimize_girth=girth)
        result = refine_avatar(model, body, template, rest_joints, None, pose, front, photo, mask, config)
        scores[girth] = _iou(silhouette(posed_frame(result.canonical, body, rest_joints, pose), side), truth_side)
        if girth:
            mean_girth = float((model.skin_weights @ result.girth).mean())
    before = _iou(silhouette(posed_frame(model, body, rest_joints, pose), side), truth_side)
    # the photo shows the front; the side view (never photographed) takes the build from the thickness change
    assert scores[True] > scores[False] + 0.02 and scores[True] > before + 0.04, (before, scores)
    assert mean_girth * true_girth > 0 and abs(mean_girth) > 0.3 * abs(true_girth), mean_girth
