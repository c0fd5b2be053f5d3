import numpy as np
import pytest
import torch

from sigman.pose import NUM_SMPLX_JOINTS, PoseFileError, SMPLXPose, load_pose, save_pose
from sigman.presets import MOTION_PRESETS, POSE_PRESETS, preset_names, resolve_pose
from tests.conftest import random_pose


def test_save_load_round_trip(tmp_path):
    pose = random_pose(3)
    save_pose(tmp_path / "p.npz", pose)
    back = load_pose(tmp_path / "p.npz")
    assert back.num_frames == 3
    torch.testing.assert_close(back.full_pose(), pose.full_pose(), rtol=0, atol=0)
    torch.testing.assert_close(back.transl, pose.transl, rtol=0, atol=0)


def test_seed_layout_single_frame_flat_arrays(tmp_path):
    np.savez(tmp_path / "s.npz", global_orient=np.zeros(3), body_pose=np.full(63, 0.1, np.float32),
             left_hand_pose=np.zeros(45), transl=np.array([0, 1, 0.0]), betas=np.ones((1, 10)))
    pose = load_pose(tmp_path / "s.npz")
    assert pose.num_frames == 1
    assert pose.body_pose.shape == (1, 21, 3) and torch.all(pose.body_pose == 0.1)
    assert pose.betas.shape == (10,) and torch.all(pose.betas == 1)
    assert pose.transl[0, 1] == 1


def test_amass_sequences(tmp_path):
    poses = np.random.default_rng(0).normal(size=(5, 165)).astype(np.float32) * 0.1
    np.savez(tmp_path / "x.npz", poses=poses, trans=np.zeros((5, 3)), mocap_frame_rate=np.array(60.0))
    pose = load_pose(tmp_path / "x.npz")
    assert pose.num_frames == 5 and pose.fps == 60.0
    np.testing.assert_array_equal(pose.full_pose().numpy(), poses.reshape(5, NUM_SMPLX_JOINTS, 3))
    smplh = np.random.default_rng(1).normal(size=(4, 156)).astype(np.float32)
    np.savez(tmp_path / "h.npz", poses=smplh)
    pose = load_pose(tmp_path / "h.npz")
    full = pose.full_pose().numpy()
    np.testing.assert_array_equal(full[:, :22], smplh.reshape(4, 52, 3)[:, :22])
    np.testing.assert_array_equal(full[:, 25:], smplh.reshape(4, 52, 3)[:, 22:])
    assert np.all(full[:, 22:25] == 0)


@pytest.mark.parametrize("arrays, message", [
    ({"body_pose": np.zeros((21, 3))}, "missing key 'global_orient'"),
    ({"global_orient": np.zeros(3), "body_pose": np.zeros((20, 3))}, "'body_pose' has shape (20, 3); expected (21, 3)"),
    ({"global_orient": np.array([0, np.nan, 0]), "body_pose": np.zeros((21, 3))}, "'global_orient' contains NaN or Inf"),
    ({"global_orient": np.array(["a", "b", "c"]), "body_pose": np.zeros((21, 3))}, "'global_orient' has dtype <U1"),
    ({"global_orient": np.zeros((2, 3)), "body_pose": np.zeros((3, 21, 3))}, "'body_pose' has 3 frames but 'global_orient' has 2"),
    ({"poses": np.zeros((4, 100))}, "'poses' has shape (4, 100)"),
    ({"global_orient": np.zeros(3), "body_pose": np.zeros((21, 3)), "transl": np.full(3, np.inf)}, "'transl' contains NaN or Inf"),
])
def test_malformed_arrays_name_the_key(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(PoseFileError) as err:
        load_pose(tmp_path / "bad.npz")
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_pickled_and_corrupt_files_are_refused(tmp_path):
    np.savez(tmp_path / "obj.npz", global_orient=np.array([{"x": 1}], dtype=object), body_pose=np.zeros((21, 3)))
    with pytest.raises(PoseFileError, match="pickled"):
        load_pose(tmp_path / "obj.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip at all" * 10)
    with pytest.raises(PoseFileError, match="not an .npz"):
        load_pose(tmp_path / "junk.npz")
    np.save(tmp_path / "arr.npy", np.zeros(3))
    with pytest.raises(PoseFileError, match="single .npy array"):
        load_pose(tmp_path / "arr.npy")
    with pytest.raises(PoseFileError, match="not found"):
        load_pose(tmp_path / "missing.npz")
    good = tmp_path / "good.npz"
    save_pose(good, random_pose(1))
    (tmp_path / "trunc.npz").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(PoseFileError):
        load_pose(tmp_path / "trunc.npz")


def test_global_rotations_compose_along_the_tree():
    pose = SMPLXPose.zeros(1)
    pose.global_orient[0] = torch.tensor([0.0, 1.0, 0.0])
    pose.body_pose[0, 15] = torch.tensor([0.0, 0.0, -0.5])  # left shoulder
    g = pose.global_rotmats()[0]
    local = pose.local_rotmats()[0]
    spine_chain = local[0] @ local[3] @ local[6] @ local[9] @ local[13] @ local[16]
    torch.testing.assert_close(g[16], spine_chain)
    torch.testing.assert_close(g[18], g[16])  # the elbow adds nothing


def test_presets_exist_and_are_valid():
    names = preset_names()
    for required in ("a_pose", "t_pose", "standing", "walking", "sitting", "waving", "walk_cycle"):
        assert required in names
    assert len(POSE_PRESETS) >= 6 and len(MOTION_PRESETS) >= 1
    for name in names:
        pose = resolve_pose(name)
        assert torch.isfinite(pose.full_pose()).all()
    assert resolve_pose("walk_cycle").num_frames > 10
    # presets on disk are what the code generates
    torch.testing.assert_close(resolve_pose("waving").full_pose(), POSE_PRESETS["waving"]().full_pose())
