"""The front-to-back mirror of seen photo colours (sigman.mirror_colors) on a body-like cylinder around one
vertical bone: the front (z > 0) is seen in vertical red and blue stripes with a small yellow badge, the back
is the model's grey."""

from __future__ import annotations

import math

import torch

from sigman.color import srgb_to_lab
from sigman.mirror_colors import coronal_mirror, mirror_seen_colors
from sigman.photo_projection import PhotoProjectionConfig

RED = torch.tensor([0.8, 0.1, 0.15])
BLUE = torch.tensor([0.1, 0.15, 0.7])
YELLOW = torch.tensor([0.95, 0.85, 0.1])
GREY = torch.tensor([0.5, 0.5, 0.5])
# two joints: a bone from (0, 0, 0) up to (0, 1, 0)
JOINTS = torch.tensor([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
PARENTS = torch.tensor([-1, 0])


def _scene():
    theta = torch.linspace(0, 2 * math.pi, 121)[:-1]
    y = torch.linspace(0.05, 0.95, 91)
    t, yy = torch.meshgrid(theta, y, indexing="ij")
    points = torch.stack([0.15 * torch.sin(t), yy, 0.15 * torch.cos(t)], dim=-1).reshape(-1, 3)
    stripe_red = torch.sin(points[:, 0] * 40) > 0  # stripes about 8 cm wide across x
    photo = torch.where(stripe_red[:, None], RED, BLUE)
    badge = (points[:, 0] - 0.05).abs().lt(0.02) & (points[:, 1] - 0.8).abs().lt(0.02)
    photo = torch.where(badge[:, None], YELLOW, photo)
    seen = points[:, 2] > 0.03
    colors = torch.where(seen[:, None], photo, GREY.expand_as(photo))
    weight = seen.float()
    return points, colors, weight, stripe_red, badge


def _delta_e(a, b):
    return (srgb_to_lab(a) - srgb_to_lab(b)).norm(dim=-1)


def test_coronal_mirror_flips_the_forward_offset_and_skips_forward_bones():
    points = torch.tensor([[0.05, 0.5, 0.1], [-0.02, 0.3, -0.07]])
    mirrored, valid = coronal_mirror(points, JOINTS, PARENTS)
    assert torch.allclose(mirrored, torch.tensor([[0.05, 0.5, -0.1], [-0.02, 0.3, 0.07]]))
    assert valid.all()
    foot = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.2]])  # a bone pointing forward
    _, valid = coronal_mirror(torch.tensor([[0.0, 0.05, 0.1]]), foot, PARENTS)
    assert not valid.any()


def test_the_back_takes_the_front_stripes_but_not_the_badge():
    points, colors, weight, stripe_red, badge = _scene()
    out, out_weight = mirror_seen_colors(colors, weight, points, JOINTS, PARENTS, None, PhotoProjectionConfig())
    seen = weight > 0.5
    assert torch.equal(out[seen], colors[seen])  # the photo's side is kept
    back = (points[:, 2] < -0.05)
    mirrored_stripe = torch.sin(points[:, 0] * 40) > 0  # the mirror keeps x: the same stripe behind
    inner = back & (torch.sin(points[:, 0] * 40).abs() > 0.5)  # away from the stripes' edges (the mean blurs them)
    assert (_delta_e(out[inner & mirrored_stripe], RED) < 10).float().mean() > 0.95
    assert (_delta_e(out[inner & ~mirrored_stripe], BLUE) < 10).float().mean() > 0.95
    assert (out_weight[inner] > 0.9).float().mean() > 0.95
    # behind the badge: a stripe colour, not yellow (the badge is too rare on the seen side to cross over)
    behind_badge = back & (points[:, 0] - 0.05).abs().lt(0.015) & (points[:, 1] - 0.8).abs().lt(0.015)
    assert behind_badge.any()
    assert (_delta_e(out[behind_badge], YELLOW) > 40).all()


def test_off_or_nothing_seen_changes_nothing():
    points, colors, weight, _, _ = _scene()
    off = PhotoProjectionConfig(mirror_strength=0.0)
    out, out_weight = mirror_seen_colors(colors, weight, points, JOINTS, PARENTS, None, off)
    assert torch.equal(out, colors) and torch.equal(out_weight, weight)
    none_seen = torch.zeros_like(weight)
    out, out_weight = mirror_seen_colors(colors, none_seen, points, JOINTS, PARENTS, None, PhotoProjectionConfig())
    assert torch.equal(out, colors) and torch.equal(out_weight, none_seen)


def test_parts_keep_partners_apart_and_the_head_is_left_out():
    points, colors, weight, _, _ = _scene()
    # the back of the cylinder is another part than its front: no partner is found, nothing changes there
    parts = torch.where(points[:, 2] > 0, 0, 2)
    out, _ = mirror_seen_colors(colors, weight, points, JOINTS, PARENTS, parts, PhotoProjectionConfig())
    assert torch.equal(out[parts == 2], colors[parts == 2])
    whole, _ = mirror_seen_colors(colors, weight, points, JOINTS, PARENTS, None, PhotoProjectionConfig())
    assert not torch.equal(whole[parts == 2], colors[parts == 2])  # one part: the back does get the front
    head = torch.ones_like(parts)  # part 1 is the head
    out, _ = mirror_seen_colors(colors, weight, points, JOINTS, PARENTS, head, PhotoProjectionConfig())
    assert torch.equal(out, colors)


def test_a_bone_near_the_back_still_finds_the_front_straight_ahead():
    # a torso: the bone 6 cm behind the cylinder's axis, so a back point reflected about it lands inside the
    # chest, 12 cm short of the seen front; with depth counting fully (mirror_depth_scale=1) no partner is found
    points, colors, weight, _, _ = _scene()
    joints = JOINTS + torch.tensor([0.0, 0.0, -0.06])
    back = points[:, 2] < -0.05
    inner = back & (torch.sin(points[:, 0] * 40).abs() > 0.5)
    mirrored_stripe = torch.sin(points[:, 0] * 40) > 0
    plain, plain_weight = mirror_seen_colors(colors, weight, points, joints, PARENTS, None,
                                             PhotoProjectionConfig(mirror_depth_scale=1.0))
    assert (plain_weight[inner] > 0.5).float().mean() < 0.2
    out, out_weight = mirror_seen_colors(colors, weight, points, joints, PARENTS, None, PhotoProjectionConfig())
    assert (out_weight[inner] > 0.9).float().mean() > 0.9
    assert (_delta_e(out[inner & mirrored_stripe], RED) < 10).float().mean() > 0.9
    assert (_delta_e(out[inner & ~mirrored_stripe], BLUE) < 10).float().mean() > 0.9
