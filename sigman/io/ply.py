"""The standard 3D Gaussian Splatting ``.ply`` (what SuperSplat, gsplat, viser and the original
3DGS code read): one ``vertex`` element, binary little-endian float32 properties

    x y z nx ny nz f_dc_0 f_dc_1 f_dc_2 [f_rest_0 ...] opacity scale_0 scale_1 scale_2 rot_0 rot_1 rot_2 rot_3

with ``f_dc = (rgb - 0.5) / C0``, ``opacity = logit(alpha)``, ``scale = log(sigma)``, ``rot`` the
``(w, x, y, z)`` quaternion and zero normals, as the original 3DGS writes it. By default the file
has the full layout of SH degree 3 (45 ``f_rest_*``, all zero: sigman's colours are view
independent), 62 properties = 248 bytes per Gaussian, because Inria's loader asserts 45
``f_rest_*`` and SIBR reads fixed 248-byte records; ``sh_degree=0`` writes the compact 17-property
file that gsplat, SuperSplat, Spark, mkkellogg's loader and viser also read.

Frame: +Y down, +Z forward (see :mod:`sigman.io.frames`): the writer turns sigman's +Y-up frame by
180° about X, the reader turns it back, both exactly. A header comment says so.

Precision. :class:`~sigman.gaussians.Gaussians` hold activated values; the file holds
pre-activation float32 values. Both directions compute in float64 and round once to float32, and
the loader picks, for each stored value, the float32 activation that the writer maps back to that
very value. So ``save -> load -> save`` reproduces the file byte for byte, a file written by
:func:`save_ply` loads back to the exact stored logit/log/SH values, and positions and quaternions
are bit-exact. Activations themselves come back to within the precision of the stored float32
values (float32 ``log(sigma)`` is coarser than float32 ``sigma`` once ``|log(sigma)| > 1``).
The writer clamps colours to ``[0, 1]``, opacities to ``[tiny, 1 - 2**-24]`` and scales to at least
the smallest normal float32, so that every stored value is finite.

Reading accepts any property order, ``double`` properties, big-endian files, extra properties
(``f_rest_*`` are read and dropped: :class:`Gaussians` hold the degree-0 colour only) and extra
elements.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Union

import numpy as np
import torch

from sigman.gaussians import Gaussians
from sigman.io.frames import FRAME_COMMENT, from_splat_frame, to_splat_frame

SH_C0 = 0.28209479177387814
MAX_SH_DEGREE = 3
DEFAULT_SH_DEGREE = 3  # the full Inria layout; 0 is the compact one
PROPERTIES = ("x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
              "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3")
REQUIRED = ("x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2",
            "rot_0", "rot_1", "rot_2", "rot_3")
_PLY_TYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
              "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
              "float": "f4", "float32": "f4", "double": "f8", "float64": "f8"}
_HEADER_END = re.compile(rb"end_header\r?\n")
_F32 = np.float32
_TINY = float(np.finfo(np.float32).tiny)
_OPACITY_MAX = float(np.float32(1.0) - np.float32(2.0 ** -24))  # the largest float32 below 1


def ply_properties(sh_degree: int = 0) -> tuple[str, ...]:
    """Property names in the order the original 3DGS writes them (``f_rest_*`` for ``sh_degree > 0``)."""
    if not 0 <= sh_degree <= MAX_SH_DEGREE:
        raise ValueError(f"sh_degree must be 0..{MAX_SH_DEGREE}, got {sh_degree}")
    rest = tuple(f"f_rest_{i}" for i in range(3 * ((sh_degree + 1) ** 2 - 1)))
    return PROPERTIES[:9] + rest + PROPERTIES[9:]


# --- activations: float64 maths, one rounding to float32 -------------------------------------

def _sigmoid(x: np.ndarray) -> np.ndarray:
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def scales_to_log(scales: np.ndarray) -> np.ndarray:
    """Linear std-devs (clamped to the smallest positive float32) -> float32 ``log(sigma)``."""
    return np.log(np.clip(scales.astype(np.float64), _TINY, None)).astype(_F32)


def log_to_scales(raw: np.ndarray) -> np.ndarray:
    return _exact_inverse(raw, lambda r: np.exp(r), scales_to_log, _TINY, float(np.finfo(np.float32).max))


def opacities_to_logit(alpha: np.ndarray) -> np.ndarray:
    """Opacities in ``[0, 1]`` (clamped to ``[tiny, 1 - 2**-24]``) -> float32 logits."""
    a = np.clip(alpha.astype(np.float64), _TINY, _OPACITY_MAX)
    return (np.log(a) - np.log1p(-a)).astype(_F32)


def logit_to_opacities(raw: np.ndarray) -> np.ndarray:
    return _exact_inverse(raw, _sigmoid, opacities_to_logit, 0.0, 1.0)


def rgb_to_sh0(rgb: np.ndarray) -> np.ndarray:
    """Colours (clamped to ``[0, 1]``) -> float32 SH DC coefficients ``(rgb - 0.5) / C0``."""
    return ((np.clip(rgb.astype(np.float64), 0.0, 1.0) - 0.5) / SH_C0).astype(_F32)


def sh0_to_rgb(raw: np.ndarray) -> np.ndarray:
    return _exact_inverse(raw, lambda r: np.clip(0.5 + SH_C0 * r, 0.0, 1.0), rgb_to_sh0, 0.0, 1.0)


def _exact_inverse(raw: np.ndarray, activate: Callable[[np.ndarray], np.ndarray],
                   deactivate: Callable[[np.ndarray], np.ndarray], lo: float, hi: float) -> np.ndarray:
    """float32 activations of float32 ``raw`` values, chosen (where one exists) so that
    ``deactivate(value) == raw`` exactly. The float64 activation rounded to float32 almost always
    is; the rare misses try their float32 neighbours."""
    shape = np.shape(raw)
    raw = np.asarray(raw, dtype=_F32).reshape(-1)
    with np.errstate(over="ignore"):
        value = np.clip(activate(raw.astype(np.float64)), lo, hi).astype(_F32)
    miss = np.flatnonzero(deactivate(value) != raw)
    base = value[miss]
    for step in (1, -1, 2, -2):
        if miss.size == 0:
            break
        cand = base
        for _ in range(abs(step)):
            cand = np.nextafter(cand, _F32(np.inf if step > 0 else -np.inf))
        cand = np.clip(cand, _F32(lo), _F32(hi))
        hit = deactivate(cand) == raw[miss]
        value[miss[hit]] = cand[hit]
        miss, base = miss[~hit], base[~hit]
    return value.reshape(shape)


def normalize_quats(quats: np.ndarray) -> np.ndarray:
    """Unit quaternions ``[N, 4]``: near-unit rows are kept bit-exact, zero rows become identity."""
    q = np.asarray(quats, dtype=_F32).copy()
    norm = np.linalg.norm(q.astype(np.float64), axis=-1)
    fix = np.abs(norm - 1.0) > 1e-5
    zero = norm < 1e-12
    q[fix & ~zero] = (q[fix & ~zero] / norm[fix & ~zero, None]).astype(_F32)
    q[zero] = (1, 0, 0, 0)
    return q


def gaussian_arrays(g: Gaussians, what: str = "this file") -> dict[str, np.ndarray]:
    """float32 numpy copies of one set of Gaussians ``[N, ...]`` (validated: un-batched, finite)."""
    if g.means.dim() != 2:
        raise ValueError(f"{what} holds one set of Gaussians [N, 3]; got means {tuple(g.means.shape)} "
                         "(pick one frame of a batch first)")
    out = {name: getattr(g, name).detach().to("cpu", torch.float32).numpy()
           for name in ("means", "quats", "scales", "opacities", "colors")}
    for name, array in out.items():
        if not np.isfinite(array).all():
            raise ValueError(f"cannot save Gaussians whose {name} contain NaN or Inf")
    return out


# --- writing ---------------------------------------------------------------------------------

def gaussians_to_ply_fields(g: Gaussians, sh_degree: int = DEFAULT_SH_DEGREE) -> np.ndarray:
    """Structured array ``[N]`` of the stored (pre-activation) float32 properties, in the file's frame."""
    a = gaussian_arrays(g, "a .ply")
    a["means"], a["quats"] = to_splat_frame(a["means"], a["quats"])
    data = np.zeros(len(a["means"]), dtype=[(p, "<f4") for p in ply_properties(sh_degree)])
    sh0, log_scales = rgb_to_sh0(a["colors"]), scales_to_log(a["scales"])
    for i in range(3):
        data["xyz"[i]] = a["means"][:, i]
        data[f"f_dc_{i}"] = sh0[:, i]
        data[f"scale_{i}"] = log_scales[:, i]
    data["opacity"] = opacities_to_logit(a["opacities"])
    for i in range(4):
        data[f"rot_{i}"] = a["quats"][:, i]
    return data


