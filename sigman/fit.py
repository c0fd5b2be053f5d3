"""Fit a body model (pose, shape, camera) to what person understanding saw in one photo.

    fit = fit_body(body, observation)                 # a PersonObservation from sigman.person
    fit.pose      # SMPLXPose, 1 frame, sigman's world frame (+Y up, facing +Z = facing the camera)
    fit.shape     # [1, S]: anny phenotypes or SMPL-X betas
    fit.camera    # Camera at the photo's size: fit.camera.project(fit.vertices) lies on the person
    save_pose("photo_pose.npz", fit.pose)             # sigman.pose.save_pose

What is fitted: the root orientation and the 21 SMPL-X body joints (hands, jaw and eyes rest), the
body shape (anny: height, weight and proportions by default; SMPL-X: the first betas), and a
pinhole camera (translation; the focal length under a prior around a 55 degree vertical field of
view). The camera's rotation is fixed: it looks along world -Z from the +Z side with world +Y up,
so a person facing the camera faces +Z; a tilted photo shows up as the body's root orientation.

Energy (each term visibility-weighted where it uses landmarks):

- 2-D landmarks: the 33 BlazePose markers of the body (:mod:`sigman.body.markers`; the hip
  markers sit outside and below the model's hip joints) projected by the camera, against the
  image landmarks, in units of the person's pixel height, robustified (Geman-McClure);
- 3-D landmarks: the markers in camera axes, hip-centred, against MediaPipe's world landmarks
  brought to the body's size first (they carry the depth the photo lacks, but not the person's
  size: they come out about 1.66 m tall for everyone; :func:`world_scale`); :mod:`sigman.person`
  has removed their measured depth bias (:mod:`sigman.world_landmarks`);
- silhouette (photos only): a cheap differentiable stand-in for rendering, on a mask downsampled
  to at most ``silhouette_size`` px: projected surface points must fall inside the mask (distance
  transform of its outside, sampled bilinearly), and sampled mask pixels must have a projected
  point near them (one-sided Chamfer). Rendering the UV Gaussians with the project's PyTorch
  rasterizer at 96 px costs far more per iteration on 2 CPU cores than the whole 10 s budget
  allows for ~150 iterations, while these two point terms cost well under a millisecond each;
- priors: L2 of the body joints to a standing pose (per-joint weights), hinge limits (knees and
  elbows bend one way and barely sideways), the shape towards the mean (anny: its height at ``prior_height_m``),
  anny's standing height in metres towards ``prior_height_m`` (``w_height_prior``), the focal length towards
  its prior, and, for several frames at once, smooth motion.

Modules: :mod:`sigman.fit_shape` (the linear shape basis), :mod:`sigman.fit_init` (the start),
:mod:`sigman.fit_kinematics` (forward kinematics without host synchronisation), this one (the
energy and the optimisation).

Shape: anny computes non-default phenotypes with its own (non-differentiable, slow) module, so the
fit uses a linear shape basis (:class:`ShapeBasis`): finite differences of the canonical vertices
and joints per shape coordinate around the mean, built once and cached on disk. For SMPL-X the
basis is exact (betas are linear).

Initialisation: the root orientation from the shoulders and hips of the world landmarks (the
image landmarks when the world ones are missing), the depth from the ratio of metric to pixel
extents (focal length times metres over pixels), then a short camera-and-root stage before all
parameters move. A previous fit (``init=``) warm-starts the pose, shape and camera (video).
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

import roma
import torch
from torch import Tensor

from sigman.adam import Adam
from sigman.body.base import BodyModel
from sigman.body.markers import BodyMarkers, body_markers
from sigman.fit_init import CAMERA_ROTATION, default_focal, initial_root_rotation, orientation_candidates  # noqa: F401
from sigman.fit_kinematics import FitKinematics
from sigman.fit_shape import ShapeBasis, build_shape_basis  # noqa: F401 - the fit's public names
from sigman.graphed_steps import run_steps
from sigman.lbs import lbs_points
from sigman.observation import BLAZEPOSE_LANDMARKS, PersonObservation
from sigman.pose import SMPLX_JOINT_NAMES, SMPLXPose
from sigman.render.cameras import Camera

_BODY_INDEX = {name: i - 1 for i, name in enumerate(SMPLX_JOINT_NAMES[:22]) if i > 0}
_MARK = {name: i for i, name in enumerate(BLAZEPOSE_LANDMARKS)}


@dataclass
class FitConfig:
    """Iterations, weights and learning rates of :func:`fit_body`."""

    init_iterations: int = 30  # camera + root orientation only
    iterations: int = 120  # everything
    warm_iterations: int = 30  # everything, when warm-started from a previous fit
    warm_lr_scale: float = 0.25  # learning rates x this when warm-started (Adam's first steps are ~lr)
    lr_pose: float = 0.05  # rad per Adam step (root and body joints)
    lr_shape: float = 0.03  # shape coordinates per step
    lr_camera: float = 0.03  # metres (x, y) and log-depth per step
    lr_focal: float = 0.01  # log focal length per step
    fovy_deg: float = 55.0  # prior vertical field of view
    fit_focal: bool = True
    fit_shape: bool = True
    anny_shape_labels: tuple[str, ...] = ("height", "weight", "proportions")
    # anny: the shape prior (and the start) puts the body at this standing height, the mean of adults of
    # either sex (one photo shows no size: anny's default phenotype is 1.63 m); None: anny's default
    prior_height_m: Optional[float] = 1.70
    # the standing height's own prior (anny): N(prior_height_m, prior_height_sd_m), the spread of adults
    # of both sexes. One photo cannot show size (a smaller body nearer the camera projects the same),
    # so without it the height drifts wherever anny's height-linked proportions lead (measured on
    # perfect landmarks: 10 cm short on average, down to 1.14 m)
    prior_height_sd_m: float = 0.08
    w_height_prior: float = 0.5
    smplx_num_betas: int = 10
    silhouette: bool = True  # photos; video frames use fit_bodies(..., silhouette=False) by default
    silhouette_size: int = 128  # px, long side of the mask used by the silhouette term
    silhouette_points: int = 700  # surface points projected for the silhouette term
    mask_samples: int = 400  # mask pixels sampled for the coverage term
    min_visibility: float = 0.2  # landmarks below this are ignored
    # weights
    w_2d: float = 1.0
    w_world: float = 0.5
    w_silhouette: float = 0.3
    w_pose_prior: float = 2.0
    w_limits: float = 30.0
    w_shape_prior: float = 0.2
    w_focal_prior: float = 20.0
    w_temporal: float = 20.0
    w_warm: float = 0.1  # pull towards the warm-start pose (video)
    w_upright: float = 10.0  # the body's up axis towards the world's (1 - cos of the tilt)
    world_depth_weight: float = 1.0  # relative weight of the world landmarks' depth axis
    world_scale_free: bool = True  # compare the world landmarks' shape, not their size (see _world_term)
    face_weight: float = 0.3  # landmark weights relative to the body's
    hand_weight: float = 0.3
    foot_weight: float = 0.6
    robust_sigma: float = 10.0  # Geman-McClure scale of the 2-D term (in units of 2% of the height)
    orientation_candidates: bool = True  # photos: try several root orientations, keep the best
    num_threads: Optional[int] = 1  # torch threads during the fit (small ops run fastest on one)
    cuda_graphs: bool = True  # on CUDA, replay each step from one CUDA graph (sigman.graphed_steps)


@dataclass
class BodyFit:
    """One fitted frame.

    Attributes:
        pose: 1-frame :class:`SMPLXPose` in sigman's world frame (hands at rest; SMPL-X: ``betas``
            holds the fitted shape).
        shape: ``[1, S]`` the body's shape vector (anny phenotypes in [0, 1], SMPL-X betas).
        camera: one :class:`Camera` at the observation's image size.
        joints: ``[J, 3]`` posed joints of the body (world, metres).
        vertices: ``[V, 3]`` posed vertices (world, metres; the linear shape basis).
        markers_2d: ``[33, 2]`` the BlazePose markers of the fitted body, projected (pixels).
        reprojection_px: visibility-weighted mean distance of markers_2d to the landmarks (pixels).
        world_error_m: visibility-weighted mean 3-D distance to the world landmarks (metres).
        focal_px: fitted focal length (pixels).
        losses: the final value of each energy term.
        seconds: wall time per stage (``init``, ``optimise``, ``total``).
        iterations: Adam steps taken.
    """

    pose: SMPLXPose
    shape: Tensor
    camera: Camera
    joints: Tensor
    vertices: Tensor
    markers_2d: Tensor
    reprojection_px: float
    world_error_m: float
    focal_px: float
    losses: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    iterations: int = 0
    camera_translation: Optional[Tensor] = None  # [3] world -> camera translation (metres)


# ----------------------------------------------------------------------------------------------
# Priors


def neutral_body_pose() -> Tensor:
    """The pose prior's mean and the cold-start pose: standing, arms down, elbows soft ``[21, 3]``."""
    from sigman.presets import standing

    return standing().body_pose[0].clone()


