"""SMPL-X body: the same vertices and joints as the ``smplx`` package, on random model files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import smplx
import torch
from torch import nn

from sigman.body import load_body_model
from sigman.body.smplx_body import (BodyModelFileError, BodyModelFilesMissing, SMPLXBody,
                                    read_obj_uvs)
from sigman.pose import SMPLX_JOINT_NAMES, SMPLX_PARENTS, SMPLXPose
from tests.conftest import random_pose
from tests.smplx_fixture import random_smplx_arrays, write_obj, write_smplx_model

ATOL = 1e-5


class NoExtraJoints(nn.Module):
    """Stands in for ``smplx``'s extra keypoints, which sit at vertex ids of the real mesh."""

    def forward(self, vertices, joints):
        return joints


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("smplx")
    write_smplx_model(folder)
    return folder


@pytest.fixture(scope="module")
def body(model_dir) -> SMPLXBody:
    return load_body_model("smplx", model_path=model_dir)


def reference(model_dir: Path, flat_hand_mean: bool = True, num_betas: int = 10, small: bool = True) -> smplx.SMPLX:
    ref = smplx.SMPLX(str(model_dir), num_betas=num_betas, use_pca=False, flat_hand_mean=flat_hand_mean)
    if small:
        ref.vertex_joint_selector = NoExtraJoints()
    return ref


def run_reference(ref: smplx.SMPLX, pose: SMPLXPose, betas: torch.Tensor, expression=None):
    t = pose.num_frames
    expression = torch.zeros(t, ref.num_expression_coeffs) if expression is None else expression.expand(t, -1)
    with torch.no_grad():
        return ref(betas=betas.expand(t, -1), global_orient=pose.global_orient,
                   body_pose=pose.body_pose.reshape(t, -1), jaw_pose=pose.jaw_pose,
                   leye_pose=pose.leye_pose, reye_pose=pose.reye_pose,
                   left_hand_pose=pose.left_hand_pose.reshape(t, -1),
                   right_hand_pose=pose.right_hand_pose.reshape(t, -1),
                   expression=expression, transl=pose.transl, return_full_pose=True)


def full_random_pose(t: int, seed: int) -> SMPLXPose:
    pose = random_pose(t, scale=0.6, seed=seed)
    g = torch.Generator().manual_seed(seed + 100)
    pose.jaw_pose, pose.leye_pose, pose.reye_pose = (0.3 * torch.randn(t, 3, generator=g) for _ in range(3))
    return pose


def test_assets(body):
    assert body.name == "smplx" and body.joint_names == list(SMPLX_JOINT_NAMES)
    assert body.parents.tolist() == [-1, *SMPLX_PARENTS[1:]]
    assert body.shape_dim == 10 and body.num_expression == 10
    assert body.num_vertices == 192 and body.uvs.shape == (12 * 17, 2) and body.face_uvs.shape == body.faces.shape
    assert body.posedirs.shape == (486, 192 * 3)
    torch.testing.assert_close(body.skin_weights.sum(1), torch.ones(body.num_vertices))


@pytest.mark.parametrize("flat_hand_mean", [True, False])
def test_forward_matches_smplx(model_dir, flat_hand_mean):
    body = load_body_model("smplx", model_path=model_dir, flat_hand_mean=flat_hand_mean)
    ref = reference(model_dir, flat_hand_mean)
    for seed in range(3):
        pose = full_random_pose(4, seed)
        betas = torch.randn(4, 10, generator=torch.Generator().manual_seed(seed)) * 2
        out, expected = body(pose, betas), run_reference(ref, pose, betas)
        torch.testing.assert_close(out.vertices, expected.vertices, atol=ATOL, rtol=0)
        torch.testing.assert_close(out.joints, expected.joints[:, :55], atol=ATOL, rtol=0)
        torch.testing.assert_close(out.rest_vertices, expected.v_shaped, atol=ATOL, rtol=0)


