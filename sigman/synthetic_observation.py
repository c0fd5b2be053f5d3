"""Synthetic :class:`~sigman.observation.PersonObservation` of a posed body seen by a known camera:
what a perfect person detector would report, plus optional noise. Used to test and evaluate the
body fit without MediaPipe.

The image landmarks are the body's BlazePose markers (:mod:`sigman.body.markers`) projected by the
camera; the world landmarks are the same markers in camera axes, hip-centred (MediaPipe's
convention: +x right, +y down, +z away from the camera); the mask is the body's mesh rasterised
(filled projected triangles).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

from sigman.body.base import BodyModel
from sigman.body.markers import body_markers
from sigman.lbs import lbs_points
from sigman.observation import BLAZEPOSE_LANDMARKS, PersonObservation
from sigman.pose import SMPLXPose
from sigman.render.cameras import Camera


def mesh_mask(pixels: np.ndarray, depth: np.ndarray, faces: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``[H, W]`` float32 mask of the projected mesh: ``pixels [V, 2]``, ``depth [V]``, ``faces [F, 3]``."""
    w, h = size
    img = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(img)
    front = (depth[faces] > 1e-3).all(axis=1)
    for tri in pixels[faces[front]]:
        draw.polygon([tuple(p) for p in tri], fill=255)
    return np.asarray(img, np.float32) / 255.0


@torch.no_grad()
def synthetic_observation(body: BodyModel, pose: SMPLXPose, camera: Camera, shape: Optional[Tensor] = None,
                          rest: Optional[tuple[Tensor, Tensor]] = None, noise_px: float = 0.0,
                          world_noise_m: float = 0.0, hidden: Sequence[str] = (), seed: int = 0) -> PersonObservation:
    """Observation of ``body`` in the first frame of ``pose`` (with ``shape``, or canonical
    ``rest = (vertices [1, V, 3], joints [1, J, 3])``) from the first camera of ``camera``.

    ``noise_px`` / ``world_noise_m``: standard deviation of Gaussian noise on the image / world
    landmarks; ``hidden``: landmark names reported with visibility 0 (landmarks outside the image
    are too).
    """
    g = torch.Generator().manual_seed(seed)
    pose = pose.frame(0).to(body.rest_vertices.device)
    rest_v, rest_j = body.rest(shape) if rest is None else rest
    transforms, _ = body.pose_transforms(pose, rest_j)
    vertices = lbs_points(rest_v, body.skin_weights, transforms)[0]
    markers = body_markers(body)
    marks = markers.posed(markers.canonical(rest_v, rest_j), transforms)[0]
    cam = camera[0].to(vertices.device)
    view = cam.viewmats[0]
    to_cam = lambda p: p @ view[:3, :3].T + view[:3, 3]
    pix = cam.project(marks)[0].cpu()
    mcam = to_cam(marks).cpu()
    left, right = BLAZEPOSE_LANDMARKS.index("left_hip"), BLAZEPOSE_LANDMARKS.index("right_hip")
    world = mcam - 0.5 * (mcam[left] + mcam[right])
    pix = pix + noise_px * torch.randn(pix.shape, generator=g)
    world = world + world_noise_m * torch.randn(world.shape, generator=g)
    w, h = cam.width, cam.height
    vis = ((pix[:, 0] >= 0) & (pix[:, 0] < w) & (pix[:, 1] >= 0) & (pix[:, 1] < h) & (mcam[:, 2] > 0)).float()
    for name in hidden:
        vis[BLAZEPOSE_LANDMARKS.index(name)] = 0.0
    vpix = cam.project(vertices)[0].cpu().numpy()
    mask = mesh_mask(vpix, to_cam(vertices)[:, 2].cpu().numpy(), body.faces.cpu().numpy(), (w, h))
    ys, xs = np.nonzero(mask > 0.5)
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1) if len(xs) else (0, 0, w, h)
    return PersonObservation(image_size=(w, h), mask=mask, landmarks=pix.numpy().astype(np.float32),
                             visibility=vis.numpy().astype(np.float32),
                             world_landmarks=world.numpy().astype(np.float32), person_box=box)


def front_camera(distance: float = 3.0, size: tuple[int, int] = (512, 512), fovy_deg: float = 55.0,
                 height: float = 0.0, azimuth_deg: float = 0.0, target=(0.0, -0.2, 0.0)) -> Camera:
    """A camera ``distance`` metres from ``target`` at ``azimuth_deg`` (0: on +Z, facing the
    body's front; 90: on +X, the body's left side), lifted by ``height`` metres."""
    import math

    from sigman.render.cameras import intrinsics_from_fov, look_at

    az = math.radians(azimuth_deg)
    tx, ty, tz = target
    eye = torch.tensor([[tx + distance * math.sin(az), ty + height, tz + distance * math.cos(az)]])
    k = intrinsics_from_fov(math.radians(fovy_deg), size[0], size[1]) if size[0] == size[1] else None
    if k is None:
        f = 0.5 * size[1] / math.tan(math.radians(fovy_deg) / 2)
        k = torch.tensor([[f, 0.0, size[0] / 2], [0.0, f, size[1] / 2], [0.0, 0.0, 1.0]])
    return Camera(look_at(eye, torch.tensor(target)), k[None], size[0], size[1])
