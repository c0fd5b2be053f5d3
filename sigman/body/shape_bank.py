"""A bank of precomputed anny body shapes.

Non-default anny shapes (phenotypes) need the raw ``anny`` module, which needs ``warp``. Where
those cannot be installed (the GPU training machine carries no large wheels), a bank made once
with anny holds ``K`` random adult phenotypes with their canonical vertices and joints, and the
synthetic data generator samples body shapes from it.

    python -c "from sigman.body.shape_bank import make_shape_bank; make_shape_bank('bank.npz', 64)"
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
import torch
from torch import Tensor

from sigman.body.anny_body import PHENOTYPE_LABELS

# Uniform sampling ranges of the six anny phenotypes (adults of varied build).
PHENOTYPE_RANGES: dict[str, tuple[float, float]] = {
    "gender": (0.0, 1.0), "age": (0.45, 0.95), "muscle": (0.15, 0.85),
    "weight": (0.15, 0.85), "height": (0.15, 0.85), "proportions": (0.3, 0.7),
}


def sample_phenotypes(count: int, generator: torch.Generator) -> Tensor:
    """Random adult phenotypes ``[count, 6]`` in :data:`PHENOTYPE_RANGES`."""
    lo = torch.tensor([PHENOTYPE_RANGES[k][0] for k in PHENOTYPE_LABELS])
    hi = torch.tensor([PHENOTYPE_RANGES[k][1] for k in PHENOTYPE_LABELS])
    return lo + (hi - lo) * torch.rand(count, len(PHENOTYPE_LABELS), generator=generator)


@dataclass
class ShapeBank:
    phenotypes: Tensor  # [K, 6]
    rest_vertices: Tensor  # [K, V, 3]
    rest_joints: Tensor  # [K, J, 3]

    def __len__(self) -> int:
        return self.phenotypes.shape[0]

    @staticmethod
    def load(path: Union[str, Path]) -> "ShapeBank":
        with np.load(path, allow_pickle=False) as data:
            return ShapeBank(torch.from_numpy(data["phenotypes"]).float(),
                             torch.from_numpy(data["rest_vertices"]).float(),
                             torch.from_numpy(data["rest_joints"]).float())

    def sample(self, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        """One random shape: phenotype ``[6]``, rest vertices ``[V, 3]``, rest joints ``[J, 3]``."""
        i = int(torch.randint(len(self), (1,), generator=generator))
        return self.phenotypes[i], self.rest_vertices[i], self.rest_joints[i]


def make_shape_bank(path: Union[str, Path], count: int = 64, seed: int = 0, body=None) -> ShapeBank:
    """Compute ``count`` random shapes with anny and save them (vertices as float16)."""
    from sigman.body import load_body_model

    body = load_body_model("anny") if body is None else body
    phenotypes = sample_phenotypes(count, torch.Generator().manual_seed(seed))
    verts, joints = [], []
    for start in range(0, count, 16):
        v, j = body.rest(phenotypes[start:start + 16])
        verts.append(v)
        joints.append(j)
    bank = ShapeBank(phenotypes, torch.cat(verts), torch.cat(joints))
    np.savez(path, phenotypes=bank.phenotypes.numpy(), rest_vertices=bank.rest_vertices.half().numpy(),
             rest_joints=bank.rest_joints.numpy())
    return bank
