"""Rotation frames of the release's Gaussians and how to hold them in unit quaternions.

The release gives every template point a frame built from its triangle (``compute_tbn`` in the
release's ``core/modules/deformers/utils_smplx.py``): columns ``[t, b, n]`` with

* ``t`` the tangent along the UV ``u`` direction, ``t ∝ f (e1 dv2 - e2 dv1)`` where
  ``e1, e2`` are the triangle's edges from its first corner, ``du, dv`` their UV edges and
  ``f = 1 / (du1 dv2 - dv1 du2 + 1e-12)``,
* ``n = normalise(e1 x e2)`` the face normal,
* ``b = normalise(t x n)``.

Since ``t`` lies in the face plane, ``b = t x n`` makes ``[t, b, n]`` a *reflection*
(determinant -1). A Gaussian's rotation is ``F @ exp(r)`` (``F`` the frame, ``r`` the decoded
axis-angle), and its covariance is ``F exp(r) S^2 exp(r)^T F^T``.

A unit quaternion cannot hold a reflection, but the covariance does not need one: with
``D = diag(1, -1, 1)``, ``F = F' D`` where ``F' = [t, -b, n]`` is a proper rotation, and
``D exp([r]x) D = exp([r']x)`` with ``r' = (-r_x, r_y, -r_z)`` (conjugating by a reflection flips
the rotation's sense and mirrors its axis). Because ``D S^2 D = S^2`` for a diagonal ``S``::

    F exp(r) S^2 exp(r)^T F^T = F' exp(r') S^2 exp(r')^T F'^T

so the same covariance is carried by the quaternion of ``F'`` times that of ``exp(r')``, with the
scales unchanged. :func:`fold_rotation` does this; the tests check the covariances agree.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

#: The mirror that takes the release's frame ``[t, b, n]`` to the rotation ``[t, -b, n]``.
FOLD_MIRROR = (1.0, -1.0, 1.0)


def tbn_frames(corners: Tensor, corner_uvs: Tensor) -> Tensor:
    """The release's per-face frames ``[t, b, n]`` (as matrix columns), determinant -1.

    Args:
        corners: ``[..., 3, 3]`` triangle corner positions (corner, xyz).
        corner_uvs: ``[..., 3, 2]`` their UV coordinates.
    Returns:
        ``[..., 3, 3]`` frames, columns tangent (along ``u``), bitangent ``t x n``, normal.
    """
    e1 = corners[..., 1, :] - corners[..., 0, :]
    e2 = corners[..., 2, :] - corners[..., 0, :]
    d1 = corner_uvs[..., 1, :] - corner_uvs[..., 0, :]
    d2 = corner_uvs[..., 2, :] - corner_uvs[..., 0, :]
    f = 1.0 / ((d1[..., 0] * d2[..., 1] - d1[..., 1] * d2[..., 0]) + 1e-12)
    tangent = F.normalize(f[..., None] * (e1 * d2[..., 1:2] - e2 * d1[..., 1:2]), dim=-1)
    normal = F.normalize(torch.linalg.cross(e1, e2), dim=-1)
    bitangent = F.normalize(torch.linalg.cross(tangent, normal), dim=-1)
    return torch.stack([tangent, bitangent, normal], dim=-1)


def proper_frames(frames: Tensor) -> Tensor:
    """``[t, b, n] -> [t, -b, n]``: the reflection frames made proper rotations (det +1)."""
    return frames * frames.new_tensor(FOLD_MIRROR)


def fold_rotvec(rotvec: Tensor) -> Tensor:
    """``r -> (-r_x, r_y, -r_z)``: the local rotation conjugated by ``diag(1, -1, 1)``."""
    return rotvec * rotvec.new_tensor((-1.0, 1.0, -1.0))


def rotvec_to_matrix(rotvec: Tensor) -> Tensor:
    """Rodrigues' formula as the release writes it (``batch_rodrigues``: the angle is the norm of
    ``rotvec + 1e-8``): ``[..., 3] -> [..., 3, 3]``."""
    angle = (rotvec + 1e-8).norm(dim=-1, keepdim=True)
    axis = rotvec / angle
    x, y, z = axis.unbind(-1)
    zero = torch.zeros_like(x)
    k = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(*rotvec.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=rotvec.dtype, device=rotvec.device)
    s, c = torch.sin(angle)[..., None], torch.cos(angle)[..., None]
    return eye + s * k + (1.0 - c) * (k @ k)


def release_covariance(frames: Tensor, rotvec: Tensor, scales: Tensor) -> Tensor:
    """The release's covariance ``R S^2 R^T`` with ``R = frames @ exp(rotvec)`` (reflection kept).

    ``frames [..., 3, 3]``, ``rotvec [..., 3]``, ``scales [..., 3]`` -> ``[..., 3, 3]``.
    """
    rot = frames @ rotvec_to_matrix(rotvec)
    return rot @ torch.diag_embed(scales.square()) @ rot.transpose(-1, -2)


def fold_rotation(frames: Tensor, rotvec: Tensor) -> Tensor:
    """Unit quaternions ``(w, x, y, z)`` ``[..., 4]`` whose covariance equals the release's for any
    diagonal scales: ``quat([t, -b, n]) * quat(exp(-r_x, r_y, -r_z))``. ``frames`` must be the
    reflection frames of :func:`tbn_frames` (det -1)."""
    import roma

    from sigman.lbs import quat_multiply, xyzw_to_wxyz

    frame_q = xyzw_to_wxyz(roma.rotmat_to_unitquat(proper_frames(frames)))
    local_q = xyzw_to_wxyz(roma.rotmat_to_unitquat(rotvec_to_matrix(fold_rotvec(rotvec))))
    q = quat_multiply(frame_q, local_q)
    return q / q.norm(dim=-1, keepdim=True)