def _prior_weights() -> Tensor:
    """Per-joint weights of the L2 pose prior ``[21]`` (the spine and collars barely move alone)."""
    w = {"spine1": 3.0, "spine2": 3.0, "spine3": 3.0, "neck": 1.5, "head": 0.8, "left_collar": 4.0,
         "right_collar": 4.0, "left_foot": 3.0, "right_foot": 3.0, "left_wrist": 1.0, "right_wrist": 1.0,
         "left_ankle": 1.0, "right_ankle": 1.0}
    return torch.tensor([w.get(n, 0.15) for n in SMPLX_JOINT_NAMES[1:22]])


def joint_limit_tables(device=None) -> tuple[Tensor, Tensor]:
    """The hinge limits as two ``[21, 3]`` tables: ``sign`` (a rotation component ``v`` costs
    ``relu(sign * v)^2``: knees flex about +X only, the left elbow about -Y, the right about +Y, in
    SMPL-X's T-pose frames) and ``quad`` (it costs ``quad * v^2`` too: knees barely bend sideways,
    elbows barely twist)."""
    sign, quad = torch.zeros(21, 3), torch.zeros(21, 3)
    for side in ("left", "right"):
        knee, elbow = _BODY_INDEX[f"{side}_knee"], _BODY_INDEX[f"{side}_elbow"]
        sign[knee, 0] = -1.0
        quad[knee, 1:] = 0.5
        sign[elbow, 1] = 1.0 if side == "left" else -1.0
        quad[elbow, 2] = 0.1
    return sign.to(device), quad.to(device)


