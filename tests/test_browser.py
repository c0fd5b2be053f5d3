"""The app and its 3D viewer in a real browser: headless Debian Chromium driven by Playwright.

Skipped when ``/usr/bin/chromium`` (or ``$SIGMAN_CHROMIUM``) is missing; ``.ci/run`` installs it
with apt. WebGL runs on SwiftShader (Chromium's CPU renderer); ``--enable-unsafe-swiftshader``
keeps it available in Chromium versions that no longer fall back to it by themselves.

The README screenshots are regenerated (with the app's real model: the demo weights, or the
default config's random weights) by

    SIGMAN_UPDATE_SCREENSHOTS=1 python -m pytest tests/test_browser.py

otherwise the screenshots go to the test's temporary folder only.
"""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

CHROMIUM = Path(os.environ.get("SIGMAN_CHROMIUM", "/usr/bin/chromium"))
if not CHROMIUM.is_file():
    pytest.skip(f"no Chromium at {CHROMIUM} (install it with: apt-get install -y chromium)", allow_module_level=True)
playwright_api = pytest.importorskip("playwright.sync_api")

from app import build_demo, launch  # noqa: E402
from sigman.app_logic import AvatarStudio, GenerationRequest, OutputSettings, ViewerPool, load_model  # noqa: E402
from viewer import launch_viewer  # noqa: E402
from test_app import EXAMPLES, free_port, tiny_studio  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:.*no_silent_downcasting", "ignore:The copy keyword is deprecated")
REPO = Path(__file__).resolve().parent.parent
UPDATE_SCREENSHOTS = os.environ.get("SIGMAN_UPDATE_SCREENSHOTS") == "1"
README_PICTURES = REPO / "assets" / "readme"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]
HIDE_VISER_NOTICES = ".mantine-Notifications-root { display: none !important; }"  # "software WebGL" toasts
MAX_PNG_BYTES = 1_000_000


@pytest.fixture(scope="module")
def served(anny_body, tmp_path_factory):
    """(studio, url) of the app: the tiny test model, or the real one when updating screenshots."""
    root = tmp_path_factory.mktemp("browser")
    heartbeat = os.environ.get("GRADIO_HEARTBEAT_INTERVAL")
    os.environ["GRADIO_HEARTBEAT_INTERVAL"] = "1"  # a closed tab is noticed (and its viewer stopped) within ~1 s
    if UPDATE_SCREENSHOTS:
        model = load_model(device="cpu")
        studio = AvatarStudio(model, OutputSettings.for_device("cpu"), output_root=root / "outputs",
                              viewers=ViewerPool(launch_viewer, "127.0.0.1", capacity=2))
    else:
        studio = tiny_studio(anny_body, root)
    demo = build_demo(studio)
    _, url, _ = launch(demo, studio, host="127.0.0.1", port=free_port(), block=False)
    yield studio, url
    demo.close()
    studio.close()
    if heartbeat is None:
        os.environ.pop("GRADIO_HEARTBEAT_INTERVAL")
    else:
        os.environ["GRADIO_HEARTBEAT_INTERVAL"] = heartbeat


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def save_screenshot(png: bytes, path: Path, max_bytes: int = MAX_PNG_BYTES) -> Path:
    """Write a screenshot under ``max_bytes``: as it is if it fits, else in 256 colours, then smaller."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    buf = io.BytesIO()
    image.save(buf, "PNG", optimize=True)
    while buf.tell() > max_bytes and image.width >= 400:
        buf = io.BytesIO()
        image.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(buf, "PNG", optimize=True)
        image = image.resize((image.width * 3 // 4, image.height * 3 // 4), Image.LANCZOS)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    return path


def screenshot_targets(tmp_path: Path, name: str) -> list[Path]:
    return [tmp_path / name] + ([README_PICTURES / name] if UPDATE_SCREENSHOTS else [])


def scene_pixels(png: bytes, panel_width: int = 340) -> np.ndarray:
    """The 3D scene's pixels of a viser page screenshot (the control panel on the right cut off)."""
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int16)
    return rgb[:, : rgb.shape[1] - panel_width]