def save_ply(path: Union[str, Path], gaussians: Gaussians, sh_degree: int = DEFAULT_SH_DEGREE) -> None:
    """Write Gaussians ``[N, ...]`` (sigman's frame) as a standard 3DGS ``.ply`` (+Y down).

    ``sh_degree`` sets the layout: 3 (default) is the full Inria one (45 zero ``f_rest_*``, what
    the original 3DGS code and SIBR need), 0 the compact one (17 properties); 1 and 2 also work.
    The colour is the same in all.
    """
    data = gaussians_to_ply_fields(gaussians, sh_degree)
    header = ["ply", "format binary_little_endian 1.0", f"comment {FRAME_COMMENT}", f"element vertex {len(data)}"]
    header += [f"property float {p}" for p in data.dtype.names] + ["end_header"]
    with open(path, "wb") as f:
        f.write(("\n".join(header) + "\n").encode("ascii"))
        f.write(data.tobytes())


# --- reading ---------------------------------------------------------------------------------

def _parse_header(raw: bytes, name: str) -> tuple[int, np.dtype, int]:
    """``(vertex count, vertex record dtype, byte offset of the vertex data)``."""
    end = _HEADER_END.search(raw, 0, 1 << 20)
    if not (raw.startswith(b"ply\n") or raw.startswith(b"ply\r\n")) or end is None:
        raise ValueError(f"{name} is not a PLY file (no 'ply' ... 'end_header' header)")
    lines = raw[:end.start()].decode("ascii", errors="replace").splitlines()[1:]
    byte_order, elements = None, []  # elements: [name, count, [(prop, type)], has_list]
    for line in lines:
        parts = line.split()
        if not parts or parts[0] in ("comment", "obj_info"):
            continue
        if parts[0] == "format" and len(parts) >= 2:
            if parts[1] == "ascii":
                raise ValueError(f"{name} is an ASCII PLY; 3DGS files are binary (binary_little_endian)")
            byte_order = {"binary_little_endian": "<", "binary_big_endian": ">"}.get(parts[1])
            if byte_order is None:
                raise ValueError(f"{name} has an unknown PLY format '{parts[1]}'")
        elif parts[0] == "element" and len(parts) == 3 and parts[2].isdigit():
            elements.append([parts[1], int(parts[2]), [], False])
        elif parts[0] == "property" and elements and len(parts) >= 3:
            if parts[1] == "list":
                elements[-1][3] = True
            elif parts[1] in _PLY_TYPES and len(parts) == 3:
                elements[-1][2].append((parts[2], parts[1]))
            else:
                raise ValueError(f"{name}: unknown PLY property type '{parts[1]}'")
        else:
            raise ValueError(f"{name} has a malformed PLY header line '{line.strip()[:60]}'")
    if byte_order is None:
        raise ValueError(f"{name} has no 'format' line in its PLY header")
    offset = end.end()
    for element, count, props, has_list in elements:
        if element == "vertex":
            if has_list:
                raise ValueError(f"{name}: list properties on the vertex element are not 3DGS")
            names = [p for p, _ in props]
            if len(set(names)) != len(names):
                raise ValueError(f"{name}: duplicate vertex property names")
            if "packed_position" in names:
                raise ValueError(f"{name} is a compressed (packed) splat .ply; decompress it to the "
                                 "standard 3DGS layout first")
            dtype = np.dtype([(p, byte_order + _PLY_TYPES[t]) for p, t in props])
            return count, dtype, offset
        if has_list:
            raise ValueError(f"{name}: element '{element}' before the vertices has list properties")
        offset += count * sum(np.dtype(_PLY_TYPES[t]).itemsize for _, t in props)
    raise ValueError(f"{name} has no vertex element")


