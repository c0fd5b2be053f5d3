"""three.js (in node) loads sigman's avatars as a three.js app would: ``avatar_mesh.glb`` is a
``SkinnedMesh`` with the skeleton's bones, the baked texture and an animation clip that moves its
vertices where sigman's own skinning puts them; the Gaussian ``avatar.glb`` loads (as a point
cloud: three.js has no Gaussian splats) with the same clip.

Needs node and ``tests/js/node_modules`` (``cd tests/js && npm ci``; ``.ci/run`` does it);
skipped otherwise.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from sigman.gaussians import surface_gaussians
from sigman.io import save_glb
from sigman.io.animation import skeleton_animation
from sigman.io.gltf import top_k_weights
from sigman.io.mesh_avatar import MESH_INFLUENCES, mesh_avatar, save_mesh_avatar
from sigman.lbs import lbs_points

from test_rigged_files import anny_rig, walk

JS = Path(__file__).resolve().parent / "js"
NODE = shutil.which("node")
if NODE is None:
    pytest.skip("node is not installed", allow_module_level=True)
if not (JS / "node_modules" / "three" / "package.json").is_file():
    pytest.skip("three.js is not installed (cd tests/js && npm ci)", allow_module_level=True)

STRIDE = 97  # every 97th vertex is compared


def inspect(path: Path, *times: float) -> dict:
    done = subprocess.run([NODE, str(JS / "inspect_glb.mjs"), str(path), str(STRIDE), *map(str, times)],
                          capture_output=True, text=True, timeout=120, cwd=JS)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def test_mesh_avatar_dances_in_threejs(anny_body, uv64, tmp_path):
    colors = torch.rand(uv64.num_points, 3, generator=torch.Generator().manual_seed(1))
    g = surface_gaussians(uv64).with_(colors=colors)
    mesh = mesh_avatar(anny_body, uv64, g)
    motion = walk(6)
    animation = skeleton_animation(anny_body, motion, anny_body.rest_joints, "walk_cycle")
    save_mesh_avatar(tmp_path / "avatar_mesh.glb", mesh, anny_rig(anny_body), animation)
    times = [0.0, 3 / motion.fps, 5 / motion.fps]
    report = inspect(tmp_path / "avatar_mesh.glb", *times)
    assert report["skinnedMeshes"] == 1 and report["bones"] == anny_body.num_joints
    # three.js drops "." from node names (PropertyBinding.sanitizeNodeName): "pelvis.L" -> "pelvisL"
    assert report["boneNames"] == [name.replace(".", "") for name in anny_body.joint_names[:3]]
    assert report["vertices"] == len(mesh.vertices) and report["hasUV"]
    assert report["texture"] == {"width": uv64.resolution, "height": uv64.resolution, "colorSpace": "srgb"}
    assert [c["name"] for c in report["animations"]] == ["walk_cycle"]
    assert report["animations"][0]["duration"] == pytest.approx(5 / motion.fps, abs=1e-6)
    # three.js's skinning at keyframes == sigman's LBS with the file's 4 influences, to float32 precision
    joints, weights = top_k_weights(mesh.skin_weights, MESH_INFLUENCES)
    sparse = torch.zeros_like(mesh.skin_weights).scatter_add_(1, torch.from_numpy(joints), torch.from_numpy(weights))
    transforms, _ = anny_body.pose_transforms(motion)
    expected = lbs_points(mesh.vertices, sparse, transforms)[:, ::STRIDE].numpy()
    frames = {round(f["time"] * motion.fps): np.array(f["positions"]) for f in report["frames"]}
    for t, positions in frames.items():
        assert np.abs(positions - expected[t]).max() < 1e-4, t
    moved = np.linalg.norm(frames[5] - frames[0], axis=1)
    assert moved.max() > 0.05  # the vertices do move


def test_gaussian_glb_loads_in_threejs(anny_body, uv64, tmp_path):
    animation = skeleton_animation(anny_body, walk(3), anny_body.rest_joints, "walk_cycle")
    save_glb(tmp_path / "avatar.glb", surface_gaussians(uv64), anny_rig(anny_body), animation=animation)
    report = inspect(tmp_path / "avatar.glb")
    assert report["points"] == 1 and report["skinnedMeshes"] == 0  # three.js drops a skin on points
    assert report["animations"][0]["name"] == "walk_cycle"
    assert report["animations"][0]["tracks"] == anny_body.num_joints + 1
