"""Browser viewer of sigman avatars (viser): live reposing, pose presets, motion playback.

    from viewer import launch_viewer
    viewer = launch_viewer(gaussians, body)   # a free port on 127.0.0.1
    print(viewer.url); ...; viewer.stop()

Each browser tab has its own pose, turn and motion (its own panel); ``viewer.set_pose(...)`` and
the other API calls pose every open tab and the template new tabs open with.

Command line: ``python -m viewer avatar.glb`` (or ``--demo`` for a bare body).
"""

from .avatar import Avatar, demo_avatar, load_avatar
from .server import AvatarViewer, SplatFrame, Tab, launch_viewer
from .skinning import SparseSkin, covariances
from .state import TabState

__all__ = ["Avatar", "AvatarViewer", "SparseSkin", "SplatFrame", "Tab", "TabState", "covariances", "demo_avatar",
           "launch_viewer", "load_avatar"]
