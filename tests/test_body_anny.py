import torch

from sigman.body.anny_body import ANNY_TO_SIGMAN, load_anny_module
from sigman.body.retarget import SMPLX_TO_ANNY
from sigman.pose import SMPLX_JOINT_NAMES, SMPLXPose
from sigman.presets import sitting, walking
from tests.conftest import random_pose


def test_assets(anny_body):
    b = anny_body
    assert b.num_vertices == 13718 and b.faces.shape == (27420, 3) and b.num_joints == 104
    assert b.uvs.min() >= 0 and b.uvs.max() <= 1
    torch.testing.assert_close(b.skin_weights.sum(1), torch.ones(b.num_vertices))
    # Y up, facing +Z: the head is the highest part and the nose points forward
    assert b.rest_vertices[:, 1].argmax() in b.faces  # sanity: a real vertex
    head = b.rest_joints[b.joint_names.index("head")]
    pelvis = b.rest_joints[0]
    assert head[1] - pelvis[1] > 0.5
    assert b.rest_vertices[:, 2].max() > 0.1  # the front (feet/nose) is at +Z


def test_zero_smplx_pose_is_a_t_pose(anny_body):
    out = anny_body(SMPLXPose.zeros(1))
    j = {n: out.joints[0, i] for i, n in enumerate(anny_body.joint_names)}
    for side, sign in (("L", 1), ("R", -1)):
        arm = j[f"wrist.{side}"] - j[f"upperarm01.{side}"]
        assert sign * arm[0] > 0.4  # arm along +-X
        assert abs(arm[1]) < 0.02 and abs(arm[2]) < 0.02  # horizontal, not forward


def test_canonical_pose_is_identity(anny_body):
    out = anny_body(anny_body.canonical_pose())
    torch.testing.assert_close(out.transforms[0], torch.eye(4).expand_as(out.transforms[0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(out.vertices[0], anny_body.rest_vertices, atol=1e-6, rtol=0)


def test_every_mapped_bone_gets_its_joint_rotation(anny_body):
    pose = random_pose(2)
    rot = anny_body.global_rotations(pose)
    g = pose.global_rotmats()
    corr = anny_body.retarget.correction
    for joint, bones in SMPLX_TO_ANNY.items():
        for bone in bones:
            b = anny_body.joint_names.index(bone)
            torch.testing.assert_close(rot[:, b], g[:, SMPLX_JOINT_NAMES.index(joint)] @ corr[b])


def test_lbs_matches_anny_own_posed_mesh(anny_body):
    """Our kinematics + LBS give exactly what anny's own skinning gives for the same bone poses."""
    raw = load_anny_module()
    P = ANNY_TO_SIGMAN.float()
    for make in (walking, sitting):
        pose = make()
        pose.global_orient[0] = torch.tensor([0.3, 2.5, -0.2])
        out = anny_body(pose)
        S = out.transforms[0]
        Sa = torch.eye(4).repeat(S.shape[0], 1, 1)
        Sa[:, :3, :3] = P.T @ S[:, :3, :3] @ P
        Sa[:, :3, 3] = S[:, :3, 3] @ P
        with torch.no_grad():
            rest = raw()
            world_bone_poses = Sa.double() @ rest["rest_bone_poses"][0]
            theirs = raw(pose_parameters=world_bone_poses[None], pose_parameterization="world")["vertices"][0]
        torch.testing.assert_close(theirs.float() @ P.T, out.vertices[0], atol=2e-6, rtol=0)


def test_batched_sequence_forward(anny_body):
    pose = random_pose(4)
    out = anny_body(pose)
    assert out.vertices.shape == (4, 13718, 3) and out.transforms.shape == (4, 104, 4, 4)
    single = anny_body(pose.frame(2))
    torch.testing.assert_close(single.vertices[0], out.vertices[2])
    # the root lands at SMPL-X's pelvis + transl
    from sigman.body.anny_body import SMPLX_REST_PELVIS
    torch.testing.assert_close(out.joints[:, 0], torch.tensor(SMPLX_REST_PELVIS) + pose.transl)