def joint_limit_penalty(body_pose: Tensor, tables: Optional[tuple[Tensor, Tensor]] = None) -> Tensor:
    """Hinge limits, ``body_pose [T, 21, 3]`` -> ``[T]`` (:func:`joint_limit_tables`; pass them
    when calling often, so that they are built once)."""
    sign, quad = joint_limit_tables(body_pose.device) if tables is None else tables
    return (torch.nn.functional.relu(body_pose * sign).square() + quad * body_pose.square()).sum((-1, -2))


# ----------------------------------------------------------------------------------------------
# Observation tensors


@dataclass
class _Targets:
    """What the energy compares against, for ``T`` frames (on the fit's device)."""

    landmarks: Tensor  # [T, 33, 2] px
    weights: Tensor  # [T, 33] visibility x per-landmark weight (0 = ignored)
    world: Tensor  # [T, 33, 3] hip-centred metres (camera axes)
    world_weights: Tensor  # [T, 33]
    scale: Tensor  # [T] person height in px
    size: tuple[int, int]  # (W, H)
    centre: Tensor  # [2] the principal point (px)
    grid_scale: Tensor  # [2] px -> grid_sample's [0, 2] (2 / (W, H))
    outside: Optional[Tensor] = None  # [T, 1, h, w] distance (in units of scale) to the mask
    mask_points: Optional[Tensor] = None  # [T, M, 2] px, mask pixel samples
    mask_valid: Optional[Tensor] = None  # [T, M] bool


def _landmark_weights(config: FitConfig) -> Tensor:
    w = torch.ones(len(BLAZEPOSE_LANDMARKS))
    for i, name in enumerate(BLAZEPOSE_LANDMARKS):
        if i <= 10:
            w[i] = config.face_weight
        elif any(k in name for k in ("pinky", "index", "thumb")):
            w[i] = config.hand_weight
        elif any(k in name for k in ("heel", "foot")):
            w[i] = config.foot_weight
    return w


def _targets(observations: Sequence[PersonObservation], config: FitConfig, device, silhouette: bool) -> _Targets:
    sizes = {tuple(o.image_size) for o in observations}
    if len(sizes) != 1:
        raise ValueError(f"all observations of one fit must share an image size, got {sorted(sizes)}")
    size = observations[0].image_size
    lw = _landmark_weights(config)
    lm, wt, world, wwt, scale = [], [], [], [], []
    for o in observations:
        vis = torch.from_numpy(np.asarray(o.visibility, np.float32)).clamp(0, 1)
        vis = torch.where(vis >= config.min_visibility, vis, torch.zeros_like(vis))
        pts = torch.from_numpy(np.asarray(o.landmarks, np.float32))
        finite = torch.isfinite(pts).all(-1)
        vis = torch.where(finite, vis, torch.zeros_like(vis))
        lm.append(torch.nan_to_num(pts))
        wt.append(vis * lw)
        wl = torch.from_numpy(np.asarray(o.world_landmarks, np.float32))
        ok = torch.isfinite(wl).all(-1) & (wl.abs().sum(-1) > 0)
        world.append(torch.nan_to_num(wl))
        wwt.append(torch.where(ok, vis, torch.zeros_like(vis)) * lw)
        seen = pts[vis > 0]
        if len(seen) >= 2:
            ext = float(seen[:, 1].max() - seen[:, 1].min())
            ext = max(ext, 0.5 * float(seen[:, 0].max() - seen[:, 0].min()))
        else:
            ext = 0.0
        if ext <= 1.0:
            x0, y0, x1, y1 = o.person_box
            ext = float(max(y1 - y0, 1))
        scale.append(max(ext, 8.0))
    w, h = size
    t = _Targets(torch.stack(lm).to(device), torch.stack(wt).to(device), torch.stack(world).to(device),
                 torch.stack(wwt).to(device), torch.tensor(scale, device=device), size,
                 torch.tensor([w / 2, h / 2], device=device), torch.tensor([2.0 / w, 2.0 / h], device=device))
    if silhouette:
        _add_silhouette_targets(t, observations, config, device)
    return t


