"""MediaPipe's metric world landmarks, corrected for a depth bias measured on the project's renders.

On frontal renders of the project's painted anny bodies (``scripts/dev/pose_cases.py`` seed 7: 8
presets + 8 random poses, bodies 1.2 to 2.2 m tall; not the bodies or poses that
``scripts/eval_pose.py`` evaluates on), BlazePose GHUM's world landmarks put the upper body 7 to 15 cm
closer to the camera than the hips and the feet 2 to 11 cm further: a person standing straight
comes out leaning towards the camera by about 10 degrees. :data:`WORLD_DEPTH_BIAS` is that bias per
landmark (``scripts/dev/calibrate_world_bias.py`` prints it; the spread over cases is 5 to 15 cm,
so about half of the depth error is this bias). It is measured in the world landmarks' own size
(about one size for every person) and removed in proportion to how much the torso faces the camera
(the side views of the same set show a bias a third as large, not removed).

    world = debiased_world_landmarks(raw_world)   # [33, 3] metres, camera axes

:mod:`sigman.person` applies it to what MediaPipe returns (``PersonConfig(debias_world=False)``: as
it comes); synthetic observations (:mod:`sigman.synthetic_observation`) are exact and need none.
"""

from __future__ import annotations

import numpy as np

# Depth (camera z, metres, + away from the camera) of each world landmark minus the truth, frontal
# views, BlazePose order (left and right averaged).
WORLD_DEPTH_BIAS: tuple[float, ...] = (
    -0.125, -0.145, -0.141, -0.150, -0.145, -0.141, -0.150, -0.139, -0.139, -0.107, -0.107, -0.086,
    -0.086, -0.066, -0.066, -0.105, -0.105, -0.129, -0.129, -0.111, -0.111, -0.079, -0.079, 0.001,
    0.001, 0.022, 0.022, 0.060, 0.060, 0.009, 0.009, 0.111, 0.111)
_SHOULDERS, _HIPS = (11, 12), (23, 24)


def facing_camera(world: np.ndarray) -> float:
    """How much the torso of world landmarks ``[33, 3]`` faces the camera: 1 facing it, 0 side-on or
    turned away (the cosine of the torso's forward axis with the direction to the camera)."""
    w = np.asarray(world, np.float64)
    if not np.isfinite(w[list(_SHOULDERS + _HIPS)]).all():
        return 0.0
    left = (w[11] + w[23]) - (w[12] + w[24])  # the person's left, camera axes (+x right, +y down)
    up = 0.5 * (w[11] + w[12]) - 0.5 * (w[23] + w[24])
    forward = np.cross(left, up)
    norm = np.linalg.norm(forward)
    if norm < 1e-9:
        return 0.0
    return float(np.clip(-forward[2] / norm, 0.0, 1.0))


def debiased_world_landmarks(world: np.ndarray) -> np.ndarray:
    """World landmarks ``[33, 3]`` with :data:`WORLD_DEPTH_BIAS` removed as much as the torso faces
    the camera (float32 copy; non-finite entries stay as they are)."""
    out = np.array(world, np.float32, copy=True)
    out[:, 2] -= facing_camera(out) * np.asarray(WORLD_DEPTH_BIAS, np.float32)
    return out