def test_one_shape_many_frames_matches_smplx(body, model_dir):
    pose, betas = full_random_pose(5, 7), torch.randn(1, 10)
    out, expected = body(pose, betas), run_reference(reference(model_dir), pose, betas)
    torch.testing.assert_close(out.vertices, expected.vertices, atol=ATOL, rtol=0)
    torch.testing.assert_close(out.joints, expected.joints[:, :55], atol=ATOL, rtol=0)


def test_full_size_model_matches_unmodified_smplx(tmp_path):
    """A model with the real vertex count (so smplx's own keypoint selection runs) and the v1.0
    shape space of 10 shape + 10 expression components."""
    write_smplx_model(tmp_path, rings=105, columns=100, num_shape=20, seed=3)
    body = load_body_model("smplx", model_path=tmp_path)
    ref = reference(tmp_path, small=False)
    pose, betas = full_random_pose(2, 11), torch.randn(2, 10)
    out, expected = body(pose, betas), run_reference(ref, pose, betas)
    assert out.vertices.shape == (2, 10500, 3)
    torch.testing.assert_close(out.vertices, expected.vertices, atol=ATOL, rtol=0)
    torch.testing.assert_close(out.joints, expected.joints[:, :55], atol=ATOL, rtol=0)


def test_expression_blend_shapes(body, model_dir):
    pose = SMPLXPose.zeros(2)
    pose.transl = torch.randn(2, 3)
    pose.expression = torch.randn(10)
    betas = torch.randn(2, 10)
    out, expected = body(pose, betas), run_reference(reference(model_dir), pose, betas, pose.expression[None])
    torch.testing.assert_close(out.vertices, expected.vertices, atol=ATOL, rtol=0)
    rest, _ = body.rest(betas)
    offsets = torch.einsum("l,mkl->mk", pose.expression, body.exprdirs)
    torch.testing.assert_close(out.vertices, rest + offsets + pose.transl[:, None], atol=ATOL, rtol=0)


def test_identity_pose_gives_the_rest_body(body):
    betas = torch.randn(3, 10)
    pose = SMPLXPose.zeros(3)
    pose.transl = torch.randn(3, 3)
    out = body(pose, betas)
    torch.testing.assert_close(out.vertices, out.rest_vertices + pose.transl[:, None], atol=1e-6, rtol=0)
    torch.testing.assert_close(out.joints, out.rest_joints + pose.transl[:, None], atol=1e-6, rtol=0)
    torch.testing.assert_close(out.transforms[..., :3, :3], torch.eye(3).expand(3, 55, 3, 3))


@pytest.mark.parametrize("flat_hand_mean", [True, False])
def test_canonical_pose_is_identity(model_dir, flat_hand_mean):
    body = load_body_model("smplx", model_path=model_dir, flat_hand_mean=flat_hand_mean)
    out = body(body.canonical_pose())
    torch.testing.assert_close(out.transforms[0], torch.eye(4).expand(55, 4, 4), atol=1e-6, rtol=0)
    torch.testing.assert_close(out.vertices[0], body.rest_vertices, atol=1e-6, rtol=0)
    if not flat_hand_mean:  # a zero pose holds the mean hand, so the fingers move
        assert (body(SMPLXPose.zeros(1)).vertices[0] - body.rest_vertices).abs().max() > 1e-3


def test_transforms_skin_the_joints(body):
    pose, betas = full_random_pose(3, 5), torch.randn(3, 10)
    out = body(pose, betas)
    rest = torch.cat([out.rest_joints, torch.ones(3, 55, 1)], -1)
    skinned = (out.transforms @ rest[..., None])[..., :3, 0]
    torch.testing.assert_close(skinned, out.joints, atol=1e-6, rtol=0)
    transforms, joints = body.pose_transforms(pose, out.rest_joints)  # what reposing Gaussians uses
    torch.testing.assert_close(transforms, out.transforms)
    torch.testing.assert_close(joints, out.joints)


