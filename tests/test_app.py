"""The Gradio app end to end: a client drives the real page's API on a tiny random-weights
pipeline (a few seconds per generation on a CPU), plus the app logic's pieces on their own."""

from __future__ import annotations

import errno
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("gradio")
gradio_client = pytest.importorskip("gradio_client")

from app import build_demo, launch  # noqa: E402
from sigman.app_logic import (  # noqa: E402
    AppError, AvatarStudio, GenerationRequest, LoadedModel, OutputSettings, ViewerPool, load_model, motion_input,
    optimize_for_serving, user_message, viewer_url, write_preview,
)
from viewer import launch_viewer  # noqa: E402
from sigman.io import load_gaussians, load_splat  # noqa: E402
from sigman.pipeline import SigmanPipeline  # noqa: E402
from sigman.pose import PoseFileError, SMPLXPose, save_pose  # noqa: E402
from sigman.preprocess import ImageInputError  # noqa: E402
from sigman.weights import WeightsError  # noqa: E402
from tiny_configs import tiny_pipeline_config  # noqa: E402

# gradio's queue uses pandas options that pandas 3 deprecates: not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:.*no_silent_downcasting", "ignore:The copy keyword is deprecated")
REPO = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((REPO / "assets" / "examples").glob("*.png"))
TINY = tiny_pipeline_config(steps=2)
TINY_OUTPUTS = OutputSettings(num_views=2, render_size=64, turntable_frames=4, motion_size=48, max_motion_frames=6)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve(studio: AvatarStudio) -> Iterator[str]:
    """Serve the app on a free 127.0.0.1 port in this process; yields its URL."""
    demo = build_demo(studio)
    _, url, _ = launch(demo, studio, host="127.0.0.1", port=free_port(), block=False)
    try:
        yield url
    finally:
        demo.close()
        studio.close()


def tiny_studio(anny_body, tmp_path: Path, viewers: bool = True) -> AvatarStudio:
    pipe = SigmanPipeline.from_config(TINY, body=anny_body)
    model = LoadedModel(pipe, "random weights (tiny test model)", banner="**Random weights** (tests)",
                        random_weights=True)
    return AvatarStudio(model, TINY_OUTPUTS, output_root=tmp_path / "outputs",
                        viewers=ViewerPool(launch_viewer, "127.0.0.1", capacity=2) if viewers else None)


@pytest.fixture(scope="module")
def app(anny_body, tmp_path_factory):
    """(studio, client) of one app serving the tiny pipeline for the whole module."""
    studio = tiny_studio(anny_body, tmp_path_factory.mktemp("app"))
    with serve(studio) as url:
        yield studio, gradio_client.Client(url, verbose=False)


def generate(client, photo: Path | None, **settings):
    """Call the page's Generate button through the API; returns its outputs as a dict."""
    args = dict(photo=photo and gradio_client.handle_file(str(photo)), mask=None, pose="a_pose", pose_file=None,
                motion="walk_cycle", motion_file=None, seed=0, steps=2, guidance=2.0, sampler="ddim",
                refine_photo=False)
    args.update({k: gradio_client.handle_file(str(v)) if k in ("mask", "pose_file", "motion_file") and v else v
                 for k, v in settings.items()})
    out = client.predict(**args, api_name="/generate")
    names = ("summary", "views", "turntable", "motion", "viewer", "splats", "downloads", "input_view")
    return dict(zip(names, out))


def video_frames(path) -> np.ndarray:
    """Decode an mp4 (imageio's ffmpeg plugin): uint8 ``[T, H, W, 3]``."""
    import imageio.v3 as iio

    return np.stack(list(iio.imiter(path, plugin="FFMPEG")))


# --- end to end through the page's API --------------------------------------------------------------

