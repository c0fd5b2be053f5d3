"""Pinhole cameras in gsplat's convention.

World frame: SMPL-X's (+Y up, the body faces +Z, metres). Cameras are OpenCV-style: in camera space
+X points right, +Y down and +Z forward (into the scene). ``viewmats`` map world to camera
coordinates, ``x_cam = R @ x_world + t``; ``Ks`` map camera coordinates to pixels, where pixel
``(j, i)`` has its centre at ``(j + 0.5, i + 0.5)`` (so the image centre is ``(W / 2, H / 2)``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence, Union

import torch
from torch import Tensor

DEFAULT_FOVY = 0.8713  # rad, SIGMAN's render field of view (vertical)
DEFAULT_RADIUS = 1.5  # m, SIGMAN's camera distance to the body
DEFAULT_SIZE = 512  # px, SIGMAN's render resolution (square)

Vec3 = Union[Sequence[float], Tensor]


@dataclass
class Camera:
    """A batch of ``C`` pinhole cameras sharing one image size.

    Attributes:
        viewmats: ``[C, 4, 4]`` world-to-camera transforms (OpenCV axes).
        Ks: ``[C, 3, 3]`` intrinsics in pixels.
        width, height: image size in pixels.
    """

    viewmats: Tensor  # [C, 4, 4]
    Ks: Tensor  # [C, 3, 3]
    width: int
    height: int

    def __post_init__(self) -> None:
        if self.viewmats.dim() == 2:
            self.viewmats = self.viewmats[None]
        if self.Ks.dim() == 2:
            self.Ks = self.Ks[None].expand(self.viewmats.shape[0], 3, 3)
        if self.viewmats.shape[-2:] != (4, 4) or self.viewmats.dim() != 3:
            raise ValueError(f"Camera.viewmats must be [C, 4, 4], got {tuple(self.viewmats.shape)}")
        if self.Ks.shape != (self.viewmats.shape[0], 3, 3):
            raise ValueError(f"Camera.Ks must be [{self.viewmats.shape[0]}, 3, 3], got {tuple(self.Ks.shape)}")
        if int(self.width) <= 0 or int(self.height) <= 0:
            raise ValueError(f"Camera image size must be positive, got {self.width}x{self.height}")
        self.width, self.height = int(self.width), int(self.height)

    def __len__(self) -> int:
        return self.viewmats.shape[0]

    def __getitem__(self, index) -> "Camera":
        """Cameras picked by ``index`` (int, slice, indices or bool mask over C)."""
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        return Camera(self.viewmats[index], self.Ks[index], self.width, self.height)

    @property
    def device(self) -> torch.device:
        return self.viewmats.device

    @property
    def positions(self) -> Tensor:
        """``[C, 3]`` camera centres in world coordinates."""
        rot = self.viewmats[:, :3, :3]
        return -(rot.transpose(-1, -2) @ self.viewmats[:, :3, 3:])[..., 0]

    def to(self, *args, **kwargs) -> "Camera":
        return Camera(self.viewmats.to(*args, **kwargs), self.Ks.to(*args, **kwargs), self.width, self.height)

    def project(self, points: Tensor) -> Tensor:
        """Pinhole projection of world points ``[..., 3]`` into every camera: ``[C, ..., 2]`` pixels."""
        flat = points.reshape(-1, 3).to(self.viewmats)
        cam = torch.einsum("cij,nj->cni", self.viewmats[:, :3, :3], flat) + self.viewmats[:, None, :3, 3]
        pix = torch.einsum("cij,cnj->cni", self.Ks, cam)
        return (pix[..., :2] / pix[..., 2:3]).reshape(len(self), *points.shape[:-1], 2)


def intrinsics_from_fov(fovy_rad: float, width: int, height: int, fovx_rad: float | None = None) -> Tensor:
    """``[3, 3]`` intrinsics with the principal point at the image centre.

    Square pixels (``fx = fy``) unless ``fovx_rad`` is given.
    """
    if not 0.0 < fovy_rad < math.pi:
        raise ValueError(f"fovy must be in (0, pi) radians, got {fovy_rad}")
    fy = 0.5 * height / math.tan(0.5 * fovy_rad)
    fx = fy if fovx_rad is None else 0.5 * width / math.tan(0.5 * fovx_rad)
    return torch.tensor([[fx, 0.0, 0.5 * width], [0.0, fy, 0.5 * height], [0.0, 0.0, 1.0]])


def _as_batch(vec: Vec3, n: int, dtype: torch.dtype, device=None) -> Tensor:
    t = torch.as_tensor(vec, dtype=dtype, device=device)
    return t.expand(n, 3) if t.dim() == 1 else t


def look_at(eye: Tensor, target: Vec3 = (0.0, 0.0, 0.0), up: Vec3 = (0.0, 1.0, 0.0)) -> Tensor:
    """World-to-camera ``[C, 4, 4]`` (OpenCV axes) for cameras at ``eye [C, 3]`` looking at ``target``.

    ``target`` and ``up`` are ``[3]`` or ``[C, 3]``. Image "up" is as close to ``up`` as possible;
    when a camera looks along ``up`` the world +Z (or +X) axis is used instead.
    """
    eye = torch.as_tensor(eye, dtype=torch.get_default_dtype() if not torch.is_tensor(eye) else None)
    if eye.dim() == 1:
        eye = eye[None]
    c = eye.shape[0]
    target = _as_batch(target, c, eye.dtype, eye.device)
    up = _as_batch(up, c, eye.dtype, eye.device)

    forward = target - eye
    dist = forward.norm(dim=-1, keepdim=True)
    if bool((dist < 1e-9).any()):
        raise ValueError("look_at: a camera sits on its target")
    forward = forward / dist
    right = torch.cross(forward, up, dim=-1)
    # Looking straight along `up`: pick another reference axis.
    degenerate = right.norm(dim=-1, keepdim=True) < 1e-6
    if bool(degenerate.any()):
        alt = torch.tensor([0.0, 0.0, 1.0], dtype=eye.dtype, device=eye.device).expand(c, 3)
        alt = torch.where((forward @ alt[0]).abs()[:, None] > 0.99,
                          torch.tensor([1.0, 0.0, 0.0], dtype=eye.dtype, device=eye.device).expand(c, 3), alt)
        right = torch.where(degenerate, torch.cross(forward, alt, dim=-1), right)
    right = right / right.norm(dim=-1, keepdim=True)
    down = torch.cross(forward, right, dim=-1)

    rot = torch.stack([right, down, forward], dim=-2)  # [C, 3, 3] rows = camera axes in world
    viewmats = torch.eye(4, dtype=eye.dtype, device=eye.device).repeat(c, 1, 1)
    viewmats[:, :3, :3] = rot
    viewmats[:, :3, 3] = -(rot @ eye[..., None])[..., 0]
    return viewmats


def orbit_eyes(n_views: int, radius: float, elevation_deg: float = 0.0, target: Vec3 = (0.0, 0.0, 0.0),
               start_azimuth_deg: float = 0.0) -> Tensor:
    """``[n_views, 3]`` camera centres evenly spaced in azimuth around ``target``.

    Azimuth 0 puts the camera on the +Z side (facing the body's front); azimuth 90 on the +X side.
    Positive elevation lifts the camera above the target.
    """
    az = torch.deg2rad(start_azimuth_deg + 360.0 * torch.arange(n_views, dtype=torch.float64) / n_views)
    el = math.radians(elevation_deg)
    offsets = torch.stack([math.cos(el) * torch.sin(az), torch.full_like(az, math.sin(el)),
                           math.cos(el) * torch.cos(az)], dim=-1) * radius
    return (torch.as_tensor(target, dtype=torch.float64).reshape(1, 3).cpu() + offsets).to(torch.get_default_dtype())


def orbit_cameras(n_views: int = 4, radius: float = DEFAULT_RADIUS, elevation_deg: float = 0.0,
                  target: Vec3 = (0.0, 0.0, 0.0), fovy: float = DEFAULT_FOVY, width: int = DEFAULT_SIZE,
                  height: int = DEFAULT_SIZE, start_azimuth_deg: float = 0.0) -> Camera:
    """``n_views`` cameras on a circle around ``target`` (a turntable), all looking at it."""
    if n_views < 1:
        raise ValueError(f"n_views must be >= 1, got {n_views}")
    if radius <= 0:
        raise ValueError(f"radius must be > 0, got {radius}")
    target = torch.as_tensor(target, dtype=torch.float64).reshape(3).cpu()
    eyes = orbit_eyes(n_views, radius, elevation_deg, target, start_azimuth_deg)
    viewmats = look_at(eyes, target.to(eyes.dtype))
    return Camera(viewmats, intrinsics_from_fov(fovy, width, height).expand(n_views, 3, 3).clone(), width, height)


def fit_orbit_to_points(points: Tensor, n_views: int = 4, fovy: float = DEFAULT_FOVY, width: int = DEFAULT_SIZE,
                        height: int = DEFAULT_SIZE, elevation_deg: float = 0.0, fill: float = 0.9,
                        start_azimuth_deg: float = 0.0, target: Vec3 | None = None) -> Camera:
    """Orbit cameras around ``target`` (default: the bounding-box centre of ``points [N, 3]``), at
    the smallest radius where every point projects inside ``fill`` of the half-width/half-height in
    every view.

    The cameras live on the points' device and dtype.
    """
    if points.dim() != 2 or points.shape[-1] != 3 or points.shape[0] == 0:
        raise ValueError(f"points must be [N, 3] with N > 0, got {tuple(points.shape)}")
    if not 0.0 < fill <= 1.0:
        raise ValueError(f"fill must be in (0, 1], got {fill}")
    pts = points.detach().to(torch.float64)
    if target is None:
        target = 0.5 * (pts.min(dim=0).values + pts.max(dim=0).values)
    else:
        target = torch.as_tensor(target, dtype=torch.float64, device=pts.device).reshape(3)
    unit = orbit_cameras(n_views, 1.0, elevation_deg, target.cpu(), fovy, width, height, start_azimuth_deg)
    rot = unit.viewmats[:, :3, :3].to(pts)  # [C, 3, 3]
    rel = torch.einsum("cij,nj->cni", rot, pts - target)  # [C, N, 3] camera axes, origin at target
    k = unit.Ks[0].to(torch.float64)
    tan_x = fill * float(min(k[0, 2], width - k[0, 2]) / k[0, 0])
    tan_y = fill * float(min(k[1, 2], height - k[1, 2]) / k[1, 1])
    # A camera at distance d sees a point at depth d + rel_z: it fits iff |rel_xy| <= tan * (d + rel_z).
    need = torch.maximum(rel[..., 0].abs() / tan_x, rel[..., 1].abs() / tan_y) - rel[..., 2]
    near_enough = (-rel[..., 2]).max() + 0.05  # keep every point in front of the camera
    radius = max(float(need.max()), float(near_enough), 1e-3)
    cams = orbit_cameras(n_views, radius, elevation_deg, target.cpu(), fovy, width, height, start_azimuth_deg)
    return cams.to(device=points.device, dtype=points.dtype)
