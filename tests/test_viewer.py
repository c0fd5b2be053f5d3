"""The viser viewer: serving, reposing through the API and through a (headless) browser client,
motion playback, bad uploads, the top-k skinning fast path, and the command line."""

from __future__ import annotations

import threading
import time
import urllib.request

import msgspec
import numpy as np
import pytest
import roma
import torch
import viser
import zstandard

from sigman.gaussians import Gaussians, repose, surface_gaussians
from sigman.pose import SMPLXPose
from sigman.presets import resolve_pose
from viewer import AvatarViewer, SparseSkin, covariances, launch_viewer
from viewer.controls import NO_MOTION, PER_TAB_NOTE, STATIC_NOTE
from viewer.server import VISER_UNITS_PER_METRE
from viewer.splat_shader import AXIS_LINE, CULL_LINE, patch_shader_source
from tests.conftest import random_pose


@pytest.fixture(scope="module")
def avatar(anny_body):
    from sigman.uv import build_uv_template

    return surface_gaussians(build_uv_template(anny_body, 32))


@pytest.fixture()
def viewer(avatar, anny_body):
    v = launch_viewer(avatar, anny_body)
    yield v
    v.stop()


def reference_centers(gaussians: Gaussians, body, pose: SMPLXPose) -> np.ndarray:
    transforms, _ = body.pose_transforms(pose)
    return repose(gaussians, transforms).means[0].numpy()