def read_ply_fields(path: Union[str, Path]) -> np.ndarray:
    """The vertex properties of a 3DGS ``.ply`` as a structured array ``[N]`` (validated)."""
    name = str(path)
    raw = Path(path).read_bytes()
    count, dtype, start = _parse_header(raw, name)
    missing = [p for p in REQUIRED if p not in dtype.names]
    if missing:
        raise ValueError(f"not a 3DGS .ply: {name} is missing property '{missing[0]}'")
    need = count * dtype.itemsize
    if len(raw) - start < need:
        raise ValueError(f"{name} is truncated: {count} Gaussians need {need} bytes of vertex data, "
                         f"found {max(len(raw) - start, 0)}")
    return np.frombuffer(raw, dtype=dtype, count=count, offset=start)


def ply_fields_to_gaussians(d: np.ndarray, name: str = "the .ply") -> Gaussians:
    """Gaussians ``[N, ...]`` (float32, sigman's frame) from the stored properties of a 3DGS ``.ply``."""
    def col(*keys: str) -> np.ndarray:
        out = np.stack([d[k].astype(_F32) for k in keys], axis=-1) if len(d) else np.zeros((0, len(keys)), _F32)
        if not np.isfinite(out).all():
            raise ValueError(f"{name} has NaN or Inf in {', '.join(keys)}")
        return out

    means, quats = col("x", "y", "z"), col("rot_0", "rot_1", "rot_2", "rot_3")
    log_scales, logit = col("scale_0", "scale_1", "scale_2"), col("opacity")[:, 0]
    sh0 = col("f_dc_0", "f_dc_1", "f_dc_2")
    means, quats = from_splat_frame(means, normalize_quats(quats))
    return Gaussians(
        means=torch.from_numpy(np.ascontiguousarray(means)),
        quats=torch.from_numpy(np.ascontiguousarray(quats)),
        scales=torch.from_numpy(log_to_scales(log_scales)),
        opacities=torch.from_numpy(logit_to_opacities(logit)),
        colors=torch.from_numpy(sh0_to_rgb(sh0)),
    )


def load_ply(path: Union[str, Path]) -> Gaussians:
    """Read a 3DGS ``.ply`` (+Y down) into float32 Gaussians ``[N, ...]`` in sigman's frame (+Y up;
    no skin weights)."""
    return ply_fields_to_gaussians(read_ply_fields(path), str(path))
