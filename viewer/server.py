"""The avatar viewer: a viser server showing Gaussians that repose live.

One render thread draws every frame. GUI callbacks (which viser runs on its own threads) and the
Python API only change the pose state under a lock and wake that thread, so slider drags coalesce,
frames never arrive out of order, and each frame reaches viser as one ``set_gaussians`` call (no
mixed frames). Motion playback runs on the same thread, paced by the motion's frame rate.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Union

import numpy as np
import torch
import viser
from torch import Tensor

from sigman.body import BodyModel
from sigman.gaussians import Gaussians
from sigman.lbs import lbs_points
from sigman.pose import MAX_POSE_FILE_BYTES, SMPLX_JOINT_NAMES, PoseFileError, SMPLXPose, load_pose
from sigman.presets import MOTION_PRESETS, preset_names, resolve_pose
from .skinning import DEFAULT_TOP_K, SparseSkin, covariances, yaw_transform

PoseSource = Union[SMPLXPose, str, Path, dict]
SPLATS_NODE = "/avatar"
MESH_NODE = "/body_mesh"
MAX_FRAME_STEP_S = 0.25  # after a stall, playback skips at most this much time
# viser stores covariances as float16, whose normal range starts at 6e-5: the variance of a
# millimetre-thin Gaussian (1e-6 m²) would lose most of its bits or flush to zero. The splats are
# sent in units of 1/128 m and their scene node is scaled back by 1/128 (viser applies the node's
# scale to centers and covariances alike), so variances from (0.06 mm)² to (2 m)² stay normal.
VISER_UNITS_PER_METRE = 128.0
FLOAT16_MAX = 65504.0


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
class PoseState:
    """Everything that decides the frame on screen."""

    pose: SMPLXPose  # the hand-set pose (one frame)
    yaw: float = 0.0  # degrees about +Y
    motion: Optional[SMPLXPose] = None
    motion_name: str = ""
    source: str = "pose"  # "pose" or "motion"
    frame: float = 0.0  # position in the motion, in frames
    playing: bool = False
    speed: float = 1.0
    show_mesh: bool = False
    version: int = 0
    uploads: dict[str, SMPLXPose] = field(default_factory=dict)


def pose_preset_names() -> list[str]:
    """Single-frame presets (motions excluded)."""
    return [name for name in preset_names() if name not in MOTION_PRESETS]


def motion_preset_names() -> list[str]:
    return [name for name in preset_names() if name in MOTION_PRESETS] or sorted(MOTION_PRESETS)


def _body_pose_slot(joint: str) -> int:
    if joint not in SMPLX_JOINT_NAMES[1:22]:
        raise ValueError(f"'{joint}' is not an SMPL-X body joint; choose one of {', '.join(SMPLX_JOINT_NAMES[1:22])}")
    return SMPLX_JOINT_NAMES.index(joint) - 1


class AvatarViewer:
    """A browser viewer of one avatar, with reposing and motion playback.

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
        self._state = PoseState(pose=self.rest_pose())
        self._drawn_version = -1
        self._stopping = False
        self._server: Optional[viser.ViserServer] = None
        self._splats: Optional[viser.GaussianSplatHandle] = None
        self._mesh: Optional[viser.MeshHandle] = None
        self._panel = None  # viewer.controls.ControlPanel once started
        self._thread: Optional[threading.Thread] = None
        self._last_frame: Optional[SplatFrame] = None
        self.last_error: Optional[str] = None

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> "AvatarViewer":
        """Serve the viewer (returns at once; the server and the render thread run in the background)."""
        if self._server is not None:
            return self
        self._stopping = False
        server = viser.ViserServer(host=self.host, port=self.port, label=self.title, verbose=False)
        self._server = server
        try:
            self._build_scene(server)
        except BaseException:
            self.stop()
            raise
        self._thread = threading.Thread(target=self._render_loop, name="sigman-viewer-render", daemon=True)
        self._thread.start()
        return self

    def _build_scene(self, server: viser.ViserServer) -> None:
        from .controls import ControlPanel

        self.port = server.get_port()
        with self._lock:
            version, pose, yaw = self._state.version, self._shown_pose(), self._state.yaw
        frame = self.compute_splats(pose, yaw, version)
        self._splats = server.scene.add_gaussian_splats(
            SPLATS_NODE, *viser_arrays(frame), scale=1.0 / VISER_UNITS_PER_METRE)
        self._commit(frame)
        server.scene.set_up_direction("+y")
        centre, height = self._framing()
        server.initial_camera.look_at = tuple(centre)
        server.initial_camera.position = (centre[0], centre[1] + 0.1 * height, centre[2] + 2.2 * height)
        server.scene.add_grid("/ground", width=4.0, height=4.0, plane="xz", cell_size=0.25,
                              position=(centre[0], centre[1] - height / 2, centre[2]))
        if self.body is not None:
            self._mesh = server.scene.add_mesh_simple(
                MESH_NODE, self.body.rest_vertices.detach().cpu().numpy(),
                self.body.faces.detach().cpu().numpy().astype(np.uint32),
                color=(120, 170, 230), opacity=0.5, visible=False)
        self._panel = ControlPanel(server, self)

    def _framing(self) -> tuple[np.ndarray, float]:
        """Centre and height of the avatar in its first pose (to place the camera and the floor)."""
        points = self._last_frame.centers if self._last_frame is not None else self.gaussians.means.detach().cpu().numpy()
        low, high = points.min(axis=0), points.max(axis=0)
        return (low + high) / 2, float(max(high[1] - low[1], 0.5))

    def stop(self) -> None:
        """Stop playback, the render thread and the server. Safe to call twice."""
        with self._wake:
            self._stopping = True
            self._state.playing = False
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        self._panel = None
        if self._server is not None:
            self._server.stop()
            self._server = None

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

    # --- pose API (also what the panel calls) -------------------------------------------------

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
        with self._changing() as state:
            state.pose, state.source, state.playing = pose.frame(0), "pose", False
            self._sync_pose(preset=source if isinstance(source, str) else None)
            self._sync_playback()

    def set_joint(self, joint: str, rotvec: Union[Tensor, tuple[float, float, float]]) -> None:
        """Set one SMPL-X body joint's local rotation (axis-angle, radians). While a motion is
        shown, its current frame becomes the hand-set pose first (and playback pauses)."""
        slot = _body_pose_slot(joint)
        with self._changing() as state:
            pose = self._editable_pose()
            pose.body_pose[0, slot] = torch.as_tensor(rotvec, dtype=torch.float32)
            state.pose = pose
            self._sync_pose()

    def joint_rotation(self, joint: str) -> Tensor:
        """The shown local rotation of one body joint (axis-angle ``[3]``, radians)."""
        slot = _body_pose_slot(joint)
        with self._lock:
            return self._shown_pose().body_pose[0, slot].clone()

    def set_yaw(self, degrees: float) -> None:
        """Turn the whole avatar about the vertical axis."""
        with self._changing() as state:
            state.yaw = float(degrees)
            self._sync_pose()

    def reset(self) -> None:
        """Back to the rest pose, facing forward, with no motion playing."""
        with self._changing() as state:
            state.pose, state.yaw, state.source, state.playing = self.rest_pose(), 0.0, "pose", False
            state.motion, state.motion_name, state.frame = None, "", 0.0
            self._sync_pose(preset="")
            self._sync_motion()

    @property
    def pose(self) -> SMPLXPose:
        """The pose on screen (one frame), before the yaw turn."""
        with self._lock:
            return self._shown_pose()

    # --- motion API ---------------------------------------------------------------------------

    def load_motion(self, source: PoseSource, name: Optional[str] = None, play: bool = True) -> None:
        """Load a motion (an :class:`SMPLXPose` sequence, a motion preset name or an ``.npz`` path)
        and start playing it. Raises :class:`~sigman.pose.PoseFileError` for a bad file."""
        with self._lock:
            uploaded = self._state.uploads.get(source) if isinstance(source, str) else None
        motion = uploaded if uploaded is not None else resolve_pose(source)
        name = name or (source if isinstance(source, str) else "motion")
        with self._changing() as state:
            state.motion, state.motion_name = motion, str(name)
            state.source, state.frame, state.playing = "motion", 0.0, play and motion.num_frames > 1
            self._sync_motion()

    def clear_motion(self) -> None:
        """Drop the motion and show the hand-set pose."""
        with self._changing() as state:
            state.motion, state.motion_name, state.source, state.playing, state.frame = None, "", "pose", False, 0.0
            self._sync_motion()

    def upload_motion(self, filename: str, content: bytes, client: Optional[viser.ClientHandle] = None) -> Optional[str]:
        """Load an uploaded SMPL-X / AMASS ``.npz`` (raw bytes). A sequence plays as a motion, a
        single frame becomes the pose. Never raises: returns the error message (also shown in the
        panel and as a notification) or ``None`` on success."""
        try:
            if len(content) > MAX_POSE_FILE_BYTES:
                raise PoseFileError(f"larger than {MAX_POSE_FILE_BYTES >> 20} MiB; upload a shorter sequence")
            pose = load_pose(bytes(content))
        except PoseFileError as err:
            return self.report_error(f"Could not load {filename}", str(err), client)
        except Exception as err:  # a file must never take the viewer down
            return self.report_error(f"Could not load {filename}", f"{err.__class__.__name__}: {err}", client)
        if pose.num_frames == 1:
            self.set_pose(pose)
            self.report_status(f"Pose loaded from **{filename}**.")
            return None
        name = f"upload: {Path(filename).stem}"
        with self._changing() as state:
            state.uploads[name] = pose
        self.load_motion(pose, name=name)
        self.report_status(f"Motion **{filename}**: {pose.num_frames} frames at {pose.fps:g} fps.")
        return None

    def play(self) -> None:
        with self._changing() as state:
            if state.motion is not None and state.motion.num_frames > 1:
                state.source, state.playing = "motion", True
            self._sync_playback()

    def pause(self) -> None:
        with self._changing() as state:
            state.playing = False
            self._sync_playback()

    def seek(self, frame: int) -> None:
        """Show frame ``frame`` of the motion (clamped)."""
        with self._changing() as state:
            if state.motion is not None:
                state.source, state.frame = "motion", float(min(max(int(frame), 0), state.motion.num_frames - 1))
            self._sync_playback()

    def set_speed(self, speed: float) -> None:
        with self._changing() as state:
            state.speed = max(float(speed), 0.0)

    def show_body_mesh(self, visible: bool) -> None:
        """Show the skinned body mesh (the body's default shape) under the Gaussians."""
        with self._changing() as state:
            state.show_mesh = bool(visible) and self.body is not None

    @property
    def frame_index(self) -> int:
        with self._lock:
            return int(self._state.frame)

    @property
    def num_frames(self) -> int:
        with self._lock:
            return 0 if self._state.motion is None else self._state.motion.num_frames

    @property
    def is_playing(self) -> bool:
        with self._lock:
            return self._state.playing

    @property
    def motion_names(self) -> list[str]:
        with self._lock:
            return motion_preset_names() + list(self._state.uploads)

    @property
    def motion_name(self) -> str:
        with self._lock:
            return self._state.motion_name

    # --- what is on screen --------------------------------------------------------------------

    @property
    def splats(self) -> Optional[SplatFrame]:
        """The Gaussians last sent to viser."""
        with self._lock:
            return self._last_frame

    def wait_until_drawn(self, timeout: float = 5.0) -> bool:
        """Block until every change made so far is on screen. False on timeout."""
        with self._wake:
            if self._thread is None:
                return False
            target = self._state.version
            return self._wake.wait_for(lambda: self._drawn_version >= target or self._stopping, timeout)

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
        """Show an error in the panel and as a notification (to ``client``, or every open tab);
        also kept in :attr:`last_error`. Returns the one-line text."""
        text = f"{title}: {message}"
        self.last_error = text
        if self._panel is not None:
            self._panel.show_error(title, message, client)
        return text

    def report_status(self, markdown: str) -> None:
        """A status line under the panel."""
        if self._panel is not None:
            self._panel.show_status(markdown)

    # --- internals ----------------------------------------------------------------------------

    @contextmanager
    def _changing(self) -> Iterator[PoseState]:
        """Change the pose state (under the lock) and wake the render thread."""
        with self._wake:
            yield self._state
            self._state.version += 1
            self._wake.notify_all()

    def _shown_pose(self) -> SMPLXPose:
        state = self._state
        if state.source == "motion" and state.motion is not None:
            return state.motion.frame(min(int(state.frame), state.motion.num_frames - 1))
        return state.pose

    def _editable_pose(self) -> SMPLXPose:
        """A copy of the shown pose that becomes the hand-set pose (pausing any motion)."""
        state = self._state
        pose = self._shown_pose().frame(0)
        pose = SMPLXPose(**{k: (v.clone() if isinstance(v, Tensor) else v) for k, v in vars(pose).items()})
        if state.source == "motion":
            state.source, state.playing = "pose", False
            self._sync_playback()
        return pose

    def _transforms(self, pose: SMPLXPose, yaw: float, rest_joints: Tensor) -> Tensor:
        transforms = self.body.pose_transforms(pose, rest_joints)[0][0]  # [J, 4, 4]
        if yaw:
            transforms = yaw_transform(yaw, transforms.dtype, transforms.device) @ transforms
        return transforms

    @torch.inference_mode()
    def _mesh_vertices(self, pose: SMPLXPose, yaw: float) -> np.ndarray:
        transforms = self._transforms(pose, yaw, self.body.rest_joints)
        return lbs_points(self.body.rest_vertices, self.body.skin_weights, transforms[None])[0].cpu().numpy()

    def _commit(self, frame: SplatFrame) -> None:
        with self._wake:
            self._last_frame = frame
            self._drawn_version = max(self._drawn_version, frame.version)
            self._wake.notify_all()

    def _draw(self, pose: SMPLXPose, yaw: float, show_mesh: bool, version: int) -> None:
        frame = self.compute_splats(pose, yaw, version)
        server = self._server
        if server is None:
            return
        with server.atomic():
            self._splats.set_gaussians(*viser_arrays(frame))
            if self._mesh is not None:
                if show_mesh:
                    self._mesh.vertices = self._mesh_vertices(pose, yaw).astype(np.float32)
                if self._mesh.visible != show_mesh:
                    self._mesh.visible = show_mesh
        self._commit(frame)

    def _render_loop(self) -> None:
        clock = time.perf_counter()
        while True:
            with self._wake:
                state = self._state
                while not self._stopping and not state.playing and state.version == self._drawn_version:
                    self._wake.wait()
                    clock = time.perf_counter()
                if self._stopping:
                    return
                now = time.perf_counter()
                if state.playing and state.motion is not None:
                    step = min(now - clock, MAX_FRAME_STEP_S) * state.motion.fps * state.speed
                    state.frame = (state.frame + step) % state.motion.num_frames
                    state.version += 1
                    self._sync_playback()
                clock = now
                version, pose, yaw, show_mesh = state.version, self._shown_pose(), state.yaw, state.show_mesh
            try:
                self._draw(pose, yaw, show_mesh, version)
            except Exception as err:  # keep serving; say what went wrong
                with self._wake:
                    self._state.playing = False
                    self._drawn_version = version
                    self._wake.notify_all()
                self.report_error("Could not draw this pose", f"{err.__class__.__name__}: {err}", None)
            with self._wake:
                if state.playing and not self._stopping and state.motion is not None:
                    period = 1.0 / max(state.motion.fps * max(state.speed, 1e-3), 1e-3)
                    self._wake.wait(timeout=max(0.0, period - (time.perf_counter() - clock)))

    # --- panel sync (no-ops before start) -----------------------------------------------------

    def _sync_pose(self, preset: Optional[str] = None) -> None:
        if self._panel is not None:
            self._panel.show_pose(self._state.yaw, preset)

    def _sync_motion(self) -> None:
        if self._panel is not None:
            self._panel.show_motion(self.motion_names, self._state.motion_name, self.num_frames)
            self._sync_playback()

    def _sync_playback(self) -> None:
        if self._panel is not None:
            self._panel.show_playback(int(self._state.frame), self._state.playing)


def launch_viewer(gaussians: Gaussians, body: Optional[BodyModel] = None, rest_joints: Optional[Tensor] = None,
                  host: str = "127.0.0.1", port: int = 0, **kwargs) -> AvatarViewer:
    """Start a viewer of ``gaussians`` (``port=0``: a free port) and return it; its address is
    ``viewer.url``. Call ``viewer.stop()`` when done."""
    return AvatarViewer(gaussians, body, rest_joints, host=host, port=port, **kwargs).start()
