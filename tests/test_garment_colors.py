"""Garment-level matching of the unseen side (sigman.garment_colors) on a body-like cylinder: the model paints
an orange suit with blue shorts, the photo shows the front of an orange suit with white straps."""

from __future__ import annotations

import math

import pytest
import torch

from sigman.color import lab_to_srgb, srgb_to_lab
from sigman.garment_colors import fill_from_surroundings, garment_pieces, implausible_colors
from sigman.photo_projection import PhotoProjectionConfig, match_unseen_colors
from sigman.refine import refine_config_overrides

ORANGE = torch.tensor([0.85, 0.35, 0.15])
BLUE = torch.tensor([0.15, 0.2, 0.6])
WHITE = torch.tensor([0.95, 0.95, 0.95])


def _delta_e(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (srgb_to_lab(a) - srgb_to_lab(b)).norm(dim=-1)


def _suit_scene(shorts: tuple[float, float] = (0.45, 0.55), seen_from: float = 0.0):
    """A cylinder (radius 0.15 m, 1 m tall, ~1 cm spacing): canonical points ``[N, 3]``; the model's colours
    (orange, blue shorts between the heights ``shorts``); the front (z > 0) above ``seen_from`` is seen, and
    the photo shows it orange with a white strap down the middle (x near 0), and in fine white and orange
    stripes where the model has its shorts."""
    theta = torch.linspace(0, 2 * math.pi, 95)[:-1]
    y = torch.linspace(0, 1, 101)
    t, yy = torch.meshgrid(theta, y, indexing="ij")
    points = torch.stack([0.15 * torch.sin(t), yy, 0.15 * torch.cos(t)], dim=-1).reshape(-1, 3)
    in_shorts = (points[:, 1] >= shorts[0]) & (points[:, 1] <= shorts[1])
    model = torch.where(in_shorts[:, None], BLUE, ORANGE).expand(points.shape[0], 3).clone()
    seen = (points[:, 2] > 0.02) & (points[:, 1] >= seen_from)
    # where the model painted its shorts the photo shows fine white / orange stripes (no one colour)
    white = (points[:, 0].abs() < 0.04) | (in_shorts & (torch.sin(points[:, 1] * 400) > 0))
    photo = torch.where(white[:, None], WHITE, ORANGE).expand_as(model)
    colors = torch.where(seen[:, None], photo, model)
    return points, model, colors, seen.float(), in_shorts


def test_a_contradicted_piece_is_filled_from_around_it_not_half_shifted():
    points, model, colors, weight, in_shorts = _suit_scene()
    back_shorts = in_shorts & (weight == 0)
    kernel_only = match_unseen_colors(colors, model, weight, points, PhotoProjectionConfig(garment_match=False))
    out = match_unseen_colors(colors, model, weight, points, PhotoProjectionConfig())
    pieces = garment_pieces(colors, model, weight, points, PhotoProjectionConfig())
    assert bool(pieces.fill[in_shorts].all()) and not bool(pieces.fill[~in_shorts].any())
    # the kernel leaves the back of the shorts half way between blue and the front's orange / white
    assert float(_delta_e(kernel_only[back_shorts], ORANGE).median()) > 20
    # filled, it is the suit's orange
    assert float(_delta_e(out[back_shorts], ORANGE).median()) < 8
    # the seen side keeps the photo
    assert torch.equal(out[weight > 0], colors[weight > 0])


def test_an_unseen_piece_next_to_a_confirmed_one_keeps_the_models_colour():
    # only the torso (above the shorts) is seen: the legs below are a separate orange piece, all unseen
    points, model, colors, weight, in_shorts = _suit_scene(seen_from=0.56)
    legs = points[:, 1] < 0.44
    pieces = garment_pieces(colors, model, weight, points, PhotoProjectionConfig())
    assert int(pieces.piece[legs].unique().numel()) == 1
    assert set(pieces.piece[legs].unique().tolist()).isdisjoint(pieces.piece[points[:, 1] > 0.56].unique().tolist())
    kernel_only = match_unseen_colors(colors, model, weight, points, PhotoProjectionConfig(garment_match=False))
    out = match_unseen_colors(colors, model, weight, points, PhotoProjectionConfig())
    # the kernel pulls the unseen legs towards the straps' white (pink); the garment step keeps them orange
    assert float(_delta_e(kernel_only[legs], ORANGE).mean()) > 5
    assert float(_delta_e(out[legs], ORANGE).max()) < 1.0
    # without the inheritance the legs get the kernel's shift again
    loose = match_unseen_colors(colors, model, weight, points, PhotoProjectionConfig(garment_inherit_distance=0.0))
    assert float(_delta_e(loose[legs], ORANGE).mean()) > 5


def test_colours_the_photo_shows_nowhere_are_implausible():
    palette = srgb_to_lab(torch.cat([ORANGE.expand(300, 3), WHITE.expand(100, 3), torch.tensor([[0.2, 0.8, 0.2]])]))
    queries = srgb_to_lab(torch.stack([ORANGE * 0.97, WHITE, torch.tensor([0.2, 0.8, 0.2]), BLUE])).float()
    flags = implausible_colors(queries, palette.float(), PhotoProjectionConfig(garment_palette_distance=25.0))
    # orange and white are plentiful; a single green pixel is not enough; blue is absent
    assert flags.tolist() == [False, False, True, True]
    off = implausible_colors(queries, palette.float(), PhotoProjectionConfig(garment_palette_distance=0.0))
    assert not bool(off.any())


def test_fill_from_surroundings_is_a_harmonic_fill():
    x = torch.linspace(0, 1, 201)
    points = torch.stack([x, torch.zeros_like(x), torch.zeros_like(x)], dim=-1)
    lab = torch.stack([100 * x, torch.zeros_like(x), torch.zeros_like(x)], dim=-1)
    unknown = (x > 0.3) & (x < 0.7)
    holes = lab.clone()
    holes[unknown] = torch.tensor([0.0, 50.0, -50.0])
    filled = fill_from_surroundings(holes, unknown, points, neighbours=2, iterations=4000)
    assert torch.equal(filled[~unknown], holes[~unknown])
    # on a line the harmonic fill between two held ends is the straight line between them
    assert float((filled[unknown] - lab[unknown]).abs().max()) < 1.0


def test_refine_overrides_reach_the_projection_config():
    out = refine_config_overrides(["steps=3", "projection.garment_match=False", "projection.garment_min_delta=30.0"])
    assert out["steps"] == 3
    assert out["projection"].garment_match is False and out["projection"].garment_min_delta == 30.0
    with pytest.raises(ValueError, match="projection.NAME"):
        refine_config_overrides(["projection.no_such_field=1"])


def test_lab_round_trip_used_by_the_fill():
    rgb = torch.rand(50, 3, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(lab_to_srgb(srgb_to_lab(rgb)).float(), rgb, atol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_the_garment_step_gives_the_same_colours_on_cuda():
    points, model, colors, weight, _ = _suit_scene()
    cpu = match_unseen_colors(colors, model, weight, points, PhotoProjectionConfig())
    gpu = match_unseen_colors(colors.cuda(), model.cuda(), weight.cuda(), points.cuda(), PhotoProjectionConfig())
    assert gpu.is_cuda
    assert float((gpu.cpu() - cpu).abs().max()) < 2e-3


SKIN = torch.tensor([0.85, 0.62, 0.5])
NAVY = torch.tensor([0.08, 0.1, 0.2])
SHORT_REACH = dict(match_radius=0.02)


def _cylinder(radius: float = 0.15, n_theta: int = 95, n_y: int = 101) -> torch.Tensor:
    """``[N, 3]`` points on a 1 m tall cylinder, ~1 cm apart; with :data:`SHORT_REACH` the kernel shift does not
    reach round to the back, so what the back becomes is the garment step's doing."""
    theta = torch.linspace(0, 2 * math.pi, n_theta)[:-1]
    t, yy = torch.meshgrid(theta, torch.linspace(0, 1, n_y), indexing="ij")
    return torch.stack([radius * torch.sin(t), yy, radius * torch.cos(t)], dim=-1).reshape(-1, 3)


def test_body_parts_keep_a_skin_coloured_torso_apart_from_the_face():
    # the model paints the whole person skin; the photo shows the face skin (top 40 %) and a navy jacket below
    points = _cylinder()
    head = points[:, 1] > 0.6
    model = SKIN.expand(points.shape[0], 3).clone()
    seen = points[:, 2] > 0.02
    colors = torch.where(seen[:, None], torch.where(head[:, None], SKIN, NAVY), model)
    weight, parts = seen.float(), head.long()  # part 1 (head) above, 0 (torso) below
    back_torso, back_head = ~seen & (points[:, 1] < 0.3), ~seen & (points[:, 1] > 0.7)  # away from the neck
    joined = match_unseen_colors(colors, model, weight, points, PhotoProjectionConfig(**SHORT_REACH))  # no parts: one piece
    split = match_unseen_colors(colors, model, weight, points, PhotoProjectionConfig(**SHORT_REACH), parts=parts)
    off = match_unseen_colors(colors, model, weight, points, PhotoProjectionConfig(garment_split_parts=False, **SHORT_REACH), parts=parts)
    # one skin piece with the face confirming 40 % of it is not contradicted: the back of the torso stays pale
    assert float(_delta_e(joined[back_torso], NAVY).median()) > 25
    assert torch.equal(off, joined)
    # cut at the neck, the torso piece is contradicted and its back is filled from the jacket
    assert float(_delta_e(split[back_torso], NAVY).median()) < 10
    assert float(_delta_e(split[back_head], SKIN).median()) < 10


def test_an_unseen_piece_of_a_like_colour_follows_a_contradicted_neighbour():
    # the model paints the front one skin tone and the back a slightly different one (two k-means clusters);
    # the photo shows the front navy
    points = _cylinder()
    front = points[:, 2] > 0.0
    model = torch.where(front[:, None], SKIN, SKIN * 0.9).expand(points.shape[0], 3).clone()
    seen = points[:, 2] > 0.02
    colors = torch.where(seen[:, None], NAVY, model)
    weight = seen.float()
    back = points[:, 2] < -0.05
    pieces = garment_pieces(colors, model, weight, points, PhotoProjectionConfig(**SHORT_REACH))
    assert set(pieces.piece[back].unique().tolist()).isdisjoint(pieces.piece[seen].unique().tolist())
    same_cluster = match_unseen_colors(colors, model, weight, points, PhotoProjectionConfig(garment_inherit_delta=0.0, **SHORT_REACH))
    like_colour = match_unseen_colors(colors, model, weight, points, PhotoProjectionConfig(**SHORT_REACH))  # dE 15
    assert float(_delta_e(same_cluster[back], NAVY).median()) > 20
    assert float(_delta_e(like_colour[back], NAVY).median()) < 10


def test_a_follower_of_a_confirmed_piece_takes_its_photo_colour_and_the_head_leads_no_other_part():
    # the model: a navy front and a dark red back, one k-means cluster, cut into two pieces by the body parts
    # (front: an arm, back: the torso); the photo confirms the navy front, the back follows it
    points = _cylinder()
    front = points[:, 2] > 0.0
    dark_red = torch.tensor([0.22, 0.08, 0.08])
    model = torch.where(front[:, None], NAVY, dark_red).expand(points.shape[0], 3).clone()
    seen = points[:, 2] > 0.02
    colors = torch.where(seen[:, None], NAVY, model)
    weight, back = seen.float(), points[:, 2] < -0.05
    config = dict(garment_clusters=1, **SHORT_REACH)
    arm = front.long() * 2
    own = match_unseen_colors(colors, model, weight, points, PhotoProjectionConfig(garment_follow_photo=False, **config),
                              parts=arm)
    photo = match_unseen_colors(colors, model, weight, points, PhotoProjectionConfig(**config), parts=arm)
    assert float(_delta_e(own[back], dark_red).max()) < 1.0  # the model's dark red stays
    assert float(_delta_e(photo[back], NAVY).median()) < 3.0  # the confirmed navy goes round
    # the front a head instead: the back follows nothing
    head = front.long()
    led = match_unseen_colors(colors, model, weight, points, PhotoProjectionConfig(garment_inherit_from_head=True, **config),
                              parts=head)
    unled = match_unseen_colors(colors, model, weight, points, PhotoProjectionConfig(**config), parts=head)
    assert float(_delta_e(led[back], NAVY).median()) < 3.0
    assert float(_delta_e(unled[back], NAVY).median()) > 10.0


def test_the_unseen_side_is_no_more_colourful_than_the_photo_shows_its_hue():
    from sigman.photo_projection import cap_unseen_chroma

    points = _cylinder()
    seen = points[:, 2] > 0.02
    weight = seen.float()
    low = points[:, 1] < 0.1
    cyan = torch.tensor([0.1, 0.55, 0.6])
    grey = torch.tensor([0.4, 0.4, 0.4])
    blue_shoe = torch.tensor([0.1, 0.2, 0.95])
    # a greyscale photo with blue shoes (the bottom 10 %) on the front; the model's back is cyan above, blue below
    photo = torch.where((seen & low)[:, None], blue_shoe, torch.where(seen[:, None], grey, cyan))
    out_colors = torch.where((~seen & low)[:, None], blue_shoe, photo)
    out = cap_unseen_chroma(out_colors, photo, weight, PhotoProjectionConfig())
    chroma = lambda c: srgb_to_lab(c)[:, 1:].norm(dim=-1)
    assert float(chroma(out[~seen & ~low]).max()) < 4.0 < float(chroma(out_colors[~seen & ~low]).min())
    assert float(_delta_e(out[~seen & low], blue_shoe).max()) < 1.0  # the photo shows blue: it stays
    assert torch.equal(out[seen], out_colors[seen])
    off = cap_unseen_chroma(out_colors, photo, weight, PhotoProjectionConfig(unseen_chroma_quantile=0.0))
    assert torch.equal(off, out_colors)


def test_after_the_refinement_the_cap_takes_only_what_it_added():
    from sigman.photo_projection import cap_unseen_chroma

    points = _cylinder()
    seen = points[:, 2] > 0.02
    weight = torch.where(seen, 1.0, 0.0)
    weight[(points[:, 2] > -0.02) & ~seen] = 0.5  # half-seen edges
    grey = torch.tensor([0.4, 0.4, 0.4])
    config = PhotoProjectionConfig()
    before = cap_unseen_chroma(torch.where(seen[:, None], grey, torch.tensor([0.1, 0.55, 0.6])), grey.expand_as(points),
                               weight, config)
    # capping again what was capped (a refinement that changed nothing) changes nothing, half-seen edges included
    assert torch.equal(cap_unseen_chroma(before, grey.expand_as(points), weight, config, allowed=before), before)
    # a refinement that turns the half-seen edges teal: the cap takes that back (half of it, as their weight says)
    teal = torch.where((weight == 0.5)[:, None], torch.tensor([0.1, 0.6, 0.55]), before)
    again = cap_unseen_chroma(teal, grey.expand_as(points), weight, config, allowed=before)
    chroma = lambda c: srgb_to_lab(c)[:, 1:].norm(dim=-1)
    edge = weight == 0.5
    # the half-seen edge keeps half of the cut down to what it had before (its own chroma is above the grey cap)
    expected = chroma(teal[edge]) * (1 - 0.5 * (1 - chroma(before[edge]) / chroma(teal[edge])))
    assert float((chroma(again[edge]) - expected).abs().max()) < 1.0
    assert float(chroma(again[edge]).max()) < 0.8 * float(chroma(teal[edge]).min())
    assert torch.equal(again[~edge], teal[~edge])
