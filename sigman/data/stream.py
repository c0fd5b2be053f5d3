"""Synthetic subjects made on the device inside a training loop: new people every step, nothing stored.

:class:`SyntheticStream` wraps a :class:`~sigman.data.synthetic.SyntheticGenerator` and returns, for
``batch(step, rank, batch_size)``, a batch dict on the generator's device with the keys, shapes and
conventions of a collated :class:`~sigman.data.dataset.SeedDataset` batch (see that module's
docstring), plus each item's body ``rest_vertices [B, V, 3]`` and ``rest_joints [B, J, 3]``:

- **body**: with a shape bank (``SyntheticConfig.shape_bank``), a random convex combination of
  ``bank_mix`` bank shapes (anny's blendshapes are linear, so a mix of bodies is a plausible body;
  the phenotype is the same mix); otherwise an anny phenotype sampled as the generator does;
- **pose and appearance**: :func:`~sigman.data.synthetic.sample_pose` and
  :func:`~sigman.data.appearance.sample_appearance`, posed, centred and painted by
  :meth:`SyntheticGenerator.pose_and_paint`;
- **input views**: ``num_input_views`` cameras evenly around the body starting at its front (the
  seed layout's ``front_orbit``, here exactly at those directions), on the rig's 0-degree ring,
  rendered at ``render_size`` and resized to ``input_size`` (``input_Ks`` scaled to match);
- **target views**: ``num_target_views`` cameras on a random ring of the rig (its elevations,
  radius and field of view) at a random azimuth, at ``render_size``;
- **partial UV texture**: :func:`~sigman.data.uv_projection.project_to_uv` from
  ``projection_views`` views on the rig (like the on-disk data's projection from all its views);
- **condition** (the DiT's photo): the front view rendered as a *photo* with variation (camera
  distance / field of view / azimuth / elevation in ranges, a random background colour behind the
  person, a mask with realistic errors: edges eroded or dilated by a few pixels, bites missing and
  background blobs leaking at the silhouette, a jittered crop), then cropped and centred on white
  exactly as ``SeedDataset`` does (:func:`~sigman.data.dataset.square_crop`).
  :meth:`StreamConfig.without_photo_variation` gives the plain front-view condition.

Everything random comes from the stream's seed and each item's *key*: item ``i`` of
``batch(step, rank, ...)`` is key ``(0, step, rank, i)``, so it does not depend on the batch size
and a resumed run sees the same batches. :meth:`SyntheticStream.items` makes items for any keys
(the DiT's latent pool and the fixed validation items use their own key families). Random numbers
are drawn on the CPU (numpy, per item) and moved to the device once per batch; the per-step path
has a single device-to-host read (the condition crop boxes).
"""

from __future__ import annotations

import dataclasses
import math
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from sigman.data.appearance import sample_appearance
from sigman.data.dataset import facing_yaw, square_crop
from sigman.data.synthetic import SyntheticConfig, SyntheticGenerator, camera_rig, sample_phenotype, sample_pose
from sigman.data.uv_projection import project_to_uv
from sigman.pose import SMPLXPose
from sigman.render import Camera, RasterSettings, gsplat_available, intrinsics_from_fov, look_at
from sigman.uv import build_uv_template

TRAIN_KEY = 0  # key family of batch(step, rank, i)
POOL_KEY = 1  # the DiT's pool of subjects: (POOL_KEY, rank, n)
VAL_KEY = 2  # fixed validation items: (VAL_KEY, i)


