"""The viewer's reposing fast path: sparse linear blend skinning, and the covariances viser draws.

:func:`sigman.gaussians.repose` (the reference) multiplies dense ``[N, J]`` skin weights; a body
Gaussian is moved by a handful of joints (at most 10 of anny's 104, 3.8 on average), so keeping
each Gaussian's ``k`` largest weights in a sparse (CSR) matrix does the same work in a fraction of
the time and memory. Where a Gaussian has at most ``k`` non-zero weights the result equals the
reference (to float rounding); otherwise its ``k`` largest weights are kept and renormalised.
"""

from __future__ import annotations

import warnings
from typing import Optional

import roma
import torch
from torch import Tensor

from sigman.lbs import quat_multiply, xyzw_to_wxyz

DEFAULT_TOP_K = 16


class SparseSkin:
    """The skin weights of ``N`` Gaussians over ``J`` joints as a sparse matrix of at most ``k``
    weights per Gaussian.

    Args:
        skin_weights: ``[N, J]`` rows sum to 1.
        k: weights kept per Gaussian (the largest, renormalised); sparse weights with at most
            ``k`` non-zeros per row are kept exactly.
    """

    def __init__(self, skin_weights: Tensor, k: int = DEFAULT_TOP_K) -> None:
        if k < 1:
            raise ValueError(f"top-k skinning needs k >= 1, got {k}")
        n, j = skin_weights.shape
        most_nonzero = int((skin_weights > 0).sum(dim=-1).max())
        self.k = max(1, min(k, most_nonzero))
        self.exact = most_nonzero <= k
        weights, joints = skin_weights.float().topk(self.k, dim=-1)  # column 0: the dominant joint
        weights = weights / weights.sum(dim=-1, keepdim=True).clamp_min(1e-12)
        keep = weights > 0
        per_row = keep.sum(dim=-1)
        self.shape = (n, j)
        self.row_offsets = torch.cat([per_row.new_zeros(1), per_row.cumsum(0)])  # [N + 1]
        self.columns = joints[keep]  # [nnz] joint of each kept weight
        self.values = weights[keep]  # [nnz]
        self.dominant = joints[:, 0].repeat_interleave(per_row)  # [nnz] the dominant joint of its row
        with warnings.catch_warnings():  # torch warns once per process that CSR support is "beta"
            warnings.simplefilter("ignore", UserWarning)
            self.matrix(self.values)

    @property
    def nnz(self) -> int:
        return self.values.numel()

    def matrix(self, values: Tensor) -> Tensor:
        """The ``[N, J]`` CSR matrix with this sparsity pattern and ``values [nnz]``."""
        return torch.sparse_csr_tensor(self.row_offsets, self.columns, values, self.shape, check_invariants=False)

    def dense(self) -> Tensor:
        """The kept weights as a dense ``[N, J]`` matrix (for comparisons with the reference)."""
        return self.matrix(self.values).to_dense()

    def repose(self, means: Tensor, quats: Tensor, transforms: Tensor) -> tuple[Tensor, Tensor]:
        """Skin canonical ``means [N, 3]`` and ``quats [N, 4]`` (w, x, y, z) with one pose's
        ``transforms [J, 4, 4]``. Returns posed means ``[N, 3]`` and quats ``[N, 4]``, as
        :func:`sigman.gaussians.repose` does: blended affine maps move the means; the rotations are
        the blended joint quaternions, each flipped to the hemisphere of the dominant joint."""
        n, j = self.shape
        dtype = transforms.dtype
        blended = (self.matrix(self.values.to(dtype)) @ transforms[:, :3, :].reshape(j, 12)).view(n, 3, 4)
        posed_means = (blended[..., :3] * means[:, None, :].to(dtype)).sum(dim=-1) + blended[..., 3]

        joint_quats = roma.rotmat_to_unitquat(transforms[:, :3, :3])  # [J, 4] (x, y, z, w)
        same_side = (joint_quats @ joint_quats.T)[self.dominant, self.columns] >= 0  # [nnz]
        signed = torch.where(same_side, self.values.to(dtype), -self.values.to(dtype))
        rotations = self.matrix(signed) @ joint_quats  # [N, 4]
        rotations = xyzw_to_wxyz(rotations / rotations.norm(dim=-1, keepdim=True).clamp_min(1e-12))
        posed_quats = quat_multiply(rotations, quats.to(rotations))
        return posed_means.to(means.dtype), posed_quats.to(quats.dtype)

    def to(self, device: torch.device) -> "SparseSkin":
        for name in ("row_offsets", "columns", "values", "dominant"):
            setattr(self, name, getattr(self, name).to(device))
        return self


def covariances(quats: Tensor, scales: Tensor) -> Tensor:
    """``Σ = R diag(s²) Rᵀ`` from unit ``quats [N, 4]`` (w, x, y, z) and std-devs ``scales [N, 3]``:
    ``[N, 3, 3]``."""
    w, x, y, z = (quats / quats.norm(dim=-1, keepdim=True).clamp_min(1e-12)).unbind(-1)
    rotation = torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], dim=-1).view(-1, 3, 3)
    scaled = rotation * scales[:, None, :]  # R diag(s)
    return scaled @ scaled.transpose(1, 2)


def yaw_transform(degrees: float, dtype: torch.dtype = torch.float32,
                  device: Optional[torch.device] = None) -> Tensor:
    """A ``[4, 4]`` rotation about the world +Y axis (through the origin)."""
    angle = torch.tensor([0.0, torch.pi * degrees / 180.0, 0.0], dtype=torch.float64)
    out = torch.eye(4, dtype=torch.float64)
    out[:3, :3] = roma.rotvec_to_rotmat(angle)
    return out.to(dtype=dtype, device=device)