def test_app_page_generates_an_avatar(served, browser, tmp_path):
    studio, url = served
    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    page.goto(url)
    page.wait_for_selector("#generate", timeout=60_000)
    page.set_input_files("#photo input[type=file]", str(EXAMPLES[0]))
    page.click("#pose-gallery img[alt=waving]")  # the thumbnail picks the preset
    page.wait_for_function("() => document.querySelector('input[type=radio][value=waving]')?.checked", timeout=10_000)
    page.wait_for_selector("#photo img", timeout=10_000)
    page.click("#generate")
    summary = "document.querySelector('#summary [data-testid=markdown]')?.innerText ?? ''"
    page.wait_for_function(f"() => /Gaussians · seed/.test({summary})",
                           timeout=(900_000 if UPDATE_SCREENSHOTS else 60_000))
    assert "seed 0" in page.evaluate(f"() => {summary}")
    page.wait_for_function("() => { const img = document.querySelector('#views img');"
                           " return img && img.complete && img.naturalWidth > 0; }", timeout=20_000)
    page.wait_for_selector("#splats canvas", timeout=20_000)
    downloads = "document.querySelector('#downloads')?.innerText"
    page.wait_for_function(f"() => /avatar\\s*\\.ply[\\s\\S]*avatar\\s*\\.glb/.test({downloads})", timeout=20_000)
    frame = page.wait_for_selector("#viewer iframe", timeout=20_000).content_frame()
    frame.wait_for_selector("canvas", timeout=30_000)
    frame.add_style_tag(content=HIDE_VISER_NOTICES)
    time.sleep(3)  # let the videos start and the splats arrive in both 3D views
    png = page.screenshot(full_page=True)
    for path in screenshot_targets(tmp_path, "app_screenshot.png"):
        assert save_screenshot(png, path).stat().st_size <= MAX_PNG_BYTES
    assert len(studio.viewers) == 1
    page.close()  # closing the tab stops its viewer
    deadline = time.time() + 20
    while len(studio.viewers) and time.time() < deadline:
        time.sleep(0.2)
    assert len(studio.viewers) == 0


def test_viewer_page_draws_the_avatar(served, browser, tmp_path):
    studio, _ = served
    session = "browser-viewer-test"
    result = studio.generate(GenerationRequest(photo=str(EXAMPLES[1]), pose="waving", motion="none", steps=2),
                             session=session)
    viewer = studio.viewers.get(session)
    page = browser.new_page(viewport={"width": 1200, "height": 800})
    page.goto(result.viewer_url)
    page.wait_for_selector("canvas", timeout=30_000)
    page.add_style_tag(content=HIDE_VISER_NOTICES)

    def settled_scene(timeout: float = 30.0) -> tuple[bytes, np.ndarray]:
        """Screenshots until two in a row agree (the splats have arrived and are sorted)."""
        last = None
        deadline = time.time() + timeout
        while time.time() < deadline:
            time.sleep(1.0)
            png = page.screenshot()
            scene = scene_pixels(png)
            if last is not None and np.abs(scene - last).max(axis=-1).mean() < 0.5 and scene.std() > 5:
                return png, scene
            last = scene
        return png, scene

    png, scene = settled_scene()
    for path in screenshot_targets(tmp_path, "viewer_screenshot.png"):
        save_screenshot(png, path)
    background = np.median(scene.reshape(-1, 3), axis=0)
    drawn = np.abs(scene - background).max(axis=-1) > 24
    assert scene.std() > 5 and drawn.mean() > 0.01, "the 3D canvas is blank"
    # the avatar itself is drawn: turning it changes the picture (the floor grid does not turn)
    viewer.set_yaw(90.0)
    assert viewer.wait_until_drawn(10.0)
    _, turned = settled_scene()
    changed = np.abs(turned - scene).max(axis=-1) > 24
    assert changed.mean() > 0.002, "turning the avatar did not change the canvas"
    page.close()


