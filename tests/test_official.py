"""The official path: the release's template, frames, scales, views, preprocessing, guidance and
pose up-axis handling (CPU, on stand-in files: the licensed ones are never in the repository)."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import roma
import torch
from PIL import Image

from sigman.official.frames import fold_rotation, release_covariance, rotvec_to_matrix, tbn_frames
from sigman.official.knn_scale import knn_mean_sq_dist, knn_mean_sq_dist_bruteforce, release_spacing
from sigman.official.preprocess import release_preprocess
from sigman.official.template import (TemplateError, TemplateFilesMissing, build_release_template,
                                      check_against_checkpoint, find_template_files, read_flame_masks, read_obj,
                                      template_arrays)
from sigman.official.views import RELEASE_INFERENCE_VIEWS, release_cameras, release_view_angles
from sigman.paths import poses_dir
from sigman.pose import (PoseFileError, detect_up_axis, load_pose, load_pose_file, save_pose, torso_up,
                         z_up_to_y_up)
from sigman.presets import POSE_PRESETS, resolve_pose_file
from tests.release_template_fixture import MOUTH_FACES, write_release_template_files


def covariance_from_quats(quats: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    rot = roma.unitquat_to_rotmat(torch.cat([quats[..., 1:], quats[..., :1]], dim=-1))
    return rot @ torch.diag_embed(scales.square()) @ rot.transpose(-1, -2)


# --- frames -------------------------------------------------------------------------------------

def test_tbn_frame_of_a_hand_made_triangle():
    corners = torch.tensor([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    uvs = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # u along x, v along y
    frame = tbn_frames(corners, uvs)
    torch.testing.assert_close(frame[:, 0], torch.tensor([1.0, 0.0, 0.0]))  # tangent along u
    torch.testing.assert_close(frame[:, 2], torch.tensor([0.0, 0.0, 1.0]))  # e1 x e2
    torch.testing.assert_close(frame[:, 1], torch.tensor([0.0, -1.0, 0.0]))  # t x n
    assert math.isclose(float(torch.linalg.det(frame)), -1.0, abs_tol=1e-6)
    # a UV layout turned by 90 degrees: u now runs along the triangle's y edge
    turned = tbn_frames(corners, torch.tensor([[0.0, 0.0], [0.0, -1.0], [1.0, 0.0]]))
    torch.testing.assert_close(turned[:, 0], torch.tensor([0.0, 1.0, 0.0]))


def test_tbn_frames_are_reflections_with_the_tangent_along_u():
    g = torch.Generator().manual_seed(0)
    corners = torch.randn(200, 3, 3, generator=g)
    uvs = torch.rand(200, 3, 2, generator=g)
    frames = tbn_frames(corners, uvs)
    torch.testing.assert_close(torch.linalg.det(frames), -torch.ones(200), atol=1e-4, rtol=0)
    torch.testing.assert_close(frames.transpose(-1, -2) @ frames, torch.eye(3).expand(200, 3, 3), atol=1e-4, rtol=0)
    # moving along the tangent inside the triangle increases u and keeps v: solve p = a e1 + b e2
    e = torch.stack([corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]], dim=-1)  # [N, 3, 2]
    ab = torch.linalg.lstsq(e, frames[:, :, 0:1]).solution[..., 0]  # [N, 2]
    duv = torch.stack([uvs[:, 1] - uvs[:, 0], uvs[:, 2] - uvs[:, 0]], dim=-1)  # [N, 2(uv), 2]
    step = (duv @ ab[..., None])[..., 0]  # (du, dv) along the tangent
    assert torch.all(step[:, 0] > 0)
    torch.testing.assert_close(step[:, 1], torch.zeros(200), atol=1e-4, rtol=0)


def test_folded_quaternions_give_the_release_covariances():
    g = torch.Generator().manual_seed(1)
    frames = tbn_frames(torch.randn(500, 3, 3, generator=g), torch.rand(500, 3, 2, generator=g))
    rotvec = (torch.rand(500, 3, generator=g) - 0.5) * math.pi  # the release's range
    scales = torch.rand(500, 3, generator=g) * 0.02 + 1e-3
    want = release_covariance(frames, rotvec, scales)  # R S^2 R^T with the reflection in R
    got = covariance_from_quats(fold_rotation(frames, rotvec), scales)
    torch.testing.assert_close(got, want, atol=1e-9, rtol=1e-4)
    # without folding (the reflection dropped) the covariances differ: the fold is needed
    naive = roma.rotmat_to_unitquat(frames * torch.tensor([1.0, -1.0, 1.0]) @ rotvec_to_matrix(rotvec))
    naive = torch.cat([naive[..., 3:], naive[..., :3]], dim=-1)
    assert (covariance_from_quats(naive, scales) - want).abs().max() > 1e-5


def test_rodrigues_matches_roma():
    rotvec = (torch.rand(100, 3, generator=torch.Generator().manual_seed(2)) - 0.5) * 3
    torch.testing.assert_close(rotvec_to_matrix(rotvec), roma.rotvec_to_rotmat(rotvec), atol=1e-6, rtol=0)


# --- scales -------------------------------------------------------------------------------------

def test_three_nn_spacing_matches_brute_force():
    pts = torch.randn(3000, 3, generator=torch.Generator().manual_seed(3)) * 0.3
    torch.testing.assert_close(knn_mean_sq_dist(pts), knn_mean_sq_dist_bruteforce(pts, chunk=700), rtol=1e-5, atol=1e-10)
    # by hand on a line: neighbours of 0 are 1, 2, 3 -> (1 + 4 + 9) / 3
    line = torch.tensor([[float(i), 0.0, 0.0] for i in range(6)])
    assert math.isclose(float(knn_mean_sq_dist(line)[0]), 14 / 3, rel_tol=1e-6)
    # coincident points are floored at the release's 1e-7
    spacing = release_spacing(torch.zeros(5, 3))
    torch.testing.assert_close(spacing, torch.full((5,), math.sqrt(1e-7)))


# --- the template -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def template_dir(tmp_path_factory) -> Path:
    return write_release_template_files(tmp_path_factory.mktemp("release_template"))


def test_template_is_deterministic_and_cached(template_dir, tmp_path):
    paths = find_template_files(template_dir)
    a, b = template_arrays(paths, MOUTH_FACES), template_arrays(paths, MOUTH_FACES)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    built = build_release_template(template_dir, cache_folder=tmp_path)
    cached = build_release_template(template_dir, cache_folder=tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == 1
    for field in ("uv", "positions", "frames", "corner_pairs", "face_mask"):
        torch.testing.assert_close(getattr(built, field), getattr(cached, field), rtol=0, atol=0)
        np.testing.assert_array_equal(getattr(built, field).numpy(), a[field])


def test_template_structure(template_dir):
    t = build_release_template(template_dir, cache=False)
    smplx = read_obj(template_dir / "smplx_uv.obj")
    faces = len(smplx.f) + MOUTH_FACES
    kept = faces - (t.num_points - faces) // 3  # N = 4 S + (F - S)
    assert (t.num_points - faces) % 3 == 0 and 0 < kept < faces
    torch.testing.assert_close(torch.linalg.det(t.frames), -torch.ones(t.num_points), atol=1e-4, rtol=0)
    # the 4 children of a subdivided face tile it: their UV centroids average to the parent's
    pairs = t.corner_pairs
    parents = pairs[0::4][: (t.num_points - kept) // 4]
    children_mean = t.uv[: 4 * len(parents)].reshape(-1, 4, 2).mean(dim=1)
    child_corners = t.mix(torch.from_numpy(smplx.v).float()[None])[0][: 4 * len(parents)].reshape(-1, 4, 3)
    torch.testing.assert_close(child_corners[:, 3], child_corners.mean(dim=1), atol=1e-5, rtol=0)
    assert children_mean.shape == (len(parents), 2)
    # kept faces are the original triangles: each corner is one vertex
    tail = pairs[t.num_points - kept:]
    assert torch.equal(tail[..., 0], tail[..., 1])
    assert t.face_mask.any() and t.hands_mask.any() and t.outside_mask.any()
    assert not t.hands_mask[: t.num_points - kept].any()  # the release never marks subdivided faces as hands


def test_template_checked_against_the_checkpoint_buffer(template_dir):
    t = build_release_template(template_dir, cache=False)
    assert check_against_checkpoint(t, t.uvcoord[None]) == 0.0
    with pytest.raises(TemplateError, match=f"{t.num_points} points but the checkpoint's smplx_uvcoord has 50200"):
        check_against_checkpoint(t, torch.zeros(1, 50200, 2))
    moved = t.uvcoord.clone()
    moved[7, 0] += 1e-3
    with pytest.raises(TemplateError, match="UVs up to 1.00e-03 apart"):
        check_against_checkpoint(t, moved)


def test_missing_template_files_are_named(template_dir, tmp_path):
    for name in ("SMPLX_NEUTRAL.npz", "smplx_uv.obj", "head_template.obj"):
        (tmp_path / name).write_bytes((template_dir / name).read_bytes())
    with pytest.raises(TemplateFilesMissing) as err:
        find_template_files(tmp_path)
    message = str(err.value)
    for missing in ("SMPLX_MALE.npz", "head_template_mesh_mouth.obj", "FLAME_masks.pkl", "SMPL-X__FLAME_vertex_ids.npy",
                    "smplx_vert_segmentation.json"):
        assert missing in message
    assert "SMPLX_NEUTRAL.npz" not in message and "docs/OFFICIAL.md" in message


def test_flame_masks_are_read_without_running_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "FLAME_masks.pkl").write_bytes(pickle.dumps({"face": Evil()}, protocol=2))
    with pytest.raises(TemplateError, match="refusing to load .*print"):
        read_flame_masks(tmp_path / "FLAME_masks.pkl")


# --- the release head inside the pipeline -------------------------------------------------------

@pytest.fixture(scope="module")
def release_pipe(template_dir):
    from sigman.body.smplx_body import SMPLXBody
    from sigman.official.template import build_release_template
    from sigman.pipeline import PipelineConfig, SigmanPipeline
    from tiny_configs import TINY_DIT, TINY_VAE

    n = build_release_template(template_dir).num_points
    config = PipelineConfig(body_model="smplx", image_encoder="tiny", steps=2, template="release",
                            vae_overrides=dict(TINY_VAE, release_template_points=n), dit_overrides=dict(TINY_DIT))
    return SigmanPipeline.from_config(config, body=SMPLXBody(model_path=template_dir))


def test_release_pipeline_end_to_end(release_pipe):
    pipe = release_pipe
    n = pipe.release.num_points
    torch.testing.assert_close(pipe.vae.smplx_uvcoord[0], pipe.release.template.uvcoord)  # fresh VAE: filled
    img = np.full((96, 64, 4), 255, np.uint8)  # a block figure: its alpha is the person mask
    img[..., 3] = 0
    img[10:90, 20:44] = (180, 40, 40, 255)
    out = pipe(img, "waving", num_views=2, render_size=32)
    assert out.canonical.num_gaussians == n and out.posed.means.shape == (1, n, 3)
    assert torch.isfinite(out.posed.means).all() and torch.all(out.posed.scales > 0)
    out_r = pipe(img, "waving", render_size=32, views="release")
    assert out_r.renders.shape == (len(RELEASE_INFERENCE_VIEWS), 32, 32, 3)


def reference_release_weights(body, cano_pose, points, template_weights, mask):
    """fast-SNARF's weights written out: a 16 x 64 x 64 grid over the canonical body's box (x 1.2,
    z squeezed 4x), inverse-distance weights of the 10 nearest vertices, trilinear sampling."""
    with torch.no_grad():
        verts = body(cano_pose).vertices[0]
    lo, hi = verts.min(0).values, verts.max(0).values
    centre, half = (lo + hi) / 2, float((hi - lo).max()) / 2 * 1.2
    zs, ys, xs = torch.linspace(-1, 1, 16), torch.linspace(-1, 1, 64), torch.linspace(-1, 1, 64)
    grid = torch.stack([xs[None, None, :].expand(16, 64, 64), ys[None, :, None].expand(16, 64, 64),
                        zs[:, None, None].expand(16, 64, 64)], -1).reshape(-1, 3)
    world = grid * torch.tensor([1.0, 1.0, 0.25]) * half + centre
    d, i = torch.cdist(world.double(), verts.double()).topk(10, largest=False)
    inv = 1 / d.clamp(3e-5, 0.1)
    values = ((inv / inv.sum(1, keepdim=True))[..., None] * body.skin_weights.double()[i]).sum(1).float()
    volume = values.T.reshape(1, -1, 16, 64, 64)
    coords = (points - centre) / half * torch.tensor([1.0, 1.0, 4.0])
    sampled = torch.nn.functional.grid_sample(volume, coords[None, :, None, None], align_corners=True,
                                              padding_mode="border")[0, :, :, 0, 0].T
    return torch.where(mask[:, None], template_weights, sampled)


def test_release_posing_follows_the_release_formula(release_pipe):
    """Posed centres: blend(A_pose) [blend(A_cano^-1) (template + offset) - cano offsets + shape and
    pose offsets], written out here with explicit per-point blend shapes."""
    from sigman.official.gaussians import release_root
    from sigman.official.template import canonical_pose
    from sigman.presets import resolve_pose

    pipe, head = release_pipe, release_pipe.release
    latents = torch.randn(1, *pipe.vae.config.latent_shape, generator=torch.Generator().manual_seed(4))
    betas = torch.randn(1, 10, generator=torch.Generator().manual_seed(5)) * 0.5
    pose = release_root(resolve_pose("running"))
    decoded = head.decode(pipe.vae, latents)
    canonical, rest_joints = head.canonical(decoded, betas)
    posed = head.pose(canonical, pose, rest_joints)

    male, body, t = head.template_body, head.body, head.template
    maps = pipe.vae.decode(latents)
    samples = pipe.vae.sample_points(maps, t.uv)[0]  # [N, 13]
    offset = samples[:, 1:4]
    cano_pose = canonical_pose(body.model_file)
    w = reference_release_weights(body, cano_pose, t.positions + offset, t.mix(male.skin_weights[None])[0], t.deformer_mask)

    def blend(transforms):  # [J, 4, 4] -> [N, 4, 4]
        return torch.einsum("nj,jab->nab", w, transforms)

    def feature(p):
        local = p.local_rotmats()[0]
        return (local[1:] - torch.eye(3)).reshape(-1)

    def mixed(vertex_offsets):  # [V, 3] -> [N, 3]
        return t.mix(vertex_offsets[None])[0]

    a_cano = body.pose_transforms(cano_pose)[0][0]
    a_pose = body.pose_transforms(pose, body.rest(betas)[1][0])[0][0]
    x = torch.cat([t.positions + offset, torch.ones(len(offset), 1)], -1)
    x_rest = (blend(torch.linalg.inv(a_cano)) @ x[..., None])[:, :3, 0] - mixed((feature(cano_pose) @ male.posedirs).reshape(-1, 3))
    shape_off = mixed(torch.einsum("l,mkl->mk", betas[0], male.shapedirs))
    pose_off = mixed((feature(pose) @ male.posedirs).reshape(-1, 3))
    x_posed = (blend(a_pose) @ torch.cat([x_rest + shape_off + pose_off, torch.ones(len(x), 1)], -1)[..., None])[:, :3, 0]
    torch.testing.assert_close(canonical.skin_weights, w, atol=1e-5, rtol=0)
    torch.testing.assert_close(posed.means[0], x_posed, atol=2e-5, rtol=0)
    # scales: (scale + 1) * sqrt(mean squared 3-NN distance of the posed centres)
    factor = 2.0 * samples[:, 7:10]
    want = factor * knn_mean_sq_dist_bruteforce(x_posed).clamp_min(1e-7).sqrt()[:, None]
    torch.testing.assert_close(posed.scales[0], want, atol=1e-6, rtol=1e-4)


# --- views, preprocessing, guidance -------------------------------------------------------------

def test_release_views():
    assert release_view_angles(0) == (-30.0, 0.0) and release_view_angles(37) == (0.0, 84.0)
    assert release_view_angles(85) == (45.0, -60.0) and release_view_angles(45) == (0.0, 180.0)
    cams = release_cameras()
    assert len(cams) == 20 and cams.width == 512
    torch.testing.assert_close(cams.positions.norm(dim=-1), torch.full((20,), 2.5), atol=1e-5, rtol=0)
    torch.testing.assert_close(cams[0].positions[0], torch.tensor([0.0, 0.0, 2.5]), atol=1e-6, rtol=0)  # view 30
    assert cams.Ks[0, 0, 0] == 550.0 and cams.Ks[0, 0, 2] == 256.0
    # every camera looks at the origin
    torch.testing.assert_close(cams.project(torch.zeros(1, 3))[:, 0], torch.full((20, 2), 256.0), atol=1e-3, rtol=0)


def test_release_preprocessing_reproduces_the_script(tmp_path):
    rng = np.random.default_rng(6)
    photo = rng.integers(0, 256, (300, 200, 4), dtype=np.uint8)  # non-square, with alpha
    Image.fromarray(photo, "RGBA").save(tmp_path / "p.png")
    got = release_preprocess(tmp_path / "p.png")
    script = Image.open(tmp_path / "p.png").convert("RGB").resize((512, 512), Image.LANCZOS)
    want = torch.from_numpy(np.array(script).astype(np.float32) / 255).permute(2, 0, 1)[None]
    assert torch.equal(got.image, want) and got.bbox == (0, 0, 200, 300)


def test_both_preprocessing_modes_through_the_pipeline(release_pipe):
    from sigman.preprocess import preprocess_person

    img = np.full((120, 80, 4), 255, np.uint8)  # a block figure whose alpha is its person mask
    img[..., 3] = 0
    img[20:100, 30:50] = (30, 90, 200, 255)
    pipe = release_pipe
    crop, _ = pipe.encode_image(img)
    torch.testing.assert_close(crop, preprocess_person(img, size=pipe.encoder_input_size()).image)
    pipe.config.preprocess = "release"
    try:
        whole, _ = pipe.encode_image(img)
    finally:
        pipe.config.preprocess = "crop"
    assert whole.shape == (1, 3, 512, 512)
    torch.testing.assert_close(whole, release_preprocess(img).image)


def test_official_folders_use_constant_guidance(tmp_path):
    from sigman.pipeline import load_pipeline_config

    (tmp_path / "autoencoder.safetensors").write_bytes(b"")
    (tmp_path / "transformer.safetensors").write_bytes(b"")
    _, config = load_pipeline_config(tmp_path)
    assert config.guidance_schedule == "constant" and config.guidance == 3.5
    assert config.template == "release" and config.preprocess == "crop" and config.vae == "official"


# --- pose files in another up-axis ----------------------------------------------------------------

def _z_up_version(pose):
    """A Y-up pose as a Z-up tool would have written it (the inverse of z_up_to_y_up)."""
    fix = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    out = z_up_to_y_up(pose)
    out.global_orient = roma.rotmat_to_rotvec(fix @ roma.rotvec_to_rotmat(pose.global_orient))
    out.transl = pose.transl @ fix.T
    return out


def _save_plain(path, pose):  # a file without sigman's up_axis key, as other tools write them
    np.savez(path, **{k: v for k, v in pose.to_npz_dict().items()})


def test_z_up_file_is_detected_and_turned_upright(tmp_path):
    upright = POSE_PRESETS["walking"]()
    upright.transl[0] = torch.tensor([0.1, 0.9, -0.2])
    _save_plain(tmp_path / "z.npz", _z_up_version(upright))
    loaded = load_pose_file(tmp_path / "z.npz")
    assert loaded.up_axis == "z" and loaded.converted and loaded.reason == "detected"
    assert "Z-up" in loaded.note and "up_axis='y'" in loaded.note
    torch.testing.assert_close(roma.rotvec_to_rotmat(loaded.pose.global_orient), roma.rotvec_to_rotmat(upright.global_orient), atol=1e-5, rtol=0)
    torch.testing.assert_close(loaded.pose.transl, upright.transl, atol=1e-6, rtol=0)
    assert float(torso_up(loaded.pose)[0, 1]) > 0.95
    kept = load_pose_file(tmp_path / "z.npz", up_axis="y")  # the override keeps the file as it is
    assert not kept.converted and kept.note == "" and detect_up_axis(kept.pose)[0] == "z"


def test_y_up_files_are_left_alone(tmp_path):
    for path in sorted(poses_dir().glob("*.npz")):  # every shipped preset and motion
        loaded = load_pose_file(path)
        assert loaded.up_axis == "y" and not loaded.converted, path.name
    pose = POSE_PRESETS["sitting"]()
    _save_plain(tmp_path / "y.npz", pose)
    loaded = load_pose_file(tmp_path / "y.npz")
    assert loaded.reason == "detected" and loaded.up_axis == "y"
    torch.testing.assert_close(loaded.pose.full_pose(), pose.full_pose(), rtol=0, atol=0)
    assert resolve_pose_file("waving").note == "" and resolve_pose_file(tmp_path / "y.npz").up_axis == "y"


def test_amass_convention_declared_axis_and_override(tmp_path):
    side = np.zeros((3, 165), np.float32)
    side[:, 2] = math.pi / 2  # lying on its side (about +Z): the torso points along -X, undecidable
    np.savez(tmp_path / "amass.npz", poses=side, trans=np.zeros((3, 3)), mocap_frame_rate=np.array(30.0))
    assert load_pose_file(tmp_path / "amass.npz").reason == "convention"
    assert load_pose_file(tmp_path / "amass.npz").up_axis == "z"
    save_pose(tmp_path / "declared.npz", _z_up_version(POSE_PRESETS["a_pose"]()))  # sigman writes up_axis = "y"
    declared = load_pose_file(tmp_path / "declared.npz")
    assert declared.reason == "declared" and not declared.converted
    forced = load_pose_file(tmp_path / "declared.npz", up_axis="z")
    assert forced.converted and forced.reason == "override"
    np.savez(tmp_path / "bad.npz", global_orient=np.zeros(3), body_pose=np.zeros(63), up_axis=np.asarray("x"))
    with pytest.raises(PoseFileError, match="'up_axis' is 'x'"):
        load_pose(tmp_path / "bad.npz")
    with pytest.raises(ValueError, match="up_axis must be one of"):
        load_pose(tmp_path / "declared.npz", up_axis="up")


# --- the photo refinement on the release's template ---------------------------------------------

def test_release_poser_poses_as_the_release_and_takes_subsets(release_pipe):
    from sigman.official.surface import release_poser, release_surface
    from sigman.presets import resolve_pose

    pipe, head = release_pipe, release_pipe.release
    latents = torch.randn(1, *pipe.vae.config.latent_shape, generator=torch.Generator().manual_seed(7))
    canonical, rest_joints = head.canonical(head.decode(pipe.vae, latents))
    pose = resolve_pose("waving").frame(0)
    poser = release_poser(head, canonical, rest_joints, pose)
    want = head.pose(canonical, pose, rest_joints)
    got = poser(canonical, pose, None)
    torch.testing.assert_close(got.means, want.means[0])
    torch.testing.assert_close(got.quats, want.quats[0])
    torch.testing.assert_close(got.scales, want.scales[0])
    index = torch.arange(0, canonical.num_gaussians, 3)
    part = poser(canonical.select(index), pose, index)
    torch.testing.assert_close(part.means, got.means[index])
    torch.testing.assert_close(part.scales, got.scales[index])
    # differentiable in the pose (the refinement moves it)
    joints = torch.zeros(22, 3, requires_grad=True)
    moved = poser(canonical, dataclasses_replace_body(pose, joints), None)
    moved.means.sum().backward()
    assert joints.grad is not None and joints.grad.abs().sum() > 0
    surface = release_surface(head, canonical)
    n = canonical.num_gaussians
    assert surface.footprints.shape == (n,) and torch.all(surface.footprints > 0)
    pairs = surface.neighbour_pairs
    assert pairs.shape[1] == 2 and torch.all(pairs[:, 0] < pairs[:, 1]) and int(pairs.max()) < n
    normals = surface.point_normals(pipe.body(pose).vertices)
    torch.testing.assert_close(normals.norm(dim=-1), torch.ones(n))


def dataclasses_replace_body(pose, joints):
    import dataclasses

    return dataclasses.replace(pose, global_orient=pose.global_orient + joints[None, 0],
                               body_pose=pose.body_pose + joints[None, 1:])


def test_release_pipeline_refines_towards_the_photo(release_pipe):
    """The refinement on the release's template: a photo of the avatar in other colours, from a known
    camera; the refined avatar (posed as the release poses) is closer to the photo than the raw one."""
    from types import SimpleNamespace

    from sigman.refine import RefineConfig, render_input_view
    from sigman.render import fit_orbit_to_points, render

    pipe = release_pipe
    img = np.full((96, 64, 4), 255, np.uint8)
    img[..., 3] = 0
    img[10:90, 20:44] = (180, 40, 40, 255)
    out = pipe(img, "a_pose", num_views=1, render_size=32)
    canonical = out.canonical
    stripes = torch.stack([0.5 + 0.45 * torch.sin(canonical.means[:, 1] * 20),
                           0.5 + 0.45 * torch.cos(canonical.means[:, 0] * 25),
                           torch.full_like(canonical.means[:, 0], 0.3)], dim=-1)
    truth = canonical.with_(colors=stripes, opacities=torch.full_like(canonical.opacities, 0.95))
    posed = pipe.pose_gaussians(truth, out.rest_joints, out.pose)
    first = posed.with_(means=posed.means[0], quats=posed.quats[0], scales=posed.scales[0],
                        opacities=posed.opacities[0], colors=posed.colors[0])
    camera = fit_orbit_to_points(first.means, 1, width=64, height=64)
    shot = render(first, camera, background=(1.0, 1.0, 1.0))
    photo, mask = shot.rgb[0], shot.alpha[0, ..., 0]
    fit = SimpleNamespace(pose=out.pose, shape=None, camera=camera)
    config = RefineConfig(steps=8, align_steps=2, render_size=64, align_size=32, lr_color=0.05)
    refined = pipe.refine(out, photo, mask, fit, config, num_views=1, render_size=32)
    r = refined.refinement
    assert r is not None and r.poser is not None and refined.raw_canonical is out.canonical
    assert float(r.projection.weight.max()) > 0.5  # the camera saw part of the avatar

    def error(g, pose, cam):
        image = render_input_view(g, pipe.body, out.rest_joints, pose, cam, (1.0, 1.0, 1.0), poser=r.poser)
        return float((torch.from_numpy(image).float() / 255 - photo).abs().mean())

    raw = error(out.canonical, fit.pose, camera)
    assert error(r.projected, fit.pose, camera) < raw
    assert error(refined.canonical, r.pose, r.camera) < 0.8 * raw
    torch.testing.assert_close(refined.posed.means, pipe.pose_gaussians(refined.canonical, out.rest_joints, out.pose).means)