def test_photo_to_outputs(app):
    studio, client = app
    n = studio.model.pipe.template.num_points
    out = generate(client, EXAMPLES[0], pose="waving", motion="wave_loop", seed=3, sampler="dpmpp")
    assert f"{n:,} Gaussians" in out["summary"] and "seed 3" in out["summary"] and "dpmpp" in out["summary"]
    views = np.asarray(Image.open(out["views"]))
    assert views.shape == (64, 128, 3) and views.std() > 1  # two views side by side, something drawn
    turntable = video_frames(out["turntable"])
    assert turntable.shape[0] == TINY_OUTPUTS.turntable_frames and turntable.shape[-1] == 3
    motion = video_frames(out["motion"])
    assert motion.shape[0] == TINY_OUTPUTS.max_motion_frames  # wave_loop's 30 frames subsampled to 6
    ply, glb, mesh = out["downloads"]
    assert [Path(f).name for f in (ply, glb, mesh)] == ["avatar.ply", "avatar.glb", "avatar_mesh.glb"]
    assert load_gaussians(ply).num_gaussians == n
    assert load_gaussians(glb).num_gaussians == n
    # both .glb files carry the chosen motion as a glTF animation of the skeleton
    from sigman.io.gltf import read_gltf

    for path in (glb, mesh):
        gltf, _ = read_gltf(path)
        assert [a["name"] for a in gltf["animations"]] == ["wave_loop"] and gltf["skins"]
    assert gltf["meshes"][0]["primitives"][0]["mode"] == 4 and gltf["images"][0]["mimeType"] == "image/png"
    assert Path(out["splats"]).suffix == ".splat" and load_splat(out["splats"]).num_gaussians == n
    # the live viewer of this result answers at the iframe's address
    url = out["viewer"].split("src='")[1].split("'")[0]
    assert url.startswith("http://127.0.0.1:")
    with urllib.request.urlopen(url, timeout=10) as page:
        assert page.status == 200


def test_pose_as_in_the_photo_and_photo_refinement(app):
    """'as in the photo' fits the body to the photo; the photo-faithful checkbox refines the avatar
    against it and shows it from the photo's camera, at the photo's own size."""
    _, client = app
    out = generate(client, EXAMPLES[2], pose="photo", motion="none", refine_photo=True)
    assert "photo refinement" in out["summary"]
    view = np.asarray(Image.open(out["input_view"]).convert("RGB"))
    photo = Image.open(EXAMPLES[2])
    assert view.shape[:2] == (photo.height, photo.width)
    assert view.std() > 5  # an avatar is drawn, not a blank canvas
    assert any(Path(p).name == "avatar_mesh.glb" for p in out["downloads"])


def test_same_session_replaces_its_viewer(app):
    studio, client = app
    first = generate(client, EXAMPLES[1], motion="none")
    second = generate(client, EXAMPLES[1], motion="none", seed=1)
    url_of = lambda out: out["viewer"].split("src='")[1].split("'")[0]  # noqa: E731
    assert url_of(first) != url_of(second) and second["motion"] is None
    with pytest.raises(OSError):
        urllib.request.urlopen(url_of(first), timeout=5)  # the session's previous viewer was stopped
    assert len(studio.viewers) <= studio.viewers.capacity


def test_concurrent_requests_get_their_own_results(app):
    studio, _ = app
    url = app[1].src
    a, b = gradio_client.Client(url, verbose=False), gradio_client.Client(url, verbose=False)
    args = lambda photo, seed: dict(  # noqa: E731
        photo=gradio_client.handle_file(str(photo)), mask=None, pose="standing", pose_file=None, motion="none",
        motion_file=None, seed=seed, steps=3, guidance=2.0, sampler="ddim", refine_photo=False)
    jobs = [a.submit(**args(EXAMPLES[0], 11), api_name="/generate"),
            b.submit(**args(EXAMPLES[2], 22), api_name="/generate")]
    (sum_a, *_, dl_a, _), (sum_b, *_, dl_b, _) = [job.result(timeout=120) for job in jobs]
    assert "seed 11" in sum_a and "seed 22" in sum_b
    ply_a = next(p for p in dl_a if p.endswith(".ply"))
    ply_b = next(p for p in dl_b if p.endswith(".ply"))
    assert Path(ply_a).read_bytes() != Path(ply_b).read_bytes()
    # each concurrent result is exactly what that request gives on its own
    alone = a.predict(**args(EXAMPLES[0], 11), api_name="/generate")
    assert Path(next(p for p in alone[-2] if p.endswith(".ply"))).read_bytes() == Path(ply_a).read_bytes()
    folders = [p for p in studio.output_root.iterdir() if p.is_dir()]
    assert len(folders) == len({p.name for p in folders})  # one folder per request


