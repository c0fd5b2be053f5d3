"""The compact ``.splat`` format of antimatter15's web viewer (also read by viser and SuperSplat):
no header, 32 bytes per Gaussian, little-endian —

    position  3 x float32
    scale     3 x float32 (linear std-devs)
    rgba      4 x uint8   (colour and opacity, ``round(255 * v)``)
    rotation  4 x uint8   (the unit ``(w, x, y, z)`` quaternion as ``round(128 * q + 128)``, clipped)

— sorted by decreasing ``prod(scale) * opacity``, as the format's writers do. Lossy: positions and
scales are exact, colours, opacities and rotations are quantised to 8 bits (rotations to about
0.5 degrees). Gaussians come back in file order (the sorted order).

Frame: the same as the ``.ply`` (+Y down, see :mod:`sigman.io.frames`); writing turns sigman's
frame by 180° about X, reading turns it back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Union

import numpy as np
import torch

from sigman.gaussians import Gaussians
from sigman.io.frames import from_splat_frame, to_splat_frame
from sigman.io.ply import gaussian_arrays, normalize_quats

RECORD = np.dtype([("position", "<f4", 3), ("scale", "<f4", 3), ("rgba", "u1", 4), ("rot", "u1", 4)])


def splat_order(scales: np.ndarray, opacities: np.ndarray) -> np.ndarray:
    """Indices ``[N]`` sorting Gaussians by decreasing importance ``prod(scale) * opacity`` (stable)."""
    importance = np.prod(scales.astype(np.float64), axis=1) * opacities.astype(np.float64)
    return np.argsort(-importance, kind="stable")


def gaussians_to_splat_records(g: Gaussians) -> np.ndarray:
    """Structured array ``[N]`` of ``.splat`` records, in the format's importance order."""
    a = gaussian_arrays(g, "a .splat")
    a["means"], a["quats"] = to_splat_frame(a["means"], normalize_quats(a["quats"]))
    order = splat_order(a["scales"], a["opacities"])
    data = np.zeros(len(order), dtype=RECORD)
    data["position"] = a["means"][order]
    data["scale"] = a["scales"][order]
    rgba = np.concatenate([a["colors"], a["opacities"][:, None]], axis=1)[order]
    data["rgba"] = np.clip(np.round(rgba.astype(np.float64) * 255), 0, 255).astype(np.uint8)
    q = normalize_quats(a["quats"][order]).astype(np.float64)
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    data["rot"] = np.clip(np.round(q * 128 + 128), 0, 255).astype(np.uint8)
    return data


def save_splat(path: Union[str, Path], gaussians: Gaussians) -> None:
    """Write Gaussians ``[N, ...]`` as an antimatter15 ``.splat`` (lossy, reordered)."""
    Path(path).write_bytes(gaussians_to_splat_records(gaussians).tobytes())


def load_splat(path: Union[str, Path]) -> Gaussians:
    """Read a ``.splat`` into float32 Gaussians ``[N, ...]`` in file order (no skin weights)."""
    raw = Path(path).read_bytes()
    if len(raw) % RECORD.itemsize:
        raise ValueError(f"{path} is not a .splat file (or is truncated): its size {len(raw)} is not a "
                         f"multiple of {RECORD.itemsize} bytes")
    d = np.frombuffer(raw, dtype=RECORD)
    means, scales = d["position"].astype(np.float32), d["scale"].astype(np.float32)
    if not (np.isfinite(means).all() and np.isfinite(scales).all()):
        raise ValueError(f"{path} is not a valid .splat file: positions or scales are NaN or Inf")
    q = (d["rot"].astype(np.float32) - 128) / 128
    rgba = d["rgba"].astype(np.float32) / 255
    means, q = from_splat_frame(means, normalize_quats(q))
    return Gaussians(means=torch.from_numpy(np.ascontiguousarray(means)), quats=torch.from_numpy(np.ascontiguousarray(q)),
                     scales=torch.from_numpy(np.abs(scales)), opacities=torch.from_numpy(rgba[:, 3].copy()),
                     colors=torch.from_numpy(rgba[:, :3].copy()))
