"""CPU tests of sigman.render: cameras, the PyTorch rasterizer (analytic cases and gsplat's own torch
reference as an oracle), the renderer entry points and the image/video writers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sigman.gaussians import Gaussians
from sigman.render import (
    DEFAULT_FOVY,
    DEFAULT_RADIUS,
    Camera,
    RasterSettings,
    fit_orbit_to_points,
    image_grid,
    intrinsics_from_fov,
    look_at,
    orbit_cameras,
    project_gaussians,
    rasterize_torch,
    render,
    render_turntable,
    resolve_backend,
    write_image,
    write_video,
)
from sigman.render.rasterize_torch import quat_scale_to_covar

WHITE = (1.0, 1.0, 1.0)
FIELDS = ("means", "quats", "scales", "opacities", "colors")


def single(mean, scale, opacity=0.8, color=(1.0, 0.0, 0.0), quat=(1.0, 0.0, 0.0, 0.0)) -> Gaussians:
    scale = (scale, scale, scale) if isinstance(scale, (int, float)) else scale
    return Gaussians(means=torch.tensor([mean], dtype=torch.float32), quats=torch.tensor([quat], dtype=torch.float32),
                     scales=torch.tensor([scale], dtype=torch.float32), opacities=torch.tensor([opacity]),
                     colors=torch.tensor([color]))


def cat(*gs: Gaussians) -> Gaussians:
    return Gaussians(**{k: torch.cat([getattr(g, k) for g in gs]) for k in FIELDS})


def front_camera(size=65, f=120.0, distance=2.0) -> Camera:
    """A camera on +Z at ``distance`` looking at the origin; odd size so the axis hits a pixel centre."""
    k = torch.tensor([[f, 0.0, size / 2], [0.0, f, size / 2], [0.0, 0.0, 1.0]])
    return Camera(look_at(torch.tensor([[0.0, 0.0, distance]])), k, size, size)


def random_scene(n: int, seed: int = 0, scale_log_mean: float = -3.5) -> Gaussians:
    g = torch.Generator().manual_seed(seed)
    return Gaussians(
        means=(torch.rand(n, 3, generator=g) - 0.5) * torch.tensor([0.6, 1.2, 0.4]),
        quats=torch.randn(n, 4, generator=g),
        scales=torch.exp(torch.randn(n, 3, generator=g) * 0.5 + scale_log_mean),
        opacities=torch.rand(n, generator=g),
        colors=torch.rand(n, 3, generator=g),
    )


# --- analytic single-Gaussian cases -----------------------------------------------------------

def test_single_gaussian_footprint_matches_analytic_std():
    cam = front_camera()
    f, z, eps2d = 120.0, 2.0, 0.3
    sx, sy = math.sqrt(9.0 - eps2d) * z / f, math.sqrt(16.0 - eps2d) * z / f  # 2D std 3 px and 4 px
    out = render(single((0.0, 0.0, 0.0), (sx, sy, 0.01), opacity=0.8), cam, background=WHITE)
    alpha = out.alpha[0, ..., 0]
    c = 32  # pixel whose centre (32.5, 32.5) is the projected mean
    assert torch.unravel_index(alpha.argmax(), alpha.shape) == (c, c)
    assert alpha[c, c].item() == pytest.approx(0.8, abs=1e-6)
    for d, std in ((3, "x"), (4, "y")):
        at_sigma = alpha[c, c + d] if std == "x" else alpha[c + d, c]
        other_side = alpha[c, c - d] if std == "x" else alpha[c - d, c]
        assert at_sigma.item() == pytest.approx(0.8 * math.exp(-0.5), rel=1e-5)
        assert other_side.item() == pytest.approx(at_sigma.item(), rel=1e-6)
    assert alpha[c + 4, c + 3].item() == pytest.approx(0.8 * math.exp(-1.0), rel=1e-5)  # 1 sigma along both axes
    # colour = alpha * red + (1 - alpha) * white background
    rgb = out.rgb[0]
    expected = alpha[..., None] * torch.tensor([1.0, 0.0, 0.0]) + (1 - alpha[..., None]) * torch.tensor(WHITE)
    torch.testing.assert_close(rgb, expected, atol=1e-6, rtol=0)
    # far outside the 3-sigma box: pure background, nothing drawn
    assert alpha[0, 0].item() == 0.0 and torch.equal(rgb[0, 0], torch.ones(3))


def test_single_gaussian_lands_at_pinhole_projection():
    cam = front_camera(size=96)
    mean = (0.31, 0.17, -0.4)  # camera-space (x, y, z) = (0.31, -0.17, 2.4): +Y world is image up
    out = render(single(mean, 0.03, opacity=0.7), cam, background=None)
    u = 120.0 * 0.31 / 2.4 + 48.0
    v = 120.0 * -0.17 / 2.4 + 48.0
    alpha = out.alpha[0, ..., 0]
    i, j = torch.unravel_index(alpha.argmax(), alpha.shape)
    assert (int(i), int(j)) == (math.floor(v), math.floor(u))
    ys, xs = torch.meshgrid(torch.arange(96.0) + 0.5, torch.arange(96.0) + 0.5, indexing="ij")
    w = alpha / alpha.sum()
    assert float((w * xs).sum()) == pytest.approx(u, abs=0.05)
    assert float((w * ys).sum()) == pytest.approx(v, abs=0.05)
    torch.testing.assert_close(cam.project(torch.tensor(mean))[0], torch.tensor([u, v]))


def test_depth_of_single_opaque_gaussian_is_camera_z():
    eye = torch.tensor([[0.7, 0.4, 1.9]])
    target = torch.tensor([0.05, -0.1, 0.0])
    cam = Camera(look_at(eye, target), intrinsics_from_fov(0.9, 64, 48), 64, 48)
    mean = torch.tensor([0.1, 0.05, 0.02])
    out = render(single(mean.tolist(), 0.05, opacity=1.0), cam)
    forward = (target - eye[0]) / (target - eye[0]).norm()
    z = float(forward @ (mean - eye[0]))
    covered = out.alpha[0, ..., 0] > 0
    assert covered.sum() > 20
    torch.testing.assert_close(out.depth[0, ..., 0][covered], torch.full((int(covered.sum()),), z), atol=1e-5, rtol=0)
    assert torch.all(out.depth[0, ..., 0][~covered] == 0)
    assert 0.9 < out.alpha.max().item() <= 0.999 + 1e-7  # gsplat's alpha clamp


def test_near_gaussian_hides_far_one_in_any_input_order():
    cam = front_camera()
    red = single((0.0, 0.0, 0.5), 0.08, opacity=1.0, color=(1.0, 0.0, 0.0))  # depth 1.5
    blue = single((0.0, 0.0, -0.5), 0.08, opacity=1.0, color=(0.0, 0.0, 1.0))  # depth 2.5
    a, b = render(cat(red, blue), cam), render(cat(blue, red), cam)
    torch.testing.assert_close(a.rgb, b.rgb, atol=0, rtol=0)
    torch.testing.assert_close(a.depth, b.depth, atol=0, rtol=0)
    centre = a.rgb[0, 32, 32]
    # red alpha 0.999 leaves T = 1e-3; blue would bring T below 1e-4, so it is dropped (gsplat's rule)
    torch.testing.assert_close(centre, torch.tensor([0.999 + 0.001, 0.001, 0.001]), atol=1e-6, rtol=0)
    assert a.depth[0, 32, 32, 0].item() == pytest.approx(1.5, abs=1e-5)
    # the blue one shows where the red one is thin: only behind red's rim, never in front
    assert (a.rgb[0, ..., 2] > a.rgb[0, ..., 0] + 0.01).sum() == 0


def test_culling_behind_camera_and_transparent():
    cam = front_camera()
    behind = single((0.0, 0.0, 2.5), 0.05, opacity=1.0)  # camera-space z = -0.5
    faint = single((0.0, 0.0, 0.0), 0.05, opacity=0.5 / 255)
    for g in (behind, faint):
        out = render(g, cam, background=(0.2, 0.3, 0.4))
        assert out.alpha.abs().max() == 0
        torch.testing.assert_close(out.rgb, torch.tensor([0.2, 0.3, 0.4]).expand_as(out.rgb))


def test_backgrounds_per_camera_and_none():
    cams = orbit_cameras(2, 2.0, width=16, height=16)
    g = single((5.0, 5.0, 5.0), 0.01)  # out of view
    out = render(g, cams, background=torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
    assert torch.all(out.rgb[0] == torch.tensor([1.0, 0.0, 0.0]))
    assert torch.all(out.rgb[1] == torch.tensor([0.0, 1.0, 0.0]))
    assert torch.all(render(g, cams, background=None).rgb == 0)
    with pytest.raises(ValueError, match="background"):
        render(g, cams, background=(1.0, 1.0))


# --- cameras ----------------------------------------------------------------------------------

def test_intrinsics_from_fov():
    k = intrinsics_from_fov(DEFAULT_FOVY, 512, 384)
    fy = 192.0 / math.tan(DEFAULT_FOVY / 2)
    torch.testing.assert_close(k, torch.tensor([[fy, 0.0, 256.0], [0.0, fy, 192.0], [0.0, 0.0, 1.0]]))
    # a ray at half the vertical FoV above the axis lands on the top image edge
    cam = Camera(torch.eye(4), k, 512, 384)
    top = torch.tensor([0.0, -math.tan(DEFAULT_FOVY / 2), 1.0])
    torch.testing.assert_close(cam.project(top)[0], torch.tensor([256.0, 0.0]), atol=1e-4, rtol=0)


def test_look_at_puts_target_at_image_centre():
    g = torch.Generator().manual_seed(1)
    eyes = torch.randn(16, 3, generator=g) * 2
    targets = torch.randn(16, 3, generator=g) * 0.3
    viewmats = look_at(eyes, targets)
    rot = viewmats[:, :3, :3]
    torch.testing.assert_close(rot @ rot.transpose(1, 2), torch.eye(3).expand(16, 3, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.linalg.det(rot), torch.ones(16), atol=1e-5, rtol=0)
    cam = Camera(viewmats, intrinsics_from_fov(0.8, 64, 48), 64, 48)
    torch.testing.assert_close(cam.positions, eyes, atol=1e-5, rtol=0)
    for c in range(16):
        torch.testing.assert_close(cam[c].project(targets[c])[0], torch.tensor([32.0, 24.0]), atol=1e-4, rtol=0)
    # world up projects upwards (smaller row); a camera looking straight down stays well defined
    up = cam.project(targets + torch.tensor([0.0, 0.1, 0.0]))[torch.arange(16), torch.arange(16)]
    assert torch.all(up[:, 1] < 24.0)
    down = look_at(torch.tensor([[0.0, 3.0, 0.0]]), torch.zeros(3))
    assert torch.isfinite(down).all()
    torch.testing.assert_close(down[0, :3, :3] @ torch.tensor([0.0, -1.0, 0.0]), torch.tensor([0.0, 0.0, 1.0]))


def test_orbit_cameras_look_at_target():
    target = (0.1, -0.3, 0.05)
    cams = orbit_cameras(8, DEFAULT_RADIUS, elevation_deg=20.0, target=target)
    assert len(cams) == 8 and cams.width == cams.height == 512
    t = torch.tensor(target)
    torch.testing.assert_close(cams.project(t), torch.full((8, 2), 256.0), atol=1e-3, rtol=0)
    torch.testing.assert_close((cams.positions - t).norm(dim=-1), torch.full((8,), DEFAULT_RADIUS), atol=1e-5, rtol=0)
    assert torch.all(cams.positions[:, 1] > t[1])  # positive elevation is above
    flat = orbit_cameras(4, 2.0)
    torch.testing.assert_close(flat.positions, torch.tensor([[0.0, 0.0, 2.0], [2.0, 0.0, 0.0], [0.0, 0.0, -2.0],
                                                             [-2.0, 0.0, 0.0]]), atol=1e-5, rtol=0)
    # the front view sees world +X on the image right (the body's left, as facing a person)
    assert flat[0].project(torch.tensor([0.2, 0.0, 0.0]))[0, 0] > 256


def test_fit_orbit_keeps_all_points_in_frame_tightly():
    pts = random_scene(2000).means * torch.tensor([1.0, 1.5, 1.0]) + torch.tensor([0.3, 1.0, -0.2])
    for elev in (0.0, 25.0):
        cams = fit_orbit_to_points(pts, n_views=6, width=200, height=100, elevation_deg=elev, fill=0.9)
        uv = cams.project(pts)  # [C, N, 2]
        nx = (uv[..., 0] - 100.0).abs() / 100.0
        ny = (uv[..., 1] - 50.0).abs() / 50.0
        worst = torch.maximum(nx, ny).max()
        assert worst <= 0.9 + 1e-4 and worst >= 0.9 - 1e-3
        centre = 0.5 * (pts.min(0).values + pts.max(0).values)
        torch.testing.assert_close(cams.project(centre), torch.tensor([100.0, 50.0]).expand(6, 2), atol=1e-3, rtol=0)


# --- against gsplat's own PyTorch reference -----------------------------------------------------

def _gsplat_reference(g: Gaussians, cams: Camera, bg: torch.Tensor):
    """gsplat's torch projection + a plain per-Gaussian front-to-back loop over all pixels."""
    impl = pytest.importorskip("gsplat.cuda._torch_impl")
    covars, _ = impl._quat_scale_to_covar_preci(g.quats, g.scales, compute_preci=False)
    radii, means2d, depths, conics, _ = impl._fully_fused_projection(
        g.means, covars, cams.viewmats.float(), cams.Ks.float(), cams.width, cams.height)
    h, w = cams.height, cams.width
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    images, alphas, dmaps = [], [], []
    for c in range(len(cams)):
        idx = torch.nonzero((radii[c] > 0).all(-1) & (g.opacities >= 1 / 255))[:, 0]
        idx = idx[torch.sort(depths[c, idx], stable=True).indices]
        T, acc, dep = torch.ones(h, w), torch.zeros(h, w, 3), torch.zeros(h, w)
        done = torch.zeros(h, w, dtype=torch.bool)
        for n in idx.tolist():
            dx, dy = means2d[c, n, 0] - xs, means2d[c, n, 1] - ys
            a, b, cc = conics[c, n]
            sigma = 0.5 * (a * dx * dx + cc * dy * dy) + b * dx * dy
            alpha = (g.opacities[n] * torch.exp(-sigma)).clamp_max(0.999)
            use = (sigma >= 0) & (alpha >= 1 / 255) & ~done
            finished = use & (T * (1 - alpha) <= 1e-4)
            done, use = done | finished, use & ~finished
            wgt = torch.where(use, alpha * T, torch.zeros_like(T))
            acc, dep = acc + wgt[..., None] * g.colors[n], dep + wgt * depths[c, n]
            T = torch.where(use, T * (1 - alpha), T)
        images.append(acc + T[..., None] * bg[c])
        alphas.append(1 - T)
        dmaps.append(dep / (1 - T).clamp_min(1e-10))
    return torch.stack(images), torch.stack(alphas)[..., None], torch.stack(dmaps)[..., None]