def _add_silhouette_targets(t: _Targets, observations: Sequence[PersonObservation], config: FitConfig, device) -> None:
    from scipy.ndimage import distance_transform_edt

    w, h = t.size
    factor = min(1.0, config.silhouette_size / max(w, h))
    sw, sh = max(4, round(w * factor)), max(4, round(h * factor))
    outside, points, valid = [], [], []
    for i, o in enumerate(observations):
        mask = torch.from_numpy(np.asarray(o.mask, np.float32))[None, None]
        small = torch.nn.functional.interpolate(mask, size=(sh, sw), mode="area")[0, 0].numpy() > 0.5
        px_per_cell = w / sw
        if small.any():
            dist = distance_transform_edt(~small) * px_per_cell / float(t.scale[i])
        else:
            dist = np.zeros_like(small, dtype=np.float64)
        outside.append(torch.from_numpy(dist.astype(np.float32))[None])
        rows, cols = np.nonzero(small)
        m = config.mask_samples
        if len(rows):
            pick = np.linspace(0, len(rows) - 1, min(m, len(rows))).round().astype(np.int64)
            p = np.stack([(cols[pick] + 0.5) * (w / sw), (rows[pick] + 0.5) * (h / sh)], -1)
        else:
            p = np.zeros((0, 2))
        pad = np.zeros((m, 2), np.float32)
        pad[: len(p)] = p
        points.append(torch.from_numpy(pad))
        v = torch.zeros(m, dtype=torch.bool)
        v[: len(p)] = True
        valid.append(v)
    t.outside = torch.stack(outside).to(device)
    t.mask_points = torch.stack(points).to(device)
    t.mask_valid = torch.stack(valid).to(device)


# ----------------------------------------------------------------------------------------------
# The fit


@dataclass
class _Model:
    """Everything fixed for one body: markers, shape basis, silhouette points, prior tensors, all
    on the fit's device (a step copies nothing from the host)."""

    body: BodyModel
    markers: BodyMarkers
    basis: ShapeBasis
    surface: Tensor  # [P] vertex indices for the silhouette
    surface_weights: Tensor  # [P, J]
    neutral: Tensor  # [21, 3]
    prior_weights: Tensor  # [21]
    kinematics: FitKinematics
    camera_rotation: Tensor  # [3, 3] CAMERA_ROTATION on the device
    point_weights: Tensor  # [33 + P, J] skinning weights of the markers, then the surface points
    limit_tables: tuple[Tensor, Tensor]  # joint_limit_tables on the device
    shape_prior: Tensor  # [K] the shape coordinates the prior pulls towards (and the fit starts from)
    height_base: Tensor  # [2, P] rest y of the P highest (row 0) and lowest (row 1) vertices of the prior body
    height_dirs: Tensor  # [K, 2, P] their y per unit of each shape coordinate


_MODEL_CACHE_ATTR = "_sigman_fit_model"


def _model(body: BodyModel, config: FitConfig, basis: Optional[ShapeBasis] = None) -> _Model:
    """Fit assets of ``body`` (kept on the body object, keyed by what they depend on)."""
    key = (config.fit_shape, tuple(config.anny_shape_labels), config.smplx_num_betas,
           config.silhouette_points, config.prior_height_m, str(body.rest_vertices.device))
    cached = getattr(body, _MODEL_CACHE_ATTR, None)
    if cached is not None and cached[0] == key and cached[1] is basis:
        return cached[2]
    device = body.rest_vertices.device
    given = basis
    basis = build_shape_basis(body, config) if basis is None else basis.to(device)
    v = body.num_vertices
    p = min(config.silhouette_points, v)
    surface = torch.linspace(0, v - 1, p, device=device).round().long()
    markers = body_markers(body)
    surface_weights = body.skin_weights[surface]
    prior = shape_prior_coords(body, basis, config)
    model = _Model(body, markers, basis, surface, surface_weights, neutral_body_pose().to(device),
                   _prior_weights().to(device), FitKinematics(body), CAMERA_ROTATION.to(device),
                   torch.cat([markers.weights.to(surface_weights), surface_weights]), joint_limit_tables(device),
                   prior, *_height_points(basis, prior))
    object.__setattr__(body, _MODEL_CACHE_ATTR, (key, given, model))
    return model


def _standing_height(vertices: Tensor) -> Tensor:
    return vertices[..., 1].amax(-1) - vertices[..., 1].amin(-1)


def _height_points(basis: ShapeBasis, coords: Tensor, count: int = 64) -> tuple[Tensor, Tensor]:
    """The rest y of the ``count`` highest and lowest vertices of the body at ``coords [K]``, as
    ``[2, P]``, and their y per shape coordinate ``[K, 2, P]``: the standing height near ``coords``
    from a few hundred numbers, so the height prior does not backpropagate through every vertex."""
    with torch.no_grad():
        y = basis.rest(coords[None])[0][0, :, 1]
        count = min(count, y.numel())
        idx = torch.stack([y.topk(count).indices, (-y).topk(count).indices])  # [2, P]
        return basis.base_vertices[idx, 1], basis.dir_vertices[:, idx, 1]


def _model_height(model: "_Model", coords: Tensor) -> Tensor:
    """Standing height ``[B]`` of the linear-basis body at ``coords [B, K]``, from the height points."""
    delta = coords - model.basis.centre[model.basis.index]
    y = model.height_base + torch.einsum("bk,kqp->bqp", delta, model.height_dirs)  # [B, 2, P]
    return y[:, 0].amax(-1) - y[:, 1].amin(-1)


