"""Photo-faithful avatars: after the VAE decode, make the seen side the photo itself.

    result = refine_avatar(canonical, body, template, rest_joints, shape, pose, camera, photo, mask)
    result.canonical            # refined canonical Gaussians (pose / export these)
    render_input_view(result.canonical, body, rest_joints, result.pose, result.camera, result.background)

Two steps (:class:`RefineConfig` sets both):

1. *Projection* (:mod:`sigman.photo_projection`): every Gaussian the photo sees (depth test against
   the fitted body's z-buffer, normal · view ramp, eroded person mask) takes the photo's colour;
   the unseen side keeps the model's colours, shifted towards the photo's near the seen side; the unseen
   back and top of the head take the photo's hair colour, found around the face (:func:`hair_colors`).
2. *Refinement*: the avatar is rendered in the photo's pose from the photo's camera and a bounded
   number of Adam steps fit, to the photo inside the mask (L1 + D-SSIM, alpha against the mask):
   the Gaussians' colours, opacities, small offsets and scales, a thickness change per joint applied
   to every Gaussian (:mod:`sigman.girth`: the unseen side takes the build the seen outline shows), the
   pose (root + 21 body joints, translation) and the camera (small rotation, translation, focal length). Regularisers keep what
   the photo does not see at the model's prediction (each Gaussian's colour change is penalised by
   ``1 - photo weight``), keep colour changes smooth across UV neighbours (seams), and keep the
   geometry, pose and camera changes small. Only the Gaussians facing the camera are rendered.

gsplat renders on CUDA, the PyTorch rasterizer (:mod:`sigman.render.rasterize_torch`, differentiable
through autograd) on the CPU, where the photo is rendered at a reduced size (``render_size``).
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Union

import numpy as np
import roma
import torch
import torch.nn.functional as F
from torch import Tensor

from sigman.adam import Adam
from sigman.body.base import BodyModel
from sigman.body.parts import point_parts
from sigman.gaussians import Gaussians, repose
from sigman.girth import radial_field
from sigman.mirror_colors import mirror_seen_colors
from sigman.photo_projection import (
    AvatarSurface,
    PhotoProjection,
    PhotoProjectionConfig,
    apply_hair_color,
    background_color,
    estimate_hair_color,
    head_hair_region,
    head_temple_region,
    HairEstimate,
    implausible_head_colors,
    match_implausible_neck,
    cap_unseen_chroma,
    match_unseen_colors,
    as_surface,
    project_photo,
)
from sigman.pose import SMPLXPose
from sigman.render import Camera, render
from sigman.uv import UVTemplate

ProgressFn = Callable[[float, str], None]
# poser(canonical [M, ...], one-frame pose, index [M] of these Gaussians among all N, or None: all) -> posed [M, ...]
Poser = Callable[[Gaussians, SMPLXPose, Optional[Tensor]], Gaussians]
NUM_POSE_JOINTS = 22  # root + the 21 SMPL-X body joints are refined; hands, jaw and eyes are kept


@dataclass
class RefineConfig:
    """Settings of :func:`refine_avatar`. ``None`` fields take device-dependent defaults
    (:meth:`resolved`): on CUDA the photo's own resolution and a step count that fits its 3 s; on CPU a
    smaller render, more steps and a time limit (``max_seconds``)."""

    steps: Optional[int] = None  # Adam steps (CUDA 80, CPU 140 within max_seconds); 0: projection only
    align_steps: Optional[int] = None  # silhouette-only pose + camera steps before the projection (CUDA 40, CPU 60)
    align_size: Optional[int] = None  # long side of the coarse alignment render (CUDA 256, CPU 128)
    align_fine_fraction: float = 0.4  # the last steps of the alignment at render_size (coarse to fine)
    align_subsample: Optional[int] = None  # align with every k-th Gaussian (random, scales x sqrt k; CUDA 1, CPU 4)
    lr_align_pose: float = 1e-2  # radians per step while aligning
    lr_align_camera: float = 3e-3  # radians / metres per step while aligning
    w_align_pose: float = 0.1  # squared pose change while aligning (weak: the fit is what is being corrected;
    # 0.01 lets one held-out subject's limbs slide into a wrong silhouette match, 1.0 holds the fit's error)
    w_align_camera: float = 0.1  # squared camera change while aligning
    render_size: Optional[int] = None  # long side of the fitted render, px (CUDA: photo size up to 1024; CPU 256)
    max_seconds: Optional[float] = None  # refinement steps stop once the stage has run this long (CPU 55: a
    # close-up photo covers more pixels and costs more per step; CUDA: no limit). float("inf"): never stop early
    backend: str = "auto"  # render backend: gsplat on CUDA, torch on CPU
    # learning rates (Adam), per group
    lr_color: float = 0.02
    lr_opacity: float = 0.05  # on the logit
    lr_offset: float = 1e-3  # metres; lets the seen side's Gaussians follow the photo's outline where the fit
    # is off (held-out, sigman's own fit, CPU 80 steps: 3e-4 -> 1e-3 took the input view 24.98 -> 26.57 dB)
    lr_scale: float = 0.01  # on the log
    lr_pose: float = 3e-3  # radians (axis-angle deltas)
    lr_translation: float = 1e-3  # metres (root translation)
    lr_camera_rotation: float = 1e-3  # radians
    lr_camera_translation: float = 1e-3  # metres
    lr_focal: float = 2e-3  # on log focal
    # loss weights
    w_l1: float = 0.8
    w_dssim: float = 0.2
    w_alpha: float = 0.3
    w_keep_unseen: float = 1.0  # colour change times (1 - photo weight), squared
    w_smooth: float = 2.0  # squared difference of colour changes between UV neighbours
    w_offset: float = 1.0  # squared offset change in units of the Gaussian's footprint
    w_scale: float = 0.1  # squared log-scale change
    w_pose: float = 1.0  # squared pose change (radians)
    w_camera: float = 1.0  # squared camera change (radians, metres, log focal)
    optimize_geometry: bool = True  # offsets, scales, opacities
    optimize_girth: bool = True  # a thickness change per joint (sigman.girth), applied to every Gaussian, the back too
    lr_girth: float = 0.03  # relative thickness per step
    w_girth: float = 1e-4  # squared relative thickness change, summed over the joints (the image terms per joint are small)
    w_girth_smooth: float = 0.05  # squared difference of a joint's thickness change from its parent's
    optimize_pose: bool = True
    optimize_camera: bool = True
    cull_cos: float = -0.2  # render (and refine) only Gaussians with normal . view above this
    ssim_window: int = 11
    projection: PhotoProjectionConfig = field(default_factory=PhotoProjectionConfig)

    def resolved(self, device: Union[str, torch.device], photo_size: tuple[int, int]) -> "RefineConfig":
        """A copy with the ``None`` fields set for ``device`` and a photo of ``(width, height)``."""
        cuda = torch.device(device).type == "cuda"
        pick = lambda value, on_cuda, on_cpu: int(value if value is not None else (on_cuda if cuda else on_cpu))
        long_side = max(photo_size)
        return dataclasses.replace(
            # CPU 60 + 140 (held-out, sigman's own fit, 256 px: 25.85 dB at 40 + 80 -> 26.34, 44-52 s a subject;
            # a close-up photo reaches max_seconds first). CUDA 40 + 80: within its 3 s.
            self, steps=pick(self.steps, 80, 140), align_steps=pick(self.align_steps, 40, 60),
            render_size=pick(self.render_size, min(long_side, 1024), min(long_side, 256)),
            align_size=pick(self.align_size, min(long_side, 256), min(long_side, 128)),
            align_subsample=max(1, pick(self.align_subsample, 1, 4)),
            max_seconds=float(self.max_seconds if self.max_seconds is not None else (math.inf if cuda else 55.0)))


def refine_config_overrides(pairs: list[str]) -> dict:
    """``["align_steps=120", "lr_offset=1e-3"]`` -> :class:`RefineConfig` keyword arguments (the values
    read as Python literals). Raises ``ValueError`` naming the bad pair."""
    import ast

    names = {f.name for f in dataclasses.fields(RefineConfig)}
    projection_names = {f.name for f in dataclasses.fields(PhotoProjectionConfig)}
    out, projection = {}, {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        field = name.removeprefix("projection.")
        known = field in projection_names if name.startswith("projection.") else name in names
        if not known or not value:
            raise ValueError(f"{pair!r}: expected NAME=VALUE with NAME one of RefineConfig's fields "
                             "(or projection.NAME, one of PhotoProjectionConfig's)")
        try:
            parsed = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            raise ValueError(f"{pair!r}: {value!r} is not a number, string or tuple literal") from None
        (projection if name.startswith("projection.") else out)[field] = parsed
    if projection:
        out["projection"] = dataclasses.replace(out.get("projection", PhotoProjectionConfig()), **projection)
    return out


@dataclass
class RefineResult:
    """What :func:`refine_avatar` returns.

    Attributes:
        canonical: refined canonical Gaussians ``[N, ...]`` (with the skin weights).
        projected: canonical Gaussians after the projection only (before the Adam steps).
        pose: the refined pose (one frame); camera: the refined camera at the photo's size.
        projection: the per-Gaussian photo weights and colours.
        background: ``[3]`` the photo's background colour.
        losses: per step ``{"total", "l1", "dssim", "alpha"}``.
        timings: seconds per stage (``align``, ``project``, ``refine``, ``total``) and ``refine_steps_run`` (fewer
            than ``config.steps`` when ``max_seconds`` stopped the refinement).
        poser: the :data:`Poser` given to :func:`refine_avatar` (for :func:`render_input_view`).
        girth: ``[J]`` the relative thickness change per joint (:mod:`sigman.girth`), or ``None``.
        hair: the photo's hair colour estimate (:func:`hair_colors`), or ``None``.
    """

    canonical: Gaussians
    projected: Gaussians
    pose: SMPLXPose
    camera: Camera
    projection: PhotoProjection
    background: Tensor
    losses: list[dict[str, float]]
    timings: dict[str, float]
    config: RefineConfig
    poser: Optional[Poser] = None  # how the avatar was posed (None: sigman's skinning, posed_frame)
    girth: Optional[Tensor] = None  # [J] the refined relative thickness change per joint (None: not refined)
    hair: Optional[HairEstimate] = None  # the photo's hair colour estimate (None: none made; see hair_colors)


# --- image terms ----------------------------------------------------------------------------------

def _gaussian_window(size: int, sigma: float, channels: int, device, dtype) -> Tensor:
    x = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


def ssim_map(x: Tensor, y: Tensor, window: int = 11, sigma: float = 1.5) -> Tensor:
    """SSIM map (Wang et al. 2004, K1 = 0.01, K2 = 0.03, data range 1) of ``[B, C, H, W]`` images, with
    zero padding so it has the input's size: ``[B, 1, H, W]``."""
    c = x.shape[1]
    win = _gaussian_window(window, sigma, c, x.device, x.dtype)
    conv = lambda t: F.conv2d(t, win, padding=window // 2, groups=c)
    mu_x, mu_y = conv(x), conv(y)
    sxx, syy, sxy = conv(x * x) - mu_x ** 2, conv(y * y) - mu_y ** 2, conv(x * y) - mu_x * mu_y
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (sxx + syy + c2))
    return s.mean(dim=1, keepdim=True)


