"""UV Gaussian template: one Gaussian per covered texel of the body's UV layout.

Rasterising the UV layout at ``R x R`` gives, for every covered texel, the mesh face it falls in
and its barycentric coordinates; from those come its canonical position, normal and skinning
weights on any body shape. The face/barycentric part depends only on the mesh and ``R``, so it is
cached to disk keyed by the body's topology and ``R``.

Texel convention: texel ``(row, col)`` has its centre at ``u = (col + 0.5) / R`` and
``v = 1 - (row + 0.5) / R`` (row 0 is the top of the UV image, ``v`` points up as in OBJ files).
In ``grid_sample`` terms: ``x = 2u - 1``, ``y = 1 - 2v`` with ``align_corners=False``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from sigman.atomic import atomic_savez, read_npz_cache
import torch
from torch import Tensor

from sigman.body.base import BodyModel
from sigman.paths import cache_dir

MIN_RESOLUTION, MAX_RESOLUTION = 16, 2048
UV_CACHE_VERSION = 1


def rasterize_uv_layout(uvs: np.ndarray, face_uvs: np.ndarray, resolution: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Find the face under each texel centre.

    Args:
        uvs: ``[T, 2]`` UV coordinates in ``[0, 1]``; face_uvs: ``[F, 3]`` indices into ``uvs``.
    Returns:
        texel indices ``[N]`` (``row * R + col``, ascending), face indices ``[N]`` and barycentric
        coordinates ``[N, 3]`` (float64, sum to 1). A texel on a shared edge goes to the face whose
        smallest barycentric coordinate is largest; ties go to the lower face index.
    """
    r = resolution
    tri = uvs[face_uvs].astype(np.float64) * r  # [F, 3, 2] in texel units (x=col+.5, y=flipped row+.5)
    tri[..., 1] = r - tri[..., 1]  # v up -> row down
    lo = np.clip(np.floor(tri.min(axis=1) - 0.5).astype(np.int64) + 1, 0, r - 1)  # first centre >= min
    hi = np.clip(np.floor(tri.max(axis=1) - 0.5).astype(np.int64), 0, r - 1)
    w = np.maximum(hi[:, 0] - lo[:, 0] + 1, 0)
    h = np.maximum(hi[:, 1] - lo[:, 1] + 1, 0)
    counts = w * h
    faces = np.repeat(np.arange(len(face_uvs)), counts)
    offset = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    ww = np.repeat(np.maximum(w, 1), counts)
    col = np.repeat(lo[:, 0], counts) + offset % ww
    row = np.repeat(lo[:, 1], counts) + offset // ww
    p = np.stack([col + 0.5, row + 0.5], axis=-1)
    a, b, c = tri[faces, 0], tri[faces, 1], tri[faces, 2]
    v0, v1, v2 = b - a, c - a, p - a
    den = v0[:, 0] * v1[:, 1] - v1[:, 0] * v0[:, 1]
    ok = np.abs(den) > 1e-14
    den = np.where(ok, den, 1.0)
    l1 = (v2[:, 0] * v1[:, 1] - v1[:, 0] * v2[:, 1]) / den
    l2 = (v0[:, 0] * v2[:, 1] - v2[:, 0] * v0[:, 1]) / den
    l0 = 1.0 - l1 - l2
    bary = np.stack([l0, l1, l2], axis=-1)
    score = bary.min(axis=-1)
    inside = ok & (score >= -1e-9)
    texel = (row * r + col)[inside]
    faces, bary, score = faces[inside], bary[inside], score[inside]
    # best face per texel: sort by texel, then by score descending, then face ascending
    order = np.lexsort((faces, -score, texel))
    texel, faces, bary = texel[order], faces[order], bary[order]
    first = np.ones(len(texel), dtype=bool)
    first[1:] = texel[1:] != texel[:-1]
    bary = np.clip(bary[first], 0.0, 1.0)
    bary /= bary.sum(axis=-1, keepdims=True)
    return texel[first], faces[first], bary


def vertex_normals(vertices: Tensor, faces: Tensor) -> Tensor:
    """Area-weighted vertex normals: ``vertices [B, V, 3]``, ``faces [F, 3]`` -> ``[B, V, 3]``."""
    tri = vertices[:, faces]  # [B, F, 3, 3]
    face_n = torch.linalg.cross(tri[:, :, 1] - tri[:, :, 0], tri[:, :, 2] - tri[:, :, 0])
    normals = torch.zeros_like(vertices)
    for k in range(3):
        normals.index_add_(1, faces[:, k], face_n)
    return normals / normals.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def _topology_key(body: BodyModel, resolution: int) -> str:
    h = hashlib.sha1()
    for t in (body.faces, body.face_uvs, body.uvs):
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return f"{body.name}_{h.hexdigest()[:10]}_r{resolution}_v{UV_CACHE_VERSION}"