@torch.no_grad()
def shape_prior_coords(body: BodyModel, basis: ShapeBasis, config: FitConfig) -> Tensor:
    """The fitted shape coordinates' prior centre ``[K]``: the body's mean shape, with anny's height
    coordinate moved (along the linear basis) to ``config.prior_height_m`` when it is fitted."""
    prior = basis.centre[basis.index].clone()
    labels = list(config.anny_shape_labels)
    if body.name != "anny" or config.prior_height_m is None or "height" not in labels or basis.num_coords != len(labels):
        return prior
    k = labels.index("height")
    bumped = prior.clone()
    bumped[k] += 0.1
    h0, h1 = _standing_height(basis.rest(torch.stack([prior, bumped]))[0])
    if float(h1 - h0) <= 1e-6:  # a basis without a height direction
        return prior
    prior[k] = (prior[k] + 0.1 * (config.prior_height_m - h0) / (h1 - h0)).clamp(basis.low, basis.high)
    return prior


@contextlib.contextmanager
def _threads(n: Optional[int]):
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _gmof(sq: Tensor, sigma: float) -> Tensor:
    s2 = sigma * sigma
    return s2 * sq / (s2 + sq)


class _Params(torch.nn.Module):
    def __init__(self, orient: Tensor, body_pose: Tensor, coords: Tensor, transl: Tensor, log_focal: Tensor):
        super().__init__()
        self.orient = torch.nn.Parameter(orient.clone())  # [T, 3] axis-angle (world)
        self.body_pose = torch.nn.Parameter(body_pose.clone())  # [T, 21, 3]
        self.coords = torch.nn.Parameter(coords.clone())  # [1, K]
        self.transl_xy = torch.nn.Parameter(transl[:, :2].clone())  # [T, 2] camera translation (m)
        self.log_depth = torch.nn.Parameter(transl[:, 2:].clamp_min(0.05).log())  # [T, 1]
        self.log_focal = torch.nn.Parameter(log_focal.clone())  # [1]

    def cam_translation(self) -> Tensor:
        return torch.cat([self.transl_xy, self.log_depth.exp()], dim=-1)


def _pose_of(params: _Params, frames: int) -> SMPLXPose:
    pose = SMPLXPose.zeros(frames)
    pose = pose.to(params.orient.device)
    pose.global_orient = params.orient
    pose.body_pose = params.body_pose
    return pose


def _evaluate(model: _Model, params: _Params, t: _Targets, config: FitConfig, silhouette: bool,
              warm: Optional[Tensor], sequence: bool = True) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor]]:
    """The energy and its terms; also what the result needs (markers, camera points)."""
    frames = params.orient.shape[0]
    body = model.body
    rest_v, rest_j = model.basis.rest(params.coords)  # [1, V, 3], [1, J, 3]
    transforms, joints = model.kinematics(params.orient, params.body_pose, rest_j.expand(frames, -1, -1))
    canon = model.markers.canonical(rest_v, rest_j)  # [1, 33, 3]
    use_silhouette = silhouette and t.outside is not None
    if use_silhouette:  # markers and surface points skinned and projected together
        canon = torch.cat([canon, rest_v[:, model.surface]], dim=1)
    weights = model.point_weights[: canon.shape[1]]
    points = lbs_points(canon.expand(frames, -1, -1), weights, transforms)  # [T, 33 (+ P), 3] world
    trans = params.cam_translation()  # [T, 3]
    cam_all = points @ model.camera_rotation.T + trans[:, None]
    f = params.log_focal.exp()
    proj_all = f * cam_all[..., :2] / cam_all[..., 2:].clamp_min(0.05) + t.centre
    proj, cam = proj_all[:, :NUM_MARKERS], cam_all[:, :NUM_MARKERS]
    terms: dict[str, Tensor] = {}
    err = (proj - t.landmarks) / (0.02 * t.scale[:, None, None])
    wsum = t.weights.sum(-1).clamp_min(1e-6)
    terms["2d"] = config.w_2d * (_gmof(err.square().sum(-1), config.robust_sigma) * t.weights).sum(-1) / wsum
    hips = 0.5 * (cam[:, _MARK["left_hip"]] + cam[:, _MARK["right_hip"]])
    centred = cam - hips[:, None]
    terms["world"] = config.w_world * _world_term(centred, t, config)
    up = roma.rotvec_to_rotmat(params.orient)[:, 1, 1]  # world y of the body's up axis
    terms["upright"] = config.w_upright * (1 - up)
    if use_silhouette:
        sp = proj_all[:, NUM_MARKERS:]  # [T, P, 2]
        grid = (sp * t.grid_scale - 1)[:, None]  # [T, 1, P, 2] in [-1, 1]
        out = torch.nn.functional.grid_sample(t.outside, grid, align_corners=False)[:, 0, 0]  # [T, P]
        inside_term = (out / 0.02).square().mean(-1)
        d = torch.cdist(t.mask_points, sp).min(dim=-1).values / (0.02 * t.scale[:, None])  # [T, M]
        cover = (d.square() * t.mask_valid).sum(-1) / t.mask_valid.sum(-1).clamp_min(1)
        terms["silhouette"] = config.w_silhouette * 0.5 * (inside_term + _gmof(cover, 3 * config.robust_sigma))
    dev = (params.body_pose - model.neutral).square().sum(-1)  # [T, 21]
    terms["pose_prior"] = config.w_pose_prior * (dev * model.prior_weights).sum(-1)
    terms["limits"] = config.w_limits * joint_limit_penalty(params.body_pose, model.limit_tables)
    if model.basis.num_coords:
        spread = 0.25 if body.name == "anny" else 1.0
        c = (params.coords - model.shape_prior) / spread
        terms["shape_prior"] = config.w_shape_prior * c.square().sum().expand(frames)
        if body.name == "anny" and config.prior_height_m is not None and config.w_height_prior > 0:
            z = (_model_height(model, params.coords) - config.prior_height_m) / config.prior_height_sd_m
            terms["height_prior"] = config.w_height_prior * z.square().sum().expand(frames)
    if config.fit_focal:
        f0 = math.log(default_focal(t.size, config.fovy_deg))
        terms["focal_prior"] = config.w_focal_prior * (params.log_focal - f0).square().sum().expand(frames)
    if frames > 1 and sequence:
        dp = (params.body_pose[1:] - params.body_pose[:-1]).square().sum((-1, -2))
        do = (params.orient[1:] - params.orient[:-1]).square().sum(-1)
        smooth = torch.cat([dp + do, dp.new_zeros(1)])
        terms["temporal"] = config.w_temporal * smooth
    if warm is not None:
        terms["warm"] = config.w_warm * (params.body_pose - warm).square().sum((-1, -2))
    total = sum(v.sum() if not sequence else v.mean() for v in terms.values())
    return total, terms, {"proj": proj, "cam": centred, "joints": joints, "transforms": transforms,
                          "rest_v": rest_v}


