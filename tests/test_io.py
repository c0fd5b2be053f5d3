import json
import struct

import numpy as np
import pytest
import torch

from sigman.gaussians import Gaussians, surface_gaussians
from sigman.io import Rig, load_gaussians, load_rigged_glb, load_splat, save_gaussians, save_splat
from sigman.io.gltf import ATTR_ROTATION, read_glb
from sigman.io.ply import PROPERTIES, read_ply_fields


def random_gaussians(n=500, joints=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=-1)
    w = torch.rand(n, joints, generator=g) ** 4
    return Gaussians(means=torch.randn(n, 3, generator=g), quats=q, scales=torch.rand(n, 3, generator=g) * 0.05 + 1e-3,
                     opacities=torch.rand(n, generator=g) * 0.98 + 0.01, colors=torch.rand(n, 3, generator=g),
                     skin_weights=w / w.sum(1, keepdim=True))


def test_ply_round_trip_is_bit_exact(tmp_path):
    g = random_gaussians()
    save_gaussians(tmp_path / "a.ply", g)
    back = load_gaussians(tmp_path / "a.ply")
    assert torch.equal(back.means, g.means)
    torch.testing.assert_close(back.quats, g.quats, atol=1e-7, rtol=0)
    torch.testing.assert_close(back.scales, g.scales, rtol=1e-6, atol=0)
    torch.testing.assert_close(back.opacities, g.opacities, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(back.colors, g.colors, atol=1e-6, rtol=0)
    # the stored properties survive load -> save byte for byte
    save_gaussians(tmp_path / "b.ply", back)
    first, second = read_ply_fields(tmp_path / "a.ply"), read_ply_fields(tmp_path / "b.ply")
    for p in ("x", "y", "z", "rot_0", "rot_1", "rot_2", "rot_3", "f_dc_0", "scale_0"):
        assert np.array_equal(first[p], second[p]) or np.allclose(first[p], second[p], rtol=0, atol=2e-6), p
    assert (tmp_path / "b.ply").read_bytes()[:200] == (tmp_path / "a.ply").read_bytes()[:200]


def test_ply_header_is_the_standard_3dgs_layout(tmp_path):
    save_gaussians(tmp_path / "a.ply", random_gaussians(10))
    raw = (tmp_path / "a.ply").read_bytes()
    header = raw[: raw.index(b"end_header\n")].decode().splitlines()
    assert header[:3] == ["ply", "format binary_little_endian 1.0", "element vertex 10"]
    assert [line.split()[-1] for line in header[3:]] == list(PROPERTIES)
    assert len(raw) - raw.index(b"end_header\n") - len(b"end_header\n") == 10 * 17 * 4


def test_bad_ply_files(tmp_path):
    save_gaussians(tmp_path / "a.ply", random_gaussians(10))
    raw = (tmp_path / "a.ply").read_bytes()
    (tmp_path / "trunc.ply").write_bytes(raw[:-20])
    with pytest.raises(ValueError, match="truncated"):
        load_gaussians(tmp_path / "trunc.ply")
    (tmp_path / "noop.ply").write_bytes(raw.replace(b"property float opacity\n", b"property float opaque_\n"))
    with pytest.raises(ValueError, match="missing property 'opacity'"):
        load_gaussians(tmp_path / "noop.ply")
    (tmp_path / "x.ply").write_bytes(b"hello")
    with pytest.raises(ValueError, match="not a PLY"):
        load_gaussians(tmp_path / "x.ply")
    with pytest.raises(ValueError, match="unknown Gaussian file type"):
        save_gaussians(tmp_path / "x.obj", random_gaussians(3))


def test_splat_round_trip_within_quantisation(tmp_path):
    g = random_gaussians()
    save_splat(tmp_path / "a.splat", g)
    assert (tmp_path / "a.splat").stat().st_size == 32 * g.num_gaussians
    back = load_splat(tmp_path / "a.splat")
    order = torch.argsort(-(g.scales.prod(1) * g.opacities), stable=True)
    torch.testing.assert_close(back.means, g.means[order])
    torch.testing.assert_close(back.colors, g.colors[order], atol=1 / 255, rtol=0)
    torch.testing.assert_close(back.opacities, g.opacities[order], atol=1 / 255, rtol=0)
    dots = (back.quats * g.quats[order]).sum(-1).abs()
    assert dots.min() > 0.99


def test_rigged_glb_round_trip(tmp_path):
    g = random_gaussians(300, joints=5)
    rig = Rig(["root", "a", "b", "c", "d"], torch.tensor([-1, 0, 1, 0, 3]), torch.randn(5, 3), "anny")
    save_gaussians(tmp_path / "a.glb", g, rig)
    back, rig2 = load_rigged_glb(tmp_path / "a.glb")
    for name in ("means", "quats", "scales", "opacities", "colors"):
        assert torch.equal(getattr(back, name), getattr(g, name)), name
    assert rig2.joint_names == rig.joint_names and torch.equal(rig2.parents, rig.parents)
    assert torch.equal(rig2.rest_joints, rig.rest_joints) and rig2.body_model == "anny"
    torch.testing.assert_close(back.skin_weights.sum(1), torch.ones(300))
    assert int((back.skin_weights > 0).sum(1).max()) <= 4
    top = g.skin_weights.topk(4, dim=1)
    expected = top.values / top.values.sum(1, keepdim=True)
    torch.testing.assert_close(back.skin_weights.gather(1, top.indices), expected)


def test_glb_is_valid_gltf(tmp_path):
    g = random_gaussians(50, joints=3)
    rig = Rig(["root", "a", "b"], torch.tensor([-1, 0, 1]), torch.tensor([[0, 1.0, 0], [0.1, 1.2, 0], [0.2, 1.5, 0]]), "anny")
    save_gaussians(tmp_path / "a.glb", g, rig)
    gltf, blob = read_glb(tmp_path / "a.glb")
    assert gltf["asset"]["version"] == "2.0" and "KHR_gaussian_splatting" in gltf["extensionsUsed"]
    assert "extensionsRequired" not in gltf
    prim = gltf["meshes"][0]["primitives"][0]
    assert prim["mode"] == 0 and ATTR_ROTATION in prim["attributes"]
    pos = gltf["accessors"][prim["attributes"]["POSITION"]]
    np.testing.assert_allclose(pos["min"], g.means.min(0).values.numpy(), rtol=0, atol=1e-6)
    for view in gltf["bufferViews"]:
        assert view["byteOffset"] % 4 == 0
    ibm_acc = gltf["accessors"][gltf["skins"][0]["inverseBindMatrices"]]
    view = gltf["bufferViews"][ibm_acc["bufferView"]]
    ibm = np.frombuffer(blob, "<f4", 48, view["byteOffset"]).reshape(3, 4, 4).transpose(0, 2, 1)
    np.testing.assert_allclose(ibm[:, :3, 3], -rig.rest_joints.numpy())
    np.testing.assert_allclose(ibm[:, :3, :3], np.tile(np.eye(3), (3, 1, 1)))
    # a second reader agrees
    import pygltflib
    doc = pygltflib.GLTF2().load(str(tmp_path / "a.glb"))
    assert len(doc.skins[0].joints) == 3 and doc.nodes[2].name == "a"


def test_corrupt_glb(tmp_path):
    g = random_gaussians(20, joints=2)
    rig = Rig(["r", "a"], torch.tensor([-1, 0]), torch.zeros(2, 3), "anny")
    save_gaussians(tmp_path / "a.glb", g, rig)
    raw = (tmp_path / "a.glb").read_bytes()
    (tmp_path / "t.glb").write_bytes(raw[:-100])
    with pytest.raises(ValueError, match="truncated"):
        load_rigged_glb(tmp_path / "t.glb")
    (tmp_path / "j.glb").write_bytes(b"glTF" + raw[4:])
    bad = bytearray(raw)
    bad[20:30] = b"##########"
    (tmp_path / "j.glb").write_bytes(bytes(bad))
    with pytest.raises(ValueError, match="corrupt JSON"):
        load_rigged_glb(tmp_path / "j.glb")
    (tmp_path / "n.glb").write_bytes(b"not a glb at all, not at all")
    with pytest.raises(ValueError, match="not a glTF"):
        load_rigged_glb(tmp_path / "n.glb")


def test_avatar_reposes_after_reload(tmp_path, anny_body, uv64):
    from sigman.gaussians import repose
    from sigman.presets import waving

    g = surface_gaussians(uv64)
    rig = Rig(anny_body.joint_names, anny_body.parents, anny_body.rest_joints, "anny")
    save_gaussians(tmp_path / "a.glb", g, rig)
    back, rig2 = load_rigged_glb(tmp_path / "a.glb")
    transforms = anny_body.pose_transforms(waving(), rig2.rest_joints)[0]
    # top-4 weights: anny's texels have up to ~10 joints, so positions agree to a few millimetres
    err = (repose(back, transforms).means - repose(g, transforms).means).norm(dim=-1)
    assert err.median() < 1e-3 and err.max() < 0.03
