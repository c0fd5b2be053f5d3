"""Rigged Gaussian avatars as glTF 2.0 binary (``.glb``).

Layout:

- a skin: one node per joint (named, parented as the body's joint tree, translations of the
  canonical pose), with inverse bind matrices (a translation by ``-rest_joint``: joint frames are
  world-aligned at rest);
- one mesh primitive of ``mode`` POINTS holding the canonical Gaussians: ``POSITION``,
  ``JOINTS_0`` / ``WEIGHTS_0`` (the 4 largest skin weights per Gaussian, renormalised), ``COLOR_0``
  (RGBA, a fallback for viewers without splat support), and the attributes of the Khronos
  ``KHR_gaussian_splatting`` draft: ``KHR_gaussian_splatting:ROTATION`` (x, y, z, w),
  ``:SCALE`` (linear), ``:OPACITY`` and ``:SH_DEGREE_0_COEF_0``. The extension is listed in
  ``extensionsUsed`` only, so any glTF viewer still loads the skinned point cloud;
- ``extras.sigman`` at the root: format version, the body model name and the joint tree, so this
  project reloads the avatar and reposes it with any SMPL-X pose.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Union

import numpy as np
import torch

from sigman.gaussians import Gaussians
from sigman.io.rig import Rig

EXTENSION = "KHR_gaussian_splatting"
ATTR_ROTATION = f"{EXTENSION}:ROTATION"
ATTR_SCALE = f"{EXTENSION}:SCALE"
ATTR_OPACITY = f"{EXTENSION}:OPACITY"
ATTR_SH0 = f"{EXTENSION}:SH_DEGREE_0_COEF_0"
SH_C0 = 0.28209479177387814
FORMAT_VERSION = 1
TOP_K = 4
_GLB_MAGIC, _JSON, _BIN = 0x46546C67, 0x4E4F534A, 0x004E4942
_FLOAT, _USHORT, _UBYTE = 5126, 5123, 5121
_NUM_COMPONENTS = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT4": 16}
_NUMPY = {_FLOAT: "<f4", _USHORT: "<u2", _UBYTE: "u1", 5125: "<u4", 5122: "<i2", 5120: "i1"}


def top_k_weights(weights: torch.Tensor, k: int = TOP_K) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest weights per row, renormalised: joints ``[N, k]`` uint16, weights ``[N, k]``."""
    values, index = weights.float().topk(min(k, weights.shape[1]), dim=1)
    values = values / values.sum(dim=1, keepdim=True).clamp_min(1e-12)
    if values.shape[1] < k:
        pad = k - values.shape[1]
        values = torch.cat([values, values.new_zeros(len(values), pad)], 1)
        index = torch.cat([index, index.new_zeros(len(index), pad)], 1)
    return index.cpu().numpy().astype(np.uint16), values.cpu().numpy().astype(np.float32)


class _Builder:
    def __init__(self) -> None:
        self.blob = bytearray()
        self.views: list[dict] = []
        self.accessors: list[dict] = []

    def add(self, array: np.ndarray, kind: str, component: int, minmax: bool = False) -> int:
        while len(self.blob) % 4:
            self.blob.append(0)
        data = np.ascontiguousarray(array, dtype=_NUMPY[component]).tobytes()
        self.views.append({"buffer": 0, "byteOffset": len(self.blob), "byteLength": len(data)})
        self.blob += data
        accessor = {"bufferView": len(self.views) - 1, "componentType": component, "count": int(len(array)), "type": kind}
        if minmax:
            accessor["min"] = [float(v) for v in array.min(axis=0)]
            accessor["max"] = [float(v) for v in array.max(axis=0)]
        self.accessors.append(accessor)
        return len(self.accessors) - 1