NUM_MARKERS = len(BLAZEPOSE_LANDMARKS)


def world_scale(centred: Tensor, world: Tensor, weights: Tensor) -> Tensor:
    """Scale ``[T]`` that brings the world landmarks ``[T, 33, 3]`` to the size of the body's
    hip-centred markers ``[T, 33, 3]``: the ratio of their weighted RMS sizes (no gradient; clamped to
    [0.6, 1.6]). Not the least-squares scale: that one shrinks as the two shapes disagree, so it
    would pull the body smaller at every step of a fit."""
    with torch.no_grad():
        num = (centred.square().sum(-1) * weights).sum(-1)
        den = (world.square().sum(-1) * weights).sum(-1).clamp_min(1e-9)
        return (num / den).sqrt().clamp(0.6, 1.6)


def _world_term(centred: Tensor, t: _Targets, config: FitConfig) -> Tensor:
    """Visibility-weighted squared distance ``[T]`` (units of 5 cm) of the hip-centred markers to
    the world landmarks, the depth axis weighted by ``config.world_depth_weight``.

    With ``world_scale_free`` the landmarks are first scaled to the body's size: MediaPipe's world
    landmarks have about one size whatever the person's (measured on the project's renders of
    bodies 1.3 to 2.3 m tall: their extent is 1.66 m +- 4%), so their size would pull every fit
    to an average height, against the proportions the image shows."""
    target = t.world
    if config.world_scale_free:
        target = target * world_scale(centred, t.world, t.world_weights)[:, None, None]
    werr = (centred - target) / 0.05
    sq = werr[..., :2].square().sum(-1) + config.world_depth_weight * werr[..., 2].square()
    return (sq * t.world_weights).sum(-1) / t.world_weights.sum(-1).clamp_min(1e-6)


def _initial_translation(model: _Model, params: _Params, t: _Targets,
                         depth: Optional[Tensor] = None) -> Tensor:
    """Camera translation ``[T, 3]`` that puts the hips' midpoint under the image hips, at the
    depth where the body's metric extent matches its pixel extent (or at ``depth [T]``)."""
    with torch.no_grad():
        frames = params.orient.shape[0]
        rest_v, rest_j = model.basis.rest(params.coords)
        transforms, _ = model.body.pose_transforms(_pose_of(params, frames), rest_j.expand(frames, -1, -1))
        markers = model.markers.posed(model.markers.canonical(rest_v, rest_j), transforms)
        cam = markers @ CAMERA_ROTATION.to(markers).T  # rotated, not yet translated
        f = float(params.log_focal.exp())
        w, h = t.size
        lh, rh = _MARK["left_hip"], _MARK["right_hip"]
        out = []
        for i in range(frames):
            vis = t.weights[i] > 0
            pix = t.landmarks[i]
            if vis[lh] and vis[rh]:
                anchor_px, anchor_cam = 0.5 * (pix[lh] + pix[rh]), 0.5 * (cam[i, lh] + cam[i, rh])
            elif vis.any():
                anchor_px, anchor_cam = pix[vis].mean(0), cam[i, vis].mean(0)
            else:
                anchor_px, anchor_cam = torch.tensor([w / 2, h / 2], device=pix.device), cam[i].mean(0)
            if depth is not None:
                z = float(depth[i])
            elif vis.sum() >= 2:  # metric extent in the image plane over the pixel extent
                d_px = (pix[vis] - anchor_px).norm(dim=-1).sum()
                d_m = (cam[i, vis, :2] - anchor_cam[:2]).norm(dim=-1).sum()
                z = f * float(d_m) / max(float(d_px), 1e-3)
            else:
                z = f * 1.7 / float(t.scale[i])
            z = float(np.clip(z, 0.3, 100.0))
            ray = torch.tensor([(float(anchor_px[0]) - w / 2) / f, (float(anchor_px[1]) - h / 2) / f, 1.0],
                               device=cam.device)
            out.append(z * ray - anchor_cam)
        return torch.stack(out)


