"""Rigged files against sigman's own reposing: the Gaussian .glb (8 skin influences, a glTF
animation of the skeleton) and the skinned mesh avatar_mesh.glb, read as glTF viewers read them."""

from __future__ import annotations

import numpy as np
import roma
import torch

from sigman.gaussians import repose, surface_gaussians
from sigman.io import Rig, load_rigged_glb, save_glb
from sigman.io.animation import skeleton_animation
from sigman.io.gltf import read_accessor, read_gltf
from sigman.io.mesh_avatar import mesh_avatar, save_mesh_avatar, split_at_seams
from sigman.presets import resolve_pose

from conftest import random_pose

MAX_REPOSE_ERROR_M = 1e-3


def anny_rig(body) -> Rig:
    return Rig(body.joint_names, body.parents, body.rest_joints, body.name)


def walk(frames: int = 6):
    motion = resolve_pose("walk_cycle")
    return motion.frame(slice(0, frames))


def gltf_skinning(path, times_index: int) -> tuple[np.ndarray, np.ndarray]:
    """What a glTF viewer computes at keyframe ``times_index`` of animation 0: node TRS from the
    keyframes, world matrices down the node tree, joint matrices ``world @ inverse_bind``.
    Returns the joint matrices ``[J, 4, 4]`` and node world matrix of the skinned node (identity)."""
    gltf, blob = read_gltf(path)
    nodes = gltf["nodes"]
    trs = [{"t": np.array(n.get("translation", [0, 0, 0]), np.float64),
            "r": np.array(n.get("rotation", [0, 0, 0, 1]), np.float64)} for n in nodes]
    animation = gltf["animations"][0]
    for channel in animation["channels"]:
        sampler = animation["samplers"][channel["sampler"]]
        value = read_accessor(gltf, blob, sampler["output"])[times_index].astype(np.float64)
        trs[channel["target"]["node"]]["t" if channel["target"]["path"] == "translation" else "r"] = value
    local = []
    for item in trs:
        m = np.eye(4)
        m[:3, :3] = roma.unitquat_to_rotmat(torch.from_numpy(item["r"])).numpy()
        m[:3, 3] = item["t"]
        local.append(m)
    parent = {c: i for i, n in enumerate(nodes) for c in n.get("children", [])}
    world = [None] * len(nodes)

    def world_of(i):
        if world[i] is None:
            world[i] = local[i] if i not in parent else world_of(parent[i]) @ local[i]
        return world[i]

    skin = gltf["skins"][0]
    ibm = read_accessor(gltf, blob, skin["inverseBindMatrices"]).reshape(-1, 4, 4).transpose(0, 2, 1)
    return np.stack([world_of(j) @ ibm[k] for k, j in enumerate(skin["joints"])]), gltf


def skin_points(points: np.ndarray, joints: list[np.ndarray], weights: list[np.ndarray], mats: np.ndarray) -> np.ndarray:
    blended = sum((w[..., None, None] * mats[j]).sum(1) for j, w in zip(joints, weights))
    return (blended[:, :3, :3] @ points[:, :, None])[..., 0] + blended[:, :3, 3]


def test_rigged_glb_reposes_within_a_millimetre_of_dense_lbs(anny_body, uv64, tmp_path):
    """8 influences (the default) stay within 1 mm of dense LBS over a walk and random poses;
    4 influences do not (anny texels have up to 9 joints)."""
    g = surface_gaussians(uv64)
    errors = {}
    for k in (4, 8):
        save_glb(tmp_path / f"k{k}.glb", g, anny_rig(anny_body), influences=k)
        back, _ = load_rigged_glb(tmp_path / f"k{k}.glb")
        worst = 0.0
        for pose in (walk(), random_pose(3, seed=1)):
            transforms, _ = anny_body.pose_transforms(pose)
            dense = repose(g, transforms).means
            sparse = repose(back, transforms).means
            worst = max(worst, float((dense - sparse).norm(dim=-1).max()))
        errors[k] = worst
    assert errors[8] <= MAX_REPOSE_ERROR_M, errors
    assert errors[4] > 2 * errors[8], errors


