"""The compact ``.splat`` format (antimatter15's web viewer): 32 bytes per Gaussian — position
(3 x float32), scale (3 x float32, linear), RGBA (4 x uint8), rotation (4 x uint8,
``round(q * 128 + 128)`` of the ``(w, x, y, z)`` quaternion) — sorted by ``-prod(scale) * alpha``.
Lossy: colours, opacity and rotations are quantised to 8 bits."""

from __future__ import annotations

from pathlib import Path
from typing import Union

import numpy as np
import torch

from sigman.gaussians import Gaussians

RECORD = np.dtype([("position", "<f4", 3), ("scale", "<f4", 3), ("rgba", "u1", 4), ("rot", "u1", 4)])


def save_splat(path: Union[str, Path], g: Gaussians) -> None:
    means = g.means.detach().float().cpu().numpy()
    scales = g.scales.detach().float().cpu().numpy()
    alpha = g.opacities.detach().float().cpu().numpy()
    order = np.argsort(-np.prod(scales, axis=1) * alpha, kind="stable")
    data = np.zeros(len(order), dtype=RECORD)
    data["position"] = means[order]
    data["scale"] = scales[order]
    rgba = np.concatenate([g.colors.detach().float().cpu().numpy(), alpha[:, None]], axis=1)[order]
    data["rgba"] = np.clip(np.round(rgba * 255), 0, 255).astype(np.uint8)
    q = g.quats.detach().float().cpu().numpy()[order]
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    data["rot"] = np.clip(np.round(q * 128 + 128), 0, 255).astype(np.uint8)
    Path(path).write_bytes(data.tobytes())


def load_splat(path: Union[str, Path]) -> Gaussians:
    raw = Path(path).read_bytes()
    if len(raw) == 0 or len(raw) % RECORD.itemsize:
        raise ValueError(f"{path} is not a .splat file: its size {len(raw)} is not a multiple of 32 bytes")
    d = np.frombuffer(raw, dtype=RECORD)
    q = (torch.from_numpy(d["rot"].astype(np.float32)) - 128) / 128
    rgba = torch.from_numpy(d["rgba"].astype(np.float32)) / 255
    return Gaussians(means=torch.from_numpy(d["position"].copy()), quats=q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12),
                     scales=torch.from_numpy(d["scale"].copy()), opacities=rgba[:, 3], colors=rgba[:, :3])