# --- inputs -----------------------------------------------------------------------------------------

def as_image_tensor(image, name: str) -> Tensor:
    """``[H, W, 3]`` (or ``[H, W]`` for a mask) float32 in [0, 1] from uint8 / float numpy or torch."""
    t = torch.as_tensor(np.asarray(image) if not torch.is_tensor(image) else image)
    if t.dtype == torch.uint8:
        t = t.float() / 255.0
    t = t.float()
    if name == "mask":
        if t.dim() == 3 and t.shape[-1] == 1:
            t = t[..., 0]
        if t.dim() != 2:
            raise ValueError(f"mask must be [H, W], got {tuple(t.shape)}")
    elif t.dim() != 3 or t.shape[-1] not in (3, 4):
        raise ValueError(f"photo must be [H, W, 3] RGB, got {tuple(t.shape)}")
    return t[..., :3] if name != "mask" else t


def scaled_camera(camera: Camera, width: int, height: int) -> Camera:
    """The same camera for an image of ``width x height`` covering the same field of view."""
    sx, sy = width / camera.width, height / camera.height
    scale = torch.tensor([[sx], [sy], [1.0]], dtype=camera.Ks.dtype, device=camera.Ks.device)
    return Camera(camera.viewmats, camera.Ks * scale, width, height)