def _run(model: _Model, params: _Params, t: _Targets, config: FitConfig, steps: int, groups: list[dict],
         silhouette: bool, warm: Optional[Tensor], sequence: bool = True) -> None:
    if steps <= 0:
        return
    opt = Adam(groups)

    def clamp_shape() -> None:
        with torch.no_grad():
            params.coords.clamp_(model.basis.low, model.basis.high)

    run_steps(lambda: _evaluate(model, params, t, config, silhouette, warm, sequence)[0], opt, steps,
              clamp_shape if model.basis.num_coords else None, graph=config.cuda_graphs)


def fit_bodies(body: BodyModel, observations: Sequence[PersonObservation], config: FitConfig = FitConfig(),
               init: Optional[BodyFit] = None, silhouette: Optional[bool] = None,
               fit_shape: Optional[bool] = None, shape_basis: Optional[ShapeBasis] = None) -> list[BodyFit]:
    """Fit ``T`` frames at once (one shape, one focal length, smooth motion between frames).

    Args:
        body: the body model (its device is the fit's device).
        observations: ``T`` observations of one image size.
        init: a previous fit: every frame starts from its pose, shape, focal length and depth, and
            runs ``config.warm_iterations`` steps (no separate camera stage).
        silhouette: use the mask term (default: ``config.silhouette``).
        fit_shape: move the shape (default: ``config.fit_shape``; with ``init``, the shape stays
            where ``init`` left it unless this is ``True``).
        shape_basis: the linear shape model to fit (default: :func:`build_shape_basis`).
    Returns:
        ``T`` :class:`BodyFit`.
    """
    if not observations:
        raise ValueError("fit_bodies needs at least one observation")
    start = time.perf_counter()
    silhouette = config.silhouette if silhouette is None else silhouette
    with _threads(config.num_threads):
        model = _model(body, config, shape_basis)
        device = body.rest_vertices.device
        frames = len(observations)
        t = _targets(observations, config, device, silhouette)
        basis = model.basis
        if init is not None:
            orient = init.pose.global_orient.to(device).expand(frames, 3)
            # keep the warm orientation unless the torso says it turned by more than 60 degrees
            cold = torch.stack([roma.rotmat_to_rotvec(initial_root_rotation(o)) for o in observations]).to(device)
            turn = roma.rotvec_geodesic_distance(orient, cold)
            orient = torch.where((turn > math.radians(60))[:, None], cold, orient)
            body_pose = init.pose.body_pose.to(device).expand(frames, -1, -1)
            coords = init.shape.to(device)[:, basis.index] if basis.num_coords else torch.zeros(1, 0, device=device)
            log_focal = torch.tensor([math.log(init.focal_px)], device=device)
            warm = body_pose.detach().clone()
        else:
            orient = torch.stack([roma.rotmat_to_rotvec(initial_root_rotation(o)) for o in observations]).to(device)
            body_pose = model.neutral.expand(frames, -1, -1)
            coords = model.shape_prior[None].clone()
            log_focal = torch.tensor([math.log(default_focal(t.size, config.fovy_deg))], device=device)
            warm = None
        start_t = torch.tensor([[0.0, 0.0, 3.0]], device=device).expand(frames, 3)
        params = _Params(orient, body_pose, coords, start_t, log_focal)
        with torch.no_grad():
            depth = None
            if init is not None and init.camera_translation is not None:
                depth = init.camera_translation[2].to(device).expand(frames)  # the image position from this frame
            tr = _initial_translation(model, params, t, depth)
            params.transl_xy.copy_(tr[:, :2])
            params.log_depth.copy_(tr[:, 2:].clamp_min(0.3).log())
        t_init = time.perf_counter() - start
        move_shape = (config.fit_shape if fit_shape is None else fit_shape) and basis.num_coords > 0
        if init is not None and fit_shape is None:
            move_shape = False
        cam_groups = [{"params": [params.transl_xy, params.log_depth], "lr": config.lr_camera},
                      {"params": [params.orient], "lr": config.lr_pose}]
        if init is None and frames == 1 and config.orientation_candidates:
            params = _best_start(model, params, observations[0], config, device)
            cam_groups = [{"params": [params.transl_xy, params.log_depth], "lr": config.lr_camera},
                          {"params": [params.orient], "lr": config.lr_pose}]
        elif init is None:
            _run(model, params, t, config, config.init_iterations, cam_groups, False, None)
        groups = cam_groups + [{"params": [params.body_pose], "lr": config.lr_pose}]
        if move_shape:
            groups.append({"params": [params.coords], "lr": config.lr_shape})
        if config.fit_focal and init is None:
            groups.append({"params": [params.log_focal], "lr": config.lr_focal})
        steps = config.warm_iterations if init is not None else config.iterations
        if init is not None:
            groups = [dict(g, lr=g["lr"] * config.warm_lr_scale) for g in groups]
        _run(model, params, t, config, steps, groups, silhouette, warm)
        t_opt = time.perf_counter() - start - t_init
        with torch.no_grad():
            _, terms, extra = _evaluate(model, params, t, config, silhouette, warm)
            results = _collect(model, params, t, terms, extra, frames)
    total = time.perf_counter() - start
    iters = (0 if init is not None else config.init_iterations) + steps
    for r in results:
        r.seconds = {"init": t_init, "optimise": t_opt, "total": total}
        r.iterations = iters
    return results