@dataclass
class StreamConfig:
    """What a streamed batch holds and how the condition photo varies (sizes in pixels)."""

    seed: int = 0
    num_input_views: int = 4  # V, front orbit
    input_size: int = 128  # input views are resized to this (the VAE's image size)
    num_target_views: int = 4  # V' (0: none, e.g. for the DiT)
    render_size: int = 256  # every view is rendered at this size; the target views keep it
    projection_views: int = 12  # views on the rig the partial UV texture is projected from
    uv_resolution: Optional[int] = None  # R of uv_texture; None: the generator's uv_resolution
    bank_mix: int = 2  # bank shapes mixed into one body (1: the bank's shapes as they are)
    prefetch: bool = True  # batch(step) samples step + 1's random numbers on a background CPU thread
    batched_render: bool = True  # CUDA: one gsplat call for all items (else one per item)
    # --- the condition photo (condition_size 0: no condition image) ---
    condition_size: int = 512  # Sc
    condition_render_size: int = 512  # the photo is rendered at this size, then cropped
    condition_distance: tuple[float, float] = (0.8, 1.4)  # x the rig radius (closer: clamped to fit)
    condition_fov: tuple[float, float] = (0.75, 1.15)  # x the rig's field of view
    condition_azimuth_deg: float = 10.0  # off the body's front, uniform in [-a, a]
    condition_elevation_deg: float = 5.0  # uniform in [-e, e]
    background_prob: float = 0.5  # a random colour behind the person (visible where the mask errs)
    mask_edge_px: int = 2  # mask eroded / dilated by U{-k..k} pixels
    mask_error_prob: float = 0.5  # chance of each blob below
    mask_holes: int = 2  # bites missing from the silhouette (up to)
    mask_leaks: int = 2  # background blobs leaking in at the silhouette (up to)
    mask_blob_radius: tuple[float, float] = (0.01, 0.035)  # x the person's height in the photo
    crop_scale: float = 0.1  # crop side x U[1, 1 + s]
    crop_shift: float = 0.04  # crop centre moved by U[-s, s] sides

    def without_photo_variation(self) -> "StreamConfig":
        """The same config with a plain condition: the front view at the rig's distance and field of
        view, on white, its true mask, the crop of ``SeedDataset``."""
        return dataclasses.replace(self, condition_distance=(1.0, 1.0), condition_fov=(1.0, 1.0),
                                   condition_azimuth_deg=0.0, condition_elevation_deg=0.0, background_prob=0.0,
                                   mask_edge_px=0, mask_error_prob=0.0, crop_scale=0.0, crop_shift=0.0)


def key_seed(seed: int, key: Sequence[int], use: int) -> int:
    """A 63-bit seed for item ``key`` of stream ``seed`` (``use`` separates the draws of one item)."""
    parts = [int(seed) & 0xFFFFFFFF, *(int(k) & 0xFFFFFFFF for k in key), int(use), len(key), 0x5EED]
    return int(np.random.SeedSequence(parts).generate_state(1, dtype=np.uint64)[0] >> 1)


def _eyes(azimuth: Tensor, elevation: Tensor, distance: Tensor) -> Tensor:
    """Camera centres ``[..., 3]`` around the origin; azimuth 0 is +Z, turning towards +X."""
    ce = torch.cos(elevation)
    return torch.stack([ce * torch.sin(azimuth), torch.sin(elevation), ce * torch.cos(azimuth)], dim=-1) * distance[..., None]


def _box(mask: Tensor) -> Tensor:
    """Bounding boxes ``[B, 4]`` long ``(y0, y1, x0, x1)`` of ``mask [B, 1, H, W] > 0.5`` (the whole
    image where empty), without a host sync."""
    fg = mask[:, 0] > 0.5
    h, w = fg.shape[-2:]
    rows, cols = fg.any(2), fg.any(1)  # [B, H], [B, W]
    y0 = rows.float().argmax(1)
    y1 = h - rows.flip(1).float().argmax(1)
    x0 = cols.float().argmax(1)
    x1 = w - cols.flip(1).float().argmax(1)
    empty = ~rows.any(1)
    box = torch.stack([y0, y1, x0, x1], dim=1)
    full = torch.tensor([0, h, 0, w], device=mask.device)
    return torch.where(empty[:, None], full, box)


def _morph(mask: Tensor, pixels: Tensor, max_px: int) -> Tensor:
    """Dilate (``pixels > 0``) or erode (``< 0``) each item's ``mask [B, 1, H, W]`` by ``|pixels [B]|``."""
    if max_px <= 0:
        return mask
    grown, shrunk = [mask], [mask]
    for _ in range(max_px):
        grown.append(F.max_pool2d(grown[-1], 3, stride=1, padding=1))
        shrunk.append(-F.max_pool2d(-shrunk[-1], 3, stride=1, padding=1))
    stack = torch.stack(shrunk[::-1] + grown[1:], dim=1)  # [B, 2k+1, 1, H, W]: -k .. k
    index = (pixels + max_px).clamp(0, 2 * max_px).view(-1, 1, 1, 1, 1).expand(-1, 1, *mask.shape[1:])
    return stack.gather(1, index)[:, 0]


