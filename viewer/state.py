"""The pose state of one viewer tab: the hand-set pose, the turn, a motion and its playback.

Each browser tab holds its own :class:`TabState` (and the viewer one more, the template that new
tabs start from). Every change happens under the viewer's lock (a shared ``threading.Condition``),
bumps ``version`` and wakes the render thread; the tab's panel, if any, is told what to show.
Both :mod:`viewer.controls` (the panel) and :mod:`viewer.server` (the render thread) use this
module; it imports neither.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace
from typing import Optional, Protocol

import torch
from torch import Tensor

from sigman.pose import SMPLXPose, SMPLX_JOINT_NAMES
from sigman.presets import MOTION_PRESETS, preset_names

MAX_FRAME_STEP_S = 0.25  # after a stall, playback skips at most this much time


def pose_preset_names() -> list[str]:
    """Single-frame presets (motions excluded)."""
    return [name for name in preset_names() if name not in MOTION_PRESETS]


def motion_preset_names() -> list[str]:
    return [name for name in preset_names() if name in MOTION_PRESETS] or sorted(MOTION_PRESETS)


def body_pose_slot(joint: str) -> int:
    """The ``body_pose`` index of an SMPL-X body joint (ValueError names the valid ones)."""
    if joint not in SMPLX_JOINT_NAMES[1:22]:
        raise ValueError(f"'{joint}' is not an SMPL-X body joint; choose one of {', '.join(SMPLX_JOINT_NAMES[1:22])}")
    return SMPLX_JOINT_NAMES.index(joint) - 1


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
    preset: str = ""  # the pose preset shown ("": none / the rest pose)
    version: int = 0
    uploads: dict[str, SMPLXPose] = field(default_factory=dict)


@dataclass(frozen=True)
class Snapshot:
    """What the render thread draws for one tab."""

    version: int
    pose: SMPLXPose
    yaw: float
    show_mesh: bool


class PanelView(Protocol):
    """What a tab's control panel shows of its state (see :class:`viewer.controls.ControlPanel`)."""

    def show_pose(self, yaw: float, preset: Optional[str]) -> None: ...
    def show_motion(self, names: list[str], current: str, num_frames: int) -> None: ...
    def show_playback(self, frame: int, playing: bool) -> None: ...


