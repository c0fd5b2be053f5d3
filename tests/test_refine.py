"""Photo projection and refinement (sigman.photo_projection, sigman.refine) on a small known scene: a
body of surface Gaussians painted with a known pattern, photographed by one camera."""

from __future__ import annotations

import math

import pytest
import torch

from sigman.gaussians import surface_gaussians
from sigman.photo_projection import (
    PhotoProjectionConfig,
    match_unseen_colors,
    project_photo,
    uv_neighbour_pairs,
)
from sigman.pose import SMPLXPose
from sigman.refine import (RefineConfig, align_to_silhouette, posed_frame, refine_avatar, render_input_view,
                           silhouette_subset)
from sigman.render import Camera, look_at, intrinsics_from_fov, render

SIZE = 96


def _pattern(points):
    """A colour pattern of canonical positions (stripes and a gradient): ``[N, 3]``."""
    return torch.stack([0.5 + 0.4 * torch.sin(points[:, 1] * 25), 0.5 + 0.4 * torch.cos(points[:, 0] * 30),
                        (points[:, 1] + 1) / 2.5], dim=-1).clamp(0, 1)


@pytest.fixture(scope="module")
def scene(anny_body, uv64):
    body, template = anny_body, uv64
    rest_joints = body.rest_joints
    pose = SMPLXPose.zeros(1)
    pose.body_pose[0, 15, 2] = -0.6  # left shoulder down a little
    truth = surface_gaussians(template).with_(colors=_pattern(template.positions))
    posed = posed_frame(truth, body, rest_joints, pose)
    centre = 0.5 * (posed.means.min(0).values + posed.means.max(0).values)
    eye = centre + torch.tensor([0.0, 0.0, 2.6])
    camera = Camera(look_at(eye[None], centre), intrinsics_from_fov(0.8713, SIZE, SIZE), SIZE, SIZE)
    out = render(posed, camera, background=(1.0, 1.0, 1.0))
    photo, mask = out.rgb[0], (out.alpha[0, ..., 0] > 0.5).float()
    vertices = body(pose).vertices[0]
    model = truth.with_(colors=torch.full_like(truth.colors, 0.5))  # a grey "model prediction"
    return dict(body=body, template=template, rest_joints=rest_joints, pose=pose, truth=truth, camera=camera,
                photo=photo, mask=mask, vertices=vertices, model=model, posed=posed)


def test_projection_gives_seen_texels_the_photo_and_keeps_the_back(scene):
    posed_model = posed_frame(scene["model"], scene["body"], scene["rest_joints"], scene["pose"])
    proj = project_photo(scene["template"], scene["vertices"], posed_model, scene["photo"], scene["mask"],
                         scene["camera"])
    truth = scene["truth"].colors
    seen = proj.weight > 0.99
    assert 0.2 * len(truth) < int(seen.sum()) < 0.6 * len(truth)  # about the front half
    err = (proj.colors[seen] - truth[seen]).abs().mean()
    assert err < 0.08, err  # the photo's colours (blurred a little by the render), not the grey model's
    assert (scene["model"].colors[seen] - truth[seen]).abs().mean() > 3 * err
    # texels facing away from the camera (the back) are never seen and keep the model's colour
    facing_away = proj.cos < -0.3
    assert int(facing_away.sum()) > 0.2 * len(truth)
    assert float(proj.weight[facing_away].max()) == 0.0
    assert torch.equal(proj.colors[facing_away], scene["model"].colors[facing_away])


def test_unseen_colours_shift_by_the_seen_side_mismatch():
    g = torch.Generator().manual_seed(0)
    points = torch.rand(2000, 3, generator=g)
    model = torch.full((2000, 3), 0.4)
    colors = model.clone()
    seen = points[:, 2] > 0.5
    colors[seen] += torch.tensor([0.2, -0.1, 0.0])  # the photo is redder, less green than the model
    weight = seen.float()
    out = match_unseen_colors(colors, model, weight, points, PhotoProjectionConfig(match_radius=0.1, garment_match=False))
    assert torch.equal(out[seen], colors[seen])
    near = (~seen) & (points[:, 2] > 0.45)
    far = (~seen) & (points[:, 2] < 0.05)
    shift_near = (out[near] - model[near]).mean(0)
    shift_far = (out[far] - model[far]).mean(0)
    assert shift_near[0] > 0.12 and shift_near[1] < -0.06  # mostly the seen side's mismatch
    assert shift_far.abs().max() < 0.5 * shift_near.abs().max()  # fading away from the seam


def test_uv_neighbour_pairs_are_grid_neighbours(uv64):
    pairs = uv_neighbour_pairs(uv64)
    r = uv64.resolution
    a, b = uv64.texel_index[pairs[:, 0]], uv64.texel_index[pairs[:, 1]]
    step = b - a
    assert bool(((step == 1) & (a % r != r - 1) | (step == r)).all())
    assert pairs.shape[0] > uv64.num_points  # most texels have a right and a down neighbour