def test_rest_is_smplx_shaped_template(body, model_dir):
    betas = torch.randn(2, 10)
    vertices, joints = body.rest(betas)
    ref = reference(model_dir)
    torch.testing.assert_close(vertices, ref.v_template + smplx.lbs.blend_shapes(betas, ref.shapedirs))
    torch.testing.assert_close(joints, smplx.lbs.vertices2joints(ref.J_regressor, vertices))
    torch.testing.assert_close(body.rest(None)[0][0], ref.v_template)
    with pytest.raises(ValueError, match=r"betas \[B, 10\]"):
        body.rest(torch.zeros(2, 16))


def test_betas_from_pose(body):
    pose = SMPLXPose.zeros(1, num_betas=16)
    pose.betas[:4] = torch.arange(4.0)
    assert body.betas_from_pose(pose).tolist() == [[0.0, 1.0, 2.0, 3.0] + [0.0] * 6]
    pose.betas[12] = 1.0
    with pytest.raises(ValueError, match="16 non-zero betas"):
        body.betas_from_pose(pose)


def test_more_betas_than_the_file_has(model_dir, tmp_path):
    body = load_body_model("smplx", model_path=model_dir, num_betas=300, num_expression=100)
    assert body.shape_dim == 300 and body.num_expression == 100
    with pytest.raises(ValueError, match="num_betas=301"):
        load_body_model("smplx", model_path=model_dir, num_betas=301)


def test_uvs_from_obj_and_from_npz_agree(tmp_path):
    arrays = random_smplx_arrays(seed=4)
    obj_only = write_smplx_model(tmp_path / "obj", arrays=arrays, uv_keys=False)
    keys_only = write_smplx_model(tmp_path / "keys", arrays=arrays, uv_obj=False)
    a, b = SMPLXBody(obj_only.parent), SMPLXBody(keys_only.parent)
    torch.testing.assert_close(a.uvs, b.uvs, atol=1e-6, rtol=0)
    assert torch.equal(a.face_uvs, b.face_uvs)
    assert torch.equal(a.face_uvs, torch.from_numpy(arrays["ft"].astype(np.int64)))
    vt, ft, faces = read_obj_uvs(obj_only.parent / "smplx_uv.obj")
    assert vt.shape == arrays["vt"].shape and np.array_equal(faces, arrays["f"])


def test_explicit_uv_path_and_model_file(tmp_path):
    arrays = random_smplx_arrays(seed=5)
    model = write_smplx_model(tmp_path / "model", gender="female", arrays=arrays, uv_obj=False, uv_keys=False)
    obj = write_obj(tmp_path / "elsewhere.obj", arrays)
    body = load_body_model("smplx", model_path=model, uv_path=obj)
    assert body.model_file == model and body.uvs.shape == arrays["vt"].shape


def test_pkl_is_loaded_by_the_smplx_package(tmp_path):
    arrays = random_smplx_arrays(seed=6)
    write_smplx_model(tmp_path / "npz", arrays=arrays)
    write_smplx_model(tmp_path / "pkl", arrays=arrays, fmt="pkl")
    a = load_body_model("smplx", model_path=tmp_path / "npz", flat_hand_mean=False)
    b = load_body_model("smplx", model_path=tmp_path / "pkl", flat_hand_mean=False)
    assert b.model_file.suffix == ".pkl"
    pose, betas = full_random_pose(2, 9), torch.randn(2, 10)
    pose.expression = torch.randn(10)
    torch.testing.assert_close(a(pose, betas).vertices, b(pose, betas).vertices)
    torch.testing.assert_close(a.uvs, b.uvs)


def test_gender_picks_the_file(tmp_path):
    write_smplx_model(tmp_path, gender="male", seed=8)
    assert load_body_model("smplx", model_path=tmp_path, gender="male").model_file.name == "SMPLX_MALE.npz"
    with pytest.raises(BodyModelFilesMissing, match="SMPLX_NEUTRAL.npz"):
        load_body_model("smplx", model_path=tmp_path)
    with pytest.raises(ValueError, match="unknown SMPL-X gender"):
        load_body_model("smplx", model_path=tmp_path, gender="other")


def _one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