def _silhouette_blobs(mask: Tensor, u: Tensor, radius: Tensor, active: Tensor) -> Tensor:
    """Discs ``[B, 1, H, W]`` (union over ``M`` blobs) centred at silhouette pixels of ``mask``: blob
    ``m`` at the ``u[b, m]`` quantile (in [0, 1)) of the boundary pixels, radius ``radius [B, M]``
    pixels, present where ``active [B, M]``."""
    b, _, h, w = mask.shape
    edge = (F.max_pool2d(mask, 3, stride=1, padding=1) - mask).flatten(1)  # [B, HW] in {0, 1}
    cdf = edge.cumsum(1)
    total = cdf[:, -1:]
    pick = torch.searchsorted(cdf.contiguous(), (u * total).contiguous(), right=True).clamp_max(h * w - 1)  # [B, M]
    cy, cx = (pick // w).float(), (pick % w).float()
    yy = torch.arange(h, device=mask.device, dtype=torch.float32).view(1, 1, h, 1)
    xx = torch.arange(w, device=mask.device, dtype=torch.float32).view(1, 1, 1, w)
    inside = (yy - cy[..., None, None]).square() + (xx - cx[..., None, None]).square() <= radius[..., None, None].square()
    inside = inside & active[..., None, None] & (total[..., None, None] > 0)
    return inside.any(1, keepdim=True).float()


class SyntheticStream:
    """Batches of freshly generated subjects on the generator's device (see the module docstring)."""

    def __init__(self, generator: Union[SyntheticGenerator, SyntheticConfig, None] = None,
                 config: Optional[StreamConfig] = None, device: Union[str, torch.device, None] = None,
                 body=None) -> None:
        if not isinstance(generator, SyntheticGenerator):
            generator = SyntheticGenerator(generator, device=device or "cpu", body=body)
        self.generator = gen = generator
        self.config = cfg = config if config is not None else StreamConfig()
        self.device = gen.device
        if cfg.num_input_views < 1:
            raise ValueError(f"num_input_views must be at least 1, got {cfg.num_input_views}")
        if cfg.bank_mix < 1:
            raise ValueError(f"bank_mix must be at least 1, got {cfg.bank_mix}")
        g = gen.config
        self.uv_template = (gen.uv_template if cfg.uv_resolution in (None, gen.uv_template.resolution)
                            else build_uv_template(gen.body, cfg.uv_resolution).to(self.device))
        self.projection_cameras = camera_rig(cfg.projection_views, cfg.render_size, g.elevations_deg, g.radius,
                                             g.fovy).to(self.device)
        self.K = intrinsics_from_fov(g.fovy, cfg.render_size, cfg.render_size).to(self.device)
        bank = gen.shape_bank
        self._executor: Optional[ThreadPoolExecutor] = None
        self._ahead: Optional[tuple[list, Future]] = None
        self.bank = None if bank is None else (bank.phenotypes.float(), bank.rest_vertices.to(self.device),
                                               bank.rest_joints.to(self.device))  # phenotypes stay on the CPU

    # -- sampling (CPU, per item) --

    def _sample(self, keys: Sequence[Sequence[int]]) -> dict:
        cfg, g = self.config, self.generator.config
        seed = cfg.seed
        rings = len(g.elevations_deg)
        k_bank = 0 if self.bank is None else self.bank[0].shape[0]
        m = min(cfg.bank_mix, max(k_bank, 1))
        mh, ml = cfg.mask_holes, cfg.mask_leaks
        out: dict[str, list] = {k: [] for k in ("pose", "phenotype", "bank_index", "bank_weight", "target_ring",
                                                "target_azimuth", "cond", "background", "use_background", "edge",
                                                "blob_u", "blob_r", "blob_on", "crop")}
        for key in keys:
            rng = np.random.default_rng(key_seed(seed, key, 0))
            out["pose"].append(sample_pose(rng, self.generator.library, g))
            if self.bank is not None:
                idx = rng.choice(k_bank, size=m, replace=False)
                out["bank_index"].append(idx)
                out["bank_weight"].append(rng.dirichlet(np.ones(m)) if m > 1 else np.ones(1))
            else:
                out["phenotype"].append(sample_phenotype(rng, g.adult_fraction))
            view = np.random.default_rng(key_seed(seed, key, 2))
            out["target_ring"].append(view.integers(rings, size=cfg.num_target_views))
            out["target_azimuth"].append(view.uniform(0, 2 * math.pi, size=cfg.num_target_views))
            photo = np.random.default_rng(key_seed(seed, key, 3))
            out["cond"].append([photo.uniform(*cfg.condition_distance), photo.uniform(*cfg.condition_fov),
                                photo.uniform(-1, 1) * math.radians(cfg.condition_azimuth_deg),
                                photo.uniform(-1, 1) * math.radians(cfg.condition_elevation_deg)])
            out["use_background"].append(photo.random() < cfg.background_prob)
            out["background"].append(photo.uniform(0, 1, size=3))
            out["edge"].append(photo.integers(-cfg.mask_edge_px, cfg.mask_edge_px + 1) if cfg.mask_edge_px > 0 else 0)
            out["blob_u"].append(photo.random(mh + ml))
            out["blob_r"].append(photo.uniform(*cfg.mask_blob_radius, size=mh + ml))
            out["blob_on"].append(photo.random(mh + ml) < cfg.mask_error_prob)
            out["crop"].append([photo.uniform(0, 1) * cfg.crop_scale, photo.uniform(-1, 1) * cfg.crop_shift,
                                photo.uniform(-1, 1) * cfg.crop_shift])
        out["pose"] = SMPLXPose.from_full_pose(torch.stack(out["pose"]))
        if self.bank is not None:
            out["bank_index"] = torch.from_numpy(np.stack(out["bank_index"]))  # [B, M]
            out["bank_weight"] = torch.from_numpy(np.stack(out["bank_weight"])).float()  # [B, M]
            out["phenotype"] = (out["bank_weight"][..., None] * self.bank[0][out["bank_index"]]).sum(1)  # the same mix
        else:
            out["phenotype"] = torch.from_numpy(np.stack(out["phenotype"]))
        seeds = [key_seed(seed, k, 1) for k in keys]
        people = getattr(g, "people", None)  # SyntheticConfig.people ("basic" | "rich" | "mixed") where the generator has it
        out["appearance"] = (sample_appearance(seeds, out["phenotype"]) if people is None
                             else sample_appearance(seeds, out["phenotype"], people))
        return out

    def _sampled(self, keys: list[tuple[int, ...]]) -> dict:
        """:meth:`_sample` of ``keys``, from the background thread when it has them ready."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead[0] == keys:
            return ahead[1].result()
        return self._sample(keys)

    # -- batches --

    def batch(self, step: int, rank: int = 0, batch_size: int = 1) -> dict:
        """Training batch ``step`` of process ``rank``: items ``(TRAIN_KEY, step, rank, i)``, ``i < batch_size``.
        With ``prefetch`` the CPU sampling of batch ``step + 1`` then starts on a background thread."""
        return self.items([(TRAIN_KEY, step, rank, i) for i in range(batch_size)],
                          next_keys=[(TRAIN_KEY, step + 1, rank, i) for i in range(batch_size)])

    @torch.no_grad()
    def items(self, keys: Sequence[Sequence[int]], next_keys: Optional[Sequence[Sequence[int]]] = None) -> dict:
        """A batch of the items ``keys`` (tuples of ints), in that order, on the device. ``next_keys``:
        the keys of the next call, sampled ahead on a background thread (``prefetch``)."""
        cfg, gen, dev = self.config, self.generator, self.device
        g = gen.config
        keys = [tuple(int(x) for x in k) for k in keys]
        b = len(keys)
        s = self._sampled(keys)
        if next_keys is not None and cfg.prefetch:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stream-sampling")
            nk = [tuple(int(x) for x in k) for k in next_keys]
            self._ahead = (nk, self._executor.submit(self._sample, nk))
        pose = s["pose"]

        # body shapes
        phenotypes = s["phenotype"].to(dev)
        if self.bank is not None:
            _, verts, joints = self.bank
            idx, w = s["bank_index"].to(dev), s["bank_weight"].to(dev)
            rest_vertices = torch.einsum("bm,bmvc->bvc", w, verts[idx].float())
            rest_joints = torch.einsum("bm,bmjc->bjc", w, joints[idx].float())
        else:
            rest_vertices, rest_joints = gen.body.rest(phenotypes)
            rest_vertices, rest_joints = rest_vertices.float(), rest_joints.float()
        scene = gen.pose_and_paint(rest_vertices, rest_joints, pose, s["appearance"].to(dev))

        # cameras: inputs (front orbit), targets (random on the rig), projection (fixed rig)
        yaw = facing_yaw(pose.global_orient).to(dev)  # [B]
        v, vt, size = cfg.num_input_views, cfg.num_target_views, cfg.render_size
        zero = torch.zeros(b, v, device=dev)
        in_az = yaw[:, None] + torch.arange(v, device=dev) * (2 * math.pi / v)
        eyes = [_eyes(in_az, zero, zero + g.radius)]
        if vt > 0:
            elev = torch.tensor(g.elevations_deg, device=dev).mul(math.pi / 180)
            ring = torch.from_numpy(np.stack(s["target_ring"])).to(dev)
            az = torch.from_numpy(np.stack(s["target_azimuth"])).float().to(dev)
            eyes.append(_eyes(az, elev[ring], torch.full_like(az, g.radius)))
        eyes = torch.cat(eyes, dim=1)  # [B, V + V', 3]
        viewmats = look_at(eyes.reshape(-1, 3)).view(b, v + vt, 4, 4)
        proj = self.projection_cameras
        all_views = torch.cat([viewmats, proj.viewmats.expand(b, -1, -1, -1)], dim=1)  # [B, C, 4, 4]
        rgb, masks = self._render(scene.gaussians, all_views, self.K.expand(b, all_views.shape[1], 3, 3), size)
        rgb, masks = rgb.permute(0, 1, 4, 2, 3), masks.permute(0, 1, 4, 2, 3)  # [B, C, 3|1, S, S]
        texture, uv_mask = project_to_uv(self.uv_template, scene.posed_vertices, rgb[:, v + vt:], proj,
                                         masks[:, v + vt:], g.projection)

        ks = self.K.expand(b, v + vt, 3, 3)
        in_rgb, in_mask, in_k = rgb[:, :v], masks[:, :v], ks[:, :v]
        if cfg.input_size != size:
            kw = dict(size=(cfg.input_size, cfg.input_size), mode="bilinear", antialias=True, align_corners=False)
            in_rgb = F.interpolate(in_rgb.flatten(0, 1), **kw).view(b, v, 3, cfg.input_size, cfg.input_size)
            in_mask = F.interpolate(in_mask.flatten(0, 1), **kw).view(b, v, 1, cfg.input_size, cfg.input_size)
            in_k = in_k * torch.tensor([[cfg.input_size / size], [cfg.input_size / size], [1.0]], device=dev)
        transl = pose.transl.to(dev) - scene.centre
        go = pose.to(dev)
        batch = {
            "input_rgb": in_rgb.contiguous(), "input_mask": in_mask.contiguous(), "input_viewmats": viewmats[:, :v],
            "input_Ks": in_k.contiguous(),
            "target_rgb": rgb[:, v:v + vt].contiguous(), "target_mask": masks[:, v:v + vt].contiguous(),
            "target_viewmats": viewmats[:, v:v + vt], "target_Ks": ks[:, v:v + vt].contiguous(),
            "input_view_ids": torch.arange(v, device=dev).expand(b, v), "target_view_ids":
                torch.arange(v, v + vt, device=dev).expand(b, vt), "front_view": torch.zeros(b, dtype=torch.long, device=dev),
            "uv_texture": texture, "uv_mask": uv_mask,
            "pose": {"global_orient": go.global_orient, "body_pose": go.body_pose, "jaw_pose": go.jaw_pose,
                     "leye_pose": go.leye_pose, "reye_pose": go.reye_pose, "left_hand_pose": go.left_hand_pose,
                     "right_hand_pose": go.right_hand_pose, "transl": transl,
                     "betas": torch.zeros(b, 10, device=dev), "expression": torch.zeros(b, 10, device=dev)},
            "phenotype": phenotypes.float(), "has_phenotype": torch.ones(b, dtype=torch.bool, device=dev),
            "item": [f"stream:{cfg.seed}:" + ":".join(map(str, k)) for k in keys],
            "rest_vertices": rest_vertices, "rest_joints": rest_joints,
        }
        if cfg.condition_size > 0:
            batch["condition"] = self._condition(scene, yaw, s)
        return batch

    def _render(self, gaussians, viewmats: Tensor, ks: Tensor, size: int,
                background: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        """Item ``i``'s Gaussians into its cameras ``viewmats [B, C, 4, 4]``, ``ks [B, C, 3, 3]``:
        ``rgb [B, C, S, S, 3]`` in [0, 1], masks ``alpha > 0.5`` ``[B, C, S, S, 1]``. On CUDA with
        ``batched_render`` one gsplat call renders every item; otherwise one call per item
        (:meth:`SyntheticGenerator.render_views`). ``background``: ``[B, 1 | C, 3]`` or the generator's."""
        b, c = viewmats.shape[:2]
        gen = self.generator
        if self.config.batched_render and self.device.type == "cuda" and gsplat_available():
            from gsplat import rasterization

            bg = (torch.tensor(gen.config.background, device=self.device).expand(b, c, 3) if background is None
                  else background.expand(b, c, 3))
            st = RasterSettings()
            f32 = lambda t: t.float().contiguous()
            rgb, alpha, _ = rasterization(
                f32(gaussians.means), f32(gaussians.quats), f32(gaussians.scales), f32(gaussians.opacities),
                f32(gaussians.colors), f32(viewmats), f32(ks), size, size, near_plane=st.near_plane,
                far_plane=st.far_plane, radius_clip=st.radius_clip, eps2d=st.eps2d, packed=False,
                rasterize_mode="classic", render_mode="RGB", backgrounds=f32(bg))
            return rgb.clamp(0, 1), (alpha > 0.5).float()
        cams = [Camera(viewmats[i], ks[i], size, size) for i in range(b)]
        bg = None if background is None else background.expand(b, c, 3)
        return gen.render_views(gaussians, cams, bg)

    # -- the condition photo --

    def _condition(self, scene, yaw: Tensor, s: dict) -> Tensor:
        """``[B, 3, Sc, Sc]`` in [0, 1]: the front view as a varied photo, cropped as ``SeedDataset`` does."""
        cfg, gen, dev = self.config, self.generator, self.device
        g = gen.config
        b, size = yaw.shape[0], cfg.condition_render_size
        p = torch.tensor(np.asarray(s["cond"], dtype=np.float32), device=dev)  # [B, 4]
        distance, fov = p[:, 0] * g.radius, (p[:, 1] * g.fovy).clamp(0.05, 3.0)
        # a camera closer than the body needs backs off (at most to the rig's distance)
        half = 0.5 * (scene.posed_vertices.amax(1) - scene.posed_vertices.amin(1))  # [B, 3]
        fit = half[:, :2].amax(1) / (0.92 * torch.tan(fov / 2)) + half[:, [0, 2]].amax(1)
        distance = torch.maximum(distance, torch.minimum(fit, torch.full_like(fit, g.radius)))
        eye = _eyes(yaw + p[:, 2], p[:, 3], distance)  # [B, 3]
        vm = look_at(eye)  # [B, 4, 4]
        f = 0.5 * size / torch.tan(fov / 2)
        k = torch.zeros(b, 3, 3, device=dev)
        k[:, 0, 0], k[:, 1, 1], k[:, 0, 2], k[:, 1, 2], k[:, 2, 2] = f, f, 0.5 * size, 0.5 * size, 1.0
        use_bg = torch.tensor(s["use_background"], device=dev)[:, None]
        colour = torch.tensor(np.asarray(s["background"], dtype=np.float32), device=dev)
        white = torch.tensor(g.background, device=dev, dtype=torch.float32).expand(b, 3)
        bg = torch.where(use_bg, colour, white)[:, None]  # [B, 1, 3]
        rgb, mask = self._render(scene.gaussians, vm[:, None], k[:, None], size, bg)
        rgb, mask = rgb[:, 0].permute(0, 3, 1, 2), mask[:, 0].permute(0, 3, 1, 2)  # [B, 3, H, W], [B, 1, H, W]

        # a segmentation with errors
        mask = _morph(mask, torch.tensor(s["edge"], device=dev), cfg.mask_edge_px)
        n_blobs = cfg.mask_holes + cfg.mask_leaks
        if n_blobs > 0 and cfg.mask_error_prob > 0:
            box = _box(mask)
            height = (box[:, 1] - box[:, 0]).float()[:, None]
            u = torch.tensor(np.asarray(s["blob_u"], dtype=np.float32), device=dev)
            r = torch.tensor(np.asarray(s["blob_r"], dtype=np.float32), device=dev) * height
            on = torch.tensor(np.asarray(s["blob_on"]), device=dev)
            mh = cfg.mask_holes
            holes = _silhouette_blobs(mask, u[:, :mh], r[:, :mh], on[:, :mh])
            leaks = _silhouette_blobs(mask, u[:, mh:], r[:, mh:], on[:, mh:])
            mask = torch.maximum(mask * (1 - holes), leaks)
        boxes = _box(mask).tolist()  # the one host read of a batch
        crop = s["crop"]
        return torch.stack([square_crop(rgb[i], mask[i], tuple(boxes[i]), cfg.condition_size,
                                        scale=1.0 + crop[i][0], shift=(crop[i][1], crop[i][2]))
                            for i in range(b)])