def test_refinement_fits_the_photo_and_recovers_a_perturbed_camera(scene):
    # a camera 1.5 degrees and 2 cm off, as an imperfect fit
    cam = scene["camera"]
    delta = torch.eye(4)
    c, s = math.cos(math.radians(1.5)), math.sin(math.radians(1.5))
    delta[:3, :3] = torch.tensor([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    delta[:3, 3] = torch.tensor([0.02, 0.0, 0.0])
    off = Camera(delta @ cam.viewmats, cam.Ks, cam.width, cam.height)
    config = RefineConfig(steps=6, align_steps=5, render_size=64, align_size=64, lr_color=0.05, optimize_pose=False)
    seen_fraction = []
    result = refine_avatar(scene["model"], scene["body"], scene["template"], scene["rest_joints"], None,
                           scene["pose"], off, scene["photo"], scene["mask"], config,
                           progress=lambda f, stage: seen_fraction.append(f))
    assert seen_fraction[-1] == 1.0 and len(result.losses) == 6
    assert result.losses[-1]["total"] < 0.97 * result.losses[0]["total"]
    # the refined avatar, in the true view, is closer to the photo than the projection alone
    def error(canonical, camera):
        image = render_input_view(canonical, scene["body"], scene["rest_joints"], scene["pose"], camera)
        return (torch.from_numpy(image).float() / 255 - scene["photo"]).abs().mean()

    assert error(result.canonical, result.camera) < error(result.projected, off)
    # the refinement leaves what the camera cannot see as the projection left it
    back = result.projection.cos < -0.3
    assert int(back.sum()) > 0 and torch.equal(result.canonical.colors[back], result.projected.colors[back])
    # the refined camera moved back towards the true one
    moved = (result.camera.viewmats[0, :3, 3] - off.viewmats[0, :3, 3]).norm()
    before = (off.viewmats[0, :3, 3] - cam.viewmats[0, :3, 3]).norm()
    after = (result.camera.viewmats[0, :3, 3] - cam.viewmats[0, :3, 3]).norm()
    assert moved > 0 and after < before


def _pixels(g, camera):
    vm, K = camera.viewmats[0], camera.Ks[0]
    local = g.means @ vm[:3, :3].T + vm[:3, 3]
    return torch.stack([K[0, 0] * local[:, 0] / local[:, 2] + K[0, 2], K[1, 1] * local[:, 1] / local[:, 2] + K[1, 2]], -1)


def test_silhouette_subset_keeps_the_silhouette(scene):
    full = render(scene["posed"], scene["camera"], background=None).alpha[0, ..., 0]
    sub, keep = silhouette_subset(scene["posed"], 4)
    assert keep.numel() == scene["posed"].num_gaussians // 4 and torch.equal(sub.means, scene["posed"].means[keep])
    alpha = render(sub, scene["camera"], background=None).alpha[0, ..., 0]
    assert float((alpha - full).abs().mean()) < 0.03 and float((alpha - full).abs().mean()) > 0
    assert silhouette_subset(scene["posed"], 1)[1] is None


def test_alignment_corrects_a_bent_arm(scene):
    """The fit's left shoulder 0.3 rad off: the silhouette alignment (pose only) moves the arm back to the photo's."""
    import dataclasses

    off = dataclasses.replace(scene["pose"], body_pose=scene["pose"].body_pose.clone())
    off.body_pose[0, 15, 2] += 0.3
    truth = _pixels(scene["posed"], scene["camera"])

    def per_gaussian(pose):
        return (_pixels(posed_frame(scene["model"], scene["body"], scene["rest_joints"], pose), scene["camera"])
                - truth).norm(dim=-1)

    arm = per_gaussian(off) > 1.0  # the Gaussians the wrong shoulder moved by over a pixel

    def error(pose):
        return float(per_gaussian(pose)[arm].mean())

    before = error(off)
    assert int(arm.sum()) > 50 and before > 2.0
    config = RefineConfig(steps=0, align_steps=10, align_size=64, render_size=96, align_subsample=4, lr_align_pose=0.04,
                          align_fine_fraction=0.3, optimize_camera=False).resolved("cpu", (SIZE, SIZE))
    pose, _ = align_to_silhouette(scene["model"], scene["body"], scene["rest_joints"], off, scene["camera"],
                                  scene["mask"], config)
    assert error(pose) < 0.3 * before  # 4.4 px before


def test_refine_config_overrides_parse_literals_and_name_bad_pairs():
    from sigman.refine import refine_config_overrides

    assert refine_config_overrides(["steps=80", "lr_offset=1e-3", "backend='torch'"]) == {
        "steps": 80, "lr_offset": 1e-3, "backend": "torch"}
    assert RefineConfig(**refine_config_overrides(["align_steps=3"])).align_steps == 3
    for bad in (["stepz=3"], ["steps"], ["steps=fast"]):
        with pytest.raises(ValueError, match=bad[0].split("=")[0]):
            refine_config_overrides(bad)


def test_refinement_stops_at_its_time_limit(scene):
    config = RefineConfig(steps=5, align_steps=0, render_size=48, max_seconds=0.0)
    result = refine_avatar(scene["model"], scene["body"], scene["template"], scene["rest_joints"], None, scene["pose"],
                           scene["camera"], scene["photo"], scene["mask"], config)
    assert result.timings["refine_steps_run"] == 0 and result.losses == []
    assert torch.allclose(result.canonical.colors, result.projected.colors)
    assert RefineConfig().resolved("cpu", (512, 512)).max_seconds == 55.0
    assert math.isinf(RefineConfig().resolved("cuda", (512, 512)).max_seconds)
    unlimited = RefineConfig(steps=2, align_steps=0, render_size=48, max_seconds=float("inf"))
    result = refine_avatar(scene["model"], scene["body"], scene["template"], scene["rest_joints"], None, scene["pose"],
                           scene["camera"], scene["photo"], scene["mask"], unlimited)
    assert result.timings["refine_steps_run"] == 2 and len(result.losses) == 2
