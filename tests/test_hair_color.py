"""The photo's hair colour on the unseen back of the head (sigman.photo_projection's hair step, through
sigman.refine.refine_avatar): a model that paints the whole head as face gets its back from the photo's
hair, not from the face's skin; a bald head (hair = skin) is left as before."""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch

from sigman.body.markers import HEAD_PATTERN
from sigman.gaussians import surface_gaussians
from sigman.color import lab_to_srgb, srgb_to_lab
from sigman.photo_projection import PhotoProjectionConfig, estimate_hair_color
from sigman.pose import SMPLXPose
from sigman.refine import RefineConfig, _body_markers, posed_frame, refine_avatar
from sigman.render import Camera, intrinsics_from_fov, look_at, render

SKIN = torch.tensor([0.85, 0.62, 0.48])
HAIR = torch.tensor([0.25, 0.14, 0.07])  # dark brown
CLOTH = torch.tensor([0.3, 0.35, 0.6])
SIZE = 128


def _drawn_face(hair: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A 96 px picture of a head: a skin face ellipse under a hair cap, its mask and 33 landmarks."""
    h = w = 96
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    head = ((xs - 48) / 22).square() + ((ys - 44) / 28).square() <= 1
    face = ((xs - 48) / 17).square() + ((ys - 52) / 21).square() <= 1
    photo = torch.ones(h, w, 3)
    photo[head] = hair
    photo[face] = SKIN
    landmarks = torch.zeros(33, 2)
    points = {0: (48, 54), 2: (56, 46), 5: (40, 46), 7: (66, 48), 8: (30, 48), 9: (54, 62), 10: (42, 62)}
    for k, p in points.items():
        landmarks[k] = torch.tensor(p, dtype=torch.float32)
    return photo, head.float(), landmarks


def test_lab_round_trip():
    rgb = torch.rand(200, 3, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(lab_to_srgb(srgb_to_lab(rgb)).float(), rgb, atol=1e-4)


def test_lab_matches_scikit_image():
    color = pytest.importorskip("skimage.color")
    rgb = torch.rand(200, 3, generator=torch.Generator().manual_seed(1))
    ref = torch.from_numpy(color.rgb2lab(rgb.numpy()[None].astype("float64"))[0])
    assert torch.allclose(srgb_to_lab(rgb), ref, atol=0.05)
    assert torch.allclose(lab_to_srgb(ref), rgb.double(), atol=1e-3)


def test_hair_colour_from_the_pixels_around_the_face():
    photo, mask, landmarks = _drawn_face(HAIR)
    est = estimate_hair_color(photo, mask, landmarks)
    assert est is not None and float(est.confidence) == 1.0
    assert (est.color - HAIR).abs().max() < 0.02 and (est.skin - SKIN).abs().max() < 0.02
    bald = estimate_hair_color(*_drawn_face(SKIN))  # the head's pixels look like the face: nothing to say
    assert bald is not None and float(bald.confidence) == 0.0
    hidden = torch.ones(33)
    hidden[0] = 0.0  # the face is not seen
    assert estimate_hair_color(photo, mask, landmarks, hidden) is None


@pytest.fixture(scope="module")
def head_scene(anny_body, uv64):
    body, template = anny_body, uv64
    rest_joints, pose = body.rest_joints, SMPLXPose.zeros(1)
    base = surface_gaussians(template)
    head_joints = [i for i, n in enumerate(body.joint_names) if re.search(HEAD_PATTERN, n)]
    head = base.skin_weights[:, head_joints].sum(-1) > 0.5
    marks = _body_markers(body).canonical(body.rest_vertices[None], rest_joints[None])[0]
    eyes_y = float(marks[[2, 5], 1].mean())
    ears = marks[[7, 8]].mean(0)
    p = base.means
    # hair: the top of the head, and its back down to the ears' level
    hair = head & ((p[:, 1] > eyes_y + 0.035) | ((p[:, 2] < ears[2] - 0.01) & (p[:, 1] > float(marks[9, 1]))))
    skin = torch.where(head[:, None], SKIN.expand_as(base.colors), CLOTH.expand_as(base.colors))
    back = hair & (p[:, 2] < ears[2] - 0.04) & (p[:, 1] > eyes_y - 0.01)  # well behind the ears: never seen
    posed = posed_frame(base, body, rest_joints, pose)
    head_centre = posed.means[head].mean(0)
    eye = head_centre + torch.tensor([0.0, 0.0, 1.4])
    camera = Camera(look_at(eye[None], head_centre), intrinsics_from_fov(0.6, SIZE, SIZE), SIZE, SIZE)
    model = base.with_(colors=skin.clone())  # the model paints the whole head as face

    def photo_of(colors):
        out = render(posed_frame(base.with_(colors=colors), body, rest_joints, pose), camera, background=(1.0, 1.0, 1.0))
        return out.rgb[0], (out.alpha[0, ..., 0] > 0.5).float()

    return dict(body=body, template=template, rest_joints=rest_joints, pose=pose, camera=camera, model=model,
                hair=hair, back=back, skin=skin, photo_of=photo_of)


def _projected(scene, photo, mask, hair: bool):
    config = RefineConfig(steps=0, align_steps=0, projection=dataclasses.replace(PhotoProjectionConfig(), hair=hair))
    return refine_avatar(scene["model"], scene["body"], scene["template"], scene["rest_joints"], None, scene["pose"],
                         scene["camera"], photo, mask, config)


def test_unseen_back_of_the_head_takes_the_photos_hair(head_scene):
    s = head_scene
    truth = torch.where(s["hair"][:, None], HAIR.expand_as(s["skin"]), s["skin"])
    photo, mask = s["photo_of"](truth)
    on, off = _projected(s, photo, mask, True), _projected(s, photo, mask, False)
    back = s["back"] & (on.projection.weight < 0.01)
    assert int(back.sum()) > 50
    assert on.hair is not None and float(on.hair.confidence) > 0.9 and (on.hair.color - HAIR).abs().max() < 0.08
    err_on = (on.canonical.colors[back] - HAIR).abs().mean()
    err_off = (off.canonical.colors[back] - HAIR).abs().mean()
    # without the hair step the back stays half way to the face's skin (the shift from the seen top's anchors)
    assert err_on < 0.06 and err_off > 0.15, (err_on, err_off)
    seen = on.projection.weight > 0.99  # the seen side keeps the photo
    assert int(seen.sum()) > 100 and (on.canonical.colors[seen] - off.canonical.colors[seen]).abs().max() < 0.01


def test_bald_head_is_left_as_before(head_scene):
    s = head_scene
    photo, mask = s["photo_of"](s["skin"])  # hair = skin
    on, off = _projected(s, photo, mask, True), _projected(s, photo, mask, False)
    assert on.hair is not None and float(on.hair.confidence) == 0.0
    assert torch.equal(on.canonical.colors, off.canonical.colors)


def test_the_hair_region_reaches_the_nape_only_behind():
    """hair_nape: behind the head the region reaches below the mouth's level and onto low head weights;
    in front and on the sides it does not move."""
    import dataclasses

    from sigman.photo_projection import head_hair_region

    ears = torch.tensor([[0.08, 1.60, 0.0], [-0.08, 1.60, 0.0]])
    nose, mouth = torch.tensor([0.0, 1.58, 0.10]), torch.tensor([0.0, 1.52, 0.08])
    points = torch.tensor([[0.0, 1.50, -0.09],   # behind, just under the mouth's level (the nape)
                           [0.0, 1.50, 0.09],    # in front at the same height (the chin)
                           [0.09, 1.50, 0.0]])   # beside (under the ear)
    weight = torch.tensor([0.3, 0.3, 0.3])
    on = head_hair_region(points, weight, ears, nose, mouth, PhotoProjectionConfig())
    off = head_hair_region(points, weight, ears, nose, mouth, dataclasses.replace(PhotoProjectionConfig(), hair_nape=0.0))
    assert float(off[0]) == 0.0 and float(on[0]) > 0.3
    assert float(on[1]) == float(off[1]) == 0.0
    assert float(on[2]) == float(off[2])


def test_the_temples_take_the_hair_only_where_the_model_painted_neither_skin_nor_hair():
    """Above the ears the temples reach forward to the forehead (head_temple_region); they join the hair
    region only where the model's colour is far from both the face's skin and the photo's hair."""
    import math

    from sigman.photo_projection import HairEstimate, head_temple_region, implausible_head_colors

    ears = torch.tensor([[0.08, 1.60, 0.0], [-0.08, 1.60, 0.0]])
    nose = torch.tensor([0.0, 1.58, 0.10])
    r, up = 0.09, 0.06
    at = lambda deg: [r * math.sin(math.radians(deg)), 1.60 + up, r * math.cos(math.radians(deg))]  # 0: straight ahead
    points = torch.tensor([at(50), at(15), [0.09, 1.58, 0.04]])  # temple, forehead, cheek (below the ears)
    temples = head_temple_region(points, torch.ones(3), ears, nose, PhotoProjectionConfig())
    assert float(temples[0]) > 0.6 and float(temples[1]) < 0.05 and float(temples[2]) == 0.0
    skin, hair = torch.tensor([0.85, 0.65, 0.55]), torch.tensor([0.35, 0.25, 0.12])
    estimate = HairEstimate(color=hair, skin=skin, confidence=torch.tensor(1.0), pixels=torch.tensor(100),
                            region=torch.zeros(1, 1, dtype=torch.bool), hair=torch.zeros(1, 1, dtype=torch.bool))
    model = torch.stack([skin, hair, 0.5 * (skin + hair), torch.tensor([0.3, 0.8, 0.2])])  # ..., a green scalp
    odd = implausible_head_colors(model, estimate, PhotoProjectionConfig())
    assert odd[:3].max() == 0.0 and float(odd[3]) == 1.0


def test_an_implausible_unseen_neck_takes_the_seen_necks_colour():
    """match_implausible_neck: unseen neck Gaussians the model painted green (neither the face's skin nor
    the seen neck's black collar) turn black; unseen ones painted skin, and everything seen, stay."""
    from sigman.photo_projection import match_implausible_neck

    skin, black, green = torch.tensor([0.85, 0.65, 0.55]), torch.tensor([0.05, 0.05, 0.05]), torch.tensor([0.3, 0.8, 0.2])
    n = 60
    model = torch.cat([black.expand(30, 3), green.expand(20, 3), skin.expand(10, 3)])  # seen | unseen green | unseen skin
    colors = model.clone()
    weight = torch.cat([torch.ones(30), torch.zeros(30)])
    neck = torch.ones(n)
    out = match_implausible_neck(colors, model, weight, neck, skin, PhotoProjectionConfig())
    assert (out[:30] - colors[:30]).abs().max() < 1e-6  # seen: kept
    assert (out[30:50] - black).abs().max() < 0.05  # the green collar behind takes the seen black
    assert (out[50:] - skin).abs().max() < 1e-6  # skin behind is plausible: kept
    few = match_implausible_neck(colors, model, torch.cat([torch.ones(5), torch.zeros(55)]), neck, skin)
    assert torch.equal(few, colors)  # too few seen neck Gaussians: nothing changes