def _resize(image: Tensor, width: int, height: int) -> Tensor:
    """``[C, H, W]`` -> ``[C, height, width]`` (antialiased bilinear)."""
    if image.shape[-2:] == (height, width):
        return image
    return F.interpolate(image[None], size=(height, width), mode="bilinear", antialias=True, align_corners=False)[0]


def posed_frame(canonical: Gaussians, body: BodyModel, rest_joints: Tensor, pose: SMPLXPose) -> Gaussians:
    """Canonical Gaussians posed by frame 0 of ``pose``: ``[N, ...]``."""
    transforms, _ = body.pose_transforms(pose.frame(0), rest_joints)
    g = repose(canonical, transforms)
    return g.with_(means=g.means[0], quats=g.quats[0], scales=g.scales[0], opacities=g.opacities[0], colors=g.colors[0])


# --- pose and camera deltas -------------------------------------------------------------------------

def _pose_with(pose: SMPLXPose, joints: Tensor, transl: Tensor) -> SMPLXPose:
    """``pose`` (one frame) with its root + body axis-angles replaced by ``joints [22, 3]``."""
    return dataclasses.replace(pose, global_orient=joints[None, 0], body_pose=joints[None, 1:], transl=transl[None])


def _camera_with(camera: Camera, rotation: Tensor, translation: Tensor, log_focal: Tensor) -> Camera:
    """``camera`` moved by a small rotation / translation in its own frame, focal scaled by ``exp``."""
    delta = torch.eye(4, dtype=camera.viewmats.dtype, device=camera.viewmats.device)
    delta = torch.cat([torch.cat([roma.rotvec_to_rotmat(rotation), translation[:, None]], dim=1), delta[3:]], dim=0)
    scale = torch.cat([log_focal.exp().expand(2), log_focal.new_ones(1)])[:, None]
    return Camera(delta @ camera.viewmats, camera.Ks * scale, camera.width, camera.height)