class TabState:
    """The pose state of one tab, guarded by the viewer's ``lock``.

    Args:
        rest_pose: the pose that leaves the canonical avatar where it is.
        lock: the viewer's condition; changes notify it (the render thread waits on it).
    """

    def __init__(self, rest_pose: SMPLXPose, lock: threading.Condition) -> None:
        self._rest_pose = rest_pose
        self.lock = lock
        self.state = PoseState(pose=rest_pose)
        self.panel: Optional[PanelView] = None
        self.drawn_version = -1  # the version last drawn (render thread)
        self._clock = time.perf_counter()  # when playback last stepped
        self._next_step = 0.0

    def copy(self) -> "TabState":
        """A new tab starting where this one is (its own copy of the state, nothing drawn yet)."""
        with self.lock:
            twin = TabState(self._rest_pose, self.lock)
            twin.state = replace(self.state, uploads=dict(self.state.uploads), version=0)
            return twin

    # --- changes (each under the lock, each bumps the version) --------------------------------

    def _changed(self) -> None:
        self.state.version += 1
        self.lock.notify_all()

    def set_pose(self, pose: SMPLXPose, preset: Optional[str] = None) -> None:
        """Show one pose frame (``preset``: its name, for the panel's dropdown)."""
        with self.lock:
            s = self.state
            s.pose, s.source, s.playing, s.preset = pose.frame(0), "pose", False, preset or ""
            self._sync_pose(preset)
            self._sync_playback()
            self._changed()

    def set_joint(self, slot: int, rotvec: Tensor) -> None:
        """Set ``body_pose[slot]`` of the shown pose (a shown motion frame becomes the hand-set pose)."""
        with self.lock:
            pose = self._editable_pose()
            pose.body_pose[0, slot] = torch.as_tensor(rotvec, dtype=torch.float32)
            self.state.pose = pose
            self._sync_pose(None)
            self._changed()

    def set_yaw(self, degrees: float) -> None:
        with self.lock:
            self.state.yaw = float(degrees)
            self._sync_pose(None)
            self._changed()

    def reset(self) -> None:
        """Back to the rest pose, facing forward, with no motion."""
        with self.lock:
            s = self.state
            s.pose, s.yaw, s.source, s.playing = self._rest_pose, 0.0, "pose", False
            s.motion, s.motion_name, s.frame, s.preset = None, "", 0.0, ""
            self._sync_pose("")
            self._sync_motion()
            self._changed()

    def load_motion(self, motion: SMPLXPose, name: str, play: bool = True) -> None:
        with self.lock:
            s = self.state
            s.motion, s.motion_name = motion, str(name)
            s.source, s.frame = "motion", 0.0
            self._set_playing(play and motion.num_frames > 1)
            self._sync_motion()
            self._changed()

    def add_upload(self, name: str, motion: SMPLXPose) -> None:
        with self.lock:
            self.state.uploads[name] = motion

    def upload(self, name: str) -> Optional[SMPLXPose]:
        with self.lock:
            return self.state.uploads.get(name)

    def clear_motion(self) -> None:
        with self.lock:
            s = self.state
            s.motion, s.motion_name, s.source, s.playing, s.frame = None, "", "pose", False, 0.0
            self._sync_motion()
            self._changed()

    def play(self) -> None:
        with self.lock:
            s = self.state
            if s.motion is not None and s.motion.num_frames > 1:
                s.source = "motion"
                self._set_playing(True)
            self._sync_playback()
            self._changed()

    def pause(self) -> None:
        with self.lock:
            self.state.playing = False
            self._sync_playback()
            self._changed()

    def seek(self, frame: int) -> None:
        with self.lock:
            s = self.state
            if s.motion is not None:
                s.source, s.frame = "motion", float(min(max(int(frame), 0), s.motion.num_frames - 1))
            self._sync_playback()
            self._changed()

    def set_speed(self, speed: float) -> None:
        with self.lock:
            self.state.speed = max(float(speed), 0.0)
            self._changed()

    def show_body_mesh(self, visible: bool) -> None:
        with self.lock:
            self.state.show_mesh = bool(visible)
            self._changed()

    def stop_playing(self) -> None:
        """Pause after a failed draw (no new version: the failed frame is not retried)."""
        with self.lock:
            self.state.playing = False
            self._sync_playback()

    # --- what is shown ------------------------------------------------------------------------

    def shown_pose(self) -> SMPLXPose:
        with self.lock:
            s = self.state
            if s.source == "motion" and s.motion is not None:
                return s.motion.frame(min(int(s.frame), s.motion.num_frames - 1))
            return s.pose

    def joint_rotation(self, slot: int) -> Tensor:
        with self.lock:
            return self.shown_pose().body_pose[0, slot].clone()

    @property
    def yaw(self) -> float:
        with self.lock:
            return self.state.yaw

    @property
    def frame_index(self) -> int:
        with self.lock:
            return int(self.state.frame)

    @property
    def num_frames(self) -> int:
        with self.lock:
            return 0 if self.state.motion is None else self.state.motion.num_frames

    @property
    def is_playing(self) -> bool:
        with self.lock:
            return self.state.playing

    @property
    def motion_name(self) -> str:
        with self.lock:
            return self.state.motion_name

    @property
    def motion_names(self) -> list[str]:
        with self.lock:
            return motion_preset_names() + list(self.state.uploads)

    # --- the render thread's side (call with the lock held) ------------------------------------

    def due(self, now: float) -> bool:
        """A change not yet drawn, or a playback frame due at ``now``."""
        return self.state.version != self.drawn_version or (self.state.playing and now >= self._next_step)

    def next_step_in(self, now: float) -> Optional[float]:
        """Seconds until the next playback frame (``None``: not playing)."""
        return max(0.0, self._next_step - now) if self.state.playing else None

    def step(self, now: float) -> Snapshot:
        """Advance playback to ``now`` (if playing) and return what to draw."""
        s = self.state
        if s.playing and s.motion is not None:
            advance = min(now - self._clock, MAX_FRAME_STEP_S) * s.motion.fps * s.speed
            s.frame = (s.frame + advance) % s.motion.num_frames
            s.version += 1
            self._next_step = now + 1.0 / max(s.motion.fps * max(s.speed, 1e-3), 1e-3)
            self._sync_playback()
        self._clock = now
        return Snapshot(s.version, self.shown_pose(), s.yaw, s.show_mesh)

    # --- helpers ------------------------------------------------------------------------------

    def _set_playing(self, playing: bool) -> None:
        if playing and not self.state.playing:
            self._clock = self._next_step = time.perf_counter()
        self.state.playing = playing

    def _editable_pose(self) -> SMPLXPose:
        """A copy of the shown pose that becomes the hand-set pose (pausing any motion)."""
        pose = self.shown_pose().frame(0)
        pose = SMPLXPose(**{k: (v.clone() if isinstance(v, Tensor) else v) for k, v in vars(pose).items()})
        if self.state.source == "motion":
            self.state.source, self.state.playing = "pose", False
            self._sync_playback()
        return pose

    def _sync_pose(self, preset: Optional[str]) -> None:
        if self.panel is not None:
            self.panel.show_pose(self.state.yaw, preset)

    def _sync_motion(self) -> None:
        if self.panel is not None:
            self.panel.show_motion(self.motion_names, self.state.motion_name, self.num_frames)
            self._sync_playback()

    def _sync_playback(self) -> None:
        if self.panel is not None:
            self.panel.show_playback(int(self.state.frame), self.state.playing)
