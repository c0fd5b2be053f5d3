"""The avatar viewer: a viser server showing Gaussians that repose live, with one pose per tab.

Every browser tab (viser client) gets its own :class:`Tab`: its own pose state
(:class:`~viewer.state.TabState`), control panel (in ``client.gui``) and splats (in
``client.scene``), so two tabs hold two poses. A new tab starts from the viewer's *template*
state, which the Python API sets (``viewer.set_pose(...)`` poses the template and every open tab;
a tab's panel poses that tab only).

One render thread draws every frame of every tab. GUI callbacks (which viser runs on its own
threads) and the Python API only change a tab's state under the viewer's lock and wake that
thread, so slider drags coalesce, frames never arrive out of order, and each frame reaches viser
as one ``set_gaussians`` call (no mixed frames). Motion playback runs on the same thread, paced by
the motion's frame rate. With no tab open the thread sleeps on the lock's condition: a motion
left "playing" costs nothing until someone connects (the new tab picks it up).

viser's splat shader is patched as the page loads (:mod:`viewer.splat_shader`) to draw what
gsplat draws. The scene has no floor grid: viser draws Gaussian splats without writing depth, after every
other object, and depth-tests them against what those objects wrote, so the grid's lines cut
through the avatar (the white bands the grid once drew across the shins).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Union

import numpy as np
import torch
import viser
from torch import Tensor

from sigman.body import BodyModel
from sigman.gaussians import Gaussians
from sigman.lbs import lbs_points
from sigman.pose import MAX_POSE_FILE_BYTES, PoseFileError, SMPLXPose, load_pose
from sigman.presets import resolve_pose
from .controls import ControlPanel
from .splat_shader import serve_patched_client
from .skinning import DEFAULT_TOP_K, SparseSkin, covariances, yaw_transform
from .state import Snapshot, TabState, body_pose_slot, motion_preset_names, pose_preset_names

PoseSource = Union[SMPLXPose, str, Path, dict]
SPLATS_NODE = "/avatar"
MESH_NODE = "/body_mesh"
# viser stores covariances as float16, whose normal range starts at 6e-5: the variance of a
# millimetre-thin Gaussian (1e-6 m²) would lose most of its bits or flush to zero. The splats are
# sent in units of 1/128 m and their scene node is scaled back by 1/128 (viser applies the node's
# scale to centers and covariances alike), so variances from (0.06 mm)² to (2 m)² stay normal.
VISER_UNITS_PER_METRE = 128.0
FLOAT16_MAX = 65504.0

__all__ = ["AvatarViewer", "SplatFrame", "Tab", "launch_viewer", "motion_preset_names", "pose_preset_names",
           "viser_arrays"]


@dataclass(frozen=True)
class SplatFrame:
    """The Gaussians of one drawn frame, in metres (float32 numpy arrays; :func:`viser_arrays`
    turns them into what viser receives)."""

    centers: np.ndarray  # [N, 3]
    covariances: np.ndarray  # [N, 3, 3]
    rgbs: np.ndarray  # [N, 3]
    opacities: np.ndarray  # [N, 1]
    version: int  # pose-state version this frame shows


def viser_arrays(frame: SplatFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``set_gaussians`` arguments for a frame: centers and float16 covariances in viser units
    (the float16 conversion runs in torch: numpy's takes ~15 ms per 40k Gaussians)."""
    k = VISER_UNITS_PER_METRE
    covariances16 = (torch.from_numpy(frame.covariances) * (k * k)).clamp(-FLOAT16_MAX, FLOAT16_MAX).half().numpy()
    return frame.centers * k, covariances16, frame.rgbs, frame.opacities


@dataclass
class Tab:
    """One open browser tab: its client, pose state, panel and scene nodes."""

    client: viser.ClientHandle
    state: TabState
    panel: ControlPanel
    splats: viser.GaussianSplatHandle
    mesh: Optional[viser.MeshHandle]
    frame: Optional[SplatFrame] = None  # the Gaussians last sent to this tab

    @property
    def client_id(self) -> int:
        return self.client.client_id