def height_coded_avatar(anny_body, uv64):
    """The bare anny body in the A pose: head (top 12 % of its height) red, the rest blue."""
    from sigman.gaussians import repose, surface_gaussians
    from sigman.presets import resolve_pose

    g = surface_gaussians(uv64, opacity=1.0)
    transforms, _ = anny_body.pose_transforms(resolve_pose("a_pose"))
    posed = repose(g, transforms)
    posed = posed.with_(means=posed.means[0], quats=posed.quats[0], scales=posed.scales[0], opacities=posed.opacities[0],
                        colors=posed.colors[0], skin_weights=None)
    y = posed.means[:, 1]
    head = y > y.max() - 0.12 * (y.max() - y.min())
    colors = torch.where(head[:, None], torch.tensor([0.9, 0.05, 0.05]), torch.tensor([0.1, 0.2, 0.9]))
    return posed.with_(colors=colors)


def red_and_blue_rows(png: bytes) -> tuple[float, float, int, int]:
    """Mean screen row of red and of blue pixels (row 0 = top) and their counts."""
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int16)
    red = (rgb[..., 0] > 150) & (rgb[..., 1] < 90) & (rgb[..., 2] < 90)
    blue = (rgb[..., 2] > 130) & (rgb[..., 0] < 90)
    rows = np.arange(rgb.shape[0])[:, None]
    mean = lambda m: float((rows * m).sum() / max(m.sum(), 1))  # noqa: E731
    return mean(red), mean(blue), int(red.sum()), int(blue.sum())


def test_downloads_stand_upright_in_gradio_model3d(anny_body, uv64, browser, tmp_path):
    """The app's Model3D (gsplat.js) shows the downloaded avatar.ply and the app's preview.splat
    head up: the red head is drawn above the blue body."""
    import gradio as gr

    from app import splat_view
    from sigman.app_logic import write_preview
    from sigman.io import save_gaussians
    from test_app import free_port

    avatar = height_coded_avatar(anny_body, uv64)
    save_gaussians(tmp_path / "avatar.ply", avatar)
    write_preview(avatar, tmp_path / "preview.splat")
    with gr.Blocks() as demo:
        with gr.Row():
            splat_view(str(tmp_path / "avatar.ply"), elem_id="ply")
            splat_view(str(tmp_path / "preview.splat"), elem_id="splat")
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
                            allowed_paths=[str(tmp_path)])
    try:
        page = browser.new_page(viewport={"width": 1200, "height": 700})
        page.goto(url)
        for name in ("ply", "splat"):
            canvas = page.wait_for_selector(f"#{name} canvas", timeout=60_000)
            deadline, found = time.time() + 60, None
            while time.time() < deadline:
                time.sleep(1.0)
                png = canvas.screenshot()
                red_row, blue_row, reds, blues = red_and_blue_rows(png)
                if reds > 30 and blues > 300:
                    found = (red_row, blue_row, reds, blues)
                    break
            save_screenshot(png, tmp_path / f"model3d_{name}.png")
            if UPDATE_SCREENSHOTS:
                save_screenshot(png, README_PICTURES / f"model3d_{name}.png")
            assert found is not None, f"{name}: the avatar was not drawn ({reds} red, {blues} blue pixels)"
            assert found[0] < found[1] - 20, f"{name}: the head is not at the top (rows: head {found[0]:.0f}, body {found[1]:.0f})"
        page.close()
    finally:
        demo.close()


# --- the viewer draws what the renderer draws ---------------------------------------------------

# Measured (SwiftShader in Chromium 156, viser 1.1.1): this test 0.993 (0.36-0.40 with viser's
# unpatched shader, see viewer/splat_shader.py); a demo-weights avatar 0.993-0.995 at 1, 3 and 6 m
# (unpatched: 0.78 at 6 m). The bar leaves room for other rasterisers (SwiftShader versions, GPUs)
# and 8-bit blending, and still fails the unpatched shader by far.
MIN_VIEWER_SSIM = 0.95
VIEWER_FOVY = 0.6  # rad
VIEWER_SIZE = 320  # px, square canvas


def canvas_pixels(page) -> np.ndarray:
    """The viewer's WebGL canvas (the 3D scene alone, no panel) composited over white: uint8 [H, W, 3]."""
    import base64

    url = page.evaluate("() => document.querySelector('canvas[data-engine]').toDataURL('image/png')")
    rgba = np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",")[1]))).convert("RGBA")) / 255.0
    return np.round((rgba[..., :3] * rgba[..., 3:] + 1.0 - rgba[..., 3:]) * 255).astype(np.uint8)


