"""Two held-out measures of a generated avatar beyond PSNR / SSIM.

1. **Garment colour** (synthetic data only): every item of a synthetic dataset can be regenerated from
   its ``synthetic_config.json`` (dataset seed, people kind) and its index, so the garment region of
   every texel is known (:func:`sigman.data.appearance.region_labels`). :class:`RegionLabeller` renders
   those labels at an item's views with its true body shape and pose (nearest label per pixel, only
   inside the true mask); :func:`region_delta_e` compares the mean CIELAB colour of each region in the
   true and the generated images (CIE76 delta E).
2. **Seed diversity of the unseen side**: :func:`back_view` picks the view facing away from the input
   view; :func:`seed_std` is the per-pixel standard deviation over several seeds' renders of it.

Images are ``[V, 3, H, W]`` in [0, 1], masks ``[V, 1, H, W]``, label images ``[V, H, W]`` (long, -1: none).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import Tensor

from sigman.color import srgb_to_lab  # noqa: F401 - re-exported: the garment measure is in CIELAB
from sigman.data.appearance import REGION_NAMES, TexelFeatures, region_labels, sample_appearance
from sigman.gaussians import Gaussians, quat_from_normals, repose, surface_gaussians
from sigman.render import Camera, render
from sigman.uv import build_uv_template, vertex_normals

DELTA_E_THRESHOLD = 10.0  # the target: every garment region within delta E 10 of the truth
MIN_REGION_PIXELS = 200  # a region needs this many labelled pixels (over all compared views) to count
CONFIG_FILE = "synthetic_config.json"

# --- colour -------------------------------------------------------------------------------------

def delta_e76(lab_a: Tensor, lab_b: Tensor) -> Tensor:
    """CIE76 colour difference (Euclidean distance in CIELAB) of ``[..., 3]`` pairs: ``[...]``."""
    return (lab_a - lab_b).norm(dim=-1)


def region_delta_e(truth: Tensor, generated: Tensor, labels: Tensor,
                   min_pixels: int = MIN_REGION_PIXELS) -> dict[str, dict]:
    """Per garment region with at least ``min_pixels`` labelled pixels: the CIE76 delta E between the
    mean CIELAB colour of its pixels in ``truth`` and in ``generated`` (both ``[V, 3, H, W]``), with
    ``labels [V, H, W]`` (index into :data:`REGION_NAMES`, -1 outside). Returns
    ``{name: {"delta_e", "pixels", "truth_lab", "generated_lab"}}``."""
    if truth.shape != generated.shape or truth.shape[-2:] != labels.shape[-2:] or truth.shape[0] != labels.shape[0]:
        raise ValueError(f"images {tuple(truth.shape)} / {tuple(generated.shape)} and labels {tuple(labels.shape)} differ")
    lab_t = srgb_to_lab(truth.permute(0, 2, 3, 1))  # [V, H, W, 3]
    lab_g = srgb_to_lab(generated.permute(0, 2, 3, 1))
    labels = labels.to(lab_t.device)
    out = {}
    for region, name in enumerate(REGION_NAMES):
        sel = labels == region
        pixels = int(sel.sum())
        if pixels < min_pixels:
            continue
        mean_t, mean_g = lab_t[sel].mean(0), lab_g[sel].mean(0)
        out[name] = {"delta_e": float(delta_e76(mean_t, mean_g)), "pixels": pixels,
                     "truth_lab": [round(float(v), 2) for v in mean_t],
                     "generated_lab": [round(float(v), 2) for v in mean_g]}
    return out


def summarise_region_errors(per_item: Sequence[dict[str, dict]], threshold: float = DELTA_E_THRESHOLD) -> dict:
    """Over items' :func:`region_delta_e` results: the share of items whose every region is within
    ``threshold``, the share of (item, region) pairs within it, the mean / median worst-region delta E
    and each region's mean delta E (items without any region are left out)."""
    items = [r for r in per_item if r]
    if not items:
        return {"num_items": 0, "threshold": threshold}
    worst = torch.tensor([max(v["delta_e"] for v in r.values()) for r in items])
    pairs = [v["delta_e"] for r in items for v in r.values()]
    by_region = {name: [r[name]["delta_e"] for r in items if name in r] for name in REGION_NAMES}
    return {
        "num_items": len(items), "threshold": threshold, "num_pairs": len(pairs),
        "items_all_regions_within": float((worst <= threshold).float().mean()),
        "pairs_within": sum(e <= threshold for e in pairs) / len(pairs),
        "worst_delta_e_mean": float(worst.mean()), "worst_delta_e_median": float(worst.median()),
        "delta_e_mean": sum(pairs) / len(pairs),
        "region_delta_e_mean": {k: sum(v) / len(v) for k, v in by_region.items() if v},
        "region_count": {k: len(v) for k, v in by_region.items() if v},
    }