def wait_for(condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


# --- a headless browser: the viser websocket protocol ------------------------------------------

def connect_client(url: str):
    from websockets.sync.client import connect

    ws = connect(url.replace("http://", "ws://"), subprotocols=[f"viser-v{viser.__version__}"],
                 max_size=None, open_timeout=5)
    # a browser reports its camera first; viser registers the client then
    send(ws, viser._messages.ViewerCameraMessage((1.0, 0.0, 0.0, 0.0), (0.0, 0.0, 3.0), 1.0, 0.01, 100.0,
                                                 480, 640, (0.0, 0.0, 0.0), (0.0, 1.0, 0.0)))
    return ws


class BrowserTab:
    """A websocket client (what a browser tab is) that keeps reading what viser sends it."""

    def __init__(self, viewer):
        before = {tab.client_id for tab in viewer.tabs}
        self.ws = connect_client(viewer.url)
        self.seen: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        assert wait_for(lambda: any(tab.client_id not in before for tab in viewer.tabs))
        self.tab = next(tab for tab in viewer.tabs if tab.client_id not in before)

    def _read(self) -> None:
        try:
            while True:
                self.seen += message_types(self.ws.recv())
        except Exception:  # closed
            return

    def close(self) -> None:
        self.ws.close()
        self._reader.join(timeout=5)


@pytest.fixture()
def tab(viewer):
    browser_tab = BrowserTab(viewer)
    yield browser_tab.tab
    browser_tab.close()


def message_types(frame: bytes) -> list[str]:
    size, compressed = int.from_bytes(frame[:8], "little"), int.from_bytes(frame[8:16], "little")
    inner = zstandard.ZstdDecompressor().decompress(frame[16:16 + compressed], max_output_size=size)
    return [m["type"] for m in msgspec.msgpack.decode(inner)["messages"]]


def receive_types(ws, seconds: float) -> list[str]:
    seen: list[str] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            seen += message_types(ws.recv(timeout=0.05))
        except TimeoutError:
            pass
    return seen


def send(ws, message) -> None:
    ws.send(msgspec.msgpack.encode(message.as_serializable_dict()))


def send_gui_value(ws, handle, value) -> None:
    send(ws, viser._messages.GuiUpdateMessage(handle._impl.uuid, {"value": value}))


def send_upload(ws, handle, filename: str, content: bytes) -> None:
    m = viser._messages
    send(ws, m.FileTransferStartUpload(handle._impl.uuid, "t0", filename, "application/octet-stream", 1, len(content)))
    send(ws, m.FileTransferPart(handle._impl.uuid, "t0", 0, content))


# --- tests --------------------------------------------------------------------------------------

def test_serves_http_and_stops_cleanly(avatar, anny_body):
    v = AvatarViewer(avatar, anny_body, port=0).start()
    assert v.url.startswith("http://127.0.0.1:") and v.port > 0
    with urllib.request.urlopen(v.url, timeout=5) as response:
        assert response.status == 200 and b"<html" in response.read().lower()
    with urllib.request.urlopen(v.url, timeout=5) as response:
        assert b"no size cull" in response.read()  # the patched splat shader (viewer.splat_shader)
    v.load_motion("walk_cycle")
    render_thread = v._thread
    v.stop()
    assert not render_thread.is_alive()
    with pytest.raises(OSError):
        urllib.request.urlopen(v.url, timeout=1)
    v.stop()  # twice is fine


def test_initial_frame_is_the_canonical_avatar(viewer, tab, avatar):
    frame = tab.frame
    assert frame.centers.shape == (avatar.num_gaussians, 3)
    assert frame.covariances.shape == (avatar.num_gaussians, 3, 3) and frame.opacities.shape == (avatar.num_gaussians, 1)
    np.testing.assert_allclose(frame.centers, avatar.means.numpy(), atol=1e-4)
    # what viser holds: the same splats in 1/128 m units under a node scaled by 1/128
    sent, units = tab.splats, VISER_UNITS_PER_METRE
    assert sent.scale == pytest.approx(1 / units)
    np.testing.assert_allclose(sent.centers / units, frame.centers, atol=1e-6)
    np.testing.assert_allclose(sent.covariances / units**2, frame.covariances, rtol=2e-3, atol=1e-9)
    assert (sent.covariances[:, [0, 1, 2], [0, 1, 2]] > 6.1e-5).all()  # normal float16 numbers
    assert tab.panel.note.content == PER_TAB_NOTE


def test_preset_pose_matches_repose(viewer, tab, avatar, anny_body):
    before = tab.frame.centers.copy()
    viewer.set_pose("running")
    assert viewer.wait_until_drawn()
    after = tab.frame.centers
    assert np.abs(after - before).max() > 0.1
    np.testing.assert_allclose(after, reference_centers(avatar, anny_body, resolve_pose("running")), atol=1e-5)
    # covariances follow the rotations: Σ = R diag(s²) Rᵀ of the reposed Gaussians
    transforms, _ = anny_body.pose_transforms(resolve_pose("running"))
    posed = repose(avatar, transforms)
    expected = covariances(posed.quats[0], posed.scales[0]).numpy()
    np.testing.assert_allclose(tab.frame.covariances, expected, atol=1e-6)
    assert tab.panel.preset.value == "running"


def test_joint_turn_and_reset(viewer, tab, avatar, anny_body):
    viewer.set_pose("t_pose")
    viewer.set_joint("left_elbow", (0.0, -1.2, 0.0))
    viewer.set_yaw(90.0)
    assert viewer.wait_until_drawn()
    pose = resolve_pose("t_pose")
    pose.body_pose[0, 17] = torch.tensor([0.0, -1.2, 0.0])  # left_elbow is SMPL-X joint 18
    expected = reference_centers(avatar, anny_body, pose)
    turned = expected @ roma.rotvec_to_rotmat(torch.tensor([0.0, np.pi / 2, 0.0])).numpy().T
    np.testing.assert_allclose(tab.frame.centers, turned, atol=1e-5)
    with pytest.raises(ValueError, match="SMPL-X body joint"):
        viewer.set_joint("tail", (0.0, 0.0, 0.0))
    viewer.reset()
    assert viewer.wait_until_drawn()
    np.testing.assert_allclose(tab.frame.centers, avatar.means.numpy(), atol=1e-4)
    assert tab.panel.preset.value == "(rest pose)" and tab.panel.turn.value == 0.0


def test_motion_playback_advances_and_pauses(viewer, tab, avatar, anny_body):
    viewer.load_motion("walk_cycle")
    assert viewer.num_frames == 40 and viewer.is_playing and tab.state.is_playing
    assert wait_for(lambda: tab.state.frame_index >= 3)
    viewer.pause()
    assert viewer.wait_until_drawn()
    paused = tab.state.frame_index
    time.sleep(0.15)
    assert tab.state.frame_index == paused and tab.panel.frame.value == paused
    viewer.seek(7)
    assert viewer.wait_until_drawn() and tab.state.frame_index == 7
    motion = resolve_pose("walk_cycle")
    np.testing.assert_allclose(tab.frame.centers, reference_centers(avatar, anny_body, motion.frame(7)), atol=1e-5)
    viewer.set_speed(2.0)
    viewer.play()
    assert wait_for(lambda: tab.state.frame_index != 7)
    viewer.set_joint("head", (0.0, 0.5, 0.0))  # hand-posing pauses playback and keeps the frame
    assert not tab.state.is_playing and tab.state.shown_pose().body_pose[0, 14, 1].item() == pytest.approx(0.5)
    viewer.clear_motion()
    assert tab.state.num_frames == 0 and tab.panel.motion.value == NO_MOTION


def test_uploads(viewer, tab, tmp_path):
    import io

    error = viewer.upload_motion("junk.npz", b"this is not a zip file")
    assert error is not None and "junk.npz" in error and "npz" in error
    assert viewer.last_error == error and "junk.npz" in tab.panel.status.content
    bad_keys = io.BytesIO()
    np.savez(bad_keys, hello=np.zeros(3))
    assert "global_orient" in viewer.upload_motion("keys.npz", bad_keys.getvalue())

    amass = io.BytesIO()
    np.savez(amass, poses=np.random.default_rng(0).normal(0, 0.2, (12, 165)).astype(np.float32),
             trans=np.zeros((12, 3), np.float32), mocap_frame_rate=np.float32(60))
    assert viewer.upload_motion("dance.npz", amass.getvalue()) is None
    assert viewer.num_frames == 12 and viewer.motion_name == "upload: dance"
    assert tab.state.num_frames == 12 and "upload: dance" in tab.panel.motion.options


def test_browser_client_drives_its_own_panel(viewer, avatar, anny_body):
    """A websocket client (what the browser is) gets the splats and moves its own turn slider."""
    browser_tab = BrowserTab(viewer)
    tab, ws = browser_tab.tab, browser_tab.ws
    try:
        assert wait_for(lambda: "GaussianSplatsMessage" in browser_tab.seen and "GuiSliderMessage" in browser_tab.seen)
        before = tab.frame.centers.copy()
        send_gui_value(ws, tab.panel.turn, 180.0)
        assert wait_for(lambda: np.abs(tab.frame.centers - before).max() > 1e-3)
        flipped = before * np.array([-1.0, 1.0, -1.0], dtype=np.float32)  # 180° about +Y
        np.testing.assert_allclose(tab.frame.centers, flipped, atol=1e-5)
        assert viewer.pose is not None and viewer._template.yaw == 0.0  # the tab's alone
        panel = tab.panel
        send_gui_value(ws, panel.turn, 0.0)
        send_gui_value(ws, panel.preset, "sitting")
        assert wait_for(lambda: tab.state.shown_pose().transl[0, 1].item() == pytest.approx(-0.4))
        send_gui_value(ws, panel.angles[2], -30.0)  # left_shoulder (the default joint) about z
        assert wait_for(lambda: tab.state.joint_rotation(15)[2].item() == pytest.approx(np.radians(-30.0)))
        assert viewer.wait_until_drawn()
        pose = resolve_pose("sitting")
        pose.body_pose[0, 15, 2] = np.radians(-30.0)
        np.testing.assert_allclose(tab.frame.centers, reference_centers(avatar, anny_body, pose), atol=1e-5)
        send_gui_value(ws, panel.motion, "wave_loop")
        assert wait_for(lambda: tab.state.is_playing and tab.state.frame_index > 1)
        assert panel.play.label == "Pause" and not viewer.is_playing
        send_gui_value(ws, panel.play, True)
        assert wait_for(lambda: not tab.state.is_playing) and panel.play.label == "Play"
        browser_tab.seen.clear()
        send_upload(ws, panel.upload, "broken.npz", b"PK\x03\x04 truncated zip")
        assert wait_for(lambda: "NotificationShowMessage" in browser_tab.seen)  # a red notification, not a crash
        assert "broken.npz" in viewer.last_error and "broken.npz" in panel.status.content
    finally:
        browser_tab.close()


def test_two_tabs_hold_two_poses(viewer, avatar, anny_body):
    """Each tab has its own preset, turn and motion; a new tab starts from the viewer's template."""
    viewer.set_pose("waving")
    first = BrowserTab(viewer)
    second = BrowserTab(viewer)
    try:
        assert first.tab.panel is not second.tab.panel
        assert first.tab.panel.preset.value == second.tab.panel.preset.value == "waving"
        send_gui_value(first.ws, first.tab.panel.preset, "sitting")
        send_gui_value(second.ws, second.tab.panel.turn, 90.0)
        send_gui_value(second.ws, second.tab.panel.motion, "walk_cycle")
        assert wait_for(lambda: second.tab.state.is_playing and second.tab.state.frame_index > 1)
        assert viewer.wait_until_drawn()
        sitting = reference_centers(avatar, anny_body, resolve_pose("sitting"))
        np.testing.assert_allclose(first.tab.frame.centers, sitting, atol=1e-5)
        assert not first.tab.state.is_playing and first.tab.state.yaw == 0.0 and second.tab.state.yaw == 90.0
        assert first.tab.panel.preset.value == "sitting" and second.tab.panel.preset.value == "waving"
        # a third tab opens in the template's pose, not in the last tab's
        third = BrowserTab(viewer)
        try:
            assert third.tab.panel.preset.value == "waving" and not third.tab.state.is_playing
            assert third.tab.state.yaw == 0.0
            np.testing.assert_allclose(third.tab.frame.centers,
                                       reference_centers(avatar, anny_body, resolve_pose("waving")), atol=1e-5)
        finally:
            third.close()
        first.close()
        assert wait_for(lambda: len(viewer.tabs) == 1)
    finally:
        first.close()
        second.close()


def test_playback_costs_nothing_without_a_tab(viewer):
    """A motion left playing with no browser connected: the render thread sleeps (no CPU time),
    and the next tab picks the motion up and plays it."""
    viewer.load_motion("walk_cycle")
    assert viewer.is_playing and not viewer.tabs
    clock = time.pthread_getcpuclockid(viewer._thread.ident)  # the render thread's CPU time
    busy_before = time.clock_gettime(clock)
    time.sleep(2.0)
    idle_cpu = time.clock_gettime(clock) - busy_before
    assert idle_cpu < 0.02, f"the render thread used {idle_cpu:.3f} s of CPU in 2 s with no tab open"
    browser_tab = BrowserTab(viewer)
    try:
        assert browser_tab.tab.state.is_playing
        assert wait_for(lambda: browser_tab.tab.state.frame_index >= 3)
    finally:
        browser_tab.close()
    assert wait_for(lambda: not viewer.tabs)


def test_concurrent_callers_never_break_the_viewer(viewer):
    viewer.load_motion("walk_cycle")
    errors: list[BaseException] = []

    def hammer(seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        try:
            for _ in range(20):
                viewer.set_joint("left_knee", (torch.rand(3, generator=g) - 0.5).tolist())
                viewer.play()
                viewer.seek(int(torch.randint(0, 40, (1,), generator=g)))
                viewer.set_yaw(float(torch.rand(1, generator=g) * 90))
        except BaseException as err:  # pragma: no cover - the failure being tested for
            errors.append(err)

    browser_tab = BrowserTab(viewer)
    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and viewer.last_error is None
    viewer.pause()
    assert viewer.wait_until_drawn()
    browser_tab.close()


def test_static_avatar_says_it_needs_a_rig(avatar):
    static = avatar.with_(skin_weights=None)
    with launch_viewer(static, None) as v:
        browser_tab = BrowserTab(v)
        assert not v.can_repose and browser_tab.tab.panel.status.content == STATIC_NOTE
        np.testing.assert_allclose(browser_tab.tab.frame.centers, avatar.means.numpy(), atol=1e-6)
        browser_tab.close()


def test_sparse_skinning_matches_the_dense_reference(uv64):
    gaussians = surface_gaussians(uv64)
    transforms, _ = __import__("sigman.body", fromlist=["x"]).load_body_model("anny").pose_transforms(random_pose(1))
    reference = repose(gaussians, transforms)
    exact = SparseSkin(gaussians.skin_weights, k=16)
    assert exact.exact and exact.k <= 16 and exact.nnz < 16 * gaussians.num_gaussians
    means, quats = exact.repose(gaussians.means, gaussians.quats, transforms[0])
    torch.testing.assert_close(means, reference.means[0], atol=2e-5, rtol=0)
    same_rotation = torch.minimum((quats - reference.quats[0]).norm(dim=-1), (quats + reference.quats[0]).norm(dim=-1))
    assert same_rotation.max() < 1e-4
    truncated = SparseSkin(gaussians.skin_weights, k=2)
    assert not truncated.exact
    torch.testing.assert_close(truncated.dense().sum(-1), torch.ones(gaussians.num_gaussians))
    means2, _ = truncated.repose(gaussians.means, gaussians.quats, transforms[0])
    assert (means2 - reference.means[0]).norm(dim=-1).max() < 0.1


def test_covariances_are_r_s2_rt():
    g = torch.Generator().manual_seed(1)
    quats = torch.nn.functional.normalize(torch.randn(50, 4, generator=g), dim=-1)
    scales = torch.rand(50, 3, generator=g) * 0.1 + 0.01
    rotation = roma.unitquat_to_rotmat(torch.cat([quats[:, 1:], quats[:, :1]], dim=-1))
    expected = rotation @ torch.diag_embed(scales ** 2) @ rotation.transpose(1, 2)
    torch.testing.assert_close(covariances(quats, scales), expected, atol=1e-7, rtol=1e-5)


def test_command_line(tmp_path, capsys):
    from viewer.__main__ import main, parse_args

    args = parse_args(["--demo", "--port", "0", "--resolution", "32"])
    assert args.demo and args.port == 0 and args.host == "127.0.0.1" and args.resolution == 32
    args = parse_args(["avatar.glb", "--host", "0.0.0.0", "--port", "9000"])
    assert str(args.avatar) == "avatar.glb" and args.port == 9000
    with pytest.raises(SystemExit):
        parse_args([])
    assert main([str(tmp_path / "missing.glb")]) == 1
    (tmp_path / "avatar.obj").write_text("")
    assert main([str(tmp_path / "avatar.obj")]) == 1
    assert "not '.obj'" in capsys.readouterr().err


def test_body_mesh_follows_the_pose(viewer, tab, anny_body):
    viewer.set_pose("sitting")
    viewer.show_body_mesh(True)
    assert viewer.wait_until_drawn() and tab.mesh.visible
    expected = anny_body(resolve_pose("sitting")).vertices[0].numpy()
    np.testing.assert_allclose(tab.mesh.vertices, expected, atol=1e-5)
    viewer.show_body_mesh(False)
    assert viewer.wait_until_drawn() and not tab.mesh.visible


def test_splat_shader_patch_matches_viser_client():
    """The two lines :mod:`viewer.splat_shader` rewrites are in viser's shader source, and the
    rewrite removes the size cull and the unstable axis (a viser upgrade that changes them fails here)."""
    from pathlib import Path

    source = (Path(viser.__file__).parent / "client" / "src" / "Splatting" / "GaussianSplatsHelpers.ts").read_text()
    assert CULL_LINE in source and AXIS_LINE in source
    patched = patch_shader_source(source)
    assert CULL_LINE not in patched and AXIS_LINE not in patched and "lambda1 - diag2" in patched


def test_subject_rest_joints_drive_the_skinning(avatar, anny_body):
    rest_joints = anny_body.rest_joints * 1.05  # a taller subject
    viewer = AvatarViewer(avatar, anny_body, rest_joints, port=0)  # not started: compute only
    pose = resolve_pose("waving")
    transforms, _ = anny_body.pose_transforms(pose, rest_joints)
    expected = repose(avatar, transforms).means[0].numpy()
    np.testing.assert_allclose(viewer.compute_splats(pose).centers, expected, atol=1e-5)
    with pytest.raises(ValueError, match="rest_joints"):
        AvatarViewer(avatar, anny_body, rest_joints[:10])


def test_rigged_glb_goes_through_sigman_io(tmp_path, monkeypatch, avatar, anny_body):
    """``python -m viewer avatar.glb`` builds the viewer from ``sigman.io.load_rigged_glb``."""
    import types
    from dataclasses import dataclass

    from viewer import load_avatar
    from viewer.__main__ import open_avatar, parse_args

    @dataclass
    class Rig:
        joint_names: list
        parents: torch.Tensor
        rest_joints: torch.Tensor
        body_model: str

    rig = Rig(list(anny_body.joint_names), anny_body.parents, anny_body.rest_joints + 0.01, "anny")
    fake_io = types.SimpleNamespace(load_rigged_glb=lambda path: (avatar, rig))
    monkeypatch.setitem(__import__("sys").modules, "sigman.io", fake_io)
    (tmp_path / "me.glb").write_bytes(b"glTF")
    loaded = open_avatar(parse_args([str(tmp_path / "me.glb")]))
    assert loaded.rigged and loaded.name == "me.glb" and loaded.body.name == "anny"
    torch.testing.assert_close(loaded.rest_joints, anny_body.rest_joints + 0.01)
    rig.joint_names = rig.joint_names[:-1]
    with pytest.raises(ValueError, match="do not match"):
        load_avatar(tmp_path / "me.glb")