def test_projection_matches_gsplat_torch_reference():
    impl = pytest.importorskip("gsplat.cuda._torch_impl")
    g = random_scene(500, seed=3)
    cams = orbit_cameras(3, 1.2, 15.0, width=96, height=80)
    ours = project_gaussians(g.means, g.quats, g.scales, g.opacities, cams.viewmats, cams.Ks, 96, 80)
    covars, _ = impl._quat_scale_to_covar_preci(g.quats, g.scales, compute_preci=False)
    torch.testing.assert_close(quat_scale_to_covar(g.quats, g.scales), covars, atol=1e-7, rtol=1e-5)
    radii, means2d, depths, conics, _ = impl._fully_fused_projection(g.means, covars, cams.viewmats, cams.Ks, 96, 80)
    vis = ours.visible
    assert vis.sum() > 500
    # gsplat's torch twin keeps a fixed 3.33-sigma box; the kernels (and we) shrink it by opacity
    assert not (vis & ~(radii > 0).all(-1)).any()
    assert torch.all(ours.radii[vis] <= radii[vis])
    torch.testing.assert_close(ours.means2d[vis], means2d[vis], atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(ours.depths[vis], depths[vis])
    torch.testing.assert_close(ours.conics[vis], conics[vis], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("settings", [RasterSettings(),
                                      RasterSettings(tile_size=16, chunk_gaussians=5, chunk_elements=4096)],
                         ids=["default", "tiny-chunks"])
def test_rasterizer_matches_gsplat_reference_on_random_scene(settings):
    g = random_scene(400, seed=7, scale_log_mean=-3.0)  # dense enough that many pixels saturate
    g = g.with_(opacities=0.3 + 0.7 * g.opacities)
    cams = orbit_cameras(3, 1.3, 10.0, width=72, height=56)
    bg = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [0.2, 0.5, 0.9]])
    ref_rgb, ref_alpha, ref_depth = _gsplat_reference(g, cams, bg)
    rgb, alpha, depth = rasterize_torch(g.means, g.quats, g.scales, g.opacities, g.colors, cams.viewmats, cams.Ks,
                                        72, 56, bg, settings)
    assert (ref_alpha > 0.999).float().mean() > 0.1  # the transmittance cut-off is exercised
    torch.testing.assert_close(rgb, ref_rgb, atol=1e-5, rtol=0)
    torch.testing.assert_close(alpha, ref_alpha, atol=1e-5, rtol=0)
    torch.testing.assert_close(depth, ref_depth, atol=1e-4, rtol=1e-4)


