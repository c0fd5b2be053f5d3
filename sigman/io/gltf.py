"""Gaussian avatars as glTF 2.0 binary (``.glb``), rigged or static.

glTF's frame is the project's (+Y up, the body faces +Z, metres), so nothing is converted. A file
holds (``N`` Gaussians, ``J`` joints):

- ``nodes[0]`` ``"avatar"``: the mesh, and (rigged) the skin; then one node per joint, named, in
  the body's joint order, parented as the body's joint tree, ``translation`` = offset from its
  parent in the canonical pose. Joint frames are world-aligned at rest, so each inverse bind
  matrix is a translation by ``-rest_joints[j]``.
- ``meshes[0]`` ``"gaussians"``: one primitive, ``mode`` POINTS (0), in the canonical pose, with
  the attributes of the Khronos ``KHR_gaussian_splatting`` extension (release candidate):
  ``KHR_gaussian_splatting:ROTATION`` (unit ``(x, y, z, w)``), ``:SCALE`` (linear std-devs),
  ``:OPACITY`` (``[0, 1]``), ``:SH_DEGREE_0_COEF_0`` (``(rgb - 0.5) / C0``), kernel ``ellipse``,
  colour space ``srgb_rec709_display``; ``POSITION`` (with min/max); ``COLOR_0`` (linear RGB
  decoded from sRGB + opacity: the point-cloud fallback); ``_SIGMAN_COLOR`` (the float32 colours
  exactly); and (rigged) ``JOINTS_0/1``/``WEIGHTS_0/1``: each Gaussian's 8 largest skin weights,
  renormalised to sum to 1 (``influences=4`` keeps one set; anny texels have up to 9 joints, and
  4 of them move Gaussians up to 16 mm away from dense LBS, 8 by 0.1 mm). The extension is listed
  in ``extensionsUsed`` only: a viewer without it still shows the skinned point cloud.
- (optional) ``animations[0]``: a motion as LINEAR keyframes of every joint node's rotation and
  the root's translation (see :mod:`sigman.io.animation`), which glTF viewers play on the
  skeleton.
- ``extras.sigman`` (root): ``format``, ``version``, and (rigged) ``body_model``, ``joint_names``,
  ``parents``, ``rest_joints`` (float32 values, exact) and ``skin_influences``; with a body mesh,
  ``body_mesh: {vertices, faces}`` name accessors (float32 ``[V, 3]``, uint32 ``[3F]``).

Round trip: means, (unit) quaternions, scales, opacities, colours (within their valid ranges, which
the writer clamps to) and the rig come back bit-exact; skin weights come back as their
top-``influences`` renormalised. Reading also accepts ``.gltf`` JSON (one buffer, data URI or a file beside it) and splat
files of other tools (dequantising normalized integer attributes; their node transforms are not
applied).
"""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path
from typing import Any, Optional, Union
from urllib.parse import unquote

import numpy as np
import torch

from sigman.gaussians import Gaussians
from sigman.io.animation import SkeletonAnimation
from sigman.io.ply import SH_C0, gaussian_arrays, normalize_quats, rgb_to_sh0
from sigman.io.rig import Rig

EXTENSION = "KHR_gaussian_splatting"
ATTR_ROTATION = f"{EXTENSION}:ROTATION"
ATTR_SCALE = f"{EXTENSION}:SCALE"
ATTR_OPACITY = f"{EXTENSION}:OPACITY"
ATTR_SH0 = f"{EXTENSION}:SH_DEGREE_0_COEF_0"
ATTR_EXACT_COLOR = "_SIGMAN_COLOR"  # application-specific attribute (leading underscore)
SPLAT_PROPERTIES = {"kernel": "ellipse", "colorSpace": "srgb_rec709_display", "projection": "perspective",
                    "sortingMethod": "cameraDistance"}
FORMAT, FORMAT_VERSION = "sigman-avatar", 1
DEFAULT_INFLUENCES = 8  # JOINTS_0/1, WEIGHTS_0/1: 0.1 mm from dense LBS (4 lose up to 16 mm)