def _render_size(width: int, height: int, long_side: int) -> tuple[int, int]:
    scale = long_side / max(width, height)
    return max(8, round(width * scale)), max(8, round(height * scale))


def silhouette_subset(canonical: Gaussians, every: int, seed: int = 0) -> tuple[Gaussians, Optional[Tensor]]:
    """A random ``1 / every`` of the Gaussians with their scales times ``sqrt(every)`` and their indices
    (``None``: all): about the same silhouette (alpha) for ``every`` times less rasterisation."""
    if every <= 1:
        return canonical, None
    g = torch.Generator(device="cpu").manual_seed(seed)
    keep = torch.randperm(canonical.num_gaussians, generator=g)[:max(1, canonical.num_gaussians // every)]
    keep = keep.sort().values.to(canonical.means.device)
    sub = canonical.select(keep)
    return sub.with_(scales=sub.scales * every ** 0.5), keep


def default_poser(body: BodyModel, rest_joints: Tensor) -> Poser:
    """sigman's skinning (:func:`posed_frame`) as a :data:`Poser`."""
    return lambda g, pose, index=None: posed_frame(g, body, rest_joints, pose)


def align_to_silhouette(canonical: Gaussians, body: BodyModel, rest_joints: Tensor, pose: SMPLXPose, camera: Camera,
                        mask: Tensor, config: RefineConfig, progress: Optional[Callable[[int], None]] = None,
                        poser: Optional[Poser] = None) -> tuple[SMPLXPose, Camera]:
    """Correct the fit's pose (root + body joints, translation) and camera (rotation, translation, focal) so
    the avatar's alpha matches the person ``mask [H, W]``: ``config.align_steps`` Adam steps on
    ``|alpha - mask|`` plus weak pose / camera priors, coarse to fine (``align_size``, then the last
    ``align_fine_fraction`` of the steps at ``render_size``), on a random subset of the Gaussians
    (``align_subsample``). The photo's colours are not used (the model's may be wrong), so this is safe
    before the projection. ``poser``: as :func:`refine_avatar`'s."""
    pose_fn = poser or default_poser(body, rest_joints)
    w, h = camera.width, camera.height
    fine_steps = int(round(config.align_steps * config.align_fine_fraction))
    sizes = [config.align_size] * (config.align_steps - fine_steps) + [config.render_size or config.align_size] * fine_steps
    targets, cameras = {}, {}
    for size in set(sizes):
        rw, rh = _render_size(w, h, size)
        targets[size] = _resize(mask[None], rw, rh)[0]
        cameras[size] = scaled_camera(camera, rw, rh)
    joints0 = torch.cat([pose.global_orient, pose.body_pose[0]], dim=0).float()
    transl0 = pose.transl[0].float()
    d_joints = torch.zeros_like(joints0, requires_grad=True)
    d_transl = torch.zeros_like(transl0, requires_grad=True)
    d_rot = torch.zeros(3, device=mask.device, requires_grad=True)
    d_trans = torch.zeros(3, device=mask.device, requires_grad=True)
    d_focal = torch.zeros(1, device=mask.device, requires_grad=True)
    groups = []
    if config.optimize_pose:
        groups += [{"params": [d_joints], "lr": config.lr_align_pose}, {"params": [d_transl], "lr": config.lr_align_camera}]
    if config.optimize_camera:
        groups += [{"params": [d_rot, d_trans], "lr": config.lr_align_camera},
                   {"params": [d_focal], "lr": config.lr_align_camera}]
    if not groups or config.align_steps <= 0:
        return pose, camera
    optimizer = Adam(groups, betas=(0.9, 0.99))
    solid, keep = silhouette_subset(canonical, config.align_subsample or 1)
    solid = solid.with_(colors=torch.zeros_like(solid.colors))
    for step, size in enumerate(sizes):
        p = _pose_with(pose, joints0 + d_joints, transl0 + d_transl)
        out = render(pose_fn(solid, p, keep), _camera_with(cameras[size], d_rot, d_trans, d_focal),
                     background=None, backend=config.backend)
        loss = (out.alpha[0, ..., 0] - targets[size]).abs().mean()
        loss = loss + config.w_align_pose * (d_joints.square().sum() + d_transl.square().sum())
        loss = loss + config.w_align_camera * (d_rot.square().sum() + d_trans.square().sum() + d_focal.square().sum())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if progress is not None:
            progress(step + 1)
    with torch.no_grad():
        p = _pose_with(pose, (joints0 + d_joints).detach(), (transl0 + d_transl).detach())
        cam = _camera_with(camera, d_rot.detach(), d_trans.detach(), d_focal.detach())
    return p, cam


def gaussian_parts(canonical: Gaussians, body: BodyModel) -> Optional[Tensor]:
    """``[N]`` body part of each Gaussian (:func:`sigman.body.parts.point_parts`), or ``None`` when the
    Gaussians' skin weights are not over ``body``'s joints."""
    parents, names = getattr(body, "parents", None), getattr(body, "joint_names", None)
    weights = canonical.skin_weights
    if parents is None or names is None or weights is None or weights.shape[-1] != parents.numel():
        return None
    return point_parts(weights, parents, names)


# --- hair -----------------------------------------------------------------------------------------------

def _body_markers(body: BodyModel):
    """:func:`sigman.body.markers.body_markers` of ``body`` (a few ms), or ``None`` when the body has none."""
    from sigman.body.markers import body_markers

    try:
        return body_markers(body)
    except (ValueError, KeyError, AttributeError, IndexError, RuntimeError):  # a body without a usable head / feet
        return None


@torch.no_grad()
def hair_colors(colors: Tensor, canonical: Gaussians, weight: Tensor, body: BodyModel, rest_joints: Tensor,
                shape: Optional[Tensor], pose: SMPLXPose, camera: Camera, photo: Tensor, mask: Tensor,
                config: PhotoProjectionConfig, landmarks: Optional[Tensor] = None,
                visibility: Optional[Tensor] = None) -> tuple[Tensor, Optional["HairEstimate"]]:
    """``colors [N, 3]`` with the unseen back / top of the head blended towards the photo's hair colour
    (:func:`sigman.photo_projection.estimate_hair_color`, :func:`~sigman.photo_projection.head_hair_region`,
    :func:`~sigman.photo_projection.apply_hair_color`), and the estimate (``None``: none was made).

    ``landmarks [33, 2]`` / ``visibility [33]``: the photo's BlazePose landmarks (pixels); ``None``: the
    fitted body's markers (:mod:`sigman.body.markers`) projected by ``camera`` at ``pose``, the face
    landmarks visible when the face turns towards the camera. The head is the Gaussians' skin weight on
    the body's head joints (:data:`sigman.body.markers.HEAD_PATTERN`). Nothing changes when the body
    has no markers or the skin weights are not the body's."""
    from sigman.body.markers import HEAD_PATTERN, NECK_PATTERN
    from sigman.photo_projection import LEFT_EAR, MOUTH_LEFT, MOUTH_RIGHT, NOSE, RIGHT_EAR

    skin = canonical.skin_weights
    names = list(getattr(body, "joint_names", []))
    markers = _body_markers(body)
    if not config.hair or markers is None or skin is None or skin.shape[-1] != len(names):
        return colors, None
    head = [i for i, n in enumerate(names) if re.search(HEAD_PATTERN, n)]
    if not head:
        return colors, None
    device = colors.device
    markers = markers.to(device)
    rest_v, _ = body.rest(None if shape is None else shape.to(device))
    canon_marks = markers.canonical(rest_v[:1].float(), rest_joints.to(device).float()[None])  # [1, 33, 3]
    if landmarks is None:
        transforms, _ = body.pose_transforms(pose, rest_joints.to(device))
        posed = markers.posed(canon_marks, transforms.float())[0]  # [33, 3]
        landmarks = camera.project(posed)[0]
        ears = posed[[LEFT_EAR, RIGHT_EAR]].mean(0)
        to_cam = camera.positions[0].to(posed) - posed[NOSE]
        forward = posed[NOSE] - ears
        facing = float((forward @ to_cam) / (forward.norm() * to_cam.norm()).clamp_min(1e-9))
        visibility = torch.full((landmarks.shape[0],), 1.0 if facing > 0.2 else 0.0, device=device)
    estimate = estimate_hair_color(photo, mask, landmarks.to(device), None if visibility is None else visibility.to(device),
                                   config)
    if estimate is None or float(estimate.confidence) <= 0:
        return colors, estimate
    marks = canon_marks[0]
    head_weight = skin[:, head].float().sum(-1)
    region = head_hair_region(canonical.means, head_weight, marks[[LEFT_EAR, RIGHT_EAR]], marks[NOSE],
                              marks[[MOUTH_LEFT, MOUTH_RIGHT]].mean(0), config)
    temples = head_temple_region(canonical.means, head_weight, marks[[LEFT_EAR, RIGHT_EAR]], marks[NOSE], config)
    region = torch.maximum(region, temples * implausible_head_colors(canonical.colors, estimate, config))
    colors = apply_hair_color(colors, canonical.colors, weight, region, estimate, config)
    neck = [i for i, n in enumerate(names) if re.search(NECK_PATTERN, n)]
    if config.neck and neck:
        colors = match_implausible_neck(colors, canonical.colors, weight, skin[:, neck].float().sum(-1),
                                        estimate.skin, config)
    return colors, estimate


# --- the stage ----------------------------------------------------------------------------------------

def refine_avatar(canonical: Gaussians, body: BodyModel, template: Union[UVTemplate, AvatarSurface], rest_joints: Tensor,
                  shape: Optional[Tensor], pose: SMPLXPose, camera: Camera, photo, mask,
                  config: RefineConfig = RefineConfig(), progress: Optional[ProgressFn] = None,
                  poser: Optional[Poser] = None, landmarks=None, landmark_visibility=None) -> RefineResult:
    """Make the photo's seen side the avatar's.

    Args:
        canonical: the VAE's canonical Gaussians ``[N, ...]`` (one per texel of ``template``, with skin weights).
        body: the body model; template: the UV template the Gaussians live on, or an :class:`AvatarSurface`
            (e.g. the release's, :func:`sigman.official.surface.release_surface`).
        rest_joints: ``[J, 3]`` the subject's canonical joints (from the decode at ``shape``).
        shape: ``[1, S]`` the fitted body shape (``None``: the default shape), the one the Gaussians were decoded on.
        pose: the fitted pose (frame 0 is used); camera: the fitted camera (one view) at the photo's size.
        photo: ``[H, W, 3]`` RGB (uint8, or float in [0, 1]); mask: ``[H, W]`` person mask in [0, 1].
        config: :class:`RefineConfig`; progress: ``progress(fraction, stage)``.
        poser: ``poser(canonical, one-frame pose, index)`` (:data:`Poser`), differentiable (default: sigman's
            skinning, :func:`posed_frame`; the release's template poses its own way).
        landmarks: ``[33, 2]`` the photo's BlazePose landmarks in pixels (e.g. the
            :class:`~sigman.observation.PersonObservation`'s), landmark_visibility: ``[33]``; they place the
            face for the hair colour (:func:`hair_colors`). ``None``: the fitted body's markers.
    Returns:
        :class:`RefineResult`.
    """
    report = progress or (lambda fraction, stage: None)
    start = time.perf_counter()
    device = canonical.means.device
    photo_t = as_image_tensor(photo, "photo").to(device)
    mask_t = as_image_tensor(mask, "mask").to(device)
    h, w = mask_t.shape
    if photo_t.shape[:2] != (h, w):
        raise ValueError(f"photo {tuple(photo_t.shape[:2])} and mask {(h, w)} differ in size")
    if len(camera) != 1:
        raise ValueError(f"refine_avatar takes one camera, got {len(camera)}")
    camera = camera.to(device=device, dtype=torch.float32)
    if (camera.width, camera.height) != (w, h):
        raise ValueError(f"the camera is for {camera.width}x{camera.height} images, the photo is {w}x{h}")
    cfg = config.resolved(device, (w, h))
    pose = pose.frame(0).to(device)
    rest_joints = rest_joints.to(device)
    if canonical.skin_weights is None:
        raise ValueError("the canonical Gaussians need skin weights (build them from the UV template)")
    canonical = canonical.detach().to(torch.float32)
    surface = as_surface(template).to(device)
    pose_fn = poser or default_poser(body, rest_joints)
    timings: dict[str, float] = {}

    # 1. alignment of the fit to the person's silhouette, then the projection
    total_steps = max(1, cfg.align_steps + cfg.steps)
    if cfg.align_steps > 0:
        report(0.0, "aligning the body to the photo")
        pose, camera = align_to_silhouette(canonical, body, rest_joints, pose, camera, mask_t, cfg,
                                           lambda i: report(i / total_steps, f"aligning {i}/{cfg.align_steps}"),
                                           poser=pose_fn)
    timings["align"] = time.perf_counter() - start
    report(cfg.align_steps / total_steps, "projecting the photo")
    with torch.no_grad():
        posed_vertices = body(pose, None if shape is None else shape.to(device)).vertices[0]
        posed = pose_fn(canonical, pose, None)
    projection = project_photo(surface, posed_vertices, posed, photo_t, mask_t, camera, cfg.projection)
    body_parents = getattr(body, "parents", None)
    mirror = (cfg.projection.mirror_strength > 0 and body_parents is not None
              and body_parents.numel() == rest_joints.shape[0])
    parts = gaussian_parts(canonical, body) if (mirror or cfg.projection.garment_split_parts) else None
    seen_colors, seen_weight = projection.colors, projection.weight
    if mirror:  # the mirrored colours join the seen side for the matching
        seen_colors, seen_weight = mirror_seen_colors(seen_colors, seen_weight, canonical.means, rest_joints,
                                                      body_parents, parts, cfg.projection)
    colors0 = match_unseen_colors(seen_colors, canonical.colors, seen_weight, canonical.means, cfg.projection,
                                  parts=parts if cfg.projection.garment_split_parts else None)
    colors0 = cap_unseen_chroma(colors0, projection.colors, projection.weight, cfg.projection)
    hair = None
    if cfg.projection.hair:
        as_t = lambda x: None if x is None else torch.as_tensor(x).float()
        colors0, hair = hair_colors(colors0, canonical, projection.weight, body, rest_joints, shape, pose, camera,
                                    photo_t, mask_t, cfg.projection, as_t(landmarks), as_t(landmark_visibility))
    projected = canonical.with_(colors=colors0)
    background = background_color(photo_t, mask_t)
    timings["project"] = time.perf_counter() - start - timings["align"]
    if cfg.steps <= 0:
        timings["refine"], timings["refine_steps_run"], timings["total"] = 0.0, 0.0, time.perf_counter() - start
        report(1.0, "done")
        return RefineResult(projected, projected, pose, camera, projection, background, [], timings, cfg, poser, hair=hair)

    # 2. refinement, on the Gaussians facing the camera, at the render size
    tick = time.perf_counter()
    rw, rh = _render_size(w, h, cfg.render_size)
    target_mask = _resize(mask_t[None], rw, rh)  # [1, rh, rw]
    target = _resize(photo_t.permute(2, 0, 1), rw, rh) * target_mask + background[:, None, None] * (1 - target_mask)
    render_camera = scaled_camera(camera, rw, rh)

    active = torch.nonzero(projection.cos > cfg.cull_cos)[:, 0]
    sub = projected.select(active)
    trust = projection.weight[active]
    keep_weight = 1.0 - trust
    footprint = surface.footprints.to(device)[active]
    lookup = torch.full((canonical.num_gaussians,), -1, dtype=torch.long, device=device)
    lookup[active] = torch.arange(active.numel(), device=device)
    pairs = lookup[surface.neighbour_pairs]
    pairs = pairs[(pairs >= 0).all(dim=-1)]

    # the whole body's thickness per joint (mixed by the skin weights): seen outlines make the unseen side follow
    joints_n = rest_joints.shape[0]
    parents = getattr(body, "parents", None)
    use_girth = (cfg.optimize_girth and cfg.optimize_geometry and parents is not None
                 and canonical.skin_weights.shape[-1] == joints_n and parents.numel() == joints_n)
    if use_girth:
        radial = radial_field(canonical.means, rest_joints, parents)
        skin = canonical.skin_weights.float()  # [N, J]
        radial_sub, skin_sub = radial.select(active), skin[active]
        child = torch.nonzero(parents >= 0)[:, 0]
    d_girth = torch.zeros(joints_n if use_girth else 0, device=device, requires_grad=True)
    d_color = torch.zeros_like(sub.colors, requires_grad=True)
    d_opacity = torch.zeros_like(sub.opacities, requires_grad=True)
    d_offset = torch.zeros_like(sub.means, requires_grad=True)
    d_log_scale = torch.zeros_like(sub.scales, requires_grad=True)
    joints0 = torch.cat([pose.global_orient, pose.body_pose[0]], dim=0).float()  # [22, 3]
    d_joints = torch.zeros_like(joints0, requires_grad=True)
    d_transl = torch.zeros(3, device=device, requires_grad=True)
    d_cam_rot = torch.zeros(3, device=device, requires_grad=True)
    d_cam_trans = torch.zeros(3, device=device, requires_grad=True)
    d_log_focal = torch.zeros(1, device=device, requires_grad=True)
    groups = [{"params": [d_color], "lr": cfg.lr_color}]
    if cfg.optimize_geometry:
        groups += [{"params": [d_opacity], "lr": cfg.lr_opacity}, {"params": [d_offset], "lr": cfg.lr_offset},
                   {"params": [d_log_scale], "lr": cfg.lr_scale}]
    if use_girth:
        groups += [{"params": [d_girth], "lr": cfg.lr_girth}]
    if cfg.optimize_pose:
        groups += [{"params": [d_joints], "lr": cfg.lr_pose}, {"params": [d_transl], "lr": cfg.lr_translation}]
    if cfg.optimize_camera:
        groups += [{"params": [d_cam_rot], "lr": cfg.lr_camera_rotation},
                   {"params": [d_cam_trans], "lr": cfg.lr_camera_translation},
                   {"params": [d_log_focal], "lr": cfg.lr_focal}]
    optimizer = Adam(groups, betas=(0.9, 0.99))
    logit0 = torch.logit(sub.opacities.clamp(1e-4, 1 - 1e-4))
    transl0 = pose.transl[0].float()
    bg = tuple(float(v) for v in background)

    def current():
        colors = (sub.colors + d_color).clamp(0, 1)
        means, scales = sub.means + d_offset, sub.scales * d_log_scale.exp()
        if use_girth:
            means, scales = radial_sub.thicken(means, scales, skin_sub @ d_girth)
        g = sub.with_(means=means, scales=scales, opacities=torch.sigmoid(logit0 + d_opacity), colors=colors)
        return g, _pose_with(pose, joints0 + d_joints, transl0 + d_transl)

    loss_terms: list[Tensor] = []
    steps_run = 0
    for step in range(cfg.steps):
        if time.perf_counter() - start > cfg.max_seconds:
            break  # the time limit: the avatar as refined so far
        steps_run = step + 1
        g, p = current()
        cam = _camera_with(render_camera, d_cam_rot, d_cam_trans, d_log_focal)
        out = render(pose_fn(g, p, active), cam, background=bg, backend=cfg.backend)
        rgb = out.rgb[0].permute(2, 0, 1)  # [3, rh, rw]
        alpha = out.alpha[0].permute(2, 0, 1)
        l1 = (rgb - target).abs().mean()
        dssim = (1 - ssim_map(rgb[None], target[None], cfg.ssim_window)).mean() / 2
        l_alpha = (alpha - target_mask).abs().mean()
        reg = cfg.w_keep_unseen * (keep_weight[:, None] * d_color.square()).sum(-1).mean()
        if pairs.numel():
            reg = reg + cfg.w_smooth * (d_color[pairs[:, 0]] - d_color[pairs[:, 1]]).square().sum(-1).mean()
        reg = reg + cfg.w_offset * (d_offset / footprint[:, None]).square().sum(-1).mean() * 1e-2
        reg = reg + cfg.w_scale * d_log_scale.square().sum(-1).mean()
        if use_girth:
            reg = reg + cfg.w_girth * d_girth.square().sum()
            reg = reg + cfg.w_girth_smooth * (d_girth[child] - d_girth[parents[child]]).square().sum()
        reg = reg + cfg.w_pose * (d_joints.square().sum() + d_transl.square().sum())
        reg = reg + cfg.w_camera * (d_cam_rot.square().sum() + d_cam_trans.square().sum() + d_log_focal.square().sum())
        loss = cfg.w_l1 * l1 + cfg.w_dssim * dssim + cfg.w_alpha * l_alpha + reg
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        # kept on the device: reading them here would make the host wait for the GPU at every step
        loss_terms.append(torch.stack([loss, l1, dssim, l_alpha]).detach())
        report((cfg.align_steps + step + 1) / total_steps, f"refining {step + 1}/{cfg.steps}")

    with torch.no_grad():
        g, p = current()
        means_all, scales_all = projected.means, projected.scales
        if use_girth:  # the Gaussians that were not rendered (the back) take their joints' thickness change too
            means_all, scales_all = radial.thicken(means_all, scales_all, skin @ d_girth)
        # the steps may push a half-seen edge Gaussian past the photo's chroma again: what they add is capped
        # (the Gaussians they did not change are left exactly as they were)
        final_colors = cap_unseen_chroma(projected.colors.index_copy(0, active, g.colors), projection.colors,
                                         projection.weight, cfg.projection, allowed=projected.colors)
        refined = projected.with_(
            means=means_all.index_copy(0, active, g.means),
            scales=scales_all.index_copy(0, active, g.scales),
            opacities=projected.opacities.index_copy(0, active, g.opacities),
            colors=final_colors,
        ).detach()
        final_camera = _camera_with(camera, d_cam_rot, d_cam_trans, d_log_focal)
        final_camera = Camera(final_camera.viewmats.detach(), final_camera.Ks.detach(), w, h)
        p = SMPLXPose(**{f.name: (getattr(p, f.name).detach() if torch.is_tensor(getattr(p, f.name))
                                  else getattr(p, f.name)) for f in dataclasses.fields(p)})
    girth_out = d_girth.detach().clone() if use_girth else None
    names = ("total", "l1", "dssim", "alpha")
    losses = [dict(zip(names, row)) for row in torch.stack(loss_terms).tolist()] if loss_terms else []
    timings["refine"] = time.perf_counter() - tick
    timings["refine_steps_run"] = float(steps_run)
    timings["total"] = time.perf_counter() - start
    report(1.0, "done")
    return RefineResult(refined, projected, p, final_camera, projection, background, losses, timings, cfg, poser,
                        girth_out, hair=hair)


@torch.no_grad()
def render_input_view(canonical: Gaussians, body: BodyModel, rest_joints: Tensor, pose: SMPLXPose, camera: Camera,
                      background=(1.0, 1.0, 1.0), backend: str = "auto", poser: Optional[Poser] = None) -> np.ndarray:
    """The avatar in the photo's (fitted) pose, from the photo's (fitted) camera, at the camera's image
    size and framing, on ``background`` (RGB in [0, 1], e.g. :attr:`RefineResult.background`): uint8
    ``[H, W, 3]``, the picture to hold against the photo. ``poser``: as :func:`refine_avatar`'s."""
    device = canonical.means.device
    pose_fn = poser or default_poser(body, rest_joints.to(device))
    posed = pose_fn(canonical.to(torch.float32), pose.frame(0).to(device), None)
    bg = tuple(float(v) for v in torch.as_tensor(background).reshape(3))
    return render(posed, camera.to(device=device, dtype=torch.float32), background=bg, backend=backend).images()[0]
