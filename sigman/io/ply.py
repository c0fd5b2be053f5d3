"""The standard 3D Gaussian Splatting ``.ply`` (what SuperSplat, gsplat, viser and the original
3DGS code read): binary little-endian float32 vertex properties

    x y z nx ny nz f_dc_0 f_dc_1 f_dc_2 opacity scale_0 scale_1 scale_2 rot_0 rot_1 rot_2 rot_3

with ``f_dc = (rgb - 0.5) / C0`` (SH degree 0), ``opacity = logit(alpha)``, ``scale = log(sigma)``
and ``rot`` a ``(w, x, y, z)`` quaternion. Extra ``f_rest_*`` properties are read and ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Union

import numpy as np
import torch

from sigman.gaussians import Gaussians

SH_C0 = 0.28209479177387814
PROPERTIES = ("x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
              "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3")
REQUIRED = tuple(p for p in PROPERTIES if not p.startswith("n"))
_PLY_TYPES = {"float": "f4", "float32": "f4", "double": "f8", "float64": "f8", "uchar": "u1", "uint8": "u1",
              "char": "i1", "int8": "i1", "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
              "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4"}
_EPS = 1e-7


def gaussians_to_ply_fields(g: Gaussians) -> np.ndarray:
    """Structured array of the stored (pre-activation) float32 fields."""
    n = g.num_gaussians
    data = np.zeros(n, dtype=[(p, "<f4") for p in PROPERTIES])
    means = g.means.detach().float().cpu().numpy()
    colors = g.colors.detach().float().cpu().numpy()
    alpha = np.clip(g.opacities.detach().float().cpu().numpy(), _EPS, 1 - _EPS)
    scales = np.maximum(g.scales.detach().float().cpu().numpy(), 1e-12)
    quats = g.quats.detach().float().cpu().numpy()
    for i, k in enumerate("xyz"):
        data[k] = means[:, i]
    for i in range(3):
        data[f"f_dc_{i}"] = (colors[:, i] - 0.5) / SH_C0
        data[f"scale_{i}"] = np.log(scales[:, i])
    data["opacity"] = np.log(alpha) - np.log1p(-alpha)
    for i in range(4):
        data[f"rot_{i}"] = quats[:, i]
    return data


def save_ply(path: Union[str, Path], gaussians: Gaussians) -> None:
    """Write un-batched Gaussians ``[N, ...]`` as a standard 3DGS ``.ply``."""
    if gaussians.means.dim() != 2:
        raise ValueError(f"save_ply takes one set of Gaussians [N, 3], got means {tuple(gaussians.means.shape)}")
    data = gaussians_to_ply_fields(gaussians)
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {len(data)}"]
    header += [f"property float {p}" for p in PROPERTIES] + ["end_header"]
    with open(path, "wb") as f:
        f.write(("\n".join(header) + "\n").encode("ascii"))
        f.write(data.tobytes())


def _parse_header(raw: bytes, name: str) -> tuple[int, list[tuple[str, str]], int]:
    end = raw.find(b"end_header\n")
    if not raw.startswith(b"ply\n") or end < 0:
        raise ValueError(f"{name} is not a PLY file (no 'ply' ... 'end_header' header)")
    lines = raw[:end].decode("ascii", errors="replace").splitlines()
    count, props, in_vertex = None, [], False
    for line in lines[1:]:
        parts = line.split()
        if not parts or parts[0] in ("comment", "obj_info"):
            continue
        if parts[0] == "format" and parts[1] != "binary_little_endian":
            raise ValueError(f"{name} is PLY '{parts[1]}'; only binary_little_endian 3DGS files are read")
        if parts[0] == "element":
            in_vertex = parts[1] == "vertex"
            if in_vertex:
                count = int(parts[2])
            elif count is not None:
                break  # elements after the vertices are ignored
        elif parts[0] == "property" and in_vertex:
            if parts[1] == "list" or parts[1] not in _PLY_TYPES:
                raise ValueError(f"{name}: unsupported vertex property type '{parts[1]}'")
            props.append((parts[2], "<" + _PLY_TYPES[parts[1]]))
    if count is None:
        raise ValueError(f"{name} has no vertex element")
    return count, props, end + len(b"end_header\n")


def read_ply_fields(path: Union[str, Path]) -> np.ndarray:
    """The vertex properties of a 3DGS ``.ply`` as a structured array (validated)."""
    name = str(path)
    raw = Path(path).read_bytes()
    count, props, start = _parse_header(raw, name)
    names = [p for p, _ in props]
    missing = [p for p in REQUIRED if p not in names]
    if missing:
        raise ValueError(f"not a 3DGS .ply: {name} is missing property '{missing[0]}'")
    dtype = np.dtype(props)
    need = count * dtype.itemsize
    if len(raw) - start < need:
        raise ValueError(f"{name} is truncated: {count} Gaussians need {need} bytes, found {len(raw) - start}")
    return np.frombuffer(raw, dtype=dtype, count=count, offset=start)


def _unit(quats: torch.Tensor) -> torch.Tensor:
    """Normalise quaternions, leaving already-unit ones bit-exact (other writers store raw ones)."""
    norm = quats.norm(dim=-1, keepdim=True)
    return torch.where((norm - 1).abs() > 1e-5, quats / norm.clamp_min(1e-12), quats)


def load_ply(path: Union[str, Path]) -> Gaussians:
    d = read_ply_fields(path)
    col = lambda *ks: torch.from_numpy(np.stack([d[k].astype(np.float32) for k in ks], axis=-1))
    logit = torch.from_numpy(d["opacity"].astype(np.float32))
    quats = col("rot_0", "rot_1", "rot_2", "rot_3")
    if not (torch.isfinite(quats).all() and torch.isfinite(logit).all()):
        raise ValueError(f"{path} contains NaN or Inf values")
    return Gaussians(
        means=col("x", "y", "z"),
        quats=_unit(quats),
        scales=torch.exp(col("scale_0", "scale_1", "scale_2")),
        opacities=torch.sigmoid(logit),
        colors=(0.5 + SH_C0 * col("f_dc_0", "f_dc_1", "f_dc_2")).clamp(0, 1),
    )