def _png_bytes(image: Image.Image) -> bytes:
    import io

    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _huge_png(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` (the pixels never need decoding: the app must
    refuse it from the header)."""
    data = bytearray(_png_bytes(Image.new("RGB", (8, 8), "white")))
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


def bad_inputs(folder: Path) -> dict[str, tuple[dict, str]]:
    """name -> (generate() arguments, the start of the expected message)."""
    def write(name: str, content: bytes) -> Path:
        path = folder / name
        path.write_bytes(content)
        return path

    person = np.asarray(Image.open(EXAMPLES[0]).convert("RGB"))
    speck = np.full((400, 400, 3), 255, np.uint8)
    speck[200:204, 200:204] = (200, 30, 30)
    pose_1 = folder / "one_frame.npz"
    save_pose(pose_1, SMPLXPose.zeros(1))
    np.savez(folder / "wrong_keys.npz", hello=np.zeros(3))
    return {
        "no photo": (dict(photo=None), "Upload a photo of a person first"),
        "not an image": (dict(photo=write("notes.png", b"these are words, not pixels\n" * 20)),
                         "Photo: cannot read notes.png as an image"),
        "corrupt": (dict(photo=write("cut.png", _png_bytes(Image.fromarray(person))[:3000])),
                    "Photo: cut.png is corrupt or truncated"),
        "tiny": (dict(photo=write("tiny.png", _png_bytes(Image.new("RGB", (40, 48), "red")))),
                 "Photo: image is 40x48 px, under 64 px"),
        "huge": (dict(photo=write("huge.png", _huge_png(9000, 6000))),
                 "Photo: image is 9000x6000 px (54.0 MP), over the 50 MP limit"),
        "blank": (dict(photo=write("blank.png", _png_bytes(Image.new("RGB", (300, 400), (250, 250, 250))))),
                  "Photo: image is blank"),
        "no person": (dict(photo=write("speck.png", _png_bytes(Image.fromarray(speck)))), "Photo: no person found"),
        "mask of another shape": (dict(mask=write("mask.png", _png_bytes(Image.new("L", (200, 80), 255)))),
                                  "Mask: mask is 200x80 px but the image is"),
        "pose not an npz": (dict(pose_file=write("pose.npz", b"PK\x03\x04 definitely not a zip")),
                            "Pose file: pose.npz is not a readable .npz"),
        "pose with wrong keys": (dict(pose_file=folder / "wrong_keys.npz"),
                                 "Pose file wrong_keys.npz: pose is missing key 'global_orient'"),
        "motion of one frame": (dict(motion_file=pose_1), "Motion file: one_frame.npz holds a single pose"),
        "steps out of range": (dict(steps=0), "Value 0 is less than minimum value 1"),  # checked by Gradio
    }


def test_bad_inputs_give_one_readable_error_each(app, tmp_path):
    _, client = app
    for name, (settings, expected) in bad_inputs(tmp_path).items():
        settings.setdefault("photo", EXAMPLES[0])
        try:
            generate(client, **settings)
        except gradio_client.exceptions.AppError as err:
            message = str(err)
        else:
            pytest.fail(f"{name}: no error")
        assert message.startswith(expected), f"{name}: {message}"
        assert "Traceback" not in message and "\n" not in message, name
    assert "Gaussians" in generate(client, EXAMPLES[3], motion="none")["summary"]  # still serving


def test_disk_full_is_a_readable_error(app, monkeypatch):
    _, client = app

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("sigman.app_logic.export_avatar", no_space)
    with pytest.raises(gradio_client.exceptions.AppError, match="ran out of disk space"):
        generate(client, EXAMPLES[0], motion="none")


def test_unexpected_failure_shows_no_traceback(app, monkeypatch):
    _, client = app

    def bug(*args, **kwargs):
        raise KeyError("some internal detail")

    monkeypatch.setattr("sigman.app_logic.export_avatar", bug)
    with pytest.raises(gradio_client.exceptions.AppError) as info:
        generate(client, EXAMPLES[0], motion="none")
    assert str(info.value).startswith("Generation failed unexpectedly (KeyError)")
    assert "internal detail" not in str(info.value)


def test_mask_and_uploaded_pose_and_motion(app, tmp_path):
    studio, client = app
    photo = np.asarray(Image.open(EXAMPLES[1]).convert("RGB"))
    mask = np.zeros(photo.shape[:2], np.uint8)
    h, w = mask.shape
    mask[h // 8: -h // 8, w // 4: -w // 4] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    pose = SMPLXPose.zeros(5)  # a sequence: its first frame is the pose
    pose.body_pose[:, 16, 2] = -1.0
    save_pose(tmp_path / "seq.npz", pose)
    out = generate(client, EXAMPLES[1], mask=tmp_path / "mask.png", pose_file=tmp_path / "seq.npz",
                   motion_file=tmp_path / "seq.npz")
    assert video_frames(out["motion"]).shape[0] == 5
    assert load_gaussians(out["splats"]).num_gaussians == studio.model.pipe.template.num_points


def test_missing_weights_are_a_readable_error(tmp_path):
    model = load_model(tmp_path / "no_such_folder", device="cpu")
    assert model.pipe is None and "could not be loaded" in model.banner
    studio = AvatarStudio(model, TINY_OUTPUTS, output_root=tmp_path / "out")
    with serve(studio) as url:
        client = gradio_client.Client(url, verbose=False)
        with pytest.raises(gradio_client.exceptions.AppError, match="weights in .*no_such_folder could not be loaded"):
            generate(client, EXAMPLES[0])


def test_mismatched_weights_are_a_readable_error(anny_body, tmp_path):
    pipe = SigmanPipeline.from_config(TINY, body=anny_body)
    pipe.save_pretrained(tmp_path / "w")
    (tmp_path / "w" / "pipeline.json").write_text((tmp_path / "w" / "pipeline.json").read_text()
                                                  .replace('"num_layers": 1', '"num_layers": 2'))
    model = load_model(tmp_path / "w", device="cpu", body=anny_body)
    assert model.pipe is None and "does not match" in model.error
    studio = AvatarStudio(model, TINY_OUTPUTS, output_root=tmp_path / "out")
    with pytest.raises(AppError, match="does not match the SigmanDiT config"):
        studio.generate(GenerationRequest(photo=str(EXAMPLES[0])))


def test_weights_folder_from_the_environment(anny_body, tmp_path, monkeypatch):
    SigmanPipeline.from_config(TINY, body=anny_body).save_pretrained(tmp_path / "w")
    monkeypatch.setenv("SIGMAN_WEIGHTS", str(tmp_path / "w"))
    model = load_model(device="cpu", body=anny_body)
    assert model.pipe is not None and model.banner is None and str(tmp_path / "w") in model.description


def test_missing_demo_weights_fall_back_to_random_weights(anny_body, tmp_path, monkeypatch):
    monkeypatch.delenv("SIGMAN_WEIGHTS", raising=False)
    monkeypatch.setattr("sigman.app_logic.default_weights_folder", lambda: tmp_path / "demo")
    model = load_model(device="cpu", random_config=TINY, body=anny_body)
    assert model.pipe is not None and model.random_weights and "Random weights" in model.banner


def test_progress_reports_every_stage(app):
    studio, _ = app
    seen: list[tuple[float, str]] = []
    studio.generate(GenerationRequest(photo=str(EXAMPLES[0]), motion="wave_loop", steps=2),
                    session="progress-test", progress=lambda fraction, stage: seen.append((fraction, stage)))
    studio.end_session("progress-test")
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    stages = " | ".join(stage for _, stage in seen)
    for stage in ("checking the inputs", "finding the person in the photo", "sampling step 2/2", "decoding Gaussians",
                  "rendering the turntable", "animating the avatar (6 frames)", "starting the 3D viewer", "done"):
        assert stage in stages


def test_shipped_demo_weights_end_to_end(anny_body, tmp_path, monkeypatch):
    """The shipped demo weights (the app's default) through the page, with few steps."""
    monkeypatch.delenv("SIGMAN_WEIGHTS", raising=False)
    model = load_model(device="cpu", body=anny_body)
    assert model.pipe is not None and not model.random_weights, model.banner
    pipe = model.pipe
    studio = AvatarStudio(model,
                          OutputSettings(num_views=4, render_size=128, turntable_frames=6, motion_size=96,
                                         max_motion_frames=8), output_root=tmp_path / "out")
    start = time.perf_counter()
    with serve(studio) as url:
        out = generate(gradio_client.Client(url, verbose=False), EXAMPLES[2], pose="walking", steps=2)
    assert time.perf_counter() - start < 90
    ply = next(p for p in out["downloads"] if p.endswith(".ply"))
    assert load_gaussians(ply).num_gaussians == pipe.template.num_points
    assert video_frames(out["motion"]).shape[0] == 8 and "random weights" not in out["summary"]
    assert video_frames(out["turntable"]).shape[0] == 6


def test_python_app_py_starts_with_a_random_weights_banner(tmp_path):
    """``python app.py`` on a checkout without trained weights: it starts and says so."""
    port = free_port()
    env = dict(os.environ, SIGMAN_ASSETS=str(tmp_path / "assets"), GRADIO_ANALYTICS_ENABLED="False")
    assets = tmp_path / "assets"
    assets.mkdir()
    for name in ("poses", "examples"):  # everything but the weights
        (assets / name).symlink_to(REPO / "assets" / name, target_is_directory=True)
    env.pop("SIGMAN_WEIGHTS", None)
    proc = subprocess.Popen([sys.executable, str(REPO / "app.py"), "--port", str(port), "--max-viewers", "0"],
                            env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 120
        config = None
        while time.time() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=2) as response:
                    config = response.read().decode()
                break
            except OSError:
                time.sleep(0.5)
        assert config is not None, proc.stdout.read().decode() if proc.poll() is not None else "no answer in 120 s"
        assert "Random weights" in config and "--weights DIR" in config
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# --- the app logic's pieces ------------------------------------------------------------------------

def test_user_messages():
    assert user_message(OSError(errno.ENOSPC, "No space left on device")).startswith("The server ran out of disk space")
    assert user_message(ImageInputError("image is blank")) == "Photo: image is blank"
    assert user_message(PoseFileError("pose key 'x' has shape (2,)")).startswith("Pose file: ")
    assert user_message(WeightsError("missing keys")) == "Model weights: missing keys"
    assert user_message(MemoryError()).startswith("The server ran out of memory")
    assert user_message(KeyError("bug")) is None


def test_viewer_url():
    assert viewer_url(8081, "127.0.0.1", "example.org:7860") == "http://127.0.0.1:8081"
    assert viewer_url(8081, "0.0.0.0", "example.org:7860") == "http://example.org:8081"
    assert viewer_url(8081, "0.0.0.0", None) == "http://localhost:8081"
    assert viewer_url(8081, "::", "[::1]:7860") == "http://[::1]:8081"
    assert viewer_url(8081, "0.0.0.0", "[::1]") == "http://[::1]:8081"
    assert viewer_url(8081, "fe80::1", None) == "http://[fe80::1]:8081"


class FakeViewer:
    def __init__(self, port: int) -> None:
        self.port, self.stopped, self.pose = port, False, None

    def set_pose(self, pose) -> None:
        self.pose = pose

    def stop(self) -> None:
        self.stopped = True


def test_viewer_pool_replaces_and_caps():
    made: list[FakeViewer] = []

    def launch_fake(*args, **kwargs):
        made.append(FakeViewer(9000 + len(made)))
        return made[-1]

    pool = ViewerPool(launch_fake, capacity=2)
    pool.open("a", None, None, None, "waving")
    pool.open("a", None, None, None, "t_pose")  # a's new result replaces its viewer
    assert made[0].stopped and not made[1].stopped and len(pool) == 1 and made[1].pose == "t_pose"
    pool.open("b", None, None, None, "a_pose")
    pool.open("c", None, None, None, "a_pose")  # over capacity: the longest-unused (a's) goes
    assert made[1].stopped and "a" not in pool and len(pool) == 2
    pool.close("b")
    assert made[2].stopped and len(pool) == 1
    pool.close_all()
    assert made[3].stopped and len(pool) == 0


def test_motion_is_subsampled_to_the_frame_cap():
    motion = motion_input(GenerationRequest(photo=None, motion="walk_cycle"), max_frames=15)
    assert motion.num_frames == 14 and motion.fps == pytest.approx(10.0)  # 40 frames at 30 fps, every 3rd
    assert motion_input(GenerationRequest(photo=None, motion="none"), 10) is None
    with pytest.raises(AppError, match="Unknown motion"):
        motion_input(GenerationRequest(photo=None, motion="moonwalk"), 10)


def test_preview_is_upright_centred_and_a_rotation(tmp_path):
    from sigman.gaussians import Gaussians
    from sigman.io.splat import RECORD

    n = 4
    g = Gaussians(means=torch.tensor([[0.0, 0.0, 0.0], [0.1, 1.8, 0.0], [0.2, 0.9, 0.3], [-0.2, 0.9, -0.3]]),
                  quats=torch.tensor([[1.0, 0.0, 0.0, 0.0]]).expand(n, 4), scales=torch.full((n, 3), 0.01),
                  opacities=torch.full((n,), 0.9), colors=torch.rand(n, 3))
    path = write_preview(g, tmp_path / "preview.splat")
    scale = 1.9 / 1.8
    centred = (g.means - torch.tensor([0.0, 0.9, 0.0])) * scale
    key = lambda m: m[torch.argsort(m[:, 1] * 100 + m[:, 0])]  # noqa: E731  (the writer reorders Gaussians)
    p = load_splat(path)  # back in sigman's frame: centred and scaled only
    torch.testing.assert_close(key(p.means), key(centred), atol=1e-4, rtol=0)
    torch.testing.assert_close(p.scales, torch.full((n, 3), 0.01 * scale), atol=1e-4, rtol=0)
    # in the file (gsplat.js's +Y-down frame) the head (max +Y) is lowest and the front faces -Z
    stored = torch.from_numpy(np.frombuffer(path.read_bytes(), dtype=RECORD)["position"].copy())
    torch.testing.assert_close(key(stored), key(centred * torch.tensor([1.0, -1.0, -1.0])), atol=1e-4, rtol=0)
    # identity orientations are stored as a 180° turn about X: (w, x, y, z) = ±(0, 1, 0, 0)
    rot = (np.frombuffer(path.read_bytes(), dtype=RECORD)["rot"].astype(np.float32) - 128) / 128
    np.testing.assert_allclose(np.abs(rot), np.tile([0.0, 1.0, 0.0, 0.0], (n, 1)), atol=1e-2)


def test_optimize_for_serving_is_cuda_only_and_falls_back(anny_body, tmp_path):
    studio = tiny_studio(anny_body, tmp_path, viewers=False)
    assert optimize_for_serving(studio.model).startswith("plain pipeline")
    assert studio.model.pipe.fast_dit is None  # the CPU keeps the plain path

    class BrokenCudaPipe:
        device = torch.device("cuda")
        fast_dit = _cpu_body = "stale"

        def optimize(self):
            raise RuntimeError("no compiler")

    model = LoadedModel(BrokenCudaPipe(), "fake")
    message = optimize_for_serving(model)
    assert "optimization failed: RuntimeError: no compiler" in message
    assert model.pipe.fast_dit is None and model.pipe._cpu_body is None


def test_background_warm_up_holds_the_pipeline_until_done(anny_body, tmp_path):
    studio = tiny_studio(anny_body, tmp_path, viewers=False)
    release = threading.Event()
    outcomes: list[str] = []

    def slow_done(message: str) -> None:  # called on the warm-up thread, before the lock is let go
        release.wait(5)
        outcomes.append(message)

    thread = studio.warm_up_in_background(None, slow_done)
    assert not studio._pipeline_lock.acquire(blocking=False)  # a request now waits for the warm-up
    release.set()
    thread.join(5)
    assert outcomes and outcomes[0].startswith("plain pipeline")  # the CPU: nothing to optimize
    assert studio._pipeline_lock.acquire(blocking=False)
    studio._pipeline_lock.release()


def test_sigman_imports_roma_without_torch_dynamo():
    code = ("import sys, sigman.app_logic, roma, torch; assert 'torch._dynamo' not in sys.modules; "
            "r = roma.rotvec_to_rotmat(torch.tensor([[0.0, 0.5, 0.0]])); "
            "assert torch.allclose(roma.special_procrustes(r + 0.01), r, atol=0.05); "
            "import torch._dynamo; assert callable(torch._dynamo.optimize); print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