def save_rigged_glb(path: Union[str, Path], gaussians: Gaussians, rig: Rig) -> None:
    """Write canonical Gaussians ``[N, ...]`` (with ``skin_weights [N, J]``) and their rig."""
    if gaussians.skin_weights is None:
        raise ValueError("a rigged .glb needs Gaussians with skin_weights")
    if gaussians.skin_weights.shape[1] != len(rig.joint_names):
        raise ValueError(f"skin_weights have {gaussians.skin_weights.shape[1]} joints, the rig {len(rig.joint_names)}")
    g = gaussians.detach().to("cpu")
    b = _Builder()
    means = g.means.float().numpy()
    quat_wxyz = g.quats.float().numpy()
    rgb = g.colors.float().numpy()
    alpha = g.opacities.float().numpy()
    joints, weights = top_k_weights(g.skin_weights)
    attributes = {
        "POSITION": b.add(means, "VEC3", _FLOAT, minmax=True),
        "COLOR_0": b.add(np.concatenate([rgb, alpha[:, None]], 1), "VEC4", _FLOAT),
        "JOINTS_0": b.add(joints, "VEC4", _USHORT),
        "WEIGHTS_0": b.add(weights, "VEC4", _FLOAT),
        ATTR_ROTATION: b.add(quat_wxyz[:, [1, 2, 3, 0]], "VEC4", _FLOAT),
        ATTR_SCALE: b.add(g.scales.float().numpy(), "VEC3", _FLOAT),
        ATTR_OPACITY: b.add(alpha, "SCALAR", _FLOAT),
        ATTR_SH0: b.add((rgb - 0.5) / SH_C0, "VEC3", _FLOAT),
    }
    rest = rig.rest_joints.float().numpy()
    parents = rig.parents.tolist()
    inverse_bind = np.tile(np.eye(4, dtype=np.float32), (len(parents), 1, 1))
    inverse_bind[:, :3, 3] = -rest
    ibm = b.add(inverse_bind.transpose(0, 2, 1).reshape(-1, 16), "MAT4", _FLOAT)  # glTF is column-major
    joint_nodes = []
    for j, name in enumerate(rig.joint_names):
        p = parents[j]
        offset = rest[j] - (rest[p] if p >= 0 else 0.0)
        node = {"name": name, "translation": [float(v) for v in offset]}
        children = [1 + c for c, cp in enumerate(parents) if cp == j]
        if children:
            node["children"] = children
        joint_nodes.append(node)
    roots = [1 + j for j, p in enumerate(parents) if p < 0]
    gltf = {
        "asset": {"version": "2.0", "generator": "sigman"},
        "extensionsUsed": [EXTENSION],
        "scene": 0,
        "scenes": [{"nodes": [0, *roots]}],
        "nodes": [{"name": "avatar", "mesh": 0, "skin": 0}, *joint_nodes],
        "meshes": [{"name": "gaussians", "primitives": [{"mode": 0, "attributes": attributes, "extensions": {
            EXTENSION: {"kernel": "ellipse", "colorSpace": "srgb_rec709_display", "projection": "perspective",
                        "sortingMethod": "cameraDistance"}}}]}],
        "skins": [{"name": "body", "joints": list(range(1, len(parents) + 1)), "inverseBindMatrices": ibm,
                   "skeleton": roots[0]}],
        "buffers": [{"byteLength": len(b.blob)}],
        "bufferViews": b.views,
        "accessors": b.accessors,
        "extras": {"sigman": {"format_version": FORMAT_VERSION, "body_model": rig.body_model,
                              "joint_names": list(rig.joint_names), "parents": parents,
                              "rest_joints": rest.tolist(), "skin_weights": f"top{TOP_K}"}},
    }
    text = json.dumps(gltf, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 4)
    blob = bytes(b.blob) + b"\0" * (-len(b.blob) % 4)
    total = 12 + 8 + len(text) + 8 + len(blob)
    with open(path, "wb") as f:
        f.write(struct.pack("<III", _GLB_MAGIC, 2, total))
        f.write(struct.pack("<II", len(text), _JSON) + text)
        f.write(struct.pack("<II", len(blob), _BIN) + blob)