_GLB_MAGIC, _CHUNK_JSON, _CHUNK_BIN = 0x46546C67, 0x4E4F534A, 0x004E4942
_BYTE, _UBYTE, _SHORT, _USHORT, _UINT, _FLOAT = 5120, 5121, 5122, 5123, 5125, 5126
_ARRAY_BUFFER = 34962
_WIDTH = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT2": 4, "MAT3": 9, "MAT4": 16}
_DTYPE = {_BYTE: "i1", _UBYTE: "u1", _SHORT: "<i2", _USHORT: "<u2", _UINT: "<u4", _FLOAT: "<f4"}
_NORM = {_BYTE: 127.0, _UBYTE: 255.0, _SHORT: 32767.0, _USHORT: 65535.0}
PathLike = Union[str, Path]


# --- writing ---------------------------------------------------------------------------------

def top_k_weights(weights: torch.Tensor, k: int = DEFAULT_INFLUENCES) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest skin weights of each row of ``weights [N, J]``, renormalised.

    Returns joints ``[N, k]`` int64 and float32 weights ``[N, k]`` (largest first) whose float32
    rows sum to 1 (to float32 rounding); zero weights (and the tail when ``J < k``) name joint 0.
    """
    w = weights.detach().to("cpu", torch.float64)
    if not torch.isfinite(w).all() or (w < -1e-6).any():
        raise ValueError("skin_weights must be finite and non-negative")
    values, index = w.clamp_min(0).topk(min(k, w.shape[1]), dim=1)
    total = values.sum(dim=1, keepdim=True)
    if (total <= 0).any():
        raise ValueError(f"skin_weights row {int((total[:, 0] <= 0).nonzero()[0])} has no weight on any joint")
    values = (values / total).numpy().astype(np.float32)
    values[:, 0] = (1.0 - values[:, 1:].astype(np.float64).sum(axis=1)).astype(np.float32)
    index = np.where(values > 0, index.numpy(), 0)  # glTF: unused influences name joint 0
    if values.shape[1] < k:
        pad = k - values.shape[1]
        values = np.concatenate([values, np.zeros((len(values), pad), np.float32)], 1)
        index = np.concatenate([index, np.zeros((len(index), pad), index.dtype)], 1)
    return index, values


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    """sRGB-encoded values in ``[0, 1]`` -> linear (the glTF ``COLOR_0`` convention)."""
    c = np.clip(c.astype(np.float64), 0.0, 1.0)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(c: np.ndarray) -> np.ndarray:
    c = np.clip(c.astype(np.float64), 0.0, 1.0)
    return np.where(c <= 0.0031308, c * 12.92, 1.055 * c ** (1 / 2.4) - 0.055)


class _Buffer:
    """The binary chunk under construction: views and accessors, each 4-byte aligned."""

    def __init__(self) -> None:
        self.blob = bytearray()
        self.views: list[dict] = []
        self.accessors: list[dict] = []

    def add(self, array: np.ndarray, kind: str, component: int, vertex: bool = False, minmax: bool = False) -> int:
        array = np.ascontiguousarray(array, dtype=_DTYPE[component])
        self.blob += b"\0" * (-len(self.blob) % 4)
        view = {"buffer": 0, "byteOffset": len(self.blob), "byteLength": array.nbytes}
        if vertex:
            view["target"] = _ARRAY_BUFFER
        self.views.append(view)
        self.blob += array.tobytes()
        count = len(array)
        accessor = {"bufferView": len(self.views) - 1, "componentType": component, "count": int(count), "type": kind}
        if minmax and count:
            flat = array.reshape(count, -1)
            accessor["min"] = [v.item() for v in flat.min(axis=0)]
            accessor["max"] = [v.item() for v in flat.max(axis=0)]
        self.accessors.append(accessor)
        return len(self.accessors) - 1


def _floats(values: np.ndarray) -> list:
    """float32 values as JSON numbers that parse back to the same float32."""
    return np.asarray(values, dtype=np.float32).astype(np.float64).tolist()


def build_glb(gaussians: Gaussians, rig: Optional[Rig] = None, influences: int = DEFAULT_INFLUENCES,
              animation: Optional[SkeletonAnimation] = None) -> bytes:
    """The bytes of a ``.glb`` holding canonical Gaussians ``[N, ...]`` and (optionally) their rig
    and a motion of it."""
    a = gaussian_arrays(gaussians, "a .glb")
    if animation is not None and rig is None:
        raise ValueError("an animation moves a rig: pass the rig too")
    if influences <= 0 or influences % 4:
        raise ValueError(f"influences must be a positive multiple of 4, got {influences}")
    buf = _Buffer()
    rgb, alpha = np.clip(a["colors"], 0, 1), np.clip(a["opacities"], 0, 1)
    scales = np.clip(a["scales"], 0, None)
    attributes = {
        "POSITION": buf.add(a["means"], "VEC3", _FLOAT, vertex=True, minmax=True),
        "COLOR_0": buf.add(np.concatenate([srgb_to_linear(rgb), alpha[:, None]], 1), "VEC4", _FLOAT, vertex=True),
        ATTR_ROTATION: buf.add(normalize_quats(a["quats"])[:, [1, 2, 3, 0]], "VEC4", _FLOAT, vertex=True),
        ATTR_SCALE: buf.add(scales, "VEC3", _FLOAT, vertex=True),
        ATTR_OPACITY: buf.add(alpha, "SCALAR", _FLOAT, vertex=True),
        ATTR_SH0: buf.add(rgb_to_sh0(rgb), "VEC3", _FLOAT, vertex=True),
        ATTR_EXACT_COLOR: buf.add(rgb, "VEC3", _FLOAT, vertex=True),
    }
    avatar: dict[str, Any] = {"name": "avatar", "mesh": 0}
    gltf: dict[str, Any] = {
        "asset": {"version": "2.0", "generator": "sigman"},
        "extensionsUsed": [EXTENSION],
        "scene": 0,
        "scenes": [{"name": "avatar", "nodes": [0]}],
        "nodes": [avatar],
        "meshes": [{"name": "gaussians", "primitives": [
            {"mode": 0, "attributes": attributes, "extensions": {EXTENSION: dict(SPLAT_PROPERTIES)}}]}],
    }
    meta: dict[str, Any] = {"format": FORMAT, "version": FORMAT_VERSION, "rigged": rig is not None}
    if rig is not None:
        _add_rig(gltf, buf, attributes, meta, gaussians, rig, influences)
    if animation is not None:
        add_animation(gltf, buf, animation, rig, first_joint_node=1)
    gltf["extras"] = {"sigman": meta}
    return pack_glb(gltf, buf)


def pack_glb(gltf: dict, buf: _Buffer) -> bytes:
    """The ``.glb`` bytes of a document and its binary buffer (JSON and BIN chunks, 4-byte aligned)."""
    gltf["buffers"] = [{"byteLength": len(buf.blob)}]
    gltf["bufferViews"] = buf.views
    gltf["accessors"] = buf.accessors
    text = json.dumps(gltf, separators=(",", ":"), allow_nan=False).encode("utf-8")
    text += b" " * (-len(text) % 4)
    blob = bytes(buf.blob) + b"\0" * (-len(buf.blob) % 4)
    total = 12 + 8 + len(text) + 8 + len(blob)
    return b"".join([struct.pack("<III", _GLB_MAGIC, 2, total), struct.pack("<II", len(text), _CHUNK_JSON), text,
                     struct.pack("<II", len(blob), _CHUNK_BIN), blob])


def _add_rig(gltf: dict, buf: _Buffer, attributes: dict, meta: dict, gaussians: Gaussians, rig: Rig,
             influences: int) -> None:
    num_joints = rig.num_joints
    if gaussians.skin_weights is None:
        raise ValueError("a rigged .glb needs Gaussians with skin_weights [N, J]")
    if gaussians.skin_weights.shape != (gaussians.num_gaussians, num_joints):
        raise ValueError(f"skin_weights are {tuple(gaussians.skin_weights.shape)} but the rig has {num_joints} "
                         f"joints for {gaussians.num_gaussians} Gaussians")
    add_skin_attributes(buf, attributes, gaussians.skin_weights, num_joints, influences)
    add_skeleton(gltf, buf, rig, skinned_node=0)
    meta.update({"body_model": rig.body_model, "joint_names": list(rig.joint_names), "parents": rig.parents.tolist(),
                 "rest_joints": _floats(rig.rest_joints.numpy()), "skin_influences": influences})
    if rig.vertices is not None:
        meta["body_mesh"] = {"vertices": buf.add(rig.vertices.numpy(), "VEC3", _FLOAT, minmax=True),
                             "faces": buf.add(rig.faces.numpy().reshape(-1).astype(np.uint32), "SCALAR", _UINT)}


def add_skin_attributes(buf: _Buffer, attributes: dict, skin_weights: torch.Tensor, num_joints: int,
                        influences: int) -> None:
    """``JOINTS_s``/``WEIGHTS_s`` (``s < influences / 4``) of the top-``influences`` weights of
    ``skin_weights [N, J]``, renormalised over all sets (as glTF asks)."""
    if num_joints > 65536:
        raise ValueError(f"glTF skins index joints with 16 bits; this rig has {num_joints}")
    joints, weights = top_k_weights(skin_weights, influences)
    joint_type = _UBYTE if num_joints <= 256 else _USHORT
    for s in range(influences // 4):
        attributes[f"JOINTS_{s}"] = buf.add(joints[:, 4 * s:4 * s + 4], "VEC4", joint_type, vertex=True)
        attributes[f"WEIGHTS_{s}"] = buf.add(weights[:, 4 * s:4 * s + 4], "VEC4", _FLOAT, vertex=True)


def add_skeleton(gltf: dict, buf: _Buffer, rig: Rig, skinned_node: int) -> int:
    """Append one node per joint (named, parented as the rig's tree, ``translation`` = rest offset
    from the parent), their scene roots and skin 0 (inverse bind matrices: translations by
    ``-rest_joints``), and give the skin to ``nodes[skinned_node]``. Returns the node index of
    joint 0 (joint ``j`` is node ``first + j``)."""
    num_joints = rig.num_joints
    first = len(gltf["nodes"])
    rest = rig.rest_joints.numpy().astype(np.float32)
    parents = rig.parents.tolist()
    inverse_bind = np.tile(np.eye(4, dtype=np.float32), (num_joints, 1, 1))
    inverse_bind[:, :3, 3] = -rest
    ibm = buf.add(inverse_bind.transpose(0, 2, 1).reshape(-1, 16), "MAT4", _FLOAT)  # column-major
    children: list[list[int]] = [[] for _ in range(num_joints)]
    for j, p in enumerate(parents):
        if p >= 0:
            children[p].append(first + j)
    for j, name in enumerate(rig.joint_names):
        p = parents[j]
        offset = rest[j].astype(np.float64) - (rest[p].astype(np.float64) if p >= 0 else 0.0)
        node: dict[str, Any] = {"name": name, "translation": offset.tolist()}
        if children[j]:
            node["children"] = children[j]
        gltf["nodes"].append(node)
    roots = [first + j for j, p in enumerate(parents) if p < 0]
    gltf["scenes"][0]["nodes"] += roots
    gltf["nodes"][skinned_node]["skin"] = 0
    skin: dict[str, Any] = {"name": rig.body_model, "joints": list(range(first, first + num_joints)),
                            "inverseBindMatrices": ibm}
    if len(roots) == 1:
        skin["skeleton"] = roots[0]
    gltf["skins"] = [skin]
    return first


def add_animation(gltf: dict, buf: _Buffer, animation: SkeletonAnimation, rig: Rig, first_joint_node: int) -> None:
    """A glTF animation: LINEAR keyframes of every joint's rotation and of the roots' translation."""
    num_joints = rig.num_joints
    if animation.rotations.shape[1:] != (num_joints, 4) or animation.translations.shape[1:] != (num_joints, 3):
        raise ValueError(f"the animation has {animation.rotations.shape[1]} joints, the rig {num_joints}")
    times = animation.times.detach().cpu().numpy().astype(np.float32)
    if not (np.isfinite(times).all() and torch.isfinite(animation.rotations).all()
            and torch.isfinite(animation.translations).all()):
        raise ValueError("the animation has NaN or Inf keyframes")
    time_accessor = buf.add(times, "SCALAR", _FLOAT, minmax=True)
    rotations = animation.rotations.detach().cpu().numpy().astype(np.float32)[..., [1, 2, 3, 0]]  # glTF: xyzw
    translations = animation.translations.detach().cpu().numpy().astype(np.float32)
    samplers, channels = [], []
    for j in range(num_joints):
        samplers.append({"input": time_accessor, "interpolation": "LINEAR",
                         "output": buf.add(rotations[:, j], "VEC4", _FLOAT)})
        channels.append({"sampler": len(samplers) - 1, "target": {"node": first_joint_node + j, "path": "rotation"}})
        if int(rig.parents[j]) < 0:
            samplers.append({"input": time_accessor, "interpolation": "LINEAR",
                             "output": buf.add(translations[:, j], "VEC3", _FLOAT)})
            channels.append({"sampler": len(samplers) - 1,
                             "target": {"node": first_joint_node + j, "path": "translation"}})
    gltf.setdefault("animations", []).append({"name": animation.name, "samplers": samplers, "channels": channels})


def save_glb(path: PathLike, gaussians: Gaussians, rig: Optional[Rig] = None,
             influences: int = DEFAULT_INFLUENCES, animation: Optional[SkeletonAnimation] = None) -> None:
    """Write canonical Gaussians ``[N, ...]`` as a ``.glb``: rigged with ``rig`` (then
    ``gaussians.skin_weights [N, J]`` are needed), a static splat without; ``animation`` adds a
    motion of the rig as a glTF animation."""
    Path(path).write_bytes(build_glb(gaussians, rig, influences, animation))


def save_rigged_glb(path: PathLike, gaussians: Gaussians, rig: Rig, influences: int = DEFAULT_INFLUENCES,
                    animation: Optional[SkeletonAnimation] = None) -> None:
    """Write a rigged avatar: canonical Gaussians ``[N, ...]`` with ``skin_weights [N, J]``, their
    rig and optionally a motion."""
    if rig is None:
        raise ValueError("a rigged .glb needs its rig (joint names, parents, rest joints)")
    save_glb(path, gaussians, rig, influences, animation)


# --- reading ---------------------------------------------------------------------------------

def read_gltf(path: PathLike) -> tuple[dict, bytes]:
    """The JSON document and binary buffer of a ``.glb`` (or a ``.gltf`` with one buffer), checked."""
    raw = Path(path).read_bytes()
    if raw[:4] == b"glTF":
        gltf, blob = _parse_glb(raw, str(path))
    elif raw.lstrip()[:1] == b"{":
        gltf, blob = _parse_json(raw, str(path)), b""
        buffers = gltf.get("buffers")
        first = buffers[0] if isinstance(buffers, list) and buffers else None
        uri = first.get("uri") if isinstance(first, dict) else None
        if uri is not None:
            blob = _read_uri(uri, Path(path).parent, str(path))
    else:
        raise ValueError(f"{path} is not a glTF file (neither a .glb binary nor glTF JSON)")
    asset = gltf.get("asset")
    version = asset.get("version") if isinstance(asset, dict) else None
    if not str(version).startswith("2."):
        raise ValueError(f"{path} is not a glTF 2.0 file (asset.version {version!r})")
    return gltf, blob


def _parse_json(text: bytes, name: str) -> dict:
    try:
        gltf = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{name} has a corrupt JSON chunk ({err})") from None
    if not isinstance(gltf, dict):
        raise ValueError(f"{name} has a corrupt JSON chunk (not an object)")
    return gltf


def _parse_glb(raw: bytes, name: str) -> tuple[dict, bytes]:
    if len(raw) < 20:
        raise ValueError(f"{name} is truncated: too short for a .glb header")
    _, version, total = struct.unpack_from("<III", raw)
    if version != 2:
        raise ValueError(f"{name} is a glTF {version} binary; only glTF 2.0 is read")
    if total != len(raw):
        raise ValueError(f"{name} is truncated or padded: its header says {total} bytes, the file has {len(raw)}")
    gltf, blob, at = None, b"", 12
    while at + 8 <= len(raw):
        length, kind = struct.unpack_from("<II", raw, at)
        chunk = raw[at + 8:at + 8 + length]
        if len(chunk) != length:
            raise ValueError(f"{name} is truncated: a chunk runs past the end of the file")
        if gltf is None:
            if kind != _CHUNK_JSON:
                raise ValueError(f"{name} is not a valid .glb: its first chunk is not JSON")
            gltf = _parse_json(chunk, name)
        elif kind == _CHUNK_BIN and not blob:
            blob = chunk
        at += 8 + length
    if gltf is None:
        raise ValueError(f"{name} is not a valid .glb: no JSON chunk")
    return gltf, blob


def _read_uri(uri: str, folder: Path, name: str) -> bytes:
    if uri.startswith("data:"):
        head, _, data = uri.partition(",")
        if not head.endswith(";base64"):
            raise ValueError(f"{name}: only base64 data URIs are supported")
        return base64.b64decode(data)
    if ":" in uri.split("/")[0]:
        raise ValueError(f"{name}: external buffer URI '{uri[:40]}' is not a local file")
    file = folder / unquote(uri)
    if not file.is_file():
        raise ValueError(f"{name}: its buffer file '{uri}' is missing")
    return file.read_bytes()


def read_accessor(gltf: dict, blob: bytes, index: int) -> np.ndarray:
    """Accessor ``index`` as ``[count, width]`` (normalized integers dequantised to float32)."""
    acc = gltf["accessors"][index]
    if "sparse" in acc:
        raise ValueError(f"sparse accessors are not supported (accessor {index})")
    width, component, count = _WIDTH[acc["type"]], acc["componentType"], int(acc["count"])
    dtype = np.dtype(_DTYPE[component])
    if "bufferView" not in acc or count == 0:
        out = np.zeros((count, width), dtype)
    else:
        view = gltf["bufferViews"][acc["bufferView"]]
        if view.get("buffer", 0) != 0:
            raise ValueError("only single-buffer glTF files are supported")
        element = width * dtype.itemsize
        stride = view.get("byteStride", element)
        start = view.get("byteOffset", 0) + acc.get("byteOffset", 0)
        end = start + (count - 1) * stride + element if count else start
        view_end = view.get("byteOffset", 0) + view["byteLength"]
        if end > view_end or view_end > len(blob) or stride < element or start < 0:
            raise ValueError(f"accessor {index} reads past the end of its buffer (truncated or corrupt file)")
        out = np.ndarray((count, width), dtype, buffer=blob, offset=start, strides=(stride, dtype.itemsize)).copy()
    if acc.get("normalized", False) and component in _NORM:
        out = np.maximum(out.astype(np.float32) / np.float32(_NORM[component]), np.float32(-1))
    return out


def _find_splats(gltf: dict) -> dict:
    for mesh in gltf.get("meshes", []):
        for prim in mesh.get("primitives", []):
            if EXTENSION in prim.get("extensions", {}) or ATTR_ROTATION in prim.get("attributes", {}):
                return prim
    raise ValueError("no Gaussian splats in it (no mesh primitive with KHR_gaussian_splatting)")


def _load(gltf: dict, blob: bytes) -> tuple[Gaussians, Optional[Rig]]:
    meta = gltf.get("extras", {}).get("sigman") if isinstance(gltf.get("extras"), dict) else None
    if meta is not None and int(meta.get("version", 0)) > FORMAT_VERSION:
        raise ValueError(f"written by a newer sigman (avatar format version {meta['version']}); update sigman")
    prim = _find_splats(gltf)
    attrs = prim["attributes"]
    missing = [k for k in ("POSITION", ATTR_ROTATION, ATTR_SCALE, ATTR_OPACITY) if k not in attrs]
    if missing:
        raise ValueError(f"its splat primitive has no '{missing[0]}' attribute")
    if prim.get("mode", 4) != 0:
        raise ValueError("its splat primitive is not POINTS (mode 0)")
    data = {k: read_accessor(gltf, blob, v) for k, v in attrs.items()}
    counts = {k: len(v) for k, v in data.items()}
    if len(set(counts.values())) > 1:
        raise ValueError(f"its attributes have different counts {counts}")
    means = data["POSITION"].astype(np.float32)
    quats = normalize_quats(data[ATTR_ROTATION].astype(np.float32)[:, [3, 0, 1, 2]])
    scales = data[ATTR_SCALE].astype(np.float32)
    if meta is None and (scales < 0).any():  # pre-release drafts of the extension stored log(scale)
        scales = np.exp(scales.astype(np.float64)).astype(np.float32)
    alpha = np.clip(data[ATTR_OPACITY][:, 0].astype(np.float32), 0, 1)
    if ATTR_EXACT_COLOR in data:
        rgb = data[ATTR_EXACT_COLOR].astype(np.float32)
    elif ATTR_SH0 in data:
        rgb = np.clip(0.5 + SH_C0 * data[ATTR_SH0].astype(np.float64), 0, 1).astype(np.float32)
    elif "COLOR_0" in data:
        rgb = linear_to_srgb(data["COLOR_0"][:, :3]).astype(np.float32)
    else:
        raise ValueError("its splat primitive has no colour (SH_DEGREE_0_COEF_0 or COLOR_0)")
    for label, array in (("POSITION", means), ("ROTATION", quats), ("SCALE", scales), ("OPACITY", alpha), ("colour", rgb)):
        if not np.isfinite(array).all():
            raise ValueError(f"its {label} values contain NaN or Inf")
    rig = _read_rig(gltf, blob, meta) if meta is not None and meta.get("joint_names") is not None else None
    skin_weights = _read_skin_weights(data, rig.num_joints) if rig is not None else None
    gaussians = Gaussians(means=torch.from_numpy(means), quats=torch.from_numpy(quats),
                          scales=torch.from_numpy(np.ascontiguousarray(scales)), opacities=torch.from_numpy(alpha.copy()),
                          colors=torch.from_numpy(np.ascontiguousarray(rgb)), skin_weights=skin_weights)
    return gaussians, rig


def _read_rig(gltf: dict, blob: bytes, meta: dict) -> Rig:
    vertices = faces = None
    if "body_mesh" in meta:
        vertices = torch.from_numpy(read_accessor(gltf, blob, meta["body_mesh"]["vertices"]).astype(np.float32))
        faces = torch.from_numpy(read_accessor(gltf, blob, meta["body_mesh"]["faces"]).astype(np.int64).reshape(-1, 3))
    rest = np.asarray(meta["rest_joints"], dtype=np.float32).reshape(-1, 3)
    return Rig(list(meta["joint_names"]), torch.tensor(meta["parents"], dtype=torch.long), torch.from_numpy(rest),
               str(meta["body_model"]), vertices, faces)


def _read_skin_weights(data: dict, num_joints: int) -> torch.Tensor:
    """Dense ``[N, J]`` float32 skin weights from the ``JOINTS_n``/``WEIGHTS_n`` sets."""
    n = len(data["POSITION"])
    weights = np.zeros((n, num_joints), np.float32)
    s = 0
    while f"JOINTS_{s}" in data and f"WEIGHTS_{s}" in data:
        joints, w = data[f"JOINTS_{s}"].astype(np.int64), data[f"WEIGHTS_{s}"].astype(np.float32)
        if joints.size and (joints.min() < 0 or joints.max() >= num_joints):
            raise ValueError(f"JOINTS_{s} names joint {int(joints.max())} but the rig has {num_joints}")
        if not np.isfinite(w).all() or (w < 0).any():
            raise ValueError(f"WEIGHTS_{s} has negative, NaN or Inf weights")
        np.add.at(weights, (np.arange(n)[:, None], joints), w)
        s += 1
    if s == 0:
        raise ValueError("its rigged splat primitive has no JOINTS_0/WEIGHTS_0")
    return torch.from_numpy(weights)


def load_glb(path: PathLike) -> tuple[Gaussians, Optional[Rig]]:
    """Read Gaussians ``[N, ...]`` (float32) from a ``.glb``/``.gltf`` with ``KHR_gaussian_splatting``
    splats, and their rig when sigman wrote it rigged (else ``None``; node transforms of files
    from other tools are not applied)."""
    gltf, blob = read_gltf(path)
    try:
        return _load(gltf, blob)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    except (KeyError, IndexError, TypeError, AttributeError) as err:
        raise ValueError(f"{path} is a malformed glTF file ({type(err).__name__}: {err})") from None


def load_rigged_glb(path: PathLike) -> tuple[Gaussians, Rig]:
    """Read a rigged avatar written by :func:`save_rigged_glb`: canonical Gaussians ``[N, ...]``
    with ``skin_weights [N, J]`` (top-k, renormalised) and the :class:`Rig`."""
    gaussians, rig = load_glb(path)
    if rig is None:
        raise ValueError(f"{path} has Gaussians but no sigman rig (extras.sigman); load it with load_gaussians")
    return gaussians, rig