def _best_start(model: _Model, params: _Params, observation: PersonObservation, config: FitConfig,
                device) -> _Params:
    """Run the camera-and-root stage from every :func:`orientation_candidates` at once (as a batch)
    and keep the start with the lowest landmark energy."""
    cands = orientation_candidates(observation)
    k = len(cands)
    tk = _targets([observation] * k, config, device, False)
    orient = torch.stack([roma.rotmat_to_rotvec(r) for r in cands]).to(device)
    pk = _Params(orient, params.body_pose.detach().expand(k, -1, -1), params.coords.detach(),
                 torch.tensor([[0.0, 0.0, 3.0]], device=device).expand(k, 3), params.log_focal.detach())
    with torch.no_grad():
        tr = _initial_translation(model, pk, tk)
        pk.transl_xy.copy_(tr[:, :2])
        pk.log_depth.copy_(tr[:, 2:].clamp_min(0.3).log())
    groups = [{"params": [pk.transl_xy, pk.log_depth], "lr": config.lr_camera},
              {"params": [pk.orient], "lr": config.lr_pose}]
    _run(model, pk, tk, config, config.init_iterations, groups, False, None, sequence=False)
    with torch.no_grad():
        _, terms, _ = _evaluate(model, pk, tk, config, False, None, sequence=False)
        best = int((terms["2d"] + terms["world"]).argmin())
        out = _Params(pk.orient[best:best + 1], pk.body_pose[best:best + 1], pk.coords,
                      pk.cam_translation()[best:best + 1], pk.log_focal)
    return out


def _collect(model: _Model, params: _Params, t: _Targets, terms: dict[str, Tensor], extra: dict[str, Tensor],
             frames: int) -> list[BodyFit]:
    body = model.body
    basis = model.basis
    shape = basis.full_shape(params.coords.detach())
    trans = params.cam_translation().detach()
    f = float(params.log_focal.exp())
    w, h = t.size
    rest_v = extra["rest_v"]
    vertices = lbs_points(rest_v.expand(frames, -1, -1), body.skin_weights, extra["transforms"])
    out = []
    for i in range(frames):
        pose = SMPLXPose.zeros(1)
        pose.global_orient = params.orient[i:i + 1].detach().cpu().clone()
        pose.body_pose = params.body_pose[i:i + 1].detach().cpu().clone()
        if body.name == "smplx":
            pose.betas = shape[0].cpu().clone()
        view = torch.eye(4)
        view[:3, :3] = CAMERA_ROTATION
        view[:3, 3] = trans[i].cpu()
        k = torch.tensor([[f, 0.0, w / 2], [0.0, f, h / 2], [0.0, 0.0, 1.0]])
        wt = t.weights[i]
        d = (extra["proj"][i] - t.landmarks[i]).norm(dim=-1)
        reproj = float((d * (wt > 0)).sum() / (wt > 0).sum().clamp_min(1))
        ww = t.world_weights[i] > 0
        werr = float(((extra["cam"][i] - t.world[i]).norm(dim=-1) * ww).sum() / ww.sum().clamp_min(1)) if ww.any() else float("nan")
        out.append(BodyFit(
            pose=pose, shape=shape.cpu().clone(), camera=Camera(view[None], k[None], w, h),
            joints=extra["joints"][i].detach().cpu(), vertices=vertices[i].detach().cpu(),
            markers_2d=extra["proj"][i].detach().cpu(), reprojection_px=reproj, world_error_m=werr,
            focal_px=f, losses={k_: float(v[i]) for k_, v in terms.items()},
            camera_translation=trans[i].cpu().clone()))
    return out


def fit_body(body: BodyModel, observation: PersonObservation, config: FitConfig = FitConfig(),
             init: Optional[BodyFit] = None, shape_basis: Optional[ShapeBasis] = None) -> BodyFit:
    """Fit ``body`` to one observation (see the module docstring). ``init``: warm start."""
    return fit_bodies(body, [observation], config, init=init, shape_basis=shape_basis)[0]
