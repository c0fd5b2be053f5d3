"""Rendering Gaussians: cameras, a PyTorch reference rasterizer (CPU), gsplat (CUDA), images and videos.

    cams = fit_orbit_to_points(gaussians.means, n_views=4)
    out = render(gaussians, cams)                 # out.rgb [C, H, W, 3], out.alpha, out.depth
    write_video("turntable.mp4", render_turntable(gaussians, n_frames=60))
"""

from sigman.render.cameras import (
    DEFAULT_FOVY,
    DEFAULT_RADIUS,
    DEFAULT_SIZE,
    Camera,
    fit_orbit_to_points,
    intrinsics_from_fov,
    look_at,
    orbit_cameras,
    orbit_eyes,
)
from sigman.render.rasterize_gsplat import gsplat_available, rasterize_gsplat
from sigman.render.rasterize_torch import RasterSettings, project_gaussians, quat_scale_to_covar, rasterize_torch
from sigman.render.renderer import RenderOutput, image_grid, render, render_turntable, resolve_backend
from sigman.render.video import to_uint8, write_image, write_video

__all__ = [
    "DEFAULT_FOVY", "DEFAULT_RADIUS", "DEFAULT_SIZE", "Camera", "fit_orbit_to_points", "intrinsics_from_fov",
    "look_at", "orbit_cameras", "orbit_eyes", "gsplat_available", "rasterize_gsplat", "RasterSettings",
    "project_gaussians", "quat_scale_to_covar", "rasterize_torch", "RenderOutput", "image_grid", "render",
    "render_turntable", "resolve_backend", "to_uint8", "write_image", "write_video",
]
