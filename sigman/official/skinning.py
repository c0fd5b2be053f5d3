"""The release's skinning weights for points off the template's regions (fast-SNARF's voxel grid).

The release's deformer (``core/modules/deformers/fast_snarf/lib/model/deformer_smplx.py``,
``switch_to_explicit`` and ``query_weights_smpl``) fills a voxel grid of 16 x 64 x 64 (depth z x
height y x width x) over the neutral body in the canonical pose with skinning weights, then samples
it trilinearly at each canonical point:

* the grid spans ``[-1, 1]^3`` in normalised coordinates; a point ``p`` normalises to
  ``(p - c) / s`` with its z also multiplied by ``4`` (``= 64 / 16``), where ``c`` is the centre of
  the body's bounding box and ``s`` = 1.2 x half its largest side;
* each grid point takes the inverse-distance-weighted mean of the weights of its 10 nearest body
  vertices (distances clamped to ``[3e-5, 0.1]`` m);
* sampling is trilinear with ``align_corners=True`` and border padding.

Points in the face, hands and "outside" regions keep the template's own weights instead
(``forward_skinning``: ``w[:, mask] = lbsw[mask]``).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

VOXEL_SIZE = (16, 64, 64)  # (d, h, w): z, y, x
VOXEL_GLOBAL_SCALE = 1.2
VOXEL_NEIGHBOURS = 10
VOXEL_MIN_DIST, VOXEL_MAX_DIST = 3e-5, 0.1


class VoxelSkinning:
    """The release's voxel grid of skinning weights for one canonical body.

    Args:
        vertices: ``[V, 3]`` the neutral body's vertices in the release's canonical pose.
        weights: ``[V, J]`` its skinning weights.
    """

    def __init__(self, vertices: Tensor, weights: Tensor) -> None:
        v = vertices.detach().float().cpu()
        lo, hi = v.min(dim=0).values, v.max(dim=0).values
        self.offset = (lo + hi) * 0.5  # [3]
        self.scale = float((hi - lo).max() / 2 * VOXEL_GLOBAL_SCALE)
        d, h, w = VOXEL_SIZE
        self.ratio = h / d
        grid = torch.stack(torch.meshgrid(torch.linspace(-1, 1, d), torch.linspace(-1, 1, h), torch.linspace(-1, 1, w),
                                          indexing="ij"), dim=-1).flip(-1).reshape(-1, 3)  # (x, y, z), x fastest
        world = self.denormalize(grid)
        from scipy.spatial import cKDTree

        dist, idx = cKDTree(v.double().numpy()).query(world.double().numpy(), k=VOXEL_NEIGHBOURS)
        inv = 1.0 / np.clip(dist, VOXEL_MIN_DIST, VOXEL_MAX_DIST)
        inv = torch.from_numpy(inv / inv.sum(axis=1, keepdims=True)).float()  # [G, K]
        values = (inv[..., None] * weights.detach().float().cpu()[torch.from_numpy(idx)]).sum(dim=1)  # [G, J]
        self.grid = values.T.reshape(1, -1, d, h, w).contiguous()  # [1, J, d, h, w]

    def denormalize(self, x: Tensor) -> Tensor:
        out = x.clone()
        out[..., 2] = out[..., 2] / self.ratio
        return out * self.scale + self.offset.to(x)

    def normalize(self, x: Tensor) -> Tensor:
        out = (x - self.offset.to(x)) / self.scale
        return torch.cat([out[..., :2], out[..., 2:] * self.ratio], dim=-1)

    def query(self, points: Tensor) -> Tensor:
        """Skinning weights at canonical ``points [B, N, 3]`` -> ``[B, N, J]``."""
        b = points.shape[0]
        grid = self.grid.to(points)
        coords = self.normalize(points)[:, :, None, None, :]  # [B, N, 1, 1, 3]
        w = F.grid_sample(grid.expand(b, -1, -1, -1, -1), coords, mode="bilinear", padding_mode="border",
                          align_corners=True)  # [B, J, N, 1, 1]
        return w[..., 0, 0].transpose(1, 2)


def release_skin_weights(voxels: VoxelSkinning, points: Tensor, template_weights: Tensor, mask: Tensor) -> Tensor:
    """The release's per-point weights ``[B, N, J]``: the voxel grid at ``points [B, N, 3]``,
    except where ``mask [N]`` holds (face, hands, outside), which keep ``template_weights [N, J]``."""
    w = voxels.query(points)
    return torch.where(mask.to(w.device)[None, :, None], template_weights.to(w)[None], w)