class AvatarViewer:
    """A browser viewer of one avatar, with reposing and motion playback (one pose per tab).

    Args:
        gaussians: canonical Gaussians ``[N, ...]``; with ``skin_weights [N, J]`` they repose.
        body: the body model whose joints the skin weights refer to (``None``: a static avatar).
        rest_joints: ``[J, 3]`` the subject's canonical joints (default: the body's).
        host, port: where to serve (``port=0`` picks a free port).
        top_k: skin weights kept per Gaussian by the fast skinning path (exact where a Gaussian
            has at most ``top_k`` non-zero weights); ``None`` uses the dense reference
            :func:`sigman.gaussians.repose`.
        title: the panel's label.
    """

    def __init__(self, gaussians: Gaussians, body: Optional[BodyModel] = None,
                 rest_joints: Optional[Tensor] = None, *, host: str = "127.0.0.1", port: int = 8080,
                 top_k: Optional[int] = DEFAULT_TOP_K, title: str = "sigman avatar") -> None:
        if gaussians.means.dim() == 3:
            if gaussians.means.shape[0] != 1:
                raise ValueError(f"the viewer shows one avatar; got a batch of {gaussians.means.shape[0]}")
            gaussians = Gaussians(gaussians.means[0], gaussians.quats[0], gaussians.scales[0],
                                  gaussians.opacities[0], gaussians.colors[0], gaussians.skin_weights)
        self.gaussians = gaussians.detach()
        self.body = body
        self.can_repose = body is not None and gaussians.skin_weights is not None
        if self.can_repose and gaussians.skin_weights.shape[1] != body.num_joints:
            raise ValueError(f"skin_weights cover {gaussians.skin_weights.shape[1]} joints but the "
                             f"'{body.name}' body has {body.num_joints}")
        if body is not None and rest_joints is not None and tuple(rest_joints.shape) != (body.num_joints, 3):
            raise ValueError(f"rest_joints must be [{body.num_joints}, 3], got {tuple(rest_joints.shape)}")
        self.rest_joints = None if body is None else (
            body.rest_joints if rest_joints is None else rest_joints.to(body.rest_joints))
        self.host, self.port, self.title = host, port, title
        self._skin = (SparseSkin(self.gaussians.skin_weights, top_k).to(self.gaussians.device)
                      if self.can_repose and top_k is not None else None)
        self._rgbs = self.gaussians.colors.detach().float().clamp(0, 1).cpu().numpy()
        self._opacities = self.gaussians.opacities.detach().float().clamp(0, 1).cpu().numpy()[:, None]

        self._lock = threading.RLock()
        self._wake = threading.Condition(self._lock)
        self._template = TabState(self.rest_pose(), self._wake)  # what a new tab starts from
        self._tabs: dict[int, Tab] = {}
        self._stopping = False
        self._server: Optional[viser.ViserServer] = None
        self._thread: Optional[threading.Thread] = None
        self._framing_cache: Optional[tuple[np.ndarray, float]] = None
        self.last_error: Optional[str] = None

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> "AvatarViewer":
        """Serve the viewer (returns at once; the server and the render thread run in the background)."""
        if self._server is not None:
            return self
        self._stopping = False
        server = serve_patched_client(host=self.host, port=self.port, label=self.title, verbose=False)
        self._server = server
        try:
            self.port = server.get_port()
            server.scene.set_up_direction("+y")
            centre, height = self._framing()
            server.initial_camera.look_at = tuple(centre)
            server.initial_camera.position = (centre[0], centre[1] + 0.1 * height, centre[2] + 2.2 * height)
            server.on_client_connect(self._open_tab)
            server.on_client_disconnect(self._close_tab)
        except BaseException:
            self.stop()
            raise
        self._thread = threading.Thread(target=self._render_loop, name="sigman-viewer-render", daemon=True)
        self._thread.start()
        return self

    def _framing(self) -> tuple[np.ndarray, float]:
        """Centre and height of the avatar in the template's pose (to place the camera)."""
        if self._framing_cache is None:
            points = self.compute_splats(self._template.shown_pose(), self._template.yaw).centers
            low, high = points.min(axis=0), points.max(axis=0)
            self._framing_cache = ((low + high) / 2, float(max(high[1] - low[1], 0.5)))
        return self._framing_cache

    def stop(self) -> None:
        """Stop playback, the render thread and the server. Safe to call twice."""
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        if self._server is not None:
            self._server.stop()
            self._server = None
        with self._wake:
            self._tabs.clear()

    def __enter__(self) -> "AvatarViewer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        host = "localhost" if self.host in ("0.0.0.0", "", "::") else self.host
        return f"http://{host}:{self.port}"

    @property
    def server(self) -> Optional[viser.ViserServer]:
        return self._server

    # --- tabs ---------------------------------------------------------------------------------

    @property
    def tabs(self) -> list[Tab]:
        """The open tabs, in the order they connected."""
        with self._lock:
            return [self._tabs[i] for i in sorted(self._tabs)]

    def tab(self, client_id: int) -> Optional[Tab]:
        with self._lock:
            return self._tabs.get(client_id)

    def _open_tab(self, client: viser.ClientHandle) -> None:
        """A browser connected: give it its own state (a copy of the template), panel and splats."""
        state = self._template.copy()
        snapshot = state.step(time.perf_counter())
        frame = self.compute_splats(snapshot.pose, snapshot.yaw, snapshot.version)
        state.drawn_version = snapshot.version
        with client.atomic():
            splats = client.scene.add_gaussian_splats(SPLATS_NODE, *viser_arrays(frame),
                                                      scale=1.0 / VISER_UNITS_PER_METRE)
            mesh = None
            if self.body is not None:
                mesh = client.scene.add_mesh_simple(
                    MESH_NODE, self.body.rest_vertices.detach().cpu().numpy(),
                    self.body.faces.detach().cpu().numpy().astype(np.uint32),
                    color=(120, 170, 230), opacity=0.5, visible=False)
            panel = ControlPanel(client.gui, state if self.can_repose else None, client,
                                 report_error=self.report_error,
                                 upload=lambda name, content, who: self._upload([state], name, content, who),
                                 load_motion=lambda name: self._load_motion([state], name))
        tab = Tab(client, state, panel, splats, mesh, frame)
        with self._wake:
            if self._stopping:
                return
            state.panel = panel if self.can_repose else None
            panel.attach()
            self._tabs[client.client_id] = tab
            self._wake.notify_all()  # draws the template's pose (and resumes its playback) for this tab

    def _close_tab(self, client: viser.ClientHandle) -> None:
        with self._wake:
            self._tabs.pop(client.client_id, None)
            self._wake.notify_all()

    def _states(self, client: Optional[viser.ClientHandle] = None) -> list[TabState]:
        """The template and every open tab's state (``client``: that tab's only)."""
        with self._lock:
            if client is not None:
                tab = self._tabs.get(client.client_id)
                return [tab.state] if tab is not None else []
            return [self._template] + [tab.state for tab in self._tabs.values()]

    # --- pose API: poses the template (new tabs) and every open tab ----------------------------

    def rest_pose(self) -> SMPLXPose:
        """The SMPL-X pose that leaves the canonical avatar where it is."""
        return self.body.canonical_pose() if self.body is not None else SMPLXPose.zeros(1)

    def set_pose(self, source: PoseSource) -> None:
        """Show a pose: an :class:`SMPLXPose`, a preset name or an ``.npz`` path. A sequence is
        loaded as a motion instead."""
        pose = resolve_pose(source)
        if pose.num_frames > 1:
            self.load_motion(pose, name=source if isinstance(source, str) else "motion")
            return
        for state in self._states():
            state.set_pose(pose, source if isinstance(source, str) else None)

    def set_joint(self, joint: str, rotvec: Union[Tensor, tuple[float, float, float]]) -> None:
        """Set one SMPL-X body joint's local rotation (axis-angle, radians). While a motion is
        shown, its current frame becomes the hand-set pose first (and playback pauses)."""
        slot = body_pose_slot(joint)
        for state in self._states():
            state.set_joint(slot, torch.as_tensor(rotvec, dtype=torch.float32))

    def joint_rotation(self, joint: str) -> Tensor:
        """The template's shown local rotation of one body joint (axis-angle ``[3]``, radians)."""
        return self._template.joint_rotation(body_pose_slot(joint))

    def set_yaw(self, degrees: float) -> None:
        """Turn the whole avatar about the vertical axis."""
        for state in self._states():
            state.set_yaw(degrees)

    def reset(self) -> None:
        """Back to the rest pose, facing forward, with no motion playing."""
        for state in self._states():
            state.reset()

    @property
    def pose(self) -> SMPLXPose:
        """The template's pose (one frame), before the yaw turn."""
        return self._template.shown_pose()

    # --- motion API ---------------------------------------------------------------------------

    def load_motion(self, source: PoseSource, name: Optional[str] = None, play: bool = True) -> None:
        """Load a motion (an :class:`SMPLXPose` sequence, a motion preset name or an ``.npz`` path)
        and start playing it. Raises :class:`~sigman.pose.PoseFileError` for a bad file."""
        motion = resolve_pose(source)
        name = name or (source if isinstance(source, str) else "motion")
        for state in self._states():
            state.load_motion(motion, name, play)

    def _load_motion(self, states: list[TabState], name: str) -> None:
        """A motion picked by name in a panel: an upload of that tab, or a preset."""
        for state in states:
            motion = state.upload(name)
            state.load_motion(motion if motion is not None else resolve_pose(name), name)

    def clear_motion(self) -> None:
        """Drop the motion and show the hand-set pose."""
        for state in self._states():
            state.clear_motion()

    def upload_motion(self, filename: str, content: bytes, client: Optional[viser.ClientHandle] = None) -> Optional[str]:
        """Load an uploaded SMPL-X / AMASS ``.npz`` (raw bytes) into every tab (``client``: that
        tab only). A sequence plays as a motion, a single frame becomes the pose. Never raises:
        returns the error message (also shown in the panel and as a notification) or ``None``."""
        return self._upload(self._states(client) if client is not None else self._states(), filename, content, client)

    def _upload(self, states: list[TabState], filename: str, content: bytes,
                client: Optional[viser.ClientHandle]) -> Optional[str]:
        try:
            if len(content) > MAX_POSE_FILE_BYTES:
                raise PoseFileError(f"larger than {MAX_POSE_FILE_BYTES >> 20} MiB; upload a shorter sequence")
            pose = load_pose(bytes(content))
        except PoseFileError as err:
            return self.report_error(f"Could not load {filename}", str(err), client)
        except Exception as err:  # a file must never take the viewer down
            return self.report_error(f"Could not load {filename}", f"{err.__class__.__name__}: {err}", client)
        name = f"upload: {Path(filename).stem}"
        for state in states:
            if pose.num_frames == 1:
                state.set_pose(pose)
            else:
                state.add_upload(name, pose)
                state.load_motion(pose, name)
        if pose.num_frames == 1:
            self.report_status(f"Pose loaded from **{filename}**.", client)
        else:
            self.report_status(f"Motion **{filename}**: {pose.num_frames} frames at {pose.fps:g} fps.", client)
        return None

    def play(self) -> None:
        for state in self._states():
            state.play()

    def pause(self) -> None:
        for state in self._states():
            state.pause()

    def seek(self, frame: int) -> None:
        """Show frame ``frame`` of the motion (clamped)."""
        for state in self._states():
            state.seek(frame)

    def set_speed(self, speed: float) -> None:
        for state in self._states():
            state.set_speed(speed)

    def show_body_mesh(self, visible: bool) -> None:
        """Show the skinned body mesh (the body's default shape) under the Gaussians."""
        for state in self._states():
            state.show_body_mesh(bool(visible) and self.body is not None)

    @property
    def frame_index(self) -> int:
        return self._template.frame_index

    @property
    def num_frames(self) -> int:
        return self._template.num_frames

    @property
    def is_playing(self) -> bool:
        """Whether the template plays (new tabs play its motion; with no tab open nothing is drawn)."""
        return self._template.is_playing

    @property
    def motion_names(self) -> list[str]:
        return self._template.motion_names

    @property
    def motion_name(self) -> str:
        return self._template.motion_name

    # --- what is on screen --------------------------------------------------------------------

    @property
    def splats(self) -> Optional[SplatFrame]:
        """The Gaussians last sent to the most recently opened tab (``None``: no tab open)."""
        tabs = self.tabs
        return tabs[-1].frame if tabs else None

    def wait_until_drawn(self, timeout: float = 5.0) -> bool:
        """Block until every change made so far is on screen in every open tab. False on timeout."""
        with self._wake:
            if self._thread is None:
                return False
            targets = {i: tab.state.state.version for i, tab in self._tabs.items()}

            def drawn() -> bool:
                return self._stopping or all(tab.state.drawn_version >= targets[i]
                                             for i, tab in self._tabs.items() if i in targets)
            return self._wake.wait_for(drawn, timeout)

    def posed(self, pose: SMPLXPose, yaw: float = 0.0) -> tuple[Tensor, Tensor]:
        """Posed means ``[N, 3]`` and quats ``[N, 4]`` of the avatar for one pose frame."""
        if not self.can_repose:
            return self.gaussians.means, self.gaussians.quats
        transforms = self._transforms(pose, yaw, self.rest_joints).to(self.gaussians.device)
        if self._skin is None:
            from sigman.gaussians import repose

            posed = repose(self.gaussians, transforms[None])
            return posed.means[0], posed.quats[0]
        return self._skin.repose(self.gaussians.means, self.gaussians.quats, transforms)

    @torch.inference_mode()
    def compute_splats(self, pose: SMPLXPose, yaw: float = 0.0, version: int = -1) -> SplatFrame:
        """The arrays viser draws for one pose frame: posed centers and covariances
        ``R diag(s²) Rᵀ``, colours and opacities (what each update of the viewer computes)."""
        means, quats = self.posed(pose, yaw)
        cov = covariances(quats.float(), self.gaussians.scales.float())
        return SplatFrame(means.float().cpu().numpy(), cov.cpu().numpy(), self._rgbs, self._opacities, version)

    # --- messages to the user ------------------------------------------------------------------

    def report_error(self, title: str, message: str, client: Optional[viser.ClientHandle] = None) -> str:
        """Show an error in the panel and as a notification (to ``client``'s tab, or every open
        tab); also kept in :attr:`last_error`. Returns the one-line text."""
        text = f"{title}: {message}"
        self.last_error = text
        for tab in self._tabs_of(client):
            tab.panel.show_error(title, message)
        return text

    def report_status(self, markdown: str, client: Optional[viser.ClientHandle] = None) -> None:
        """A status line under the panel (of ``client``'s tab, or every open tab)."""
        for tab in self._tabs_of(client):
            tab.panel.show_status(markdown)

    def _tabs_of(self, client: Optional[viser.ClientHandle]) -> list[Tab]:
        if client is None:
            return self.tabs
        tab = self.tab(client.client_id)
        return [tab] if tab is not None else []

    # --- internals ----------------------------------------------------------------------------

    def _transforms(self, pose: SMPLXPose, yaw: float, rest_joints: Tensor) -> Tensor:
        transforms = self.body.pose_transforms(pose, rest_joints)[0][0]  # [J, 4, 4]
        if yaw:
            transforms = yaw_transform(yaw, transforms.dtype, transforms.device) @ transforms
        return transforms

    @torch.inference_mode()
    def _mesh_vertices(self, pose: SMPLXPose, yaw: float) -> np.ndarray:
        transforms = self._transforms(pose, yaw, self.body.rest_joints)
        return lbs_points(self.body.rest_vertices, self.body.skin_weights, transforms[None])[0].cpu().numpy()

    def _draw(self, tab: Tab, snapshot: Snapshot) -> None:
        frame = self.compute_splats(snapshot.pose, snapshot.yaw, snapshot.version)
        with tab.client.atomic():
            tab.splats.set_gaussians(*viser_arrays(frame))
            if tab.mesh is not None:
                if snapshot.show_mesh:
                    tab.mesh.vertices = self._mesh_vertices(snapshot.pose, snapshot.yaw).astype(np.float32)
                if tab.mesh.visible != snapshot.show_mesh:
                    tab.mesh.visible = snapshot.show_mesh
        tab.frame = frame

    def _due_tabs(self) -> Iterator[tuple[Tab, Snapshot]]:
        """Wait (lock held) until some tab has a change or a playback frame due; step those tabs."""
        while True:
            if self._stopping:
                return
            now = time.perf_counter()
            due = [tab for tab in self._tabs.values() if tab.state.due(now)]
            if due:
                for tab in due:
                    yield tab, tab.state.step(now)
                return
            waits = [w for w in (tab.state.next_step_in(now) for tab in self._tabs.values()) if w is not None]
            self._wake.wait(timeout=min(waits) if waits else None)  # no tab playing: sleep until woken

    def _render_loop(self) -> None:
        while True:
            with self._wake:
                jobs = list(self._due_tabs())
                if self._stopping:
                    return
            for tab, snapshot in jobs:
                if self.tab(tab.client_id) is not tab:  # closed meanwhile
                    continue
                try:
                    self._draw(tab, snapshot)
                except Exception as err:  # keep serving; say what went wrong
                    tab.state.stop_playing()
                    self.report_error("Could not draw this pose", f"{err.__class__.__name__}: {err}", tab.client)
                with self._wake:
                    tab.state.drawn_version = max(tab.state.drawn_version, snapshot.version)
                    self._wake.notify_all()


def launch_viewer(gaussians: Gaussians, body: Optional[BodyModel] = None, rest_joints: Optional[Tensor] = None,
                  host: str = "127.0.0.1", port: int = 0, **kwargs) -> AvatarViewer:
    """Start a viewer of ``gaussians`` (``port=0``: a free port) and return it; its address is
    ``viewer.url``. Call ``viewer.stop()`` when done."""
    return AvatarViewer(gaussians, body, rest_joints, host=host, port=port, **kwargs).start()