def test_rasterizer_is_differentiable():
    g = random_scene(50, seed=2)
    means, colors = g.means.clone().requires_grad_(), g.colors.clone().requires_grad_()
    cams = orbit_cameras(2, 1.2, width=24, height=24)
    rgb, alpha, depth = rasterize_torch(means, g.quats, g.scales, g.opacities, colors, cams.viewmats, cams.Ks, 24, 24,
                                        torch.ones(2, 3))
    (rgb.sum() + depth.sum()).backward()
    assert torch.isfinite(means.grad).all() and means.grad.abs().sum() > 0
    assert torch.isfinite(colors.grad).all() and colors.grad.abs().sum() > 0


# --- entry points ---------------------------------------------------------------------------

def test_backend_selection_on_cpu():
    assert resolve_backend("auto", torch.device("cpu")) == "torch"
    with pytest.raises(ValueError, match="backend"):
        resolve_backend("opengl", torch.device("cpu"))
    with pytest.raises(RuntimeError, match="CUDA"):
        render(single((0, 0, 0), 0.1), front_camera(), backend="gsplat")


def test_render_accepts_a_batch_of_one_only():
    g = single((0.0, 0.0, 0.0), 0.1)
    batched = Gaussians(means=g.means[None], quats=g.quats[None], scales=g.scales[None],
                        opacities=g.opacities[None], colors=g.colors[None])
    torch.testing.assert_close(render(batched, front_camera()).rgb, render(g, front_camera()).rgb)
    two = Gaussians(**{k: torch.cat([getattr(batched, k)] * 2) for k in FIELDS})
    with pytest.raises(ValueError, match="batch"):
        render(two, front_camera())


