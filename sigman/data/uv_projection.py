"""Project calibrated multi-view images onto the body's UV layout (the release's ``core/proj_UV``).

For every covered texel of a :class:`~sigman.uv.UVTemplate`:

1. its posed 3D point and normal: barycentric interpolation on the posed body mesh;
2. for each view, its pixel and depth (pinhole projection);
3. visibility: in front of the camera, inside the image, inside the person's mask (eroded: a bilinear
   mask sample must reach ``mask_threshold``), and not occluded. Occlusion is a depth test against a
   z-buffer of the posed *mesh* rasterised per view (``rasterize_depth``): holes-free, independent of
   the image content, and made conservative by taking the nearest depth within ``occlusion_margin``
   (on screen, in metres at the body's depth), so texels next to an occluding silhouette are dropped
   rather than smeared with the occluder's colour;
4. weight ``cos^p`` where ``cos`` is the cosine between the posed normal and the direction to the
   camera (views with ``cos < cos_threshold`` are ignored; the release keeps views with ``cos > 0.6``
   and prefers the more frontal one);
5. colour: a trilinear (mip-mapped) image sample whose level matches the texel's footprint in the
   image, so a coarse UV map does not alias a fine image;
6. blend: the weighted mean over views; texels no view sees stay uncovered.

Everything is batched tensor code (items x views x texels, chunked over views to bound memory); it
runs on whatever device the inputs are on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from sigman.render.cameras import Camera
from sigman.uv import UVTemplate, vertex_normals


@dataclass(frozen=True)
class ProjectionConfig:
    """How texels are matched to views (defaults suit 256-1024 px renders of a full body)."""

    cos_threshold: float = 0.5  # ignore views seeing the surface more obliquely than this
    cos_power: float = 4.0  # blend weight cos**p: frontal views dominate, others fill in
    depth_tolerance: float = 0.01  # metres of slack in the occlusion test ...
    depth_tolerance_pixels: float = 2.5  # ... plus this many z-buffer pixels' worth of world size
    occlusion_margin: float = 0.02  # metres: texels this close (on screen) to a nearer surface are dropped
    zbuffer_size: int = 256  # z-buffer height in pixels (width follows the image aspect)
    use_masks: bool = True  # only sample inside the person's mask
    mask_threshold: float = 0.99  # bilinear mask value a sample needs (erodes the mask ~1 px)
    max_mip_levels: int = 5  # image pyramid depth for antialiased sampling
    near: float = 0.01  # metres: geometry closer to a camera is ignored
    max_samples: int = 1 << 22  # items x views x texels evaluated at once (bounds memory)


# --- z-buffer ----------------------------------------------------------------------------------

def _world_to_camera(points: Tensor, viewmats: Tensor) -> Tensor:
    """``points [B, P, 3]``, ``viewmats [B, C, 4, 4]`` -> camera coordinates ``[B, C, P, 3]``."""
    return torch.einsum("bcij,bpj->bcpi", viewmats[..., :3, :3], points) + viewmats[:, :, None, :3, 3]


def _to_pixels(cam: Tensor, Ks: Tensor, near: float) -> Tensor:
    """``cam [B, C, P, 3]``, ``Ks [B, C, 3, 3]`` -> pixel coordinates ``[B, C, P, 2]``."""
    z = cam[..., 2:3].clamp_min(near)
    x = cam[..., 0:1] / z
    y = cam[..., 1:2] / z
    k = Ks[:, :, None]
    return torch.cat([k[..., 0, 0:1] * x + k[..., 0, 1:2] * y + k[..., 0, 2:3],
                      k[..., 1, 1:2] * y + k[..., 1, 2:3]], dim=-1)


def rasterize_depth(vertices: Tensor, faces: Tensor, viewmats: Tensor, Ks: Tensor, width: int, height: int,
                    near: float = 0.01, max_candidates: int = 1 << 23) -> Tensor:
    """Z-buffer of triangle meshes: the nearest camera-space depth at every pixel centre.

    Each face enumerates the pixel centres of its screen bounding box, keeps those inside it (edge
    functions), interpolates depth perspective-correctly and scatters the minimum per pixel; faces
    are processed in chunks of at most ``max_candidates`` (face, pixel) pairs.

    Args:
        vertices: ``[B, V, 3]`` world positions; faces: ``[F, 3]``.
        viewmats: ``[B, C, 4, 4]`` (or ``[C, 4, 4]``) world-to-camera, OpenCV axes.
        Ks: ``[B, C, 3, 3]`` (or ``[C, 3, 3]``) intrinsics in pixels of a ``width x height`` image.
    Returns:
        ``[B, C, height, width]`` depths (metres), ``inf`` where no face covers the pixel. Faces
        with a vertex closer than ``near`` are skipped.
    """
    b = vertices.shape[0]
    viewmats = viewmats.expand(b, *viewmats.shape[-3:]) if viewmats.dim() == 3 else viewmats
    Ks = Ks.expand(b, *Ks.shape[-3:]) if Ks.dim() == 3 else Ks
    c = viewmats.shape[1]
    cam = _world_to_camera(vertices, viewmats)  # [B, C, V, 3]
    xy = _to_pixels(cam, Ks, near)
    tri = xy[:, :, faces].reshape(-1, 3, 2)  # [M, 3, 2], M = B * C * F
    tz = cam[..., 2][:, :, faces].reshape(-1, 3)  # [M, 3]
    a, e1, e2 = tri[:, 0], tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    area = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    lo = torch.ceil(tri.min(dim=1).values - 0.5)
    hi = torch.floor(tri.max(dim=1).values - 0.5)
    lo = torch.stack([lo[:, 0].clamp(0, width - 1), lo[:, 1].clamp(0, height - 1)], -1).long()
    hi = torch.stack([hi[:, 0].clamp(-1, width - 1), hi[:, 1].clamp(-1, height - 1)], -1).long()
    extent = (hi - lo + 1).clamp_min(0)  # [M, 2]
    ok = (tz > near).all(dim=-1) & (area.abs() > 1e-12) & torch.isfinite(tri).all(dim=-1).all(dim=-1)
    counts = torch.where(ok, extent[:, 0] * extent[:, 1], torch.zeros_like(extent[:, 0]))
    depth = torch.full((b * c * height * width,), math.inf, device=vertices.device, dtype=vertices.dtype)
    cum = counts.cumsum(0)
    total = int(cum[-1]) if len(cum) else 0
    nfaces = faces.shape[0]
    start, done = 0, 0
    while done < total:
        end = int(torch.searchsorted(cum, torch.tensor(done + max_candidates, device=cum.device), right=True))
        end = max(end, start + 1)
        cnt = counts[start:end]
        n = int(cum[end - 1]) - done
        if n > 0:
            fid = torch.repeat_interleave(torch.arange(start, end, device=cnt.device), cnt)
            first = torch.repeat_interleave(cum[start:end] - cnt - done, cnt)
            offset = torch.arange(n, device=cnt.device) - first
            w = extent[fid, 0]
            px = (lo[fid, 0] + offset % w).to(tri.dtype) + 0.5
            py = (lo[fid, 1] + offset // w).to(tri.dtype) + 0.5
            dx, dy = px - a[fid, 0], py - a[fid, 1]
            l1 = (dx * e2[fid, 1] - dy * e2[fid, 0]) / area[fid]
            l2 = (e1[fid, 0] * dy - e1[fid, 1] * dx) / area[fid]
            l0 = 1.0 - l1 - l2
            inside = (l0 >= -1e-6) & (l1 >= -1e-6) & (l2 >= -1e-6)
            z = tz[fid]
            inv = l0 / z[:, 0] + l1 / z[:, 1] + l2 / z[:, 2]
            zp = 1.0 / inv
            view = fid // nfaces  # flat (item, view) index
            pix = (view * height + (py - 0.5).long()) * width + (px - 0.5).long()
            depth.scatter_reduce_(0, pix[inside], zp[inside], reduce="amin")
        done += n
        start = end
    return depth.view(b, c, height, width)


# --- sampling --------------------------------------------------------------------------------------

def _pyramid(images: Tensor, levels: int) -> list[Tensor]:
    """``images [M, Ch, H, W]`` and up to ``levels - 1`` successive 2x box-filtered halvings."""
    out = [images]
    while len(out) < levels and min(out[-1].shape[-2:]) >= 2:
        out.append(F.avg_pool2d(out[-1], 2, ceil_mode=True))
    return out


def _sample_trilinear(pyramid: list[Tensor], pixels: Tensor, level: Tensor, width: int, height: int) -> Tensor:
    """Sample a pyramid at ``pixels [M, P, 2]`` (level-0 pixel coordinates) and fractional ``level
    [M, P]``: ``[M, Ch, P]``."""
    grid = torch.stack([2 * pixels[..., 0] / width - 1, 2 * pixels[..., 1] / height - 1], dim=-1)[:, None]
    level = level.clamp(0, len(pyramid) - 1)
    out = None
    for k, img in enumerate(pyramid):
        weight = (1.0 - (level - k).abs()).clamp_min(0)  # [M, P]
        if k > 0 and not bool((weight > 0).any()):
            continue
        s = F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=False)[:, :, 0]
        out = s * weight[:, None] if out is None else out + s * weight[:, None]
    return out


def _camera_tensors(cameras: Union[Camera, Sequence[Camera]], b: int, device, dtype) -> tuple[Tensor, Tensor, int, int]:
    """``viewmats [B, C, 4, 4]``, ``Ks [B, C, 3, 3]``, width, height from one shared rig or B rigs."""
    if isinstance(cameras, Camera):
        vm, ks = cameras.viewmats[None].expand(b, -1, -1, -1), cameras.Ks[None].expand(b, -1, -1, -1)
        w, h = cameras.width, cameras.height
    else:
        if len(cameras) != b:
            raise ValueError(f"{len(cameras)} camera rigs for {b} items")
        if len({(cam.width, cam.height, len(cam)) for cam in cameras}) != 1:
            raise ValueError("every item's cameras must share the view count and image size")
        vm = torch.stack([cam.viewmats for cam in cameras])
        ks = torch.stack([cam.Ks for cam in cameras])
        w, h = cameras[0].width, cameras[0].height
    return vm.to(device=device, dtype=dtype), ks.to(device=device, dtype=dtype), w, h


# --- projection ---------------------------------------------------------------------------------

def posed_texels(template: UVTemplate, posed_vertices: Tensor) -> tuple[Tensor, Tensor]:
    """Posed texel points and unit normals ``[B, N, 3]`` on the posed mesh ``posed_vertices [B, V, 3]``."""
    points = template.interpolate(posed_vertices)
    normals = template.interpolate(vertex_normals(posed_vertices, template.faces))
    return points, normals / normals.norm(dim=-1, keepdim=True).clamp_min(1e-12)


@torch.no_grad()
def project_to_uv(template: UVTemplate, posed_vertices: Tensor, images: Tensor,
                  cameras: Union[Camera, Sequence[Camera]], masks: Optional[Tensor] = None,
                  config: ProjectionConfig = ProjectionConfig()) -> tuple[Tensor, Tensor]:
    """Partial UV textures from calibrated views of posed bodies.

    Args:
        template: the body's :class:`~sigman.uv.UVTemplate` (its ``faces`` define the mesh).
        posed_vertices: ``[B, V, 3]`` (or ``[V, 3]``) posed body vertices in the cameras' world frame.
        images: ``[B, C, 3, H, W]`` (or ``[C, 3, H, W]``) views in [0, 1].
        cameras: one :class:`~sigman.render.Camera` rig of ``C`` views shared by all items, or a
            list of ``B`` rigs (same ``C`` and image size).
        masks: ``[B, C, 1, H, W]`` (or ``[C, 1, H, W]``) foreground masks in [0, 1]; ``None``: no mask test.
    Returns:
        ``texture [B, 3, R, R]`` (0 where uncovered) and coverage ``mask [B, 1, R, R]`` in {0, 1}
        (no batch axis when the inputs had none).
    """
    single = posed_vertices.dim() == 2
    if single:
        posed_vertices, images = posed_vertices[None], images[None]
        masks = None if masks is None else masks[None]
    device, dtype = images.device, torch.float32
    b, c, _, h, w = images.shape
    if posed_vertices.shape[0] != b:
        raise ValueError(f"{posed_vertices.shape[0]} bodies for {b} image sets")
    if masks is not None and masks.shape != (b, c, 1, h, w):
        raise ValueError(f"masks must be [{b}, {c}, 1, {h}, {w}], got {tuple(masks.shape)}")
    viewmats, Ks, cam_w, cam_h = _camera_tensors(cameras, b, device, dtype)
    if viewmats.shape[1] != c or (cam_w, cam_h) != (w, h):
        raise ValueError(f"cameras describe {viewmats.shape[1]} views of {cam_w}x{cam_h}, images are {c} of {w}x{h}")
    template = template.to(device)
    verts = posed_vertices.to(device=device, dtype=dtype)
    points, normals = posed_texels(template, verts)  # [B, N, 3]
    n = points.shape[1]
    footprints = template.footprints.to(dtype)  # [N]
    use_masks = masks is not None and config.use_masks
    stack = images.to(dtype) if not use_masks else torch.cat([images.to(dtype), masks.to(dtype)], dim=2)
    zh = int(config.zbuffer_size)
    zw = max(1, int(round(zh * w / h)))
    zscale = torch.tensor([zw / w, zh / h, 1.0], device=device, dtype=dtype)

    num = torch.zeros(b, 3, n, device=device, dtype=dtype)
    den = torch.zeros(b, n, device=device, dtype=dtype)
    chunk = max(1, config.max_samples // max(1, b * n))
    for c0 in range(0, c, chunk):
        vm, ks = viewmats[:, c0:c0 + chunk], Ks[:, c0:c0 + chunk]
        cc = vm.shape[1]
        zbuf = rasterize_depth(verts, template.faces, vm, zscale[:, None] * ks, zw, zh, config.near)
        cam = _world_to_camera(points, vm)  # [B, cc, N, 3]
        z = cam[..., 2]
        fz = (ks[..., 1, 1] * (zh / h))[..., None]  # z-buffer focal length, [B, cc, 1]
        # nearest depth within occlusion_margin (metres at the body's nearest depth) of each pixel
        reach = config.occlusion_margin * fz / z.clamp_min(config.near).amin(dim=-1, keepdim=True)
        r = max(1, int(math.ceil(float(reach.max()))))
        zmin = -F.max_pool2d(-zbuf.view(b * cc, 1, zh, zw), 2 * r + 1, stride=1, padding=r).view(b, cc, zh, zw)

        pix = _to_pixels(cam, ks, config.near)  # [B, cc, N, 2]
        centres = -(vm[..., :3, :3].transpose(-1, -2) @ vm[..., :3, 3:])[..., 0]  # [B, cc, 3]
        to_cam = centres[:, :, None] - points[:, None]  # [B, cc, N, 3]
        cos = (to_cam * normals[:, None]).sum(-1) / to_cam.norm(dim=-1).clamp_min(1e-12)

        inside = (z > config.near) & (pix[..., 0] >= 0) & (pix[..., 0] < w) & (pix[..., 1] >= 0) & (pix[..., 1] < h)
        zx = (pix[..., 0] * (zw / w)).long().clamp(0, zw - 1)
        zy = (pix[..., 1] * (zh / h)).long().clamp(0, zh - 1)
        surface = zmin.flatten(2).gather(2, zy * zw + zx)  # [B, cc, N]
        tolerance = config.depth_tolerance + config.depth_tolerance_pixels * z / fz
        visible = inside & (cos >= config.cos_threshold) & (z <= surface + tolerance)

        fy = ks[..., 1, 1][..., None]
        level = torch.log2((footprints * fy / z.clamp_min(config.near)).clamp_min(1.0))  # [B, cc, N]
        pyramid = _pyramid(stack[:, c0:c0 + cc].reshape(b * cc, *stack.shape[2:]), config.max_mip_levels)
        samples = _sample_trilinear(pyramid, pix.reshape(b * cc, n, 2), level.reshape(b * cc, n), w, h)
        samples = samples.view(b, cc, -1, n)
        if use_masks:
            visible = visible & (samples[:, :, 3] >= config.mask_threshold)
        weight = torch.where(visible, cos.clamp_min(0) ** config.cos_power, torch.zeros_like(cos))
        num += (weight[:, :, None] * samples[:, :, :3]).sum(1)
        den += weight.sum(1)

    covered = den > 0
    colors = torch.where(covered[:, None], num / den.clamp_min(1e-12)[:, None], torch.zeros_like(num))
    texture = template.to_map(colors.transpose(1, 2).clamp(0, 1))
    mask = template.to_map(covered[..., None].to(dtype))
    return (texture[0], mask[0]) if single else (texture, mask)
