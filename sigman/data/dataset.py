"""A torch ``Dataset`` over items in the seed layout (:mod:`sigman.data.layout`).

Each sample (``V`` input views, ``V'`` target views, images resized to ``S x S``) is a dict:

====================  ======================  ==================================================
key                   shape                   meaning
====================  ======================  ==================================================
``input_rgb``         ``[V, 3, S, S]``        input views, RGB in [0, 1] (white background)
``input_mask``        ``[V, 1, S, S]``        their foreground masks in [0, 1]
``input_viewmats``    ``[V, 4, 4]``           world-to-camera (OpenCV axes)
``input_Ks``          ``[V, 3, 3]``           intrinsics in pixels of the ``S x S`` images
``target_*``          ``[V', ...]``           the same for the supervision views
``input_view_ids``    ``[V]`` long            indices into the item's calibrated views
``target_view_ids``   ``[V']`` long
``front_view``        ``[]`` long             the view facing the body's front
``condition``         ``[3, Sc, Sc]``         the front view cropped to the person, centred on a
                                              white square (the DiT's condition image)
``uv_texture``        ``[3, R, R]``           the partial UV texture in [0, 1] (0 where uncovered)
``uv_mask``           ``[1, R, R]``           its coverage in {0, 1}
``pose``              dict                    SMPL-X: ``global_orient [3]``, ``body_pose [21, 3]``,
                                              ``jaw_pose``/``leye_pose``/``reye_pose [3]``,
                                              ``left_hand_pose``/``right_hand_pose [15, 3]``,
                                              ``transl [3]``, ``betas [num_betas]``, ``expression [10]``
``phenotype``         ``[6]``                 anny phenotypes (0.5 each when the item has none)
``has_phenotype``     ``[]`` bool
``item``              str                     the item folder
====================  ======================  ==================================================

Input views (``input_views="front_orbit"``) are the views closest to ``V`` directions evenly spread
around the body, starting at its front (from the pose's global orientation and the cameras' common
target), like the release's fixed input views; ``"random"`` picks them at random. Target views are
drawn at random from the rest. Everything random comes from a generator seeded by
``(seed, epoch, index)`` (``epoch`` only when ``training``), so a sample is reproducible.

Broken items never stop an epoch: ``validate=True`` drops the items :func:`validate_dataset` flags,
up front, with one warning; an item that still fails to load is skipped with a warning and another
item is returned in its place.
"""

from __future__ import annotations

import json
import math
import os
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional, Union

import numpy as np
import roma
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from sigman.data import layout
from sigman.pose import SMPLXPose

LOAD_ERRORS = (OSError, ValueError, KeyError, IndexError, RuntimeError, EOFError, zipfile.BadZipFile,
               json.JSONDecodeError)


@dataclass
class DatasetConfig:
    """What a sample holds (see the module docstring)."""

    index: Union[str, os.PathLike]  # an index .npy (train.npy / val.npy)
    image_size: int = 512  # S: views are resized to S x S
    num_input_views: int = 4  # V
    num_target_views: int = 4  # V'
    input_views: Literal["front_orbit", "random"] = "front_orbit"
    condition_size: int = 512  # Sc
    uv_resolution: Optional[int] = None  # R: resize the UV maps (None: as stored)
    num_betas: int = 10
    seed: int = 0
    training: bool = True  # targets (and random inputs) change with the epoch
    validate: bool = True  # check every item when the dataset is built
    max_retries: int = 20  # other items tried when one fails to load


# --- geometry helpers ------------------------------------------------------------------------

def camera_centres(viewmats: Tensor) -> Tensor:
    """``viewmats [C, 4, 4]`` -> camera centres ``[C, 3]``."""
    r, t = viewmats[:, :3, :3], viewmats[:, :3, 3:]
    return -(r.transpose(-1, -2) @ t)[..., 0]


def subject_centre(viewmats: Tensor) -> Tensor:
    """The point closest (least squares) to every camera's optical axis: where the rig looks. ``[3]``."""
    c = camera_centres(viewmats).double()
    d = viewmats[:, 2, :3].double()  # forward axes
    proj = torch.eye(3, dtype=torch.float64) - d[:, :, None] * d[:, None, :]  # [C, 3, 3]
    a, b = proj.sum(0), (proj @ c[..., None]).sum(0)
    return (torch.linalg.pinv(a) @ b)[:, 0].float()


def facing_yaw(global_orient: Tensor) -> Tensor:
    """Azimuth ``[B]`` (0 at +Z, turning towards +X) of the horizontal direction bodies face: their
    +Z turned by ``global_orient [B, 3]``; +Z for a body lying face up or down."""
    forward = roma.rotvec_to_rotmat(global_orient.double())[..., :, 2]
    yaw = torch.atan2(forward[..., 0], forward[..., 2])
    flat = forward[..., [0, 2]].norm(dim=-1) < 1e-6
    return torch.where(flat, torch.zeros_like(yaw), yaw).float()


