"""Which way is up in each file format.

sigman's own frame is glTF's: metres, +Y up, the body faces +Z, +X is the body's left. The
Gaussian-splat formats have no up axis in their specification, but their viewers share one
de-facto convention, inherited from the original 3DGS code, which works in COLMAP's / OpenCV's
camera frame: **+Y down**. So the files are written in that frame:

==============  ===============================================  ===============================
format          frame of the stored values                       shown upright by
==============  ===============================================  ===============================
``.glb``        glTF: +Y up, faces +Z (nothing converted)         three.js, Babylon, Blender,
                                                                 sigman's viewer
``.ply``        3DGS / OpenCV: +Y down, faces -Z (sigman's       SuperSplat / PlayCanvas,
                frame turned 180° about X)                       Gradio's ``Model3D``
                                                                 (gsplat.js), antimatter15,
                                                                 viser with up = -Y, sigman
``.splat``      same as ``.ply``                                 same as ``.ply``
==============  ===============================================  ===============================

The 3DGS frame is the camera frame of an OpenCV camera that stands in front of the avatar and
looks at it (+X right, +Y down, +Z away from the camera): a viewer whose start camera looks
along +Z (gsplat.js, antimatter15) shows the avatar upright and from the front. PlayCanvas turns
``.ply``/``.splat`` scenes by 180° about Z on import, so there the avatar is upright and its front
faces -Z. A turn (not a mirror) keeps every Gaussian's handedness, so nothing renders inside out.

Both directions are exact: the turn only negates and permutes float32 values, so a file written
and read back gives the very same numbers.
"""

from __future__ import annotations

import numpy as np

FRAME_COMMENT = "sigman frame: +Y down, +Z forward (3DGS/OpenCV; sigman's +Y-up glTF frame turned 180 deg about X)"


def to_splat_frame(means: np.ndarray, quats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """sigman's frame -> the ``.ply``/``.splat`` frame: positions ``[N, 3]`` ``(x, y, z) -> (x, -y, -z)``
    and ``(w, x, y, z)`` quaternions ``[N, 4]`` left-multiplied by the 180° X turn ``(0, 1, 0, 0)``."""
    m = np.asarray(means)
    q = np.asarray(quats)
    return (np.stack([m[:, 0], -m[:, 1], -m[:, 2]], axis=1),
            np.stack([-q[:, 1], q[:, 0], -q[:, 3], q[:, 2]], axis=1))


def from_splat_frame(means: np.ndarray, quats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The inverse of :func:`to_splat_frame` (quaternions left-multiplied by ``(0, -1, 0, 0)``, so
    that a round trip returns the very same quaternion, sign included)."""
    m = np.asarray(means)
    q = np.asarray(quats)
    return (np.stack([m[:, 0], -m[:, 1], -m[:, 2]], axis=1),
            np.stack([q[:, 1], -q[:, 0], q[:, 3], -q[:, 2]], axis=1))
