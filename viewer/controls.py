"""The viewer's control panel of one browser tab: pose presets, joint sliders, turn, reset, and
motion playback.

Each tab gets its own panel (built in ``client.gui``) bound to that tab's
:class:`~viewer.state.TabState`: every callback is one call into that state, and the state calls
back the ``show_*`` methods to keep the panel in step. viser runs a handle's callbacks
synchronously when Python assigns its value, so the panel's own writes happen inside
:meth:`ControlPanel._quietly` and the callbacks skip them.
"""

from __future__ import annotations

import math
import threading
from contextlib import contextmanager
from typing import Callable, Iterator, Optional

import viser

from sigman.presets import resolve_pose
from .state import TabState, body_pose_slot, motion_preset_names, pose_preset_names

ErrorReporter = Callable[[str, str, Optional[viser.ClientHandle]], object]  # (title, message, client)
Uploader = Callable[[str, bytes, viser.ClientHandle], object]  # (filename, content, client)
MotionLoader = Callable[[str], object]  # motion name -> load it into this tab

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
PER_TAB_NOTE = "This tab has its own pose and motion; other tabs are not affected."


class ControlPanel:
    """The GUI of one browser tab (``gui``: that client's ``client.gui``), driving ``tab``.

    Args:
        gui: where to build the panel (a client's GUI: the panel is that tab's alone).
        tab: the tab's pose state (``None``: a static avatar, the panel only says so).
        client: the tab's client (notifications go to it).
        report_error, upload, load_motion: the viewer's handlers for errors, uploaded files and
            motion names (resolved, with uploads, by the viewer).
    """

    def __init__(self, gui: viser.GuiApi, tab: Optional[TabState], client: Optional[viser.ClientHandle],
                 report_error: ErrorReporter, upload: Uploader, load_motion: MotionLoader) -> None:
        self._tab = tab
        self._client = client
        self._report_error = report_error
        self._upload = upload
        self._load_motion = load_motion
        self._quiet = threading.local()
        self._shown_playing: Optional[bool] = None
        if tab is None:
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
        self.note = gui.add_markdown(PER_TAB_NOTE)
        self.status = gui.add_markdown("")
        self._connect()

    def attach(self) -> None:
        """Show the tab's current state (call once the tab's state points at this panel)."""
        tab = self._tab
        if tab is None:
            return
        with tab.lock:
            state = tab.state
            with self._quietly():
                self.preset.value = state.preset if state.preset in self.preset.options else REST_POSE
                self.speed.value = float(min(max(state.speed, 0.1), 3.0))
                self.mesh.value = bool(state.show_mesh)
            self.show_pose(state.yaw, None)
            self.show_motion(tab.motion_names, state.motion_name, tab.num_frames)
            self.show_playback(int(state.frame), state.playing)

    def _connect(self) -> None:
        t, user = self._tab, self._from_user
        self.preset.on_update(user(lambda _: t.reset() if self.preset.value == REST_POSE
                                   else t.set_pose(resolve_pose(self.preset.value), self.preset.value)))
        self.turn.on_update(user(lambda _: t.set_yaw(self.turn.value)))
        self.joint.on_update(user(lambda _: self._show_angles()))
        for axis, slider in enumerate(self.angles):
            slider.on_update(user(lambda _, axis=axis, slider=slider: self._rotate_joint(axis, slider.value)))
        self.reset.on_click(user(lambda _: t.reset()))
        self.motion.on_update(user(lambda _: t.clear_motion() if self.motion.value == NO_MOTION
                                   else self._load_motion(self.motion.value)))
        self.upload.on_upload(user(lambda event: self._upload(self.upload.value.name, self.upload.value.content,
                                                              event.client)))
        self.play.on_click(user(lambda _: t.pause() if t.is_playing else t.play()))
        self.frame.on_update(user(lambda _: t.seek(self.frame.value)))
        self.speed.on_update(user(lambda _: t.set_speed(self.speed.value)))
        self.mesh.on_update(user(lambda _: t.show_body_mesh(self.mesh.value)))

    def _rotate_joint(self, axis: int, degrees: float) -> None:
        slot = body_pose_slot(self.joint.value)
        rotvec = self._tab.joint_rotation(slot)
        rotvec[axis] = math.radians(degrees)
        self._tab.set_joint(slot, rotvec)

    # --- what the viewer shows through the panel ----------------------------------------------

    def show_pose(self, yaw: float, preset: Optional[str]) -> None:
        """The turn and the selected joint's angles; ``preset`` ("" = rest pose) sets the dropdown."""
        if self._tab is None:
            return
        with self._quietly():
            self.turn.value = float(yaw)
            if preset is not None and (preset or REST_POSE) in self.preset.options:
                self.preset.value = preset or REST_POSE
        self._show_angles()

    def show_motion(self, names: list[str], current: str, num_frames: int) -> None:
        if self._tab is None:
            return
        with self._quietly():
            self.motion.options = (NO_MOTION, *names)
            self.motion.value = current if current in names else NO_MOTION
            self.frame.max = max(num_frames - 1, 1)
            self.frame.disabled = num_frames < 2

    def show_playback(self, frame: int, playing: bool) -> None:
        if self._tab is None:
            return
        with self._quietly():
            self.frame.value = min(frame, int(self.frame.max))
        if playing != self._shown_playing:
            self._shown_playing = playing
            self.play.label = "Pause" if playing else "Play"
            self.play.icon = viser.Icon.PLAYER_PAUSE if playing else viser.Icon.PLAYER_PLAY

    def show_status(self, markdown: str) -> None:
        self.status.content = markdown

    def show_error(self, title: str, message: str) -> None:
        """An error line in the panel and a red notification in this tab."""
        self.status.content = f"**{title}.** {message}"
        if self._client is not None:
            self._client.add_notification(title, message, color="red", auto_close_seconds=10.0)

    # --- helpers ------------------------------------------------------------------------------

    def _show_angles(self) -> None:
        rotvec = self._tab.joint_rotation(body_pose_slot(self.joint.value))
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
                self._report_error("That did not work", f"{err.__class__.__name__}: {err}", event.client)
        return callback