def test_render_turntable_and_image_grid():
    g = random_scene(300, seed=4, scale_log_mean=-3.0)
    frames = render_turntable(g, n_frames=5, size=32, views_per_batch=2)
    assert frames.shape == (5, 32, 32, 3) and frames.dtype == np.uint8
    assert all((f < 250).any(axis=-1).sum() > 50 for f in frames)  # the body is in every frame
    assert np.abs(frames[0].astype(int) - frames[2]).max() > 100  # ...seen from different sides
    grid = image_grid(frames, ncols=2)
    assert grid.shape == (3 * 32, 2 * 32, 3) and grid.dtype == np.uint8
    np.testing.assert_array_equal(grid[32:64, 32:64], frames[3])
    assert (grid[64:, 32:] == 255).all()  # the empty cell
    floats = image_grid(torch.zeros(2, 4, 4, 3), ncols=1)
    assert floats.shape == (8, 4, 3) and (floats == 0).all()


def test_write_video_round_trip(tmp_path):
    import imageio.v2 as iio2

    frames = np.zeros((7, 48, 64, 3), np.uint8)
    frames[:, :, :32] = 200
    path = write_video(tmp_path / "sub" / "clip.mp4", frames, fps=12)
    with iio2.get_reader(path, format="FFMPEG") as reader:
        read = [f for f in reader]
        assert reader.get_meta_data()["fps"] == pytest.approx(12)
    assert len(read) == 7 and read[0].shape == (48, 64, 3)
    assert abs(int(read[3][24, 10, 0]) - 200) < 8 and int(read[3][24, 50, 0]) < 8
    odd = write_video(tmp_path / "odd.mp4", torch.rand(3, 33, 47, 3), fps=30)
    with iio2.get_reader(odd, format="FFMPEG") as reader:
        read = [f for f in reader]
    assert len(read) == 3 and read[0].shape == (34, 48, 3)  # padded to even sizes for H.264


def test_write_image_and_unwritable_folder(tmp_path):
    import imageio.v3 as iio

    img = (np.arange(12 * 10 * 3) % 256).astype(np.uint8).reshape(12, 10, 3)
    np.testing.assert_array_equal(iio.imread(write_image(tmp_path / "a.png", img)), img)
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    with pytest.raises(OSError, match="not writable"):
        write_image(blocker / "b.png", img)
    with pytest.raises(OSError, match="not writable"):
        write_video(blocker / "c.mp4", np.zeros((2, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="frames"):
        write_video(tmp_path / "d.mp4", np.zeros((8, 8, 3), np.uint8))