# --- regenerating a synthetic item's labels ------------------------------------------------------

@dataclass
class SyntheticSource:
    """What regenerates a synthetic dataset's appearance: its seed, people kind and render template."""

    root: Path  # the dataset folder (holds synthetic_config.json and items/)
    seed: int
    people: str
    render_uv_resolution: int

    @staticmethod
    def find(item_root: Path) -> Optional["SyntheticSource"]:
        """The source of the dataset an item folder (``<data>/items/<index>``) belongs to, or ``None``
        when there is no ``synthetic_config.json`` (real data). Raises ``ValueError`` for a malformed one."""
        root = Path(item_root).parent.parent
        path = root / CONFIG_FILE
        if not path.is_file():
            return None
        try:
            meta = json.loads(path.read_text())
            config = meta["config"]
            return SyntheticSource(root, int(meta["seed"]), str(config.get("people", "basic")),
                                   int(config["render_uv_resolution"]))
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{path} is not a synthetic dataset config ({err.__class__.__name__}: {err})") from None


def item_index(item_root: Path) -> int:
    """The generator's index of an item from its folder name (``items/000012`` -> 12)."""
    name = Path(item_root).name
    if not name.isdigit():
        raise ValueError(f"item folder {name!r} is not a synthetic item index")
    return int(name)


def _face_areas(vertices: Tensor, faces: Tensor) -> Tensor:
    tri = vertices[:, faces]
    return torch.linalg.cross(tri[:, :, 1] - tri[:, :, 0], tri[:, :, 2] - tri[:, :, 0]).norm(dim=-1) / 2