def test_rigged_glb_animation_plays_the_motion(anny_body, uv64, tmp_path):
    """The glTF animation, evaluated as a glTF viewer does (keyframe TRS, node tree, inverse
    bind matrices, JOINTS_0/1 and WEIGHTS_0/1), moves the Gaussians where sigman's reposing puts
    them, within 1 mm, at every keyframe."""
    g = surface_gaussians(uv64)
    motion = walk(5)
    animation = skeleton_animation(anny_body, motion, anny_body.rest_joints, "walk_cycle")
    save_glb(tmp_path / "a.glb", g, anny_rig(anny_body), animation=animation)
    transforms, _ = anny_body.pose_transforms(motion)
    expected = repose(g, transforms).means.numpy()
    gltf, blob = read_gltf(tmp_path / "a.glb")
    clip = gltf["animations"][0]
    assert clip["name"] == "walk_cycle" and len(clip["channels"]) == anny_body.num_joints + 1  # + root translation
    times = read_accessor(gltf, blob, clip["samplers"][0]["input"])[:, 0]
    np.testing.assert_allclose(times, np.arange(5) / motion.fps, atol=1e-6)
    attrs = gltf["meshes"][0]["primitives"][0]["attributes"]
    joints = [read_accessor(gltf, blob, attrs[f"JOINTS_{s}"]).astype(np.int64) for s in (0, 1)]
    weights = [read_accessor(gltf, blob, attrs[f"WEIGHTS_{s}"]).astype(np.float64) for s in (0, 1)]
    points = g.means.numpy().astype(np.float64)
    for t in range(5):
        mats, _ = gltf_skinning(tmp_path / "a.glb", t)
        moved = skin_points(points, joints, weights, mats)
        assert np.linalg.norm(moved - expected[t], axis=1).max() <= MAX_REPOSE_ERROR_M
    assert np.linalg.norm(expected[4] - expected[0], axis=1).max() > 0.05  # the walk does move


def test_mesh_avatar_is_the_textured_skinned_body(anny_body, uv64, tmp_path):
    colors = torch.rand(uv64.num_points, 3, generator=torch.Generator().manual_seed(0))
    g = surface_gaussians(uv64).with_(colors=colors)
    out = uv64.normals * 0.01  # the Gaussians sit 1 cm outside the body
    mesh = mesh_avatar(anny_body, uv64, g.with_(means=g.means + out))
    faces, position_index, uv_index = split_at_seams(anny_body.faces, anny_body.face_uvs)
    assert torch.equal(mesh.faces, faces) and len(mesh.vertices) == len(position_index) > anny_body.num_vertices
    # same corners: each split face still names the body's vertices and uvs
    assert torch.equal(position_index[faces], anny_body.faces)
    assert torch.equal(uv_index[faces], anny_body.face_uvs)
    # the surface follows the Gaussians' offsets (about 1 cm out, along the normals)
    push = (mesh.vertices - anny_body.rest_vertices[position_index]).norm(dim=-1)
    assert 0.006 < float(push.median()) < 0.012
    # the texture holds each Gaussian's colour at its texel
    texel = mesh.texture.reshape(-1, 3)[uv64.texel_index.numpy()]
    np.testing.assert_array_equal(texel, np.round(colors.numpy() * 255).astype(np.uint8))
    # glTF uvs: (u, 1 - v)
    torch.testing.assert_close(mesh.uvs[:, 1], 1 - anny_body.uvs[uv_index, 1])
    save_mesh_avatar(tmp_path / "m.glb", mesh, anny_rig(anny_body))
    gltf, blob = read_gltf(tmp_path / "m.glb")
    prim = gltf["meshes"][0]["primitives"][0]
    assert prim["mode"] == 4 and {"POSITION", "NORMAL", "TEXCOORD_0", "JOINTS_0", "WEIGHTS_0"} <= set(prim["attributes"])
    assert gltf["images"][0]["mimeType"] == "image/png" and gltf["nodes"][0]["skin"] == 0
    np.testing.assert_allclose(read_accessor(gltf, blob, prim["attributes"]["WEIGHTS_0"]).sum(1), 1.0, atol=1e-6)