def test_missing_files_name_path_env_and_source(tmp_path, monkeypatch):
    monkeypatch.setenv("SIGMAN_SMPLX_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(BodyModelFilesMissing) as err:
        load_body_model("smplx")
    message = _one_line(err)
    assert isinstance(err.value, FileNotFoundError)
    assert str(tmp_path / "nowhere" / "SMPLX_NEUTRAL.npz") in message
    assert "SIGMAN_SMPLX_DIR" in message and "https://smpl-x.is.tue.mpg.de/" in message
    write_smplx_model(tmp_path / "nowhere")
    assert load_body_model("smplx").num_joints == 55  # found through the environment variable


def test_missing_uv_layout(tmp_path):
    write_smplx_model(tmp_path, uv_obj=False, uv_keys=False)
    with pytest.raises(BodyModelFilesMissing) as err:
        load_body_model("smplx", model_path=tmp_path)
    message = _one_line(err)
    assert "smplx_uv.obj" in message and str(tmp_path) in message and "smplx_uv.zip" in message


def test_wrong_formats(tmp_path):
    good = random_smplx_arrays(seed=9)
    cases = {
        "text": lambda p: p.write_text("not a zip"),
        "missing_key": lambda p: np.savez(p, **{k: v for k, v in good.items() if k != "posedirs"}),
        "pickled": lambda p: np.savez(p, **{**good, "weights": np.array([{"a": 1}], dtype=object)}),
        "bad_shape": lambda p: np.savez(p, **{**good, "J_regressor": good["J_regressor"][:24]}),
        "bad_tree": lambda p: np.savez(p, **{**good, "kintree_table": good["kintree_table"][:, ::-1]}),
        "few_components": lambda p: np.savez(p, **{**good, "shapedirs": good["shapedirs"][..., :5]}),
    }
    for name, write in cases.items():
        folder = tmp_path / name
        folder.mkdir()
        write(folder / "SMPLX_NEUTRAL.npz")
        with pytest.raises(BodyModelFileError) as err:
            load_body_model("smplx", model_path=folder)
        assert "SMPLX_NEUTRAL.npz" in _one_line(err), name


def test_obj_whose_faces_differ(tmp_path):
    arrays = random_smplx_arrays(seed=10)
    write_smplx_model(tmp_path, arrays=arrays, uv_keys=False)
    write_obj(tmp_path / "smplx_uv.obj", {**arrays, "f": arrays["f"][:, ::-1]})
    with pytest.raises(BodyModelFileError, match="do not match"):
        load_body_model("smplx", model_path=tmp_path)


def test_obj_listing_faces_in_another_order(tmp_path):
    """Same triangles, shuffled and starting at other corners: each corner keeps its UV."""
    arrays = random_smplx_arrays(seed=11)
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(arrays["f"]))
    shift = rng.integers(0, 3, len(perm))[:, None]
    corners = (shift + np.arange(3)) % 3
    shuffled = {**arrays, "f": np.take_along_axis(arrays["f"][perm], corners, 1),
                "ft": np.take_along_axis(arrays["ft"][perm], corners, 1)}
    write_smplx_model(tmp_path, arrays=arrays, uv_keys=False, uv_obj=False)
    write_obj(tmp_path / "smplx_uv.obj", shuffled)
    body = load_body_model("smplx", model_path=tmp_path)
    assert torch.equal(body.face_uvs, torch.from_numpy(arrays["ft"].astype(np.int64)))


def test_blazepose_markers_on_a_coarse_smplx_head(body):
    """A head mesh with no vertex at eye height (the test model's 192 vertices) still gets all 33
    markers: the ears fall back to a head's width from the head joint (it raised IndexError before)."""
    from sigman.body.markers import body_markers
    from sigman.observation import BLAZEPOSE_LANDMARKS

    markers = body_markers(body)
    rest = markers.canonical(body.rest_vertices[None].float(), body.rest_joints[None].float())[0]
    assert rest.shape == (33, 3) and torch.isfinite(rest).all()
    left, right = (rest[BLAZEPOSE_LANDMARKS.index(n)] for n in ("left_ear", "right_ear"))
    head = body.rest_joints[body.joint_names.index("head")]
    assert float(left[0]) > float(head[0]) > float(right[0])  # the body's +X side is its left
