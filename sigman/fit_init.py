"""Where the body fit starts: the root orientation from the torso (the world landmarks' or the
image's), the candidates a photo's fit tries, and the prior focal length.

The fitted camera looks along world -Z from the +Z side with world +Y up (:data:`CAMERA_ROTATION`),
so a person facing the camera faces +Z.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import roma
import torch
from torch import Tensor

from sigman.observation import BLAZEPOSE_LANDMARKS, PersonObservation

# World -> camera rotation of every fitted camera: on the +Z side looking along -Z, +Y up
# (OpenCV axes: camera x = world x, camera y = -world y, camera z = -world z).
CAMERA_ROTATION = torch.tensor([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]])
TORSO = ("left_shoulder", "right_shoulder", "left_hip", "right_hip")
_MARK = {name: i for i, name in enumerate(BLAZEPOSE_LANDMARKS)}


def _torso_rotation(left: Tensor, up: Tensor) -> Optional[Tensor]:
    """Body-to-camera rotation ``[3, 3]`` from the body's left and up directions in camera axes."""
    if left.norm() < 1e-6 or up.norm() < 1e-6:
        return None
    left = left / left.norm()
    up = up - (up @ left) * left
    if up.norm() < 1e-6:
        return None
    up = up / up.norm()
    forward = torch.linalg.cross(left, up)
    return torch.stack([left, up, forward], dim=1)


def _world_torso(observation: PersonObservation) -> Optional[Tensor]:
    """Body-to-camera rotation from the world landmarks' shoulders and hips (``None`` if absent)."""
    i = [_MARK[n] for n in TORSO]
    wl = torch.from_numpy(np.asarray(observation.world_landmarks, np.float32))[i]
    if not torch.isfinite(wl).all() or wl.abs().sum() == 0:
        return None
    left = (wl[0] + wl[2]) - (wl[1] + wl[3])  # the person's left, camera axes
    up = 0.5 * (wl[0] + wl[1]) - 0.5 * (wl[2] + wl[3])
    return _torso_rotation(left, up)


def _image_torso(observation: PersonObservation) -> Tensor:
    """Body-to-camera rotation from the image alone: the torso in the image plane, facing the camera
    when the person's left is on the image's right, else away."""
    i = [_MARK[n] for n in TORSO]
    p = torch.from_numpy(np.asarray(observation.landmarks, np.float32))[i]
    vis = torch.from_numpy(np.asarray(observation.visibility, np.float32))[i]
    p3 = torch.cat([torch.nan_to_num(p), torch.zeros(4, 1)], -1)
    left = (p3[0] + p3[2]) - (p3[1] + p3[3])
    up = 0.5 * (p3[0] + p3[1]) - 0.5 * (p3[2] + p3[3])
    if (vis < 0.3).any() or up.norm() < 1e-6:
        up = torch.tensor([0.0, -1.0, 0.0])
    left = torch.tensor([float(left[0]), 0.0, 0.0]) if float(left[0].abs()) > 1e-6 else torch.tensor([1.0, 0.0, 0.0])
    rot = _torso_rotation(left, up)
    return rot if rot is not None else torch.diag(torch.tensor([1.0, -1.0, -1.0]))


def initial_root_rotation(observation: PersonObservation) -> Tensor:
    """World rotation ``[3, 3]`` of the body's root from the shoulders and hips: from the metric
    world landmarks when they are there, else from the image."""
    rot = _world_torso(observation)
    return CAMERA_ROTATION.T @ (rot if rot is not None else _image_torso(observation))


def orientation_candidates(observation: PersonObservation, yaw_deg: float = 50.0) -> list[Tensor]:
    """Root orientations ``[3, 3]`` a cold fit tries: the world landmarks' torso, the image's, and
    the image's turned by +-``yaw_deg`` about the vertical (the world landmarks can be wrong)."""
    image = CAMERA_ROTATION.T @ _image_torso(observation)
    yaw = lambda d: roma.rotvec_to_rotmat(torch.tensor([0.0, math.radians(d), 0.0]))
    out = [image, yaw(yaw_deg) @ image, yaw(-yaw_deg) @ image]
    world = _world_torso(observation)
    if world is not None:
        out.insert(0, CAMERA_ROTATION.T @ world)
    return out


def default_focal(size: tuple[int, int], fovy_deg: float) -> float:
    """Focal length (pixels) of a vertical field of view ``fovy_deg`` on an image ``(W, H)``."""
    return 0.5 * size[1] / math.tan(math.radians(fovy_deg) / 2)