def facing_direction(pose: SMPLXPose) -> Tensor:
    """Horizontal unit vector the body faces (its +Z turned by ``global_orient``). ``[3]``."""
    yaw = facing_yaw(pose.global_orient[:1])[0]
    return torch.stack([torch.sin(yaw), torch.zeros_like(yaw), torch.cos(yaw)])


def orbit_views(viewmats: Tensor, facing: Tensor, count: int) -> list[int]:
    """``count`` distinct views closest to directions spread evenly around the subject from ``facing``
    (turning about +Y towards the body's left); the first is the front view."""
    centre = subject_centre(viewmats)
    dirs = camera_centres(viewmats) - centre
    dirs = dirs / dirs.norm(dim=-1, keepdim=True).clamp_min(1e-9)
    chosen: list[int] = []
    for k in range(min(count, len(viewmats))):
        a = 2 * math.pi * k / count
        target = torch.tensor([facing[0] * math.cos(a) + facing[2] * math.sin(a), 0.0,
                               -facing[0] * math.sin(a) + facing[2] * math.cos(a)])
        score = dirs @ target
        if chosen:
            score[chosen] = -math.inf
        chosen.append(int(score.argmax()))
    return chosen


def condition_image(rgb: Tensor, mask: Tensor, size: int) -> Tensor:
    """Crop ``rgb [3, H, W]`` to the bounding box of ``mask [1, H, W] > 0.5``, centre it on a white
    square (background outside the mask whitened too), resize to ``[3, size, size]``."""
    fg = mask[0] > 0.5
    if not bool(fg.any()):
        return F.interpolate(rgb[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
    rows, cols = torch.nonzero(fg.any(1))[:, 0], torch.nonzero(fg.any(0))[:, 0]
    return square_crop(rgb, mask, (int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1), size)


def square_crop(rgb: Tensor, mask: Tensor, box: tuple[int, int, int, int], size: int, scale: float = 1.0,
                shift: tuple[float, float] = (0.0, 0.0)) -> Tensor:
    """The part of :func:`condition_image` after the bounding box ``box = (y0, y1, x0, x1)``: the box's
    pixels composited on white (``rgb * mask + 1 - mask``) on a white square of side ``max(h, w) *
    scale``, centred and then moved by ``shift = (dy, dx)`` square sides (what falls outside is cut),
    resized to ``[3, size, size]``. ``scale=1, shift=(0, 0)`` is :func:`condition_image`'s crop."""
    y0, y1, x0, x1 = box
    crop = rgb[:, y0:y1, x0:x1] * mask[:, y0:y1, x0:x1] + (1 - mask[:, y0:y1, x0:x1])
    h, w = y1 - y0, x1 - x0
    side = max(h, w) if scale == 1.0 else max(1, int(round(max(h, w) * scale)))
    square = torch.ones(3, side, side, dtype=rgb.dtype, device=rgb.device)
    oy = (side - h) // 2 + int(round(shift[0] * side))
    ox = (side - w) // 2 + int(round(shift[1] * side))
    sy0, sx0, sy1, sx1 = max(0, oy), max(0, ox), min(side, oy + h), min(side, ox + w)
    if sy1 > sy0 and sx1 > sx0:
        square[:, sy0:sy1, sx0:sx1] = crop[:, sy0 - oy:sy1 - oy, sx0 - ox:sx1 - ox]
    return F.interpolate(square[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0].clamp(0, 1)


def resize_uv(texture: Tensor, mask: Tensor, resolution: int) -> tuple[Tensor, Tensor]:
    """Resize a partial UV map (``[3, R, R]``, ``[1, R, R]``) without bleeding uncovered black in."""
    if texture.shape[-1] == resolution:
        return texture, mask
    kw = dict(size=(resolution, resolution), mode="bilinear", antialias=True, align_corners=False)
    weighted = F.interpolate((texture * mask)[None], **kw)[0]
    coverage = F.interpolate(mask[None], **kw)[0]
    out_mask = (coverage > 0.5).float()
    return weighted / coverage.clamp_min(1e-6) * out_mask, out_mask


def _sample_seed(seed: int, epoch: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1, dtype=np.uint64)[0] >> 1)


# --- dataset -----------------------------------------------------------------------------------

class SeedDataset(Dataset):
    """Items listed by an index ``.npy``; see the module docstring for what a sample holds."""

    def __init__(self, config: DatasetConfig) -> None:
        self.config = config
        items = layout.load_index(config.index)
        if config.validate:
            report = layout.validate_dataset(items)
            if report.bad:
                warnings.warn(f"{config.index}: dropping bad items: {report.summary()}", stacklevel=2)
            items = report.good
        if not items:
            raise ValueError(f"{config.index} lists no usable item")
        self.items: list[Path] = items
        self.epoch = 0
        self._bad: set[int] = set()

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        """Draw new target views (and random inputs) for ``epoch`` (training mode)."""
        self.epoch = int(epoch)

    def __getitem__(self, index: int) -> dict:
        n = len(self.items)
        rng = torch.Generator().manual_seed(_sample_seed(self.config.seed, self.epoch if self.config.training else 0, index))
        candidate = index % n
        for _ in range(self.config.max_retries + 1):
            if candidate not in self._bad:
                try:
                    return self.load(candidate, rng)
                except LOAD_ERRORS as err:
                    self._bad.add(candidate)
                    warnings.warn(f"skipping bad item {self.items[candidate]}: {err.__class__.__name__}: {err}", stacklevel=2)
            if len(self._bad) >= n:
                break
            candidate = int(torch.randint(n, (1,), generator=rng))
        raise RuntimeError(f"no loadable item found after {self.config.max_retries} retries "
                           f"({len(self._bad)} of {n} items failed to load)")

    def load(self, index: int, rng: torch.Generator) -> dict:
        """Load item ``index`` (raises on a broken item; :meth:`__getitem__` skips those)."""
        cfg = self.config
        root = self.items[index]
        calib = layout.load_calibration(root / layout.CAMERA_FILE)
        cams = calib.cameras
        pose, phenotype = layout.load_item_pose(root / layout.POSE_FILE)
        c = len(calib.names)

        facing = facing_direction(pose)
        front = orbit_views(cams.viewmats, facing, 1)[0]
        if cfg.input_views == "front_orbit":
            inputs = orbit_views(cams.viewmats, facing, cfg.num_input_views)
        elif cfg.input_views == "random":
            inputs = torch.randperm(c, generator=rng)[:cfg.num_input_views].tolist()
        else:
            raise ValueError(f"input_views must be 'front_orbit' or 'random', got {cfg.input_views!r}")
        while len(inputs) < cfg.num_input_views:  # fewer views than asked for: repeat
            inputs.append(inputs[len(inputs) % max(1, len(inputs))])
        rest = [v for v in torch.randperm(c, generator=rng).tolist() if v not in inputs]
        if len(rest) < cfg.num_target_views:
            rest += torch.randint(c, (cfg.num_target_views - len(rest),), generator=rng).tolist()
        targets = rest[:cfg.num_target_views]

        s = cfg.image_size
        scale = torch.tensor([[s / cams.width], [s / cams.height], [1.0]])

        def views(ids: list[int]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
            rgb = torch.stack([layout.read_rgb(layout.rgb_path(root, calib.names[v]), s) for v in ids])
            mask = torch.stack([layout.read_gray(layout.mask_path(root, calib.names[v]), s) for v in ids])
            return rgb, mask, cams.viewmats[ids], cams.Ks[ids] * scale

        in_rgb, in_mask, in_vm, in_k = views(inputs)
        tg_rgb, tg_mask, tg_vm, tg_k = views(targets)
        front_name = calib.names[front]
        cond = condition_image(layout.read_rgb(layout.rgb_path(root, front_name)),
                               layout.read_gray(layout.mask_path(root, front_name)), cfg.condition_size)
        texture, uv_mask = layout.load_uv_maps(root)
        if cfg.uv_resolution is not None:
            texture, uv_mask = resize_uv(texture, uv_mask, cfg.uv_resolution)
        return {
            "input_rgb": in_rgb, "input_mask": in_mask, "input_viewmats": in_vm, "input_Ks": in_k,
            "target_rgb": tg_rgb, "target_mask": tg_mask, "target_viewmats": tg_vm, "target_Ks": tg_k,
            "input_view_ids": torch.tensor(inputs), "target_view_ids": torch.tensor(targets),
            "front_view": torch.tensor(front), "condition": cond,
            "uv_texture": texture, "uv_mask": uv_mask,
            "pose": pose_tensors(pose, cfg.num_betas),
            "phenotype": phenotype if phenotype is not None else torch.full((6,), 0.5),
            "has_phenotype": torch.tensor(phenotype is not None),
            "item": str(root),
        }


def pose_tensors(pose: SMPLXPose, num_betas: int = 10) -> dict[str, Tensor]:
    """One frame of a pose as fixed-shape tensors (betas / expression padded or cut to a fixed length)."""
    def fixed(v: Tensor, n: int) -> Tensor:
        v = v.reshape(-1)[:n].float()
        return torch.cat([v, v.new_zeros(n - v.numel())])

    return {
        "global_orient": pose.global_orient[0], "body_pose": pose.body_pose[0], "jaw_pose": pose.jaw_pose[0],
        "leye_pose": pose.leye_pose[0], "reye_pose": pose.reye_pose[0],
        "left_hand_pose": pose.left_hand_pose[0], "right_hand_pose": pose.right_hand_pose[0],
        "transl": pose.transl[0], "betas": fixed(pose.betas, num_betas), "expression": fixed(pose.expression, 10),
    }
