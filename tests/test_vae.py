"""SIGMAN VAE (sigman.models.vae) and Plücker rays (sigman.models.plucker)."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from sigman.models.plucker import RELEASE_FOVY, pixel_rays, plucker_rays, release_ray_intrinsics
from sigman.models.vae import (
    NUM_UV_MAP_CHANNELS,
    UV_MAP_CHANNELS,
    VAE_CONFIGS,
    SigmanVAE,
    VAEConfig,
    axis_angle_to_quat,
    kl_divergence,
    knn_spacing,
    make_view_input,
    quat_mul,
)

FIXTURE = Path(__file__).parent / "fixtures" / "official_vae_keys.txt"

TINY = replace(
    VAE_CONFIGS["demo"], num_views=2, image_size=32, uv_size=32, latent_channels=4, latent_size=4,
    encoder_channels=(8, 16, 16, 32), norm_groups=4, attention_heads=2, attention_head_dim=8,
    self_attention_layers=1, decoder_channels=(8, 16, 16, 32), decoder_layers_per_block=1,
    decoder_out_channels=16)


def read_fixture() -> dict[str, tuple[int, ...]]:
    keys = {}
    for line in FIXTURE.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, shape = line.split()
        keys[name] = tuple(int(s) for s in shape.split("x"))
    return keys


def random_rotation(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))[None]
    if torch.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q.float()


def quat_to_rotmat(q: torch.Tensor) -> torch.Tensor:
    w, x, y, z = q.unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], dim=-1).reshape(*q.shape[:-1], 3, 3)


# --- configs and shapes ------------------------------------------------------------------------

def test_demo_config_shapes():
    cfg = VAE_CONFIGS["demo"]
    model = SigmanVAE(cfg).eval()
    b, v = 2, cfg.num_views
    views = torch.randn(b, v, 9, cfg.image_size, cfg.image_size)
    uv_tex = torch.rand(b, 3, cfg.uv_size, cfg.uv_size)
    uv = torch.rand(300, 2)
    points = torch.randn(300, 3) * 0.3
    with torch.no_grad():
        mean, logvar = model.encode(views, uv_tex)
        assert mean.shape == logvar.shape == (b, *cfg.latent_shape) == (b, 16, 16, 16)
        maps = model.decode(mean)
        assert maps.shape == (b, NUM_UV_MAP_CHANNELS, cfg.uv_size, cfg.uv_size)
        assert model.sample_points(maps, uv).shape == (b, 300, 13)
        attrs, m2, lv2 = model(views, uv_tex, uv, template_points=points)
    assert attrs["offset"].shape == attrs["scale"].shape == attrs["rgb"].shape == (b, 300, 3)
    assert attrs["quat"].shape == (b, 300, 4) and attrs["opacity"].shape == (b, 300)
    assert torch.allclose(m2, mean) and torch.allclose(lv2, logvar)
    assert model.smplx_uvcoord is None and model.template_uv is None
    assert "smplx_uvcoord" not in model.state_dict()


def test_official_config_shapes_on_meta():
    cfg = VAE_CONFIGS["official"]
    assert (cfg.latent_channels, cfg.latent_size, cfg.uv_size, cfg.image_size) == (16, 64, 512, 512)
    assert cfg.encoder_channels == (128, 256, 256, 512) and cfg.decoder_channels == (256, 512, 512, 1024)
    assert (cfg.attention_heads, cfg.attention_head_dim, cfg.self_attention_layers) == (8, 64, 6)
    assert cfg.kl_weight == 1e-6 and cfg.render_size == 512 and cfg.camera_radius == 1.5
    assert abs(cfg.render_fovy - 0.8713) < 1e-4
    with torch.device("meta"):
        model = SigmanVAE(cfg).eval()
        views = torch.empty(1, 6, 9, 512, 512)
        uv_tex = torch.empty(1, 3, 512, 512)
        with torch.no_grad():
            mean, logvar = model.encode(views, uv_tex)
            maps = model.decode(mean)
            attrs = model.activate(model.sample_points(maps, torch.empty(50, 2)), point_spacing=torch.empty(50))
    assert mean.shape == logvar.shape == (1, 16, 64, 64)
    assert maps.shape == (1, 13, 512, 512)
    assert attrs["quat"].shape == (1, 50, 4)


def test_official_keys_match_release_fixture():
    expected = read_fixture()
    assert len(expected) == 336
    with torch.device("meta"):
        model = SigmanVAE(VAE_CONFIGS["official"])
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert sorted(got) == sorted(expected)
    wrong = {k: (got[k], expected[k]) for k in expected if got[k] != expected[k]}
    assert not wrong
    # and a file with exactly these names and shapes loads strictly
    state = {k: torch.empty(s, device="meta") for k, s in expected.items()}
    model.load_state_dict(state, strict=True, assign=True)


def test_config_validation():
    with pytest.raises(ValueError, match="uv_size"):
        replace(VAE_CONFIGS["demo"], uv_size=96)
    with pytest.raises(ValueError, match="norm_groups"):
        replace(VAE_CONFIGS["demo"], norm_groups=7)
    with pytest.raises(ValueError, match="unknown VAE config"):
        SigmanVAE.from_name("huge")
    assert isinstance(SigmanVAE.from_name("demo", self_attention_layers=1).config, VAEConfig)


# --- activations -------------------------------------------------------------------------------

def test_activation_formulas_at_sigmoid_midpoint():
    """sigmoid = 0.5 everywhere: scale = spacing, no rotation delta, rgb = opacity = 0.5."""
    model = SigmanVAE(TINY)
    n = 40
    samples = torch.full((1, n, 13), 0.5)
    samples[..., UV_MAP_CHANNELS["offset"]] = torch.linspace(-0.05, 0.05, n * 3).view(1, n, 3)
    spacing = torch.linspace(0.001, 0.02, n)
    frames = torch.nn.functional.normalize(torch.randn(n, 4), dim=-1)
    a = model.activate(samples, template_quats=frames, point_spacing=spacing)
    assert torch.allclose(a["scale"], spacing[None, :, None].expand(1, n, 3))
    assert torch.allclose(a["opacity"], torch.full((1, n), 0.5))
    assert torch.allclose(a["rgb"], torch.full((1, n, 3), 0.5))
    assert torch.equal(a["offset"], samples[..., 1:4])  # linear, metres
    assert torch.allclose(a["quat"], frames[None], atol=1e-6)


def test_activation_extremes_and_ranges():
    model = SigmanVAE(TINY)
    n = 64
    samples = torch.rand(2, n, 13)
    samples[0] = 0.0
    samples[1] = 1.0
    pts = torch.randn(n, 3) * 0.2
    a = model.activate(samples, template_points=pts)
    spacing = knn_spacing(pts + samples[..., 1:4])
    assert torch.allclose(a["scale"][0], torch.zeros(n, 3))
    assert torch.allclose(a["scale"][1], 2 * spacing[1][:, None].expand(n, 3))
    s = TINY.sigmoid_saturation
    assert torch.allclose(a["rgb"][0], torch.full((n, 3), -s)) and torch.allclose(a["rgb"][1], torch.full((n, 3), 1 + s))
    # rotation: each axis-angle component spans (-pi/2, pi/2)
    assert torch.allclose(a["rotvec"][0], torch.full((n, 3), -math.pi / 2))
    angle = 2 * torch.acos(a["quat"][1, :, 0].clamp(-1, 1))
    assert torch.allclose(angle, torch.full((n,), math.pi / 2 * math.sqrt(3)), atol=1e-5)


def test_decoded_attribute_ranges():
    model = SigmanVAE(TINY).eval()
    latent = torch.randn(2, *TINY.latent_shape) * 5
    uv = torch.rand(200, 2)
    pts = torch.randn(200, 3) * 0.3
    with torch.no_grad():
        a = model.decode_attributes(latent, uv, template_points=pts)
    spacing = knn_spacing(pts + a["offset"])
    assert (a["scale"] > 0).all() and (a["scale"] < 2 * spacing[..., None] + 1e-7).all()
    assert torch.allclose(a["quat"].norm(dim=-1), torch.ones(2, 200), atol=1e-5)
    assert ((a["opacity"] >= 0) & (a["opacity"] <= 1)).all()
    s = TINY.sigmoid_saturation
    assert ((a["rgb"] >= -s) & (a["rgb"] <= 1 + s)).all()
    with pytest.raises(ValueError, match="template_points"):
        model.decode_attributes(latent, uv)


def test_rotation_composition_matches_matrices():
    rotvec = (torch.rand(100, 3) - 0.5) * math.pi
    q_delta = axis_angle_to_quat(rotvec)
    # Rodrigues' formula
    angle = rotvec.norm(dim=-1, keepdim=True)[..., None]
    axis = rotvec / rotvec.norm(dim=-1, keepdim=True)
    k = torch.zeros(100, 3, 3)
    k[:, 0, 1], k[:, 0, 2], k[:, 1, 2] = -axis[:, 2], axis[:, 1], -axis[:, 0]
    k = k - k.transpose(1, 2)
    r_delta = torch.eye(3) + torch.sin(angle) * k + (1 - torch.cos(angle)) * k @ k
    assert torch.allclose(quat_to_rotmat(q_delta), r_delta, atol=1e-5)
    q_frame = torch.nn.functional.normalize(torch.randn(100, 4), dim=-1)
    composed = quat_to_rotmat(quat_mul(q_frame, q_delta))
    assert torch.allclose(composed, quat_to_rotmat(q_frame) @ r_delta, atol=1e-5)
    assert torch.allclose(axis_angle_to_quat(torch.zeros(1, 3)), torch.tensor([[1.0, 0, 0, 0]]))


def test_knn_spacing_matches_brute_force():
    pts = torch.randn(2, 300, 3)
    got = knn_spacing(pts, k=3, chunk=64)
    d2 = torch.cdist(pts.double(), pts.double()).square()
    d2 = d2 + torch.diag(torch.full((300,), float("inf"), dtype=torch.float64))
    ref = d2.topk(3, dim=-1, largest=False).values.mean(-1).clamp_min(1e-7).sqrt()
    assert torch.allclose(got.double(), ref, rtol=1e-5)
    same = torch.zeros(10, 3)  # coincident points: floored at sqrt(1e-7)
    assert torch.allclose(knn_spacing(same), torch.full((10,), math.sqrt(1e-7)))


# --- sampling ----------------------------------------------------------------------------------

def test_grid_sample_at_texel_centres_returns_texels():
    h, w = 6, 8
    maps = torch.randn(2, 13, h, w)
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    u = (cols.flatten() + 0.5) / w
    v = 1.0 - (rows.flatten() + 0.5) / h  # v up: row 0 is the top of the map (v = 1)
    got = SigmanVAE.sample_points(maps, torch.stack([u, v], dim=-1))
    assert torch.allclose(got, maps.flatten(2).transpose(1, 2), atol=1e-6)
    # per-batch UVs, and border padding outside [0, 1]
    got_b = SigmanVAE.sample_points(maps, torch.tensor([[[1.5, 1.5]], [[-0.5, -0.5]]]))
    assert torch.allclose(got_b[0, 0], maps[0, :, 0, w - 1]) and torch.allclose(got_b[1, 0], maps[1, :, h - 1, 0])


def test_uv_texture_is_fed_bgr_when_configured():
    bgr = replace(TINY, uv_texture_bgr=True)
    model_bgr = SigmanVAE(bgr).eval()
    model_rgb = SigmanVAE(TINY).eval()
    model_rgb.load_state_dict(model_bgr.state_dict())
    views = torch.randn(1, 2, 9, 32, 32)
    tex = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model_bgr.encode(views, tex)[0], model_rgb.encode(views, tex.flip(1))[0], atol=1e-6)
        assert not torch.allclose(model_bgr.encode(views, tex)[0], model_rgb.encode(views, tex)[0], atol=1e-4)


# --- training ----------------------------------------------------------------------------------

def test_vae_overfits_one_sample():
    torch.manual_seed(0)
    model = SigmanVAE(TINY).train()
    views = torch.randn(1, 2, 9, 32, 32)
    tex = torch.rand(1, 3, 32, 32)
    n = 256
    uv = torch.rand(n, 2)
    spacing = torch.full((n,), 0.01)
    g = torch.Generator().manual_seed(1)
    target = {
        "opacity": torch.rand(1, n, generator=g) * 0.6 + 0.2,
        "offset": torch.randn(1, n, 3, generator=g) * 0.02,
        "rgb": torch.rand(1, n, 3, generator=g) * 0.8 + 0.1,
        "scale": (torch.rand(1, n, 3, generator=g) * 1.2 + 0.4) * 0.01,
    }

    def loss_fn(attrs):
        return sum(torch.nn.functional.mse_loss(attrs[k] / (0.01 if k in ("offset", "scale") else 1.0),
                                                target[k] / (0.01 if k in ("offset", "scale") else 1.0))
                   for k in target)

    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(100):
        attrs, mean, logvar = model(views, tex, uv, point_spacing=spacing, sample_posterior=False)
        loss = loss_fn(attrs) + TINY.kl_weight * kl_divergence(mean, logvar).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 20, (losses[0], losses[-1])


def test_gradient_checkpointing_gives_same_gradients():
    cfg = replace(TINY, attention_dropout=0.0)
    plain = SigmanVAE(cfg).train()
    ckpt = SigmanVAE(replace(cfg, gradient_checkpointing=True)).train()
    ckpt.load_state_dict(plain.state_dict())
    views = torch.randn(1, 2, 9, 32, 32)
    tex = torch.rand(1, 3, 32, 32)
    uv = torch.rand(50, 2)
    for m in (plain, ckpt):
        attrs, mean, logvar = m(views, tex, uv, point_spacing=torch.full((50,), 0.01), sample_posterior=False)
        (attrs["rgb"].sum() + attrs["offset"].square().sum() + kl_divergence(mean, logvar).sum()).backward()
    for (name, p), q in zip(plain.named_parameters(), ckpt.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-5, rtol=1e-4), name


def test_kl_divergence_and_sampling():
    mean = torch.zeros(3, 4, 2, 2)
    logvar = torch.zeros(3, 4, 2, 2)
    assert torch.allclose(kl_divergence(mean, logvar), torch.zeros(3))
    assert torch.allclose(kl_divergence(mean + 1, logvar), torch.full((3,), 0.5 * 16))
    g = torch.Generator().manual_seed(0)
    z = SigmanVAE.sample_latent(mean, torch.full_like(logvar, -60.0), generator=g)
    assert torch.allclose(z, mean)


# --- Plücker rays --------------------------------------------------------------------------------

def make_camera(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    rot = random_rotation(seed)
    centre = torch.tensor([0.3, -0.2, 1.5])
    viewmat = torch.eye(4)
    viewmat[:3, :3] = rot
    viewmat[:3, 3] = -rot @ centre
    return viewmat, centre


def test_plucker_rays_geometry():
    viewmat, centre = make_camera()
    h, w = 15, 21
    k = torch.tensor([[30.0, 0.0, 10.5], [0.0, 32.0, 7.5], [0.0, 0.0, 1.0]])  # principal point = pixel (10, 7)
    emb = plucker_rays(viewmat[None, None], k, h, w)
    assert emb.shape == (1, 1, 6, h, w)
    moment, d = emb[0, 0, :3], emb[0, 0, 3:]  # the release's order: o x d, then d
    assert torch.allclose(d.norm(dim=0), torch.ones(h, w), atol=1e-6)
    assert (moment * d).sum(dim=0).abs().max() < 1e-6
    assert torch.allclose(moment, torch.linalg.cross(centre.view(3, 1, 1).expand(3, h, w), d, dim=0), atol=1e-6)
    # the ray through the principal point is the camera's +Z axis in world coordinates
    assert torch.allclose(d[:, 7, 10], viewmat[2, :3], atol=1e-6)
    # every ray projects back onto its own pixel centre
    o, dirs = pixel_rays(viewmat, k, h, w)
    p_world = o + 2.0 * dirs
    p_cam = p_world @ viewmat[:3, :3].T + viewmat[:3, 3]
    pix = p_cam @ k.T
    pix = pix[..., :2] / pix[..., 2:]
    rows, cols = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    assert torch.allclose(pix, torch.stack([cols, rows], dim=-1), atol=1e-4)


def test_plucker_batches_views():
    cams = torch.stack([make_camera(s)[0] for s in range(6)]).view(2, 3, 4, 4)
    k = release_ray_intrinsics(16)
    emb = plucker_rays(cams, k, 16, 16)
    assert emb.shape == (2, 3, 6, 16, 16)
    assert torch.allclose(emb[1, 2], plucker_rays(cams[1, 2], k, 16, 16))
    focal = 0.5 * 16 / math.tan(0.5 * math.radians(RELEASE_FOVY))
    assert math.isclose(k[0, 0].item(), focal, rel_tol=1e-6) and 65 * 16 < focal < 66 * 16


def test_make_view_input():
    cams = torch.stack([make_camera(s)[0] for s in range(4)]).view(1, 4, 4, 4)
    k = torch.tensor([[20.0, 0, 8], [0, 20.0, 8], [0, 0, 1]])
    images = torch.rand(1, 4, 3, 16, 16)
    x = make_view_input(images, cams, k)
    assert x.shape == (1, 4, 9, 16, 16)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    assert torch.allclose(x[0, 2, :3], (images[0, 2] - mean) / std, atol=1e-6)
    assert torch.allclose(x[:, :, 3:], plucker_rays(cams, k, 16, 16), atol=1e-6)
