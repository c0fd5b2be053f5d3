"""The avatar as a skinned, textured triangle mesh (``avatar_mesh.glb``): what three.js, Babylon,
Blender, Unity and every game engine animate.

The mesh is the body model's surface on the subject's shape, pushed out by the Gaussians'
offsets where the Gaussians describe the surface, with a texture baked from the Gaussians'
colours: the Gaussians are one per covered texel of the body's UV layout, so texel ``(row, col)``
of the texture is the colour of the Gaussian that lives there (uncovered texels take their
nearest covered texel's colour, so that filtering across UV seams does not bleed black). The
skeleton is the Gaussian avatar's (same joint nodes, inverse bind matrices and frame: glTF's,
+Y up), each vertex keeps its 4 largest skin weights (what every glTF viewer supports; three.js
reads only ``JOINTS_0``/``WEIGHTS_0``), and a motion can ride along as a glTF animation.

File layout: ``nodes[0]`` "avatar" (mesh 0, skin 0), then the joint nodes; ``meshes[0]`` one
TRIANGLES primitive with ``POSITION``, ``NORMAL``, ``TEXCOORD_0``, ``JOINTS_0``, ``WEIGHTS_0`` and
``uint32`` indices; one material whose ``baseColorTexture`` is an embedded PNG (sRGB colours, as
the Gaussians' are); ``extras.sigman``: ``format`` "sigman-mesh-avatar", the rig.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
from torch import Tensor

from sigman.gaussians import Gaussians
from sigman.io.animation import SkeletonAnimation
from sigman.io.gltf import (_FLOAT, _UINT, FORMAT_VERSION, _Buffer, _floats, add_animation, add_skeleton,
                            add_skin_attributes, pack_glb)
from sigman.io.rig import Rig

MESH_FORMAT = "sigman-mesh-avatar"
MESH_INFLUENCES = 4
MIN_SURFACE_OPACITY = 0.5  # Gaussians at least this opaque describe the surface
MAX_SURFACE_OFFSET = 0.1  # metres; farther Gaussians are strays, not the surface
PAD_TEXELS = 4  # rings of texels grown around each UV island
_ELEMENT_ARRAY_BUFFER = 34963
_LINEAR, _LINEAR_MIPMAP_LINEAR, _CLAMP = 9729, 9987, 33071


@dataclass
class SkinnedMesh:
    """A textured mesh with skin weights, in the canonical pose (sigman's frame, metres).

    Args:
        vertices: ``[V, 3]`` float32 (split at UV seams: one vertex per (position, uv) pair).
        normals: ``[V, 3]`` unit normals (of the unsplit surface, so seams shade smoothly).
        faces: ``[F, 3]`` long.
        uvs: ``[V, 2]`` texture coordinates in glTF's convention (``(0, 0)`` = top-left).
        skin_weights: ``[V, J]`` rows sum to 1.
        texture: ``[H, W, 3]`` uint8 sRGB image.
    """

    vertices: Tensor
    normals: Tensor
    faces: Tensor
    uvs: Tensor
    skin_weights: Tensor
    texture: np.ndarray


def split_at_seams(faces: Tensor, face_uvs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """One vertex per distinct (position index, uv index) corner pair: returns the new faces
    ``[F, 3]``, and for each new vertex its position index ``[V']`` and uv index ``[V']``."""
    num_uvs = int(face_uvs.max()) + 1
    keys = faces.reshape(-1).long() * num_uvs + face_uvs.reshape(-1).long()
    unique, inverse = torch.unique(keys, return_inverse=True)
    return inverse.view(-1, 3), unique // num_uvs, unique % num_uvs


def grow_islands(image: Tensor, known: Tensor, rings: int) -> tuple[Tensor, Tensor]:
    """Grow the known texels of UV images ``[1, C, R, R]`` (``known [1, 1, R, R]``, 0/1) outwards by
    ``rings`` texels, each new texel the mean of its known neighbours."""
    for _ in range(rings):
        if bool(known.all()) or not bool(known.any()):
            break
        total = torch.nn.functional.avg_pool2d(image * known, 3, 1, 1, count_include_pad=False)
        count = torch.nn.functional.avg_pool2d(known, 3, 1, 1, count_include_pad=False)
        grow = (count > 0) & (known == 0)
        image = torch.where(grow, total / count.clamp_min(1e-12), image)
        known = torch.where(grow, torch.ones_like(known), known)
    return image, known


def surface_offsets(template, gaussians: Gaussians, rest_vertices: Tensor, uvs: Tensor, face_uvs: Tensor,
                    faces: Tensor) -> Tensor:
    """Per-vertex offsets ``[V, 3]`` of the body surface towards the Gaussians. The offsets of the
    Gaussians that describe the surface (opaque, within ``MAX_SURFACE_OFFSET`` of their texel's
    point on the body) form a UV image, grown by ``PAD_TEXELS`` around its islands and sampled
    bilinearly at each vertex's UVs (averaged over a seam vertex's UVs). Vertices far from any
    such Gaussian stay put."""
    points = template.positions_for(rest_vertices.to(template.positions))  # [N, 3]
    offsets = gaussians.means.to(points) - points
    keep = (gaussians.opacities.to(points) >= MIN_SURFACE_OPACITY) & (offsets.norm(dim=-1) <= MAX_SURFACE_OFFSET)
    image = template.to_map((offsets * keep[:, None])[None])  # [1, 3, R, R]
    known = template.to_map(keep[None, :, None].to(points))  # [1, 1, R, R]
    image, known = grow_islands(image, known, PAD_TEXELS)
    grid = torch.stack([2 * uvs[:, 0] - 1, 1 - 2 * uvs[:, 1]], dim=-1).to(points)[None, None]  # [1, 1, T, 2]
    sample = lambda m: torch.nn.functional.grid_sample(m, grid, align_corners=False)[0, :, 0].T  # noqa: E731
    at_uv, weight = sample(image * known), sample(known)[:, 0]  # [T, 3], [T]
    total = torch.zeros(len(rest_vertices), 3, dtype=points.dtype)
    count = torch.zeros(len(rest_vertices), dtype=points.dtype)
    total.index_add_(0, faces.reshape(-1), at_uv[face_uvs.reshape(-1)])
    count.index_add_(0, faces.reshape(-1), weight[face_uvs.reshape(-1)])
    return torch.where(count[:, None] > 1e-6, total / count.clamp_min(1e-6)[:, None], torch.zeros_like(total))


def bake_texture(template, colors: Tensor) -> np.ndarray:
    """The Gaussians' colours ``[N, 3]`` on their texels: uint8 ``[R, R, 3]`` (row 0 = top, v up as
    in the UV template). Uncovered texels are grown from their covered neighbours for
    ``PAD_TEXELS`` rings, so that filtering across UV seams does not bleed; the rest of the unused
    space takes the mean colour."""
    rgb = colors.detach().float().cpu().clamp(0, 1)
    image, known = grow_islands(template.to_map(rgb[None]), template.mask.cpu().float()[None, None], PAD_TEXELS)
    mean = rgb.mean(0) if len(rgb) else torch.zeros(3)
    image = torch.where(known > 0, image, mean[None, :, None, None])
    return (image[0].permute(1, 2, 0) * 255).round().byte().numpy()


def mesh_avatar(body, template, gaussians: Gaussians, rest_vertices: Optional[Tensor] = None,
                offsets: bool = True) -> SkinnedMesh:
    """The skinned, textured mesh of canonical Gaussians ``[N, ...]`` that were decoded on
    ``template`` (one per texel, in the template's order) for a subject with ``rest_vertices
    [V, 3]`` (default: the body's canonical shape)."""
    from sigman.uv import vertex_normals

    if gaussians.means.dim() != 2 or gaussians.num_gaussians != template.num_points:
        raise ValueError(f"a mesh avatar needs the {template.num_points} canonical Gaussians of its UV template "
                         f"(one per texel), got means {tuple(gaussians.means.shape)}")
    rest = (body.rest_vertices if rest_vertices is None else rest_vertices).detach().float().cpu()
    template = template.to("cpu")
    g = gaussians.detach().to("cpu", torch.float32)
    faces, uvs, face_uvs = body.faces.cpu(), body.uvs.cpu().float(), body.face_uvs.cpu()
    surface = rest + surface_offsets(template, g, rest, uvs, face_uvs, faces) if offsets else rest
    normals = vertex_normals(surface[None], faces)[0]
    new_faces, position_index, uv_index = split_at_seams(faces, face_uvs)
    uv = uvs[uv_index]
    return SkinnedMesh(vertices=surface[position_index], normals=normals[position_index], faces=new_faces,
                       uvs=torch.stack([uv[:, 0], 1.0 - uv[:, 1]], dim=1),
                       skin_weights=body.skin_weights.detach().float().cpu()[position_index],
                       texture=bake_texture(template, g.colors))


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(image).save(out, format="PNG", optimize=True)
    return out.getvalue()


def build_mesh_avatar(mesh: SkinnedMesh, rig: Rig, animation: Optional[SkeletonAnimation] = None,
                      influences: int = MESH_INFLUENCES) -> bytes:
    """The bytes of ``avatar_mesh.glb``: ``mesh`` skinned to ``rig``, optionally animated."""
    v = mesh.vertices.detach().cpu().numpy().astype(np.float32)
    if mesh.skin_weights.shape != (len(v), rig.num_joints):
        raise ValueError(f"mesh skin_weights are {tuple(mesh.skin_weights.shape)}, need [{len(v)}, {rig.num_joints}]")
    for name in ("vertices", "normals", "uvs"):
        if not torch.isfinite(getattr(mesh, name)).all():
            raise ValueError(f"cannot save a mesh whose {name} contain NaN or Inf")
    buf = _Buffer()
    attributes = {
        "POSITION": buf.add(v, "VEC3", _FLOAT, vertex=True, minmax=True),
        "NORMAL": buf.add(mesh.normals.detach().cpu().numpy(), "VEC3", _FLOAT, vertex=True),
        "TEXCOORD_0": buf.add(mesh.uvs.detach().cpu().numpy(), "VEC2", _FLOAT, vertex=True),
    }
    add_skin_attributes(buf, attributes, mesh.skin_weights, rig.num_joints, influences)
    indices = buf.add(mesh.faces.cpu().numpy().reshape(-1).astype(np.uint32), "SCALAR", _UINT)
    buf.views[buf.accessors[indices]["bufferView"]]["target"] = _ELEMENT_ARRAY_BUFFER
    png = _png(np.ascontiguousarray(mesh.texture[..., :3], dtype=np.uint8))
    buf.blob += b"\0" * (-len(buf.blob) % 4)
    buf.views.append({"buffer": 0, "byteOffset": len(buf.blob), "byteLength": len(png)})
    buf.blob += png
    gltf: dict[str, Any] = {
        "asset": {"version": "2.0", "generator": "sigman"},
        "scene": 0,
        "scenes": [{"name": "avatar", "nodes": [0]}],
        "nodes": [{"name": "avatar", "mesh": 0}],
        "meshes": [{"name": "body", "primitives": [
            {"mode": 4, "attributes": attributes, "indices": indices, "material": 0}]}],
        "materials": [{"name": "baked from the Gaussians", "doubleSided": True, "pbrMetallicRoughness": {
            "baseColorTexture": {"index": 0}, "metallicFactor": 0.0, "roughnessFactor": 1.0}}],
        "textures": [{"sampler": 0, "source": 0}],
        "images": [{"name": "texture", "bufferView": len(buf.views) - 1, "mimeType": "image/png"}],
        "samplers": [{"magFilter": _LINEAR, "minFilter": _LINEAR_MIPMAP_LINEAR, "wrapS": _CLAMP, "wrapT": _CLAMP}],
    }
    first = add_skeleton(gltf, buf, rig, skinned_node=0)
    if animation is not None:
        add_animation(gltf, buf, animation, rig, first_joint_node=first)
    gltf["extras"] = {"sigman": {"format": MESH_FORMAT, "version": FORMAT_VERSION, "body_model": rig.body_model,
                                 "joint_names": list(rig.joint_names), "parents": rig.parents.tolist(),
                                 "rest_joints": _floats(rig.rest_joints.numpy()), "skin_influences": influences}}
    return pack_glb(gltf, buf)


def save_mesh_avatar(path: Union[str, Path], mesh: SkinnedMesh, rig: Rig,
                     animation: Optional[SkeletonAnimation] = None) -> None:
    """Write ``avatar_mesh.glb``: the skinned, textured mesh, its skeleton and optionally a motion."""
    Path(path).write_bytes(build_mesh_avatar(mesh, rig, animation))
