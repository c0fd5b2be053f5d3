"""Evaluation helpers: held-out items of a seed-layout dataset, rendering Gaussians at an
item's calibrated cameras, comparison pictures and metric tables.

Used by ``scripts/eval_vae.py`` (VAE reconstruction) and ``scripts/eval_generation.py`` (photo -> 3D
novel views). Images are ``[N, 3, H, W]`` in ``[0, 1]`` and masks ``[N, 1, H, W]`` in ``[0, 1]``
unless noted.

The metrics (PSNR, SSIM, masked variants, optional LPIPS) are :mod:`sigman.metrics`'s, re-exported here.

Images of the seed layout are on white; renders compared with them use :data:`DATA_BACKGROUND`.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from sigman.cli import int_in
from sigman.data import layout
from sigman.data.dataset import facing_direction, orbit_views, pose_tensors, resize_uv
from sigman.gaussians import Gaussians
from sigman.metrics import (  # noqa: F401 - re-exported: the metrics are part of the evaluation's API
    METRICS, SSIM_WINDOW, image_metrics, masked_psnr, masked_ssim, optional_lpips, psnr, ssim,
)
from sigman.pose import SMPLXPose
from sigman.render import Camera, render, to_uint8
from sigman.settings import MAX_RENDER_SIZE

PathLike = Union[str, os.PathLike]

DATA_BACKGROUND = 1.0  # the seed layout's images are rendered / photographed on white
LABEL_HEIGHT = 18  # px, the caption strip above a comparison grid
GRID_GAP = 4  # px between the cells of a comparison grid


class EvalError(ValueError):
    """A data folder, split or view selection that cannot be evaluated; the message says why."""


# --- metric tables ----------------------------------------------------------------------------------

def _finite_or_none(value: float) -> Optional[float]:
    return value if math.isfinite(value) else None


@dataclass
class MetricTable:
    """Per-image metrics of every evaluated item; the summary pools all images (as training's validation)."""

    items: list[dict] = field(default_factory=list)
    _images: dict[str, list[Tensor]] = field(default_factory=dict)

    def add(self, item: str, views: Sequence[str], metrics: dict[str, Tensor], **extra) -> dict:
        """Record one item's per-view ``metrics`` (each ``[V]``); returns its row (means over its views)."""
        row = {"item": item, "views": list(views), **extra}
        for name, values in metrics.items():
            self._images.setdefault(name, []).append(values.float().reshape(-1))
            row[name] = _finite_or_none(float(values.float().nanmean()))
            row[f"{name}_per_view"] = [_finite_or_none(float(v)) for v in values.reshape(-1)]
        self.items.append(row)
        return row

    @property
    def num_images(self) -> int:
        first = next(iter(self._images.values()), [])
        return sum(int(v.numel()) for v in first)

    def summary(self) -> dict[str, Optional[float]]:
        """Mean of every metric over all images (NaN entries, e.g. empty masks, left out)."""
        return {name: _finite_or_none(float(torch.cat(values).nanmean())) for name, values in self._images.items()}


def format_metrics(metrics: dict) -> str:
    """``psnr 24.31 ssim 0.9120 ...``: the :data:`METRICS` present in ``metrics`` (PSNRs with 2
    decimals, the rest with 4; ``n/a`` for ``None``)."""
    parts = []
    for name in METRICS:
        if name in metrics:
            value = metrics[name]
            if value is None:
                parts.append(f"{name} n/a")
            else:
                parts.append(f"{name} {value:.2f}" if name.startswith("psnr") else f"{name} {value:.4f}")
    return " ".join(parts)


def write_json(path: PathLike, data: dict) -> Path:
    """Write ``data`` as indented JSON (NaN / inf written as ``null``), creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_jsonable(data), indent=1) + "\n")
    return path


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float):
        return _finite_or_none(value)
    if isinstance(value, Path):
        return str(value)
    return value


# --- held-out items ------------------------------------------------------------------------------

@dataclass
class HeldOutItem:
    """One item of a seed-layout dataset, its views not read yet.

    Attributes:
        root: the item folder.
        calibration: every calibrated view (names + cameras at the stored image size).
        pose: its SMPL-X pose (one frame). phenotype: anny phenotypes ``[6]`` or ``None``.
        front: the index of the view facing the body's front.
    """

    root: Path
    calibration: layout.Calibration
    pose: SMPLXPose
    phenotype: Optional[Tensor]
    front: int

    @property
    def num_views(self) -> int:
        return len(self.calibration.names)

    @property
    def name(self) -> str:
        return self.root.name


def split_items(data: PathLike, split: str = "val", limit: Optional[int] = None) -> list[Path]:
    """Item folders of ``data/<split>.npy`` (``data`` may also be an index ``.npy`` itself); the first
    ``limit`` of them. Raises :class:`EvalError` for a missing folder, index or empty split."""
    data = Path(data)
    if data.suffix == ".npy":
        index = data
    elif not data.is_dir():
        raise EvalError(f"data folder not found: {data}; make one with scripts/make_synthetic_data.py")
    else:
        index = data / f"{split}.npy"
    if not index.is_file():
        raise EvalError(f"no index {index}: pass a data folder in the seed layout (train.npy / val.npy) and --split")
    items = layout.load_index(index)
    if limit is not None and limit > 0:
        items = items[:limit]
    if not items:
        raise EvalError(f"{index} lists no item")
    return items


def load_item(root: PathLike) -> HeldOutItem:
    """Read an item's calibration and pose (raises ``ValueError`` / ``OSError`` naming the problem)."""
    root = Path(root)
    calibration = layout.load_calibration(root / layout.CAMERA_FILE)
    pose, phenotype = layout.load_item_pose(root / layout.POSE_FILE)
    front = orbit_views(calibration.cameras.viewmats, facing_direction(pose), 1)[0]
    return HeldOutItem(root, calibration, pose, phenotype, front)


def input_views(item: HeldOutItem, count: int) -> list[int]:
    """The ``count`` input views training uses (``front_orbit``: spread around the body from its front;
    repeated when the item has fewer views)."""
    chosen = orbit_views(item.calibration.cameras.viewmats, facing_direction(item.pose), count)
    while len(chosen) < count:
        chosen.append(chosen[len(chosen) % len(chosen)])
    return chosen


def select_views(spec: str, num_views: int, exclude: Sequence[int] = ()) -> list[int]:
    """Target views from ``spec``: ``"heldout"`` (every view not in ``exclude``), ``"all"``, or comma
    separated view indices (``"1,5,9"``; the ones in ``exclude`` are kept)."""
    spec = spec.strip()
    if spec == "all":
        return list(range(num_views))
    if spec == "heldout":
        chosen = [v for v in range(num_views) if v not in set(exclude)]
    else:
        try:
            chosen = [int(s) for s in spec.split(",") if s.strip()]
        except ValueError:
            raise EvalError(f"--views must be 'heldout', 'all' or view indices like '1,5,9', got {spec!r}") from None
        bad = [v for v in chosen if not 0 <= v < num_views]
        if bad:
            raise EvalError(f"--views {bad} out of range: the item has {num_views} views (0..{num_views - 1})")
    if not chosen:
        raise EvalError(f"--views {spec!r} leaves no target view (the item has {num_views} views)")
    return chosen


def view_cameras(item: HeldOutItem, ids: Sequence[int], size: int) -> Camera:
    """The cameras of views ``ids``, intrinsics scaled to ``size x size`` images."""
    cams = item.calibration.cameras
    scale = torch.tensor([[size / cams.width], [size / cams.height], [1.0]])
    return Camera(cams.viewmats[list(ids)], cams.Ks[list(ids)] * scale, size, size)


def read_views(item: HeldOutItem, ids: Sequence[int], size: Optional[int] = None) -> tuple[Tensor, Tensor]:
    """RGB ``[V, 3, S, S]`` and masks ``[V, 1, S, S]`` (in [0, 1]) of views ``ids``, resized as the
    training dataset does (``size=None``: as stored)."""
    names = [item.calibration.names[v] for v in ids]
    rgb = torch.stack([layout.read_rgb(layout.rgb_path(item.root, n), size) for n in names])
    mask = torch.stack([layout.read_gray(layout.mask_path(item.root, n), size) for n in names])
    return rgb, mask


def item_shape(item: HeldOutItem, body) -> Optional[Tensor]:
    """The body shape ``[1, S]`` of an item for ``body``: anny phenotypes (``None``, the default
    shape, when the item has none), else the pose file's betas padded / cut to ``body.shape_dim``
    (``None`` for a body without shape parameters). On the CPU."""
    if body.name == "anny":
        return None if item.phenotype is None else item.phenotype.float().reshape(1, -1)
    if body.shape_dim == 0:
        return None
    betas = item.pose.betas.reshape(-1).float()[:body.shape_dim]
    return torch.cat([betas, betas.new_zeros(body.shape_dim - betas.numel())])[None]


def vae_sample(item: HeldOutItem, inputs: Sequence[int], targets: Sequence[int], size: int, uv_size: int,
               num_betas: int = 10) -> dict:
    """One sample in :class:`~sigman.data.dataset.SeedDataset`'s format (the keys the VAE step reads),
    with the given input and target views at ``size x size`` and the UV maps at ``uv_size``."""
    in_rgb, in_mask = read_views(item, inputs, size)
    tg_rgb, tg_mask = read_views(item, targets, size)
    in_cams, tg_cams = view_cameras(item, inputs, size), view_cameras(item, targets, size)
    texture, uv_mask = resize_uv(*layout.load_uv_maps(item.root), uv_size)
    return {
        "input_rgb": in_rgb, "input_mask": in_mask, "input_viewmats": in_cams.viewmats, "input_Ks": in_cams.Ks,
        "target_rgb": tg_rgb, "target_mask": tg_mask, "target_viewmats": tg_cams.viewmats, "target_Ks": tg_cams.Ks,
        "input_view_ids": torch.tensor(list(inputs)), "target_view_ids": torch.tensor(list(targets)),
        "uv_texture": texture, "uv_mask": uv_mask, "pose": pose_tensors(item.pose, num_betas),
        "phenotype": item.phenotype if item.phenotype is not None else torch.full((6,), 0.5),
        "has_phenotype": torch.tensor(item.phenotype is not None), "item": str(item.root),
    }


def photo_rgba(rgb: Tensor, mask: Tensor, background: float) -> np.ndarray:
    """A view as the pipeline's input photo: ``rgb [3, H, W]`` composited on ``background`` outside
    ``mask [1, H, W]``, with the mask as alpha: float32 ``[H, W, 4]`` in [0, 1]."""
    composite = rgb * mask + background * (1.0 - mask)
    return torch.cat([composite, mask]).permute(1, 2, 0).clamp(0, 1).float().numpy()


# --- rendering -------------------------------------------------------------------------------------

def first_frame(posed: Gaussians) -> Gaussians:
    """Frame 0 of posed Gaussians ``[T, N, ...]`` as ``[N, ...]``."""
    if posed.means.dim() == 2:
        return posed
    return posed.with_(means=posed.means[0], quats=posed.quats[0], scales=posed.scales[0],
                       opacities=posed.opacities[0], colors=posed.colors[0])


@torch.no_grad()
def render_at(gaussians: Gaussians, cameras: Camera, background: float = DATA_BACKGROUND) -> tuple[Tensor, Tensor]:
    """Render world-space Gaussians ``[N, ...]`` into ``cameras``: RGB ``[C, 3, H, W]`` in [0, 1] and
    alpha ``[C, 1, H, W]`` (float32, on the Gaussians' device)."""
    out = render(gaussians.to(torch.float32), cameras.to(gaussians.device), background=(background,) * 3)
    return out.rgb.clamp(0, 1).permute(0, 3, 1, 2), out.alpha.permute(0, 3, 1, 2)


# --- pictures -------------------------------------------------------------------------------------

def _cells(images: Tensor, size: int) -> list[np.ndarray]:
    """``[K, 3, H, W]`` in [0, 1] -> K uint8 ``[size, size, 3]`` arrays."""
    images = images.detach().float().cpu()
    if images.shape[-1] != size or images.shape[-2] != size:
        images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return list(to_uint8(images.clamp(0, 1).permute(0, 2, 3, 1)))


def comparison_grid(rows: Sequence[tuple[Tensor, Tensor, Tensor]], cell: int,
                    labels: Optional[Sequence[str]] = None) -> np.ndarray:
    """One row per item: its input photo | true novel views | generated novel views.

    Args:
        rows: ``(photo [3, h, w], truth [K, 3, H, W], generated [K, 3, H, W])`` per item (same ``K``).
        cell: side of every cell in pixels (images are resized to it).
        labels: one caption per column (``1 + 2K``), written in a strip above the grid; ``None``: none.
    Returns:
        uint8 ``[LABEL_HEIGHT + R * cell + (R - 1) * GRID_GAP, C * cell + (C - 1) * GRID_GAP, 3]``
        (no caption strip without labels), white between cells.
    """
    if not rows:
        raise ValueError("comparison_grid needs at least one row")
    k = rows[0][1].shape[0]
    if any(t.shape[0] != k or g.shape[0] != k for _, t, g in rows):
        raise ValueError("every row needs the same number of true and generated views")
    cols = 1 + 2 * k
    top = LABEL_HEIGHT if labels else 0
    height = top + len(rows) * cell + (len(rows) - 1) * GRID_GAP
    width = cols * cell + (cols - 1) * GRID_GAP
    grid = np.full((height, width, 3), 255, np.uint8)
    for r, (photo, truth, generated) in enumerate(rows):
        cells = _cells(photo[None], cell) + _cells(truth, cell) + _cells(generated, cell)
        y = top + r * (cell + GRID_GAP)
        for c, image in enumerate(cells):
            x = c * (cell + GRID_GAP)
            grid[y:y + cell, x:x + cell] = image
    if labels:
        _draw_labels(grid, labels, cell)
    return grid


def _draw_labels(grid: np.ndarray, labels: Sequence[str], cell: int) -> None:
    """Write ``labels`` (one per column) into the top strip of ``grid``, in place."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    for c, text in enumerate(labels):  # each caption drawn in its own column's box: long ones are cut
        x = c * (cell + GRID_GAP)
        box = Image.fromarray(np.ascontiguousarray(grid[:LABEL_HEIGHT, x:x + cell]))
        ImageDraw.Draw(box).text((2, 3), text, fill=(0, 0, 0), font=font)
        grid[:LABEL_HEIGHT, x:x + cell] = np.asarray(box)


# --- models and command lines ------------------------------------------------------------------------

def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_body(name: str, shape_bank: Optional[PathLike] = None):
    """The body model ``name``, serving anny body shapes from ``shape_bank`` (a ShapeBank ``.npz``)
    when given, as ``train/`` does on machines without the anny package."""
    from sigman.body import load_body_model

    body = load_body_model(name)
    if shape_bank is not None:
        from sigman.body.shape_bank import ShapeBank

        if not hasattr(body, "attach_shape_bank"):
            raise EvalError(f"--shape-bank serves anny body shapes; the '{body.name}' body has no shape bank")
        body.attach_shape_bank(ShapeBank.load(shape_bank))
    return body


def load_vae(folder: Optional[PathLike], device: Union[str, torch.device]):
    """The config and VAE of a model folder (default: ``assets/weights/demo``, ``SIGMAN_WEIGHTS``
    moves it): ``(folder, PipelineConfig, SigmanVAE)``, the VAE in eval mode on ``device`` (float32).
    Raises :class:`~sigman.weights.WeightsError` naming what is missing."""
    from sigman import pipeline

    folder, config = pipeline.load_pipeline_config(folder)
    return folder, config, pipeline.load_vae(folder, config).to(device).eval()


def add_eval_arguments(parser, out_default: str) -> None:
    """The options both evaluation scripts share."""
    parser.add_argument("--data", required=True, help="data folder in the seed layout (train.npy / val.npy), or an index .npy")
    parser.add_argument("--weights", default=None, help="model folder (default: assets/weights/demo)")
    parser.add_argument("--split", default="val", help="index of --data to evaluate: <split>.npy")
    parser.add_argument("--limit", type=int_in(0, 10**7), default=0, help="evaluate the first N items (0: all)")
    parser.add_argument("--views", default="heldout",
                        help="target views: 'heldout' (every view the model did not see), 'all', or indices '1,5,9'")
    parser.add_argument("--size", type=int_in(0, MAX_RENDER_SIZE), default=0,
                        help=f"render / compare at SIZE x SIZE, up to {MAX_RENDER_SIZE} (0: the VAE's render size)")
    parser.add_argument("--shape-bank", default=None, help="ShapeBank .npz of the items' body shapes (machines without anny)")
    parser.add_argument("--device", default=None, help="cuda / cpu (default: cuda when available)")
    parser.add_argument("--out", default=out_default, help="metrics JSON to write")