def read_glb(path: Union[str, Path]) -> tuple[dict, bytes]:
    """The JSON and binary chunks of a ``.glb`` (validated)."""
    raw = Path(path).read_bytes()
    if len(raw) < 20:
        raise ValueError(f"{path} is not a glTF binary (.glb): too short")
    magic, version, total = struct.unpack_from("<III", raw)
    if magic != _GLB_MAGIC or version != 2:
        raise ValueError(f"{path} is not a glTF 2.0 binary (.glb)")
    if total != len(raw):
        raise ValueError(f"{path} is truncated or padded: header says {total} bytes, file has {len(raw)}")
    json_len, kind = struct.unpack_from("<II", raw, 12)
    if kind != _JSON or 20 + json_len > len(raw):
        raise ValueError(f"{path} has no valid JSON chunk")
    try:
        gltf = json.loads(raw[20:20 + json_len])
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} has a corrupt JSON chunk ({err})") from err
    blob = b""
    at = 20 + json_len
    if at + 8 <= len(raw):
        blob_len, kind = struct.unpack_from("<II", raw, at)
        if kind == _BIN:
            blob = raw[at + 8:at + 8 + blob_len]
            if len(blob) != blob_len:
                raise ValueError(f"{path} is truncated: the binary chunk is incomplete")
    return gltf, blob


def _accessor(gltf: dict, blob: bytes, index: int) -> np.ndarray:
    acc = gltf["accessors"][index]
    view = gltf["bufferViews"][acc["bufferView"]]
    width = _NUM_COMPONENTS[acc["type"]]
    dtype = np.dtype(_NUMPY[acc["componentType"]])
    start = view.get("byteOffset", 0) + acc.get("byteOffset", 0)
    count = acc["count"]
    if start + count * width * dtype.itemsize > len(blob):
        raise ValueError("an accessor reads past the end of the binary chunk (truncated file)")
    return np.frombuffer(blob, dtype=dtype, count=count * width, offset=start).reshape(count, width)


def load_rigged_glb(path: Union[str, Path]) -> tuple[Gaussians, Rig]:
    """Read a rigged avatar written by :func:`save_rigged_glb` (canonical pose)."""
    gltf, blob = read_glb(path)
    meta = gltf.get("extras", {}).get("sigman")
    if meta is None:
        raise ValueError(f"{path} is not a sigman rigged avatar (no extras.sigman); export it with sigman")
    try:
        prim = next(p for m in gltf.get("meshes", []) for p in m["primitives"] if ATTR_ROTATION in p["attributes"])
        attr = {k: _accessor(gltf, blob, v) for k, v in prim["attributes"].items()}
        joint_names, parents = list(meta["joint_names"]), meta["parents"]
        rest = np.asarray(meta["rest_joints"], dtype=np.float32)
    except (StopIteration, KeyError, IndexError, TypeError) as err:
        raise ValueError(f"{path} is a malformed sigman avatar ({err.__class__.__name__}: {err})") from err
    n, j = len(attr["POSITION"]), len(joint_names)
    index = torch.from_numpy(attr["JOINTS_0"].astype(np.int64))
    if index.numel() and int(index.max()) >= j:
        raise ValueError(f"{path}: JOINTS_0 names joint {int(index.max())} but the rig has {j}")
    weights = torch.zeros(n, j)
    weights.scatter_add_(1, index, torch.from_numpy(attr["WEIGHTS_0"].astype(np.float32)))
    rgba = torch.from_numpy(attr["COLOR_0"].copy())
    quat_xyzw = torch.from_numpy(attr[ATTR_ROTATION].copy())
    gaussians = Gaussians(
        means=torch.from_numpy(attr["POSITION"].copy()),
        quats=quat_xyzw[:, [3, 0, 1, 2]],
        scales=torch.from_numpy(attr[ATTR_SCALE].copy()),
        opacities=torch.from_numpy(attr[ATTR_OPACITY][:, 0].copy()),
        colors=rgba[:, :3].contiguous(),
        skin_weights=weights,
    )
    return gaussians, Rig(joint_names, torch.tensor(parents), torch.from_numpy(rest), str(meta["body_model"]))
