"""The body fit's linear shape model: canonical vertices and joints as a linear function of the
fitted shape coordinates (anny: finite differences of its phenotype blendshapes, built once per
machine with anny's module and cached; SMPL-X: the betas, exactly).

    basis = build_shape_basis(body, FitConfig())
    rest_vertices, rest_joints = basis.rest(coords)      # coords [B, K]
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from sigman.atomic import atomic_savez, read_npz_cache
from sigman.body.base import BodyModel
from sigman.paths import cache_dir


@dataclass
class ShapeBasis:
    """Linear shape model ``rest(c) = base + sum_k (c_k - centre_k) dirs_k`` over the fitted
    shape coordinates ``c [B, K]`` (a subset of the body's shape vector, ``index``)."""

    base_vertices: Tensor  # [V, 3]
    base_joints: Tensor  # [J, 3]
    dir_vertices: Tensor  # [K, V, 3] per unit of the coordinate
    dir_joints: Tensor  # [K, J, 3]
    centre: Tensor  # [S] the body's mean shape vector
    index: Tensor  # [K] long, which entries of the shape vector are fitted
    low: float
    high: float

    @property
    def num_coords(self) -> int:
        return int(self.index.numel())

    def to(self, device) -> "ShapeBasis":
        return ShapeBasis(*(getattr(self, k).to(device) for k in (
            "base_vertices", "base_joints", "dir_vertices", "dir_joints", "centre", "index")),
            self.low, self.high)

    def rest(self, coords: Tensor) -> tuple[Tensor, Tensor]:
        """``coords [B, K]`` -> canonical vertices ``[B, V, 3]`` and joints ``[B, J, 3]``."""
        delta = coords - self.centre[self.index]
        v = self.base_vertices + torch.einsum("bk,kvc->bvc", delta, self.dir_vertices)
        j = self.base_joints + torch.einsum("bk,kjc->bjc", delta, self.dir_joints)
        return v, j

    def full_shape(self, coords: Tensor) -> Tensor:
        """The body's whole shape vector ``[B, S]`` with ``coords`` filled in."""
        shape = self.centre.expand(coords.shape[0], -1).clone()
        shape[:, self.index] = coords.detach()
        return shape


def _shape_index(body: BodyModel, config) -> list[int]:
    if body.name == "anny":
        from sigman.body.anny_body import PHENOTYPE_LABELS

        unknown = [k for k in config.anny_shape_labels if k not in PHENOTYPE_LABELS]
        if unknown:
            raise ValueError(f"unknown anny phenotypes {unknown}; choose from {PHENOTYPE_LABELS}")
        return [PHENOTYPE_LABELS.index(k) for k in config.anny_shape_labels]
    return list(range(min(config.smplx_num_betas, body.shape_dim)))


def build_shape_basis(body: BodyModel, config=None, step: float = 0.15, cache: bool = True) -> ShapeBasis:
    """The linear shape basis of ``body`` over the coordinates ``config`` fits (a
    :class:`sigman.fit.FitConfig`; default: its defaults).

    anny: central differences of ``body.rest`` (anny's module) at ``0.5 +- step``, cached under
    :func:`sigman.paths.cache_dir` (built once per machine). SMPL-X: exact unit-beta differences.
    """
    if config is None:
        from sigman.fit import FitConfig  # the fit's configuration; imported here (fit imports this module)

        config = FitConfig()
    index = _shape_index(body, config) if config.fit_shape else []
    centre = body.default_shape(1)[0].detach()
    device = body.rest_vertices.device
    base_v, base_j = body.rest_vertices.detach(), body.rest_joints.detach()
    k = len(index)
    if k == 0:
        return ShapeBasis(base_v, base_j, base_v.new_zeros(0, *base_v.shape), base_j.new_zeros(0, *base_j.shape),
                          centre, torch.zeros(0, dtype=torch.long, device=device), 0.0, 1.0)
    if body.name == "anny":
        key = hashlib.sha1(base_v.cpu().numpy().tobytes() + str((index, step)).encode()).hexdigest()[:12]
        path = cache_dir() / "fit" / f"anny_shape_basis_{key}.npz"
        cached = read_npz_cache(path) if cache else None
        arrays = None if cached is None else {n: torch.from_numpy(a) for n, a in cached.items()}
        if arrays is None:
            shapes = centre.expand(2 * k, -1).clone()
            for i, s in enumerate(index):
                shapes[2 * i, s] += step
                shapes[2 * i + 1, s] -= step
            v, j = body.rest(shapes)
            arrays = {"dir_vertices": ((v[0::2] - v[1::2]) / (2 * step)).float().cpu(),
                      "dir_joints": ((j[0::2] - j[1::2]) / (2 * step)).float().cpu()}
            if cache:
                _atomic_savez(path, {n: a.numpy() for n, a in arrays.items()})
        return ShapeBasis(base_v, base_j, arrays["dir_vertices"].to(device), arrays["dir_joints"].to(device),
                          centre, torch.tensor(index, device=device), 0.0, 1.0)
    shapes = torch.zeros(k, body.shape_dim, device=device)
    shapes[torch.arange(k), torch.tensor(index)] = 1.0
    with torch.no_grad():
        v, j = body.rest(shapes)
    return ShapeBasis(base_v, base_j, (v - base_v).detach(), (j - base_j).detach(), centre,
                      torch.tensor(index, device=device), -3.0, 3.0)


def _atomic_savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    atomic_savez(path, arrays)