@dataclass
class UVTemplate:
    """Where each Gaussian lives on the body. ``N`` = number of covered texels."""

    resolution: int
    texel_index: Tensor  # [N] row * R + col
    face_index: Tensor  # [N]
    barycentric: Tensor  # [N, 3]
    texel_uv: Tensor  # [N, 2] (u, v) of the texel centre, v up
    positions: Tensor  # [N, 3] canonical positions (default shape)
    normals: Tensor  # [N, 3] canonical unit normals
    skin_weights: Tensor  # [N, J] rows sum to 1
    faces: Tensor  # [F, 3] the body mesh (for positions_for)
    footprints: Tensor  # [N] world size (metres) of one texel there: sqrt(area_3d / area_uv) / R

    @property
    def num_points(self) -> int:
        return self.texel_index.shape[0]

    @property
    def mask(self) -> Tensor:
        """``[R, R]`` bool: covered texels."""
        m = torch.zeros(self.resolution * self.resolution, dtype=torch.bool, device=self.texel_index.device)
        m[self.texel_index] = True
        return m.view(self.resolution, self.resolution)

    def interpolate(self, vertex_values: Tensor) -> Tensor:
        """Barycentric interpolation of per-vertex values ``[B, V, C]`` (or ``[V, C]``) at every
        texel: ``[B, N, C]`` (or ``[N, C]``)."""
        corners = vertex_values[..., self.faces[self.face_index], :]  # [..., N, 3, C]
        return (corners * self.barycentric[:, :, None].to(corners)).sum(dim=-2)

    def positions_for(self, rest_vertices: Tensor) -> Tensor:
        """Canonical positions on another body shape: ``rest_vertices [B, V, 3]`` -> ``[B, N, 3]``."""
        return self.interpolate(rest_vertices)

    def to_map(self, values: Tensor, fill: float = 0.0) -> Tensor:
        """Scatter per-texel values ``[B, N, C]`` into UV images ``[B, C, R, R]``."""
        b, n, c = values.shape
        out = values.new_full((b, c, self.resolution * self.resolution), fill)
        out[:, :, self.texel_index] = values.transpose(1, 2)
        return out.view(b, c, self.resolution, self.resolution)

    def from_map(self, maps: Tensor) -> Tensor:
        """Gather UV images ``[B, C, R, R]`` at the covered texels: ``[B, N, C]``."""
        if maps.shape[-1] != self.resolution or maps.shape[-2] != self.resolution:
            raise ValueError(f"UV maps must be {self.resolution}x{self.resolution}, got {tuple(maps.shape[-2:])}")
        return maps.flatten(2)[:, :, self.texel_index].transpose(1, 2)

    def to(self, *args, **kwargs) -> "UVTemplate":
        return UVTemplate(self.resolution, *(getattr(self, f).to(*args, **kwargs) for f in (
            "texel_index", "face_index", "barycentric", "texel_uv", "positions", "normals",
            "skin_weights", "faces", "footprints")))


def build_uv_template(body: BodyModel, resolution: int, cache: bool = True,
                      cache_folder: Optional[Path] = None) -> UVTemplate:
    """The UV template of ``body`` at ``resolution`` (cached to disk unless ``cache=False``)."""
    if not MIN_RESOLUTION <= resolution <= MAX_RESOLUTION:
        raise ValueError(f"UV resolution must be in [{MIN_RESOLUTION}, {MAX_RESOLUTION}], got {resolution}")
    path = (cache_folder or cache_dir() / "uv") / f"{_topology_key(body, resolution)}.npz"
    arrays = read_npz_cache(path) if cache else None
    if arrays is None:
        texel, face, bary = rasterize_uv_layout(body.uvs.cpu().double().numpy(), body.face_uvs.cpu().numpy(), resolution)
        arrays = {"texel_index": texel, "face_index": face, "barycentric": bary.astype(np.float32)}
        if cache:
            atomic_savez(path, arrays)
    device = body.rest_vertices.device
    texel = torch.from_numpy(arrays["texel_index"]).long().to(device)
    template = UVTemplate(
        resolution=resolution, texel_index=texel,
        face_index=torch.from_numpy(arrays["face_index"]).long().to(device),
        barycentric=torch.from_numpy(arrays["barycentric"]).float().to(device),
        texel_uv=torch.stack([(texel % resolution).float() + 0.5, resolution - (texel // resolution).float() - 0.5], -1) / resolution,
        positions=torch.empty(0), normals=torch.empty(0), skin_weights=torch.empty(0), faces=body.faces,
        footprints=torch.empty(0),
    )
    template.positions = template.interpolate(body.rest_vertices)
    template.normals = template.interpolate(vertex_normals(body.rest_vertices[None], body.faces)[0])
    template.normals = template.normals / template.normals.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    template.skin_weights = template.interpolate(body.skin_weights)
    template.footprints = face_texel_sizes(body, resolution)[template.face_index]
    return template


def face_texel_sizes(body: BodyModel, resolution: int) -> Tensor:
    """World size (metres) of one texel on each face: ``sqrt(area_3d / area_uv) / R``, ``[F]``."""
    tri = body.rest_vertices[body.faces]  # [F, 3, 3]
    area3d = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]).norm(dim=-1) / 2
    uv = body.uvs[body.face_uvs]  # [F, 3, 2]
    e1, e2 = uv[:, 1] - uv[:, 0], uv[:, 2] - uv[:, 0]
    area_uv = (e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]).abs() / 2
    return (area3d / area_uv.clamp_min(1e-12)).sqrt() / resolution

