"""Synthetic training items in the seed layout: procedurally dressed anny bodies, posed and rendered.

Per item (all drawn from the item's own seed, so item ``i`` of seed ``k`` is the same whatever the
batch size or device order):

- a body: six anny phenotypes (mostly adults, some children; any gender, build, height, proportions);
- a pose: a preset (:mod:`sigman.presets`) with every body and hand joint perturbed by a random
  rotation, and a random global yaw; the body is then translated so its bounding-box centre sits at
  the world origin (the saved pose's ``transl`` includes that shift);
- an appearance: :mod:`sigman.data.appearance` paints the texels of a UV template (``people``:
  ``"basic"``, ``"rich"`` or ``"mixed"``; rich people also get a baked light on their posed normals);
- Gaussians: one flat Gaussian per texel on this body shape (footprints scaled with the local surface
  stretch), posed by linear blend skinning, rendered by :func:`sigman.render.render` into a fixed
  rig of calibrated cameras looking at the origin (rings of views at a few elevations);
- masks ``alpha > 0.5`` and the partial UV texture projected back from the views
  (:func:`sigman.data.uv_projection.project_to_uv`), exactly as for real data.

Batches of items share one call to anny (shapes), skinning, painting and UV projection; rendering is
one call per item for all its views; image encoding runs on a thread pool while the next batch is
computed.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np
import roma
import torch
from torch import Tensor

from sigman.body import load_body_model
from sigman.body.base import BodyModel
from sigman.data import layout
from sigman.data.appearance import (
    PEOPLE, AppearanceParams, TexelFeatures, normals_from_quats, paint, sample_appearance, shade,
)
from sigman.data.uv_projection import ProjectionConfig, project_to_uv
from sigman.gaussians import Gaussians, quat_from_normals, repose, surface_gaussians
from sigman.lbs import lbs_points
from sigman.pose import SMPLX_JOINT_NAMES, SMPLXPose
from sigman.presets import POSE_PRESETS, waving, walking
from sigman.render import Camera, look_at, intrinsics_from_fov, render
from sigman.uv import UVTemplate, build_uv_template, vertex_normals

# Relative size of the random rotation added to each SMPL-X body joint (1..21): the spine, neck and
# collars chain up, so they get small ones; limbs larger ones.
BODY_NOISE_SCALE = {
    "left_hip": 0.8, "right_hip": 0.8, "spine1": 0.3, "left_knee": 0.6, "right_knee": 0.6, "spine2": 0.3,
    "left_ankle": 0.5, "right_ankle": 0.5, "spine3": 0.3, "left_foot": 0.3, "right_foot": 0.3, "neck": 0.4,
    "left_collar": 0.3, "right_collar": 0.3, "head": 0.5, "left_shoulder": 1.0, "right_shoulder": 1.0,
    "left_elbow": 1.0, "right_elbow": 1.0, "left_wrist": 0.8, "right_wrist": 0.8,
}


@dataclass
class SyntheticConfig:
    """Everything that defines a synthetic dataset (saved next to it as ``synthetic_config.json``)."""

    views: int = 24  # calibrated views per item, split over the elevation rings
    image_size: int = 512  # square renders, pixels
    uv_resolution: int = 256  # resolution of the saved partial UV texture
    render_uv_resolution: int = 256  # one Gaussian per texel of this template when rendering
    elevations_deg: tuple[float, ...] = (-30.0, 0.0, 45.0)  # camera rings (the release's three)
    radius: float = 2.5  # camera distance to the body centre (the release's calibration: 2.5 m)
    fovy: float = 0.8713  # radians (the release's 1100 px focal length at 1024 px)
    pose_noise: float = 0.25  # radians, std of the random rotation of a limb joint (BODY_NOISE_SCALE)
    hand_noise: float = 0.1  # radians, same for finger joints
    max_yaw_deg: float = 180.0  # global yaw uniform in [-max, max]
    adult_fraction: float = 0.85  # the rest are children / teenagers
    batch_size: int = 8  # items shaped, posed, painted and projected together
    jpeg_quality: int = layout.JPEG_QUALITY
    writer_threads: int = 8  # image encoding threads
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    projection: ProjectionConfig = field(default_factory=ProjectionConfig)
    shape_bank: Optional[str] = None  # a ShapeBank .npz: draw body shapes from it (no anny needed)
    people: str = "basic"  # appearance sampler: "basic" (the original look), "rich" or "mixed" (sigman.data.appearance)

    def __post_init__(self) -> None:
        if self.people not in PEOPLE:
            raise ValueError(f"people must be one of {PEOPLE}, got {self.people!r}")

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class SyntheticItem:
    """One generated item in memory (CPU): what :func:`write_item` saves."""

    index: int
    images: np.ndarray  # [C, H, W, 3] uint8
    masks: np.ndarray  # [C, H, W] uint8 (0 / 255)
    uv_texture: Tensor  # [3, R, R] in [0, 1]
    uv_mask: Tensor  # [1, R, R] in {0, 1}
    pose: SMPLXPose  # one frame, body centred at the origin
    phenotype: Tensor  # [6]


@dataclass
class PosedScene:
    """Posed, centred bodies of a batch and their painted Gaussians (on the generator's device)."""

    posed_vertices: Tensor  # [B, V, 3], each body's bounding-box centre at the origin
    transforms: Tensor  # [B, J, 4, 4] skinning transforms (centring included)
    centre: Tensor  # [B, 3] the shift that was subtracted
    gaussians: Gaussians  # world-space, batched [B, N, ...]


@dataclass
class GenerationSummary:
    count: int
    seconds: float  # wall time of the whole run
    first_batch_seconds: float  # of which the first batch (warm-up: anny load, kernel compilation)
    first_batch_count: int
    train_index: Path
    val_index: Path

    @property
    def items_per_second(self) -> float:
        return self.count / max(self.seconds, 1e-9)

    @property
    def steady_items_per_second(self) -> float:
        """Throughput after the first batch (the whole run's when there is only one batch)."""
        if self.count <= self.first_batch_count:
            return self.items_per_second
        return (self.count - self.first_batch_count) / max(self.seconds - self.first_batch_seconds, 1e-9)


# --- cameras -----------------------------------------------------------------------------------

def ring_sizes(views: int, rings: int) -> list[int]:
    """Split ``views`` over ``rings`` as evenly as possible (earlier rings get the extra views)."""
    if views < 1 or rings < 1:
        raise ValueError(f"need at least one view and one ring, got {views} views, {rings} rings")
    rings = min(rings, views)
    return [views // rings + (1 if r < views % rings else 0) for r in range(rings)]


def camera_rig(views: int, size: int, elevations_deg: Sequence[float], radius: float, fovy: float) -> Camera:
    """Cameras on rings around the origin, like the release's rig: ring ``r`` at ``elevations_deg[r]``,
    its views evenly spaced in azimuth starting at the front (+Z) and turning towards +X."""
    eyes = []
    for r, n in enumerate(ring_sizes(views, len(elevations_deg))):
        el = math.radians(elevations_deg[r])
        az = torch.arange(n, dtype=torch.float64) * (2 * math.pi / n)
        eyes.append(torch.stack([math.cos(el) * torch.sin(az), torch.full_like(az, math.sin(el)),
                                 math.cos(el) * torch.cos(az)], dim=-1) * radius)
    eyes = torch.cat(eyes).float()
    k = intrinsics_from_fov(fovy, size, size)
    return Camera(look_at(eyes, (0.0, 0.0, 0.0)), k.expand(len(eyes), 3, 3).clone(), size, size)


# --- sampling ------------------------------------------------------------------------------------

def item_seed(seed: int, index: int, stream: int = 0) -> int:
    """A 63-bit seed for item ``index`` of dataset ``seed`` (``stream`` separates uses)."""
    return int(np.random.SeedSequence([seed, index, stream]).generate_state(1, dtype=np.uint64)[0] >> 1)


def preset_library() -> Tensor:
    """Base poses to perturb: the static presets plus walking and waving at several phases,
    as SMPL-X axis-angles ``[P, 55, 3]``."""
    poses = [fn() for name, fn in sorted(POSE_PRESETS.items()) if name not in ("walking", "waving")]
    poses += [walking(phase) for phase in (0.0, 0.25, 0.5, 0.75)]
    poses += [waving(phase) for phase in (0.0, 0.5)]
    return torch.cat([p.full_pose() for p in poses])


def sample_phenotype(rng: np.random.Generator, adult_fraction: float) -> np.ndarray:
    """anny phenotypes ``(gender, age, muscle, weight, height, proportions)`` in [0, 1]."""
    age = rng.uniform(0.5, 1.0) if rng.random() < adult_fraction else rng.uniform(0.15, 0.5)
    return np.array([rng.random(), age, rng.uniform(0.05, 0.95), rng.beta(2.0, 2.5), rng.random(), rng.random()],
                    dtype=np.float32)


def sample_pose(rng: np.random.Generator, library: Tensor, config: SyntheticConfig) -> Tensor:
    """A perturbed preset with a random yaw: SMPL-X axis-angles ``[55, 3]``."""
    base = library[rng.integers(len(library))].double()
    noise = np.zeros((55, 3))
    scale = np.array([BODY_NOISE_SCALE[n] for n in SMPLX_JOINT_NAMES[1:22]])[:, None]
    noise[1:22] = rng.normal(0.0, config.pose_noise, (21, 3)) * scale
    noise[25:55] = rng.normal(0.0, config.hand_noise, (30, 3))
    yaw = math.radians(rng.uniform(-config.max_yaw_deg, config.max_yaw_deg))
    noise[0] = (0.0, yaw, 0.0)
    return roma.rotvec_composition([torch.from_numpy(noise), base]).float()


# --- generator -------------------------------------------------------------------------------------

def _face_areas(vertices: Tensor, faces: Tensor) -> Tensor:
    """``vertices [B, V, 3]`` -> triangle areas ``[B, F]``."""
    tri = vertices[:, faces]
    return torch.linalg.cross(tri[:, :, 1] - tri[:, :, 0], tri[:, :, 2] - tri[:, :, 0]).norm(dim=-1) / 2


class SyntheticGenerator:
    """Makes synthetic items. Holds the body (anny; its raw module loads once, on first use), the
    UV templates, the painter's texel features and the camera rig, all on ``device``."""

    def __init__(self, config: Optional[SyntheticConfig] = None, device: Union[str, torch.device] = "cpu",
                 body: Optional[BodyModel] = None) -> None:
        self.config = config = config if config is not None else SyntheticConfig()
        self.device = torch.device(device)
        self.body = (body if body is not None else load_body_model("anny")).to(self.device)
        if self.body.name != "anny":
            raise ValueError(f"the synthetic generator needs the anny body (phenotypes), got '{self.body.name}'")
        self.render_template: UVTemplate = build_uv_template(self.body, config.render_uv_resolution)
        self.uv_template: UVTemplate = (self.render_template if config.uv_resolution == config.render_uv_resolution
                                        else build_uv_template(self.body, config.uv_resolution))
        self.features = TexelFeatures.build(self.render_template, self.body.joint_names, self.body.rest_joints, "anny")
        self.cameras = camera_rig(config.views, config.image_size, config.elevations_deg, config.radius,
                                  config.fovy).to(self.device)
        self.library = preset_library()
        self.shape_bank = None
        if config.shape_bank:
            from sigman.body.shape_bank import ShapeBank

            self.shape_bank = ShapeBank.load(config.shape_bank)
            self.body.attach_shape_bank(self.shape_bank)
        self._rest_areas = _face_areas(self.body.rest_vertices[None], self.body.faces)[0].clamp_min(1e-12)

    # -- one batch, in memory --

    def sample(self, indices: Sequence[int], seed: int) -> tuple[Tensor, SMPLXPose, AppearanceParams]:
        """Phenotypes ``[B, 6]``, poses (``B`` frames, not yet centred) and appearance of items."""
        phenotypes, poses = [], []
        for i in indices:
            rng = np.random.default_rng(item_seed(seed, i, 0))
            if self.shape_bank is not None:
                phenotypes.append(self.shape_bank.phenotypes[rng.integers(len(self.shape_bank))].numpy())
            else:
                phenotypes.append(sample_phenotype(rng, self.config.adult_fraction))
            poses.append(sample_pose(rng, self.library, self.config))
        phenotypes = torch.from_numpy(np.stack(phenotypes))
        pose = SMPLXPose.from_full_pose(torch.stack(poses))
        appearance = sample_appearance([item_seed(seed, i, 1) for i in indices], phenotypes, self.config.people)
        return phenotypes, pose, appearance

    @torch.no_grad()
    def make_batch(self, indices: Sequence[int], seed: int) -> list[SyntheticItem]:
        """Generate items ``indices`` of dataset ``seed`` (no file I/O)."""
        phenotypes, pose, appearance = self.sample(indices, seed)
        rest_vertices, rest_joints = self.body.rest(phenotypes.to(self.device))  # [B, V, 3], [B, J, 3]
        scene = self.pose_and_paint(rest_vertices.float(), rest_joints.float(), pose, appearance)
        pose.transl = pose.transl - scene.centre.cpu()
        rgb, masks = self.render_views(scene.gaussians, [self.cameras] * len(indices))
        texture, uv_mask = project_to_uv(self.uv_template, scene.posed_vertices, rgb.permute(0, 1, 4, 2, 3),
                                         self.cameras, masks.permute(0, 1, 4, 2, 3), self.config.projection)
        images = (rgb * 255 + 0.5).to(torch.uint8).cpu().numpy()
        mask_u8 = (masks[..., 0] * 255).to(torch.uint8).cpu().numpy()
        texture, uv_mask = texture.cpu(), uv_mask.cpu()
        return [SyntheticItem(index=idx, images=images[i], masks=mask_u8[i], uv_texture=texture[i],
                              uv_mask=uv_mask[i], pose=pose.frame(i), phenotype=phenotypes[i])
                for i, idx in enumerate(indices)]

    # -- reusable pieces of a batch (also used by sigman.data.stream) --

    def pose_and_paint(self, rest_vertices: Tensor, rest_joints: Tensor, pose: SMPLXPose,
                       appearance: AppearanceParams) -> "PosedScene":
        """Pose bodies ``rest_vertices [B, V, 3]`` / ``rest_joints [B, J, 3]`` (float32, on the device)
        with ``pose`` (``B`` frames), centre each on its bounding box and paint its Gaussians.
        ``pose`` itself is not changed: its ``transl`` minus ``centre`` is the centred pose."""
        transforms, _ = self.body.pose_transforms(pose.to(self.device), rest_joints)
        transforms = transforms.float()
        posed = lbs_points(rest_vertices, self.body.skin_weights, transforms)  # [B, V, 3]
        centre = 0.5 * (posed.min(dim=1).values + posed.max(dim=1).values)  # [B, 3]
        posed = posed - centre[:, None]
        transforms = transforms.clone()
        transforms[..., :3, 3] -= centre[:, None]
        canonical = self._canonical_gaussians(rest_vertices, paint(self.features, appearance))
        world = repose(canonical, transforms)  # [B, N, ...]
        world = world.with_(colors=shade(world.colors, normals_from_quats(world.quats), appearance))
        return PosedScene(posed_vertices=posed, transforms=transforms, centre=centre, gaussians=world)

    def render_views(self, gaussians: Gaussians, cameras: Sequence[Camera],
                     background: Optional[Union[Tensor, Sequence[float]]] = None) -> tuple[Tensor, Tensor]:
        """Render batched Gaussians ``[B, N, ...]``, item ``i`` into ``cameras[i]`` (one rasterizer call
        per item; every rig of the same view count and size): ``rgb [B, C, H, W, 3]`` clamped to
        [0, 1] and masks ``alpha > 0.5`` ``[B, C, H, W, 1]``. ``background``: the config's, or RGB
        ``[3]`` / per-view ``[B, C, 3]``."""
        bg = self.config.background if background is None else background
        rgb, alpha = [], []
        for i, cams in enumerate(cameras):
            g = Gaussians(gaussians.means[i], gaussians.quats[i], gaussians.scales[i], gaussians.opacities[i],
                          gaussians.colors[i])
            out = render(g, cams, background=bg[i] if torch.is_tensor(bg) and bg.dim() == 3 else bg)
            rgb.append(out.rgb)
            alpha.append(out.alpha)
        return torch.stack(rgb).clamp(0, 1), (torch.stack(alpha) > 0.5).float()

    def _canonical_gaussians(self, rest_vertices: Tensor, colors: Tensor) -> Gaussians:
        """:func:`~sigman.gaussians.surface_gaussians` on each body shape ``rest_vertices [B, V, 3]``
        with ``colors [B, N, 3]``; orientations follow this shape's normals and footprints its
        surface stretch (a heavier body spreads the same texels over more skin)."""
        t = self.render_template
        g = surface_gaussians(t, rest_vertices=rest_vertices)  # means [B, N, 3]
        normals = t.interpolate(vertex_normals(rest_vertices, self.body.faces))
        stretch = (_face_areas(rest_vertices, self.body.faces) / self._rest_areas).sqrt()[:, t.face_index]  # [B, N]
        b, n = g.means.shape[:2]
        return g.with_(quats=quat_from_normals(normals), scales=g.scales * stretch[..., None],
                       opacities=g.opacities.expand(b, n), colors=colors)

    # -- a dataset on disk --

    def generate(self, out_dir: Union[str, Path], count: int, seed: int = 0, val_fraction: float = 0.1,
                 progress: Optional[Callable[[int], None]] = None) -> GenerationSummary:
        """Write ``count`` items under ``out_dir/items/`` plus ``train.npy``, ``val.npy`` and
        ``synthetic_config.json``. ``progress(n)`` is called with the number of items just written."""
        out = Path(out_dir)
        (out / "items").mkdir(parents=True, exist_ok=True)
        calibration = json.dumps(layout.cameras_to_json(self.cameras.to("cpu")), indent=1)
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count}")
        start = time.perf_counter()
        first_batch = 0.0
        roots: list[Path] = []
        pending: deque[tuple[list[Future], int]] = deque()
        with ThreadPoolExecutor(max_workers=max(1, self.config.writer_threads)) as pool:
            for first in range(0, count, self.config.batch_size):
                indices = list(range(first, min(count, first + self.config.batch_size)))
                batch = self.make_batch(indices, seed)
                if first == 0:
                    first_batch = time.perf_counter() - start
                for item in batch:
                    root = out / "items" / f"{item.index:06d}"
                    roots.append(root)
                    pending.append((write_item(root, item, calibration, pool, self.config.jpeg_quality), 1))
                while len(pending) > 2 * self.config.batch_size:  # bound the memory held by queued images
                    self._finish(pending.popleft(), progress)
            while pending:
                self._finish(pending.popleft(), progress)
        seconds = time.perf_counter() - start
        train, val = layout.write_split(out, roots, val_fraction, seed)
        meta = {"seed": seed, "count": count, "val_fraction": val_fraction, "body": "anny",
                "config": self.config.to_json()}
        (out / "synthetic_config.json").write_text(json.dumps(meta, indent=1))
        return GenerationSummary(count=count, seconds=seconds, first_batch_seconds=first_batch,
                                 first_batch_count=min(count, self.config.batch_size), train_index=train, val_index=val)

    @staticmethod
    def _finish(entry: tuple[list[Future], int], progress: Optional[Callable[[int], None]]) -> None:
        futures, n = entry
        for f in futures:
            f.result()  # re-raises a failed write
        if progress is not None:
            progress(n)


def write_item(root: Path, item: SyntheticItem, calibration_json: str, pool: ThreadPoolExecutor,
               jpeg_quality: int = layout.JPEG_QUALITY) -> list[Future]:
    """Write one item in the seed layout (an existing folder ``root`` is replaced). The folders are
    made here; every file is written by a task on ``pool`` (returns their futures)."""
    if root.is_dir():
        shutil.rmtree(root)
    (root / layout.RGB_DIR).mkdir(parents=True)
    (root / layout.MASK_DIR).mkdir(parents=True)
    (root / layout.UV_DIR).mkdir(parents=True)

    def small_files() -> None:
        (root / layout.CAMERA_FILE).write_text(calibration_json)
        layout.save_item_pose(root / layout.POSE_FILE, item.pose, item.phenotype)
        layout.save_uv_maps(root, item.uv_texture, item.uv_mask)

    futures = [pool.submit(small_files)]
    for v in range(item.images.shape[0]):
        name = layout.view_name(v)
        futures.append(pool.submit(layout.encode_rgb, layout.rgb_path(root, name), item.images[v], jpeg_quality))
        futures.append(pool.submit(layout.encode_gray, layout.mask_path(root, name), item.masks[v]))
    return futures
