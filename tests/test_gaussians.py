import pytest
import roma
import torch

from sigman.gaussians import Gaussians, quat_from_normals, repose, surface_gaussians
from sigman.lbs import blend_rotations, wxyz_to_xyzw
from tests.conftest import random_pose


def test_container_validates_shapes():
    with pytest.raises(ValueError, match="quats"):
        Gaussians(torch.zeros(5, 3), torch.zeros(5, 3), torch.ones(5, 3), torch.ones(5), torch.ones(5, 3))


def test_gaussians_at_vertices_land_on_posed_vertices(anny_body):
    g = Gaussians(means=anny_body.rest_vertices, quats=torch.tensor([1.0, 0, 0, 0]).expand(anny_body.num_vertices, 4),
                  scales=torch.full((anny_body.num_vertices, 3), 0.01), opacities=torch.ones(anny_body.num_vertices),
                  colors=torch.rand(anny_body.num_vertices, 3), skin_weights=anny_body.skin_weights)
    pose = random_pose(3)
    out = anny_body(pose)
    posed = repose(g, out.transforms)
    torch.testing.assert_close(posed.means, out.vertices, atol=1e-5, rtol=0)


def test_identity_pose_is_a_no_op(anny_body, uv64):
    g = surface_gaussians(uv64)
    posed = repose(g, anny_body(anny_body.canonical_pose()).transforms)
    torch.testing.assert_close(posed.means[0], g.means, atol=1e-6, rtol=0)
    # quaternions equal up to sign
    dots = (posed.quats[0] * g.quats).sum(-1).abs()
    torch.testing.assert_close(dots, torch.ones_like(dots), atol=1e-6, rtol=0)


def test_rotations_stay_unit_and_follow_a_dominant_joint(anny_body, uv64):
    g = surface_gaussians(uv64)
    out = anny_body(random_pose(2, scale=1.0))
    posed = repose(g, out.transforms)
    torch.testing.assert_close(posed.quats.norm(dim=-1), torch.ones(2, g.num_gaussians), atol=1e-5, rtol=0)
    # a Gaussian skinned to one joint rotates exactly with that joint
    rigid = (g.skin_weights.max(dim=1).values > 1 - 1e-6).nonzero()[:, 0]
    assert len(rigid) > 100
    joint = g.skin_weights[rigid].argmax(1)
    expected = out.transforms[:, joint, :3, :3] @ roma.unitquat_to_rotmat(wxyz_to_xyzw(g.quats[rigid]))
    got = roma.unitquat_to_rotmat(wxyz_to_xyzw(posed.quats[:, rigid]))
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


def test_blended_rotation_is_stable_across_the_quaternion_double_cover():
    """Two joints rotated ~180 degrees apart in sign (q and -q neighbours) must not cancel."""
    angles = torch.tensor([3.10, 3.18])  # straddle pi: unit quaternions with opposite w signs
    rot = roma.rotvec_to_rotmat(torch.stack([torch.tensor([0.0, a, 0.0]) for a in angles]))[None]
    weights = torch.tensor([[0.5, 0.5]])
    q = blend_rotations(weights, rot)
    expected = roma.rotvec_to_rotmat(torch.tensor([0.0, 3.14, 0.0]))
    torch.testing.assert_close(roma.unitquat_to_rotmat(wxyz_to_xyzw(q[0, 0])), expected, atol=1e-3, rtol=0)


def test_quat_from_normals():
    n = torch.nn.functional.normalize(torch.randn(100, 3), dim=-1)
    n[0] = torch.tensor([0.0, 0.0, -1.0])
    q = quat_from_normals(n)
    z = roma.unitquat_to_rotmat(wxyz_to_xyzw(q))[..., :, 2]
    torch.testing.assert_close(z, n, atol=1e-5, rtol=0)
