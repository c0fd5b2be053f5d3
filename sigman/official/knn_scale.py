"""The release's Gaussian scales: relative to the spacing of the *posed* points.

The release's rasteriser (``core/gaussians/gs.py``) scales each Gaussian by
``(scale + 1) * sqrt(max(distCUDA2(means), 1e-7))``, where simple-knn's ``distCUDA2`` is the mean
squared distance of each point to its 3 nearest other points, and ``scale`` in ``(-1, 1)`` is the
decoded ``2 sigmoid(x) - 1``. The means are the posed Gaussian centres, so the spacing is computed
after posing, per frame.

:func:`knn_mean_sq_dist` is exact: a k-d tree (``scipy.spatial.cKDTree``) on the CPU, a chunked
brute force with ``torch`` on the GPU. simple-knn itself searches approximately (Morton-ordered
boxes); on well-spread points it finds the same neighbours.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

KNN_NEIGHBOURS = 3
MIN_SQ_DIST = 1e-7  # the release clamps the squared spacing at this value


def knn_mean_sq_dist_bruteforce(points: Tensor, k: int = KNN_NEIGHBOURS, chunk: int = 1024) -> Tensor:
    """Mean squared distance to the ``k`` nearest other points, by exhaustive search:
    ``points [N, 3] -> [N]`` (``chunk x N`` distances at a time)."""
    pts = points.detach().float()
    n = pts.shape[0]
    out = torch.empty(n, dtype=pts.dtype, device=pts.device)
    for start in range(0, n, chunk):
        block = pts[start:start + chunk]
        d2 = torch.cdist(block, pts, compute_mode="donot_use_mm_for_euclid_dist").square()
        rows = torch.arange(block.shape[0], device=pts.device)
        d2[rows, rows + start] = float("inf")
        out[start:start + chunk] = d2.topk(k, dim=-1, largest=False).values.mean(dim=-1)
    return out


def knn_mean_sq_dist(points: Tensor, k: int = KNN_NEIGHBOURS) -> Tensor:
    """Mean squared distance of each point to its ``k`` nearest other points (simple-knn's
    ``distCUDA2`` for ``k = 3``): ``points [N, 3] -> [N]``, on the points' device, no gradient."""
    if points.dim() != 2 or points.shape[-1] != 3:
        raise ValueError(f"points must be [N, 3], got {tuple(points.shape)}")
    if points.shape[0] <= k:
        raise ValueError(f"need more than k={k} points for the nearest-neighbour spacing, got {points.shape[0]}")
    if points.device.type != "cpu":
        return knn_mean_sq_dist_bruteforce(points, k)
    from scipy.spatial import cKDTree

    pts = points.detach().double().numpy()
    dist, _ = cKDTree(pts).query(pts, k=k + 1)  # the first neighbour is the point itself
    mean_sq = np.square(dist[:, 1:]).mean(axis=1)
    return torch.from_numpy(mean_sq).to(points.dtype if points.is_floating_point() else torch.float32)


def release_spacing(points: Tensor) -> Tensor:
    """``sqrt(max(distCUDA2(points), 1e-7))``: the release's per-point scale unit, ``[..., N]`` for
    ``points [..., N, 3]`` (each leading index, e.g. a pose frame, on its own)."""
    flat = points.reshape(-1, *points.shape[-2:])
    out = torch.stack([knn_mean_sq_dist(p) for p in flat])
    return out.clamp_min(MIN_SQ_DIST).sqrt().reshape(points.shape[:-1]).to(points.dtype)


def release_scales(scale_factor: Tensor, posed_points: Tensor) -> Tensor:
    """World scales ``(scale + 1) * spacing``: ``scale_factor [..., N, 3]`` is the decoded
    ``scale + 1 = 2 sigmoid(x)`` in ``(0, 2)``; ``posed_points [..., N, 3]`` the posed centres."""
    return scale_factor * release_spacing(posed_points)[..., None].to(scale_factor)