class RegionLabeller:
    """Region labels of a synthetic dataset's items, as texels and as label images at an item's views.

    ``body`` must be anny (the generator's body; with a shape bank attached if the items need one);
    the render template is built once per resolution."""

    def __init__(self, body) -> None:
        if body.name != "anny":
            raise ValueError(f"region labels need the anny body (the synthetic generator's), got '{body.name}'")
        self.body = body
        self._templates: dict[int, tuple] = {}

    def _template(self, resolution: int):
        if resolution not in self._templates:
            template = build_uv_template(self.body, resolution)
            features = TexelFeatures.build(template, self.body.joint_names, self.body.rest_joints, "anny")
            self._templates[resolution] = (template, features)
        return self._templates[resolution]

    def texel_labels(self, source: SyntheticSource, index: int, phenotype: Tensor) -> Tensor:
        """Region of every render-template texel ``[N]`` (long) of item ``index`` with ``phenotype [6]``."""
        from sigman.data.synthetic import item_seed

        _, features = self._template(source.render_uv_resolution)
        look = sample_appearance([item_seed(source.seed, index, 1)], phenotype.reshape(1, -1).float().cpu(),
                                 source.people)
        return region_labels(features, look)[0]

    @torch.no_grad()
    def label_images(self, source: SyntheticSource, index: int, phenotype: Tensor, pose, cameras: Camera,
                     mask: Optional[Tensor] = None) -> Tensor:
        """Label images ``[V, H, W]`` (long, -1 where no label or outside ``mask [V, 1, H, W] > 0.5``) of
        an item posed with ``pose`` (its saved, centred pose) and its body shape ``phenotype``: the
        generator's Gaussians (one per texel, this shape's normals and stretch) rendered with one-hot
        colours, three regions per pass; each pixel takes the region of the largest response."""
        template, _ = self._template(source.render_uv_resolution)
        labels = self.texel_labels(source, index, phenotype).to(self.body.rest_vertices.device)
        shape = phenotype.reshape(1, -1).float().to(self.body.rest_vertices.device)
        rest_vertices, rest_joints = self.body.rest(shape)
        rest_vertices, rest_joints = rest_vertices.float(), rest_joints.float()
        g = surface_gaussians(template, rest_vertices=rest_vertices)
        normals = template.interpolate(vertex_normals(rest_vertices, self.body.faces))
        rest_areas = _face_areas(self.body.rest_vertices[None].float(), self.body.faces).clamp_min(1e-12)
        stretch = (_face_areas(rest_vertices, self.body.faces) / rest_areas).sqrt()[:, template.face_index]
        n = g.means.shape[1]
        g = g.with_(quats=quat_from_normals(normals), scales=g.scales * stretch[..., None],
                    opacities=g.opacities.expand(1, n), colors=torch.zeros(1, n, 3, device=g.means.device))
        transforms, _ = self.body.pose_transforms(pose, rest_joints)
        world = repose(g, transforms.float())
        present = sorted(int(r) for r in torch.unique(labels))
        best = torch.full((len(cameras), cameras.height, cameras.width), -1, dtype=torch.long)
        score = torch.zeros(len(cameras), cameras.height, cameras.width)
        for first in range(0, len(present), 3):
            group = present[first:first + 3]
            onehot = torch.stack([(labels == r).float() for r in group] + [torch.zeros(n, device=labels.device)]
                                 * (3 - len(group)), dim=-1)
            gaussians = Gaussians(world.means[0], world.quats[0], world.scales[0], world.opacities[0], onehot)
            out = render(gaussians, cameras.to(world.means.device), background=None).rgb.float().cpu()  # [V, H, W, 3]
            for k, region in enumerate(group):
                better = out[..., k] > score
                best = torch.where(better, torch.tensor(region), best)
                score = torch.where(better, out[..., k], score)
        best = torch.where(score > 0.05, best, torch.tensor(-1))
        if mask is not None:
            best = torch.where(mask[:, 0].cpu() > 0.5, best, torch.tensor(-1))
        return best


# --- seeds ----------------------------------------------------------------------------------------

def back_view(viewmats: Tensor, source: int) -> int:
    """The view facing away from view ``source``: the camera whose direction from the subject's centre
    is closest to the source's mirrored horizontally (same elevation, opposite side)."""
    from sigman.data.dataset import camera_centres, subject_centre

    dirs = camera_centres(viewmats) - subject_centre(viewmats)
    dirs = dirs / dirs.norm(dim=-1, keepdim=True).clamp_min(1e-9)
    target = dirs[source] * torch.tensor([-1.0, 1.0, -1.0], dtype=dirs.dtype)
    score = dirs @ target
    score[source] = -math.inf
    return int(score.argmax())


def seed_std(images: Tensor, mask: Tensor) -> float:
    """Mean over the pixels inside ``mask [1, H, W] > 0.5`` and the RGB channels of the per-pixel
    standard deviation (population, over the first axis) of ``images [K, 3, H, W]`` in [0, 1]."""
    if images.shape[0] < 2:
        raise ValueError(f"seed_std needs at least two images, got {images.shape[0]}")
    std = images.float().std(dim=0, correction=0).mean(0)  # [H, W]
    inside = mask[0].to(std.device) > 0.5
    return float(std[inside].mean()) if bool(inside.any()) else float("nan")
