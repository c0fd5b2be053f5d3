"""The viewer's control panel: pose presets, joint sliders, turn, reset, and motion playback.

Every callback is one call into :class:`~viewer.server.AvatarViewer`; the viewer calls back the
``show_*`` methods to keep the panel in step. viser runs a handle's callbacks synchronously when
Python assigns its value, so the panel's own writes happen inside :meth:`ControlPanel._quietly`
and the callbacks skip them.
"""

from __future__ import annotations

import math
import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING, Callable, Iterator, Optional

import viser

if TYPE_CHECKING:
    from .server import AvatarViewer

REST_POSE = "(rest pose)"
NO_MOTION = "(none)"
AXES = ("x", "y", "z")
# The SMPL-X body joints offered for hand posing, head to feet.
MAIN_JOINTS = (
    "spine1", "spine2", "spine3", "neck", "head",
    "left_collar", "right_collar", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
)
STATIC_NOTE = ("**Static avatar.** These Gaussians have no rig, so they cannot be reposed. "
               "Open a rigged `.glb` (written by `sigman.io`) to pose and animate it.")


class ControlPanel:
    """The GUI of one :class:`~viewer.server.AvatarViewer` (shared by all browser tabs)."""

    def __init__(self, server: viser.ViserServer, viewer: "AvatarViewer") -> None:
        from .server import motion_preset_names, pose_preset_names

        self._server = server
        self._viewer = viewer
        self._quiet = threading.local()
        self._shown_playing: Optional[bool] = None
        gui = server.gui
        if not viewer.can_repose:
            self.status = gui.add_markdown(STATIC_NOTE)
            return

        with gui.add_folder("Pose"):
            self.preset = gui.add_dropdown("Preset", (REST_POSE, *pose_preset_names()))
            self.turn = gui.add_slider("Turn (°)", min=-180.0, max=180.0, step=1.0, initial_value=0.0,
                                       hint="Rotate the avatar about the vertical axis")
            self.joint = gui.add_dropdown("Joint", MAIN_JOINTS, initial_value="left_shoulder",
                                          hint="SMPL-X joint the three sliders below rotate")
            self.angles = tuple(
                gui.add_slider(f"Rotate {axis} (°)", min=-180.0, max=180.0, step=1.0, initial_value=0.0,
                               hint=f"Axis-angle {axis} component of the joint's local rotation")
                for axis in AXES)
            self.reset = gui.add_button("Reset", icon=viser.Icon.REFRESH)
        with gui.add_folder("Motion"):
            self.motion = gui.add_dropdown("Motion", (NO_MOTION, *motion_preset_names()))
            self.upload = gui.add_upload_button("Upload .npz", icon=viser.Icon.UPLOAD,
                                                hint="An SMPL-X or AMASS pose sequence (.npz)")
            self.play = gui.add_button("Play", icon=viser.Icon.PLAYER_PLAY)
            self.frame = gui.add_slider("Frame", min=0, max=1, step=1, initial_value=0, disabled=True)
            self.speed = gui.add_slider("Speed", min=0.1, max=3.0, step=0.1, initial_value=1.0)
        with gui.add_folder("Display", expand_by_default=False):
            self.mesh = gui.add_checkbox("Body mesh", initial_value=False,
                                         hint="The skinned body (default shape) under the Gaussians")
        self.status = gui.add_markdown("")
        self._connect()
        self.show_pose(0.0, None)

    def _connect(self) -> None:
        v, user = self._viewer, self._from_user
        self.preset.on_update(user(lambda _: v.reset() if self.preset.value == REST_POSE else v.set_pose(self.preset.value)))
        self.turn.on_update(user(lambda _: v.set_yaw(self.turn.value)))
        self.joint.on_update(user(lambda _: self._show_angles()))
        for axis, slider in enumerate(self.angles):
            slider.on_update(user(lambda _, axis=axis, slider=slider: self._rotate_joint(axis, slider.value)))
        self.reset.on_click(user(lambda _: v.reset()))
        self.motion.on_update(user(lambda _: v.clear_motion() if self.motion.value == NO_MOTION else v.load_motion(self.motion.value)))
        self.upload.on_upload(user(lambda event: v.upload_motion(self.upload.value.name, self.upload.value.content, event.client)))
        self.play.on_click(user(lambda _: v.pause() if v.is_playing else v.play()))
        self.frame.on_update(user(lambda _: v.seek(self.frame.value)))
        self.speed.on_update(user(lambda _: v.set_speed(self.speed.value)))
        self.mesh.on_update(user(lambda _: v.show_body_mesh(self.mesh.value)))

    def _rotate_joint(self, axis: int, degrees: float) -> None:
        rotvec = self._viewer.joint_rotation(self.joint.value)
        rotvec[axis] = math.radians(degrees)
        self._viewer.set_joint(self.joint.value, rotvec)

    # --- what the viewer shows through the panel ----------------------------------------------

    def show_pose(self, yaw: float, preset: Optional[str]) -> None:
        """The turn and the selected joint's angles; ``preset`` ("" = rest pose) sets the dropdown."""
        if not self._viewer.can_repose:
            return
        with self._quietly():
            self.turn.value = float(yaw)
            if preset is not None and (preset or REST_POSE) in self.preset.options:
                self.preset.value = preset or REST_POSE
        self._show_angles()

    def show_motion(self, names: list[str], current: str, num_frames: int) -> None:
        if not self._viewer.can_repose:
            return
        with self._quietly():
            self.motion.options = (NO_MOTION, *names)
            self.motion.value = current if current in names else NO_MOTION
            self.frame.max = max(num_frames - 1, 1)
            self.frame.disabled = num_frames < 2

    def show_playback(self, frame: int, playing: bool) -> None:
        if not self._viewer.can_repose:
            return
        with self._quietly():
            self.frame.value = min(frame, int(self.frame.max))
        if playing != self._shown_playing:
            self._shown_playing = playing
            self.play.label = "Pause" if playing else "Play"
            self.play.icon = viser.Icon.PLAYER_PAUSE if playing else viser.Icon.PLAYER_PLAY

    def show_status(self, markdown: str) -> None:
        self.status.content = markdown

    def show_error(self, title: str, message: str, client: Optional[viser.ClientHandle]) -> None:
        """An error line in the panel and a red notification (to ``client``, or every tab)."""
        self.status.content = f"**{title}.** {message}"
        for tab in [client] if client is not None else self._server.get_clients().values():
            tab.add_notification(title, message, color="red", auto_close_seconds=10.0)

    # --- helpers ------------------------------------------------------------------------------

    def _show_angles(self) -> None:
        rotvec = self._viewer.joint_rotation(self.joint.value)
        with self._quietly():
            for slider, value in zip(self.angles, rotvec.tolist()):
                slider.value = float(max(-180.0, min(180.0, round(math.degrees(value), 1))))

    @contextmanager
    def _quietly(self) -> Iterator[None]:
        """Panel writes inside this block do not trigger the panel's callbacks."""
        before = getattr(self._quiet, "active", False)
        self._quiet.active = True
        try:
            yield
        finally:
            self._quiet.active = before

    def _from_user(self, action: Callable[[viser.GuiEvent], object]) -> Callable[[viser.GuiEvent], None]:
        """A callback that runs ``action`` for user input only and reports its errors in the panel."""
        def callback(event: viser.GuiEvent) -> None:
            if getattr(self._quiet, "active", False):
                return
            try:
                action(event)
            except Exception as err:
                self._viewer.report_error("That did not work", f"{err.__class__.__name__}: {err}", event.client)
        return callback