def settled_canvas(page, timeout: float = 60.0) -> np.ndarray:
    """Canvas readbacks 1 s apart until three in a row agree (the splats have arrived and are sorted)."""
    last, stable = None, 0
    deadline = time.time() + timeout
    while time.time() < deadline and stable < 2:
        time.sleep(1.0)
        pixels = canvas_pixels(page).astype(np.int16)
        stable = stable + 1 if last is not None and np.abs(pixels - last).max() <= 1 else 0
        last = pixels
    return last.astype(np.uint8)


@pytest.mark.slow
def test_viewer_draws_what_the_renderer_draws(browser, anny_body):
    """The viewer's canvas at a fixed camera against sigman.render's image of the same posed
    avatar: SSIM >= MIN_VIEWER_SSIM over the body's bounding box, weighted by its alpha."""
    import torch

    from sigman.evaluation import masked_ssim
    from sigman.gaussians import repose, surface_gaussians
    from sigman.presets import resolve_pose
    from sigman.render import Camera, intrinsics_from_fov, look_at, render
    from sigman.uv import build_uv_template
    from viewer import launch_viewer

    body = surface_gaussians(build_uv_template(anny_body, 256))  # the demo model's splat density (~40k)
    colours = 0.5 + 0.4 * torch.sin(body.means * torch.tensor([23.0, 31.0, 17.0]))  # a texture SSIM can see
    avatar = body.with_(colors=colours.clamp(0, 1))
    pose = resolve_pose("waving")
    transforms, _ = anny_body.pose_transforms(pose)
    posed = repose(avatar, transforms)
    posed = posed.with_(means=posed.means[0], quats=posed.quats[0], scales=posed.scales[0],
                        opacities=posed.opacities[0], colors=posed.colors[0])
    low, high = posed.means.min(0).values, posed.means.max(0).values
    target = ((low + high) / 2).tolist()
    eye = [target[0] + 0.8, target[1] + 0.3, target[2] + 5.0]  # far: the body ~120 px tall, where small splats count

    viewer = launch_viewer(avatar, anny_body)
    page = browser.new_page(viewport={"width": VIEWER_SIZE, "height": VIEWER_SIZE})
    try:
        viewer.set_pose("waving")
        page.goto(viewer.url + "/?fixedDpr=1")  # no adaptive resolution: canvas pixels = CSS pixels
        page.wait_for_selector("canvas[data-engine]", timeout=30_000)
        deadline = time.time() + 10
        while not viewer.tabs and time.time() < deadline:
            time.sleep(0.1)
        camera = viewer.tabs[0].client.camera
        camera.up_direction = (0.0, 1.0, 0.0)
        camera.fov = VIEWER_FOVY
        camera.position = tuple(eye)
        camera.look_at = tuple(target)
        deadline = time.time() + 30  # the browser reports its camera back once it has moved
        while time.time() < deadline and not (np.allclose(camera.position, eye, atol=1e-3)
                                              and np.allclose(camera.look_at, target, atol=1e-3)):
            time.sleep(0.1)
        shown = settled_canvas(page)
    finally:
        page.close()
        viewer.stop()

    cameras = Camera(look_at(torch.tensor([eye]), target), intrinsics_from_fov(VIEWER_FOVY, VIEWER_SIZE, VIEWER_SIZE),
                     VIEWER_SIZE, VIEWER_SIZE)
    out = render(posed, cameras, background=(1.0, 1.0, 1.0), backend="torch")
    reference, alpha = out.images()[0], out.alpha[0, ..., 0].numpy()
    ys, xs = np.nonzero(alpha > 0.02)
    box = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))

    def as_batch(image: np.ndarray) -> "torch.Tensor":
        return torch.tensor(image[box] / 255.0, dtype=torch.float32).permute(2, 0, 1)[None]

    score = masked_ssim(as_batch(shown), as_batch(reference), torch.tensor(alpha[box])[None, None]).item()
    assert score >= MIN_VIEWER_SSIM, f"viewer vs renderer SSIM {score:.3f} < {MIN_VIEWER_SSIM}"
