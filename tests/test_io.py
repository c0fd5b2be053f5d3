"""Gaussian file formats: .ply (bit-exact stored values), .splat (quantised), rigged .glb."""

import json
import struct

import numpy as np
import pytest
import roma
import torch

from sigman.gaussians import Gaussians, surface_gaussians
from sigman.io import Rig, load_gaussians, load_glb, load_rigged_glb, load_splat, save_gaussians, save_splat
from sigman.io.gltf import (ATTR_EXACT_COLOR, ATTR_OPACITY, ATTR_ROTATION, ATTR_SCALE, ATTR_SH0, EXTENSION,
                            read_accessor, read_gltf, save_glb, srgb_to_linear)
from sigman.io.ply import PROPERTIES, ply_properties, read_ply_fields, save_ply

C0 = 0.28209479177387814


def random_gaussians(n=500, joints=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=-1)
    w = torch.rand(n, joints, generator=g) ** 4
    colors = torch.rand(n, 3, generator=g)
    colors[:3] = torch.tensor([[0.0, 1.0, 0.5], [1e-4, 0.9999, 0.02], [0.25, 0.75, 0.125]])[:n]
    opacities = torch.rand(n, generator=g)
    opacities[:4] = torch.tensor([0.0, 1.0, 1e-6, 1 - 1e-6])[:n]  # extremes first
    scales = torch.exp(torch.empty(n, 3).uniform_(-9, 1, generator=g))  # 0.1 mm .. 2.7 m
    return Gaussians(means=torch.randn(n, 3, generator=g), quats=q, scales=scales, opacities=opacities,
                     colors=colors, skin_weights=w / w.sum(1, keepdim=True))


def chain_rig(joints, seed=0, body_model="anny"):
    parents = torch.tensor([-1] + [(j - 1) // 2 for j in range(1, joints)])
    rest = torch.randn(joints, 3, generator=torch.Generator().manual_seed(seed))
    return Rig([f"joint_{j}" for j in range(joints)], parents, rest, body_model)


def write_ply(path, fields, fmt="binary_little_endian", types=None, before=b"", lines=()):
    """A PLY writer independent of sigman's: ``fields`` name -> [N] array, in that order."""
    order = {"binary_little_endian": "<", "binary_big_endian": ">"}[fmt]
    types = types or {}
    names = list(fields)
    n = len(fields[names[0]])
    np_type = {"float": "f4", "double": "f8", "uchar": "u1"}
    dtype = np.dtype([(k, order + np_type[types.get(k, "float")]) for k in names])
    data = np.zeros(n, dtype)
    for k in names:
        data[k] = fields[k]
    header = ["ply", f"format {fmt} 1.0", *lines, f"element vertex {n}"]
    header += [f"property {types.get(k, 'float')} {k}" for k in names] + ["end_header"]
    path.write_bytes(b"".join([("\n".join(header) + "\n").encode(), before, data.tobytes()]))


# --- .ply ------------------------------------------------------------------------------------

def test_ply_round_trip_is_bit_exact(tmp_path):
    g = random_gaussians()
    save_gaussians(tmp_path / "a.ply", g)
    raw = read_ply_fields(tmp_path / "a.ply")
    # stored values: the float32 rounding of the exact pre-activations (within one float32 ulp)
    alpha = np.clip(g.opacities.double().numpy(), np.finfo(np.float32).tiny, 1 - 2.0 ** -24)
    expected = {"opacity": np.log(alpha / (1 - alpha))}
    for i in range(3):
        expected[f"scale_{i}"] = np.log(g.scales[:, i].double().numpy())
        expected[f"f_dc_{i}"] = (g.colors[:, i].double().numpy() - 0.5) / C0
    for name, value in expected.items():
        np.testing.assert_array_max_ulp(raw[name], value.astype(np.float32), maxulp=1)
    assert not np.any(raw["nx"]) and not np.any(raw["ny"]) and not np.any(raw["nz"])

    back = load_gaussians(tmp_path / "a.ply")
    assert back.means.dtype == torch.float32 and back.skin_weights is None
    assert torch.equal(back.means, g.means) and torch.equal(back.quats, g.quats)
    torch.testing.assert_close(back.scales, g.scales, rtol=2e-6, atol=0)
    torch.testing.assert_close(back.opacities, g.opacities, rtol=0, atol=2e-7)
    torch.testing.assert_close(back.colors, g.colors, rtol=0, atol=1e-7)
    # load -> save reproduces the file byte for byte, so the stored logit/log/SH values are exact
    save_gaussians(tmp_path / "b.ply", back)
    assert (tmp_path / "b.ply").read_bytes() == (tmp_path / "a.ply").read_bytes()
    again = load_gaussians(tmp_path / "b.ply")
    for name in ("means", "quats", "scales", "opacities", "colors"):
        assert torch.equal(getattr(again, name), getattr(back, name)), name


def test_ply_values_from_other_writers_reach_a_fixed_point(tmp_path):
    """Arbitrary stored float32 values (not all reachable from float32 activations) settle after one
    load/save: the second save equals the first, and differs from the input by rounding only."""
    rng = np.random.default_rng(1)
    n = 20_000
    fields = {k: rng.normal(0, 1, n) for k in "xyz"}
    fields.update({f"f_dc_{i}": rng.normal(0, 1.5, n) for i in range(3)})
    fields["opacity"] = rng.normal(0, 4, n)
    fields.update({f"scale_{i}": rng.normal(-4, 2, n) for i in range(3)})
    q = rng.normal(size=(n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    fields.update({f"rot_{i}": q[:, i] for i in range(4)})
    write_ply(tmp_path / "other.ply", fields)
    save_ply(tmp_path / "1.ply", load_gaussians(tmp_path / "other.ply"))
    save_ply(tmp_path / "2.ply", load_gaussians(tmp_path / "1.ply"))
    assert (tmp_path / "1.ply").read_bytes() == (tmp_path / "2.ply").read_bytes()
    first, source = read_ply_fields(tmp_path / "1.ply"), read_ply_fields(tmp_path / "other.ply")
    np.testing.assert_array_equal(first["x"], source["x"])
    np.testing.assert_allclose(first["scale_0"], source["scale_0"], rtol=0, atol=2e-6)
    sigmoid = lambda x: 1 / (1 + np.exp(-x.astype(np.float64)))
    np.testing.assert_allclose(sigmoid(first["opacity"]), sigmoid(source["opacity"]), rtol=0, atol=1e-7)
    inside = np.abs(0.5 + C0 * source["f_dc_0"].astype(np.float64) - 0.5) < 0.5  # colour in [0, 1]
    np.testing.assert_allclose(first["f_dc_0"][inside], source["f_dc_0"][inside], rtol=0, atol=4e-7)


def in_file_frame(g: Gaussians) -> tuple[np.ndarray, np.ndarray]:
    """Means and quaternions as the .ply/.splat store them: sigman's frame turned 180° about X."""
    m, q = g.means.numpy(), g.quats.numpy()
    return m * np.float32([1, -1, -1]), np.stack([-q[:, 1], q[:, 0], -q[:, 3], q[:, 2]], 1)


def test_ply_header_is_the_full_inria_layout(tmp_path):
    import trimesh

    g = random_gaussians(10)
    save_gaussians(tmp_path / "a.ply", g)
    raw = (tmp_path / "a.ply").read_bytes()
    end = raw.index(b"end_header\n") + len(b"end_header\n")
    header = raw[:end].decode().splitlines()
    assert header[:2] == ["ply", "format binary_little_endian 1.0"] and header[2].startswith("comment sigman frame")
    assert header[3] == "element vertex 10"
    names = [line.split()[-1] for line in header[4:-1]]
    assert header[4:-1] == [f"property float {p}" for p in names] and header[-1] == "end_header"
    # the original 3DGS layout: 62 float32 properties, 248 bytes per Gaussian, f_rest_0..44 between f_dc and opacity
    assert names == ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"] + [f"f_rest_{i}" for i in range(45)] + [
        "opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    assert len(raw) - end == 10 * 248
    body = np.frombuffer(raw[end:], "<f4").reshape(10, 62)
    means, quats = in_file_frame(g)
    assert np.array_equal(body[:, :3], means) and np.array_equal(body[:, 58:], quats)
    assert not body[:, 3:6].any() and not body[:, 9:54].any()  # zero normals and higher SH
    # a second reader: trimesh's PLY parser sees the same vertices and properties
    cloud = trimesh.load(tmp_path / "a.ply")
    np.testing.assert_array_equal(np.asarray(cloud.vertices, np.float32), means)
    theirs = cloud.metadata["_ply_raw"]["vertex"]["data"]
    ours = read_ply_fields(tmp_path / "a.ply")
    assert theirs.dtype.names == ours.dtype.names
    for name in ours.dtype.names:
        assert np.array_equal(theirs[name], ours[name]), name


def test_ply_compact_layout(tmp_path):
    g = random_gaussians(10)
    save_gaussians(tmp_path / "c.ply", g, compact=True)
    fields = read_ply_fields(tmp_path / "c.ply")
    assert fields.dtype.names == PROPERTIES and fields.dtype.itemsize == 17 * 4
    assert list(PROPERTIES) == ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
                                "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    back, full = load_gaussians(tmp_path / "c.ply"), g
    assert torch.equal(back.means, full.means) and torch.equal(back.quats, full.quats)


def test_ply_frame_is_y_down_and_a_turn(tmp_path):
    """A body standing along +Y (feet at 0, head at 1.8, nose towards +Z) is stored head down
    (lowest y) and nose towards -Z; reading it back restores sigman's frame exactly."""
    feet, head, nose = [0.0, 0.0, 0.0], [0.0, 1.8, 0.0], [0.0, 1.7, 0.1]
    q = torch.nn.functional.normalize(torch.randn(3, 4, generator=torch.Generator().manual_seed(3)), dim=1)
    g = Gaussians(means=torch.tensor([feet, head, nose]), quats=q, scales=torch.full((3, 3), 0.01),
                  opacities=torch.full((3,), 0.9), colors=torch.full((3, 3), 0.5))
    save_ply(tmp_path / "a.ply", g)
    f = read_ply_fields(tmp_path / "a.ply")
    assert f["y"][1] == -1.8 and f["y"][1] < f["y"][0] and f["z"][2] < 0  # head down, nose to -Z
    # orientations: R_file = R_x(180°) R, a proper rotation (no mirror)
    rx = torch.diag(torch.tensor([1.0, -1.0, -1.0]))
    stored = torch.from_numpy(np.stack([f[f"rot_{i}"] for i in range(4)], 1).copy())
    torch.testing.assert_close(roma.unitquat_to_rotmat(stored[:, [1, 2, 3, 0]]),
                               rx @ roma.unitquat_to_rotmat(q[:, [1, 2, 3, 0]]), atol=1e-6, rtol=0)
    back = load_gaussians(tmp_path / "a.ply")
    assert torch.equal(back.means, g.means) and torch.equal(back.quats, g.quats)


def test_ply_sh_degree_padding(tmp_path):
    g = random_gaussians(20)
    save_ply(tmp_path / "d3.ply", g, sh_degree=3)
    fields = read_ply_fields(tmp_path / "d3.ply")
    assert fields.dtype.names == ply_properties(3) and len(fields.dtype.names) == 62
    assert all(not np.any(fields[f"f_rest_{i}"]) for i in range(45))
    save_ply(tmp_path / "d0.ply", g)
    a, b = load_gaussians(tmp_path / "d3.ply"), load_gaussians(tmp_path / "d0.ply")
    assert all(torch.equal(getattr(a, k), getattr(b, k)) for k in ("means", "quats", "scales", "opacities", "colors"))
    with pytest.raises(ValueError, match="sh_degree"):
        save_ply(tmp_path / "d4.ply", g, sh_degree=4)


def test_ply_from_gsplat_exporter(tmp_path):
    exporter = pytest.importorskip("gsplat.exporter")
    g = random_gaussians(50)
    n = g.num_gaussians
    sh0 = (g.colors - 0.5) / C0
    data = exporter.splat2ply_bytes(g.means, torch.log(g.scales), g.quats, torch.logit(g.opacities.clamp(1e-6, 1 - 1e-6)),
                                    sh0, torch.randn(n, 45))
    (tmp_path / "gsplat.ply").write_bytes(data)
    back = load_gaussians(tmp_path / "gsplat.ply")  # gsplat's file is in the splat frame: read, then turned
    means, quats = in_file_frame(back)  # writing turns it back exactly
    assert np.array_equal(means, g.means.numpy()) and np.array_equal(quats, g.quats.numpy())
    torch.testing.assert_close(back.scales, g.scales, rtol=1e-5, atol=0)
    torch.testing.assert_close(back.opacities, g.opacities.clamp(1e-6, 1 - 1e-6), rtol=0, atol=1e-6)
    torch.testing.assert_close(back.colors, g.colors, rtol=0, atol=1e-6)


def test_ply_unusual_but_valid_layouts(tmp_path):
    """Any property order, double properties, big-endian, comments, an element before the vertices."""
    g = random_gaussians(30)
    save_ply(tmp_path / "ref.ply", g)
    ref = read_ply_fields(tmp_path / "ref.ply")
    names = list(reversed(ref.dtype.names)) + ["red"]
    fields = {k: ref[k] for k in names[:-1]}
    fields["red"] = np.arange(30) % 256
    chunk = np.arange(6, dtype=">f4").tobytes()  # element "chunk" 2 x (3 float) before the vertices
    for fmt in ("binary_little_endian", "binary_big_endian"):
        path = tmp_path / f"{fmt}.ply"
        write_ply(path, fields, fmt=fmt, types={"x": "double", "opacity": "double", "red": "uchar"},
                  before=chunk if fmt == "binary_big_endian" else b"",
                  lines=["comment made by hand"] + (["element chunk 2", "property float a", "property float b",
                                                      "property float c"] if fmt == "binary_big_endian" else []))
        back, expected = load_gaussians(path), load_gaussians(tmp_path / "ref.ply")
        for k in ("means", "quats", "scales", "opacities", "colors"):
            assert torch.equal(getattr(back, k), getattr(expected, k)), (fmt, k)


def test_bad_ply_files(tmp_path):
    save_gaussians(tmp_path / "a.ply", random_gaussians(10))
    raw = (tmp_path / "a.ply").read_bytes()
    (tmp_path / "trunc.ply").write_bytes(raw[:-20])
    with pytest.raises(ValueError, match="truncated"):
        load_gaussians(tmp_path / "trunc.ply")
    (tmp_path / "noop.ply").write_bytes(raw.replace(b"property float opacity\n", b"property float opaque_\n"))
    with pytest.raises(ValueError, match="not a 3DGS .ply: .* missing property 'opacity'"):
        load_gaussians(tmp_path / "noop.ply")
    (tmp_path / "x.ply").write_bytes(b"hello")
    with pytest.raises(ValueError, match="not a PLY"):
        load_gaussians(tmp_path / "x.ply")
    (tmp_path / "ascii.ply").write_bytes(raw.replace(b"binary_little_endian", b"ascii"))
    with pytest.raises(ValueError, match="ASCII"):
        load_gaussians(tmp_path / "ascii.ply")
    (tmp_path / "packed.ply").write_bytes(raw.replace(b"property float x\n", b"property uint packed_position\n"))
    with pytest.raises(ValueError, match="compressed"):
        load_gaussians(tmp_path / "packed.ply")
    nan = bytearray(raw)
    at = raw.index(b"end_header\n") + 11 + 4 * 54  # opacity of Gaussian 0 (after 45 f_rest)
    nan[at:at + 4] = struct.pack("<f", float("nan"))
    (tmp_path / "nan.ply").write_bytes(bytes(nan))
    with pytest.raises(ValueError, match="NaN"):
        load_gaussians(tmp_path / "nan.ply")
    with pytest.raises(ValueError, match="unknown Gaussian file type"):
        save_gaussians(tmp_path / "x.obj", random_gaussians(3))
    with pytest.raises(ValueError, match="unknown Gaussian file type"):
        load_gaussians(tmp_path / "x.obj")
    with pytest.raises(FileNotFoundError):
        load_gaussians(tmp_path / "missing.ply")
    g = random_gaussians(3)
    batched = g.with_(means=g.means[None], quats=g.quats[None], scales=g.scales[None],
                      opacities=g.opacities[None], colors=g.colors[None])
    with pytest.raises(ValueError, match="one set of Gaussians"):
        save_gaussians(tmp_path / "b.ply", batched)
    with pytest.raises(ValueError, match="NaN"):
        save_gaussians(tmp_path / "n.ply", g.with_(means=torch.full_like(g.means, float("nan"))))
    with pytest.raises(ValueError, match="cannot hold a rig"):
        save_gaussians(tmp_path / "r.ply", g, chain_rig(6))


# --- .splat ----------------------------------------------------------------------------------

def test_splat_round_trip_within_quantisation(tmp_path):
    g = random_gaussians()
    save_splat(tmp_path / "a.splat", g)
    assert (tmp_path / "a.splat").stat().st_size == 32 * g.num_gaussians
    back = load_gaussians(tmp_path / "a.splat")
    importance = g.scales.double().prod(1) * g.opacities.double()
    order = torch.argsort(-importance, stable=True)
    assert torch.equal(back.means, g.means[order]) and torch.equal(back.scales, g.scales[order])
    torch.testing.assert_close(back.colors, g.colors[order], atol=0.5 / 255 + 1e-6, rtol=0)
    torch.testing.assert_close(back.opacities, g.opacities[order], atol=0.5 / 255 + 1e-6, rtol=0)
    assert torch.allclose(back.quats.norm(dim=-1), torch.ones(g.num_gaussians))
    assert (back.quats * g.quats[order]).sum(-1).abs().min() > np.cos(np.radians(1.5))


def test_splat_record_layout(tmp_path):
    g = Gaussians(means=torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]), quats=torch.tensor([[1.0, 0, 0, 0], [0, 0, 0, 1.0]]),
                  scales=torch.tensor([[0.1, 0.2, 0.3], [0.01, 0.01, 0.01]]), opacities=torch.tensor([1.0, 0.5]),
                  colors=torch.tensor([[1.0, 0.0, 0.5], [0.2, 0.4, 0.6]]))
    save_splat(tmp_path / "a.splat", g)
    raw = (tmp_path / "a.splat").read_bytes()
    # stored in the splat frame (+Y down, sigman's frame turned 180° about X)
    assert struct.unpack_from("<6f", raw, 0) == struct.unpack("<6f", struct.pack("<6f", 1, -2, -3, 0.1, 0.2, 0.3))
    assert tuple(raw[24:32]) == (255, 0, 128, 255, 128, 255, 128, 128)  # rgba, then (w, x, y, z): the X turn
    assert tuple(raw[32 + 28:64]) == (128, 128, 0, 128)  # Z half-turn after the X turn: -Y half-turn
    back = load_splat(tmp_path / "a.splat")
    assert torch.equal(back.quats, torch.tensor([[1.0, 0, 0, 0], [0, 0, 0, 1.0]]))
    (tmp_path / "bad.splat").write_bytes(raw[:-3])
    with pytest.raises(ValueError, match="multiple of 32"):
        load_gaussians(tmp_path / "bad.splat")


# --- .glb ------------------------------------------------------------------------------------

def test_rigged_glb_round_trip(tmp_path):
    g = random_gaussians(300, joints=6)
    rig = chain_rig(6)
    rig = Rig(rig.joint_names, rig.parents, rig.rest_joints, "anny", vertices=torch.randn(40, 3),
              faces=torch.randint(0, 40, (70, 3)))
    save_gaussians(tmp_path / "a.glb", g, rig)
    back, rig2 = load_rigged_glb(tmp_path / "a.glb")
    for name in ("means", "quats", "scales", "opacities", "colors"):
        assert getattr(back, name).dtype == torch.float32
        assert torch.equal(getattr(back, name), getattr(g, name)), name
    assert rig2.joint_names == rig.joint_names and torch.equal(rig2.parents, rig.parents)
    assert torch.equal(rig2.rest_joints, rig.rest_joints) and rig2.body_model == "anny"
    assert torch.equal(rig2.vertices, rig.vertices) and torch.equal(rig2.faces, rig.faces)
    # skin weights: 8 influences by default (JOINTS_0/1) keep every weight of a 6-joint rig
    torch.testing.assert_close(back.skin_weights, g.skin_weights, rtol=0, atol=1e-6)
    gltf, _ = read_gltf(tmp_path / "a.glb")
    assert {"JOINTS_0", "WEIGHTS_0", "JOINTS_1", "WEIGHTS_1"} <= set(gltf["meshes"][0]["primitives"][0]["attributes"])
    assert gltf["extras"]["sigman"]["skin_influences"] == 8
    # a file written from the loaded avatar is the same file
    save_gaussians(tmp_path / "b.glb", back, rig2)
    assert (tmp_path / "b.glb").read_bytes() == (tmp_path / "a.glb").read_bytes()
    # 4 influences: the top 4 of each row, renormalised
    save_glb(tmp_path / "c.glb", g, rig, influences=4)
    back4, _ = load_rigged_glb(tmp_path / "c.glb")
    torch.testing.assert_close(back4.skin_weights.sum(1), torch.ones(300), rtol=0, atol=1e-6)
    assert int((back4.skin_weights > 0).sum(1).max()) == 4
    top = g.skin_weights.topk(4, dim=1)
    torch.testing.assert_close(back4.skin_weights.gather(1, top.indices), top.values / top.values.sum(1, keepdim=True))


def _views_in_bounds(gltf, blob):
    for i, acc in enumerate(gltf["accessors"]):
        view = gltf["bufferViews"][acc["bufferView"]]
        assert view["byteOffset"] % 4 == 0 and acc.get("byteOffset", 0) % 4 == 0
        size = {"SCALAR": 1, "VEC3": 3, "VEC4": 4, "MAT4": 16}[acc["type"]] * {5121: 1, 5123: 2, 5125: 4, 5126: 4}[acc["componentType"]]
        assert acc["count"] * size <= view["byteLength"] and view["byteOffset"] + view["byteLength"] <= len(blob), i


def test_glb_is_valid_gltf(tmp_path):
    import trimesh

    g = random_gaussians(50, joints=3)
    rig = Rig(["root", "a", "b"], torch.tensor([-1, 0, 1]), torch.tensor([[0, 1.0, 0], [0.1, 1.2, 0], [0.2, 1.5, 0]]), "anny")
    save_gaussians(tmp_path / "a.glb", g, rig)
    raw = (tmp_path / "a.glb").read_bytes()
    magic, version, total = struct.unpack_from("<III", raw)
    json_len, json_type = struct.unpack_from("<II", raw, 12)
    bin_len, bin_type = struct.unpack_from("<II", raw, 20 + json_len)
    assert (magic, version, total, json_type, bin_type) == (0x46546C67, 2, len(raw), 0x4E4F534A, 0x004E4942)
    assert json_len % 4 == 0 and bin_len % 4 == 0 and 28 + json_len + bin_len == len(raw)
    gltf, blob = read_gltf(tmp_path / "a.glb")
    assert gltf == json.loads(raw[20:20 + json_len]) and gltf["buffers"][0]["byteLength"] <= len(blob)
    assert gltf["asset"]["version"] == "2.0" and gltf["extensionsUsed"] == [EXTENSION] and "extensionsRequired" not in gltf
    _views_in_bounds(gltf, blob)
    prim = gltf["meshes"][0]["primitives"][0]
    attrs = prim["attributes"]
    assert prim["mode"] == 0 and prim["extensions"][EXTENSION]["kernel"] == "ellipse"
    assert prim["extensions"][EXTENSION]["colorSpace"] == "srgb_rec709_display"
    for semantic in attrs.values():
        assert gltf["bufferViews"][gltf["accessors"][semantic]["bufferView"]]["target"] == 34962
    pos = gltf["accessors"][attrs["POSITION"]]
    assert pos["min"] == g.means.min(0).values.tolist() and pos["max"] == g.means.max(0).values.tolist()
    # KHR_gaussian_splatting semantics: linear scale, (x, y, z, w) rotation, opacity in [0, 1], SH DC
    read = lambda semantic: read_accessor(gltf, blob, attrs[semantic])
    assert np.array_equal(read(ATTR_SCALE), g.scales.numpy())
    assert np.array_equal(read(ATTR_ROTATION), g.quats[:, [1, 2, 3, 0]].numpy())
    assert np.array_equal(read(ATTR_OPACITY)[:, 0], g.opacities.numpy())
    np.testing.assert_allclose(0.5 + C0 * read(ATTR_SH0), g.colors.numpy(), atol=2e-7)
    np.testing.assert_allclose(read("COLOR_0")[:, :3], srgb_to_linear(g.colors.numpy()), atol=1e-6)
    assert np.array_equal(read(ATTR_EXACT_COLOR), g.colors.numpy())
    # skinning: unsigned-byte joints, weights summing to one, the joint tree, inverse bind matrices
    assert gltf["accessors"][attrs["JOINTS_0"]]["componentType"] == 5121
    np.testing.assert_allclose(read("WEIGHTS_0").astype(np.float64).sum(1), 1.0, atol=1e-7)
    assert read("WEIGHTS_0")[:, 3].max() == 0 and not read("JOINTS_0")[:, 3].any()  # 3 joints: unused slot -> joint 0
    skin = gltf["skins"][0]
    assert gltf["nodes"][0]["skin"] == 0 and gltf["nodes"][0]["mesh"] == 0 and skin["joints"] == [1, 2, 3]
    assert [gltf["nodes"][j]["name"] for j in skin["joints"]] == ["root", "a", "b"]
    assert gltf["nodes"][1]["children"] == [2] and gltf["nodes"][2]["children"] == [3]
    assert gltf["scenes"][0]["nodes"] == [0, 1] and skin["skeleton"] == 1
    world = np.cumsum([gltf["nodes"][j]["translation"] for j in skin["joints"]], axis=0)
    np.testing.assert_allclose(world, rig.rest_joints.numpy(), atol=1e-6)
    ibm = read_accessor(gltf, blob, skin["inverseBindMatrices"]).reshape(3, 4, 4).transpose(0, 2, 1)
    expected = np.tile(np.eye(4, dtype=np.float32), (3, 1, 1))
    expected[:, :3, 3] = -rig.rest_joints.numpy()
    assert np.array_equal(ibm, expected)
    meta = gltf["extras"]["sigman"]
    assert meta["body_model"] == "anny" and meta["joint_names"] == ["root", "a", "b"] and meta["parents"] == [-1, 0, 1]
    # another reader
    scene = trimesh.load(tmp_path / "a.glb")
    clouds = list(scene.geometry.values())
    assert len(clouds) == 1 and isinstance(clouds[0], trimesh.PointCloud)
    np.testing.assert_array_equal(np.asarray(clouds[0].vertices, np.float32), g.means.numpy())


def test_gltf_json_with_data_uri_or_side_file(tmp_path):
    import base64

    g = random_gaussians(30)
    save_gaussians(tmp_path / "a.glb", g, chain_rig(6))
    gltf, blob = read_gltf(tmp_path / "a.glb")
    gltf["buffers"][0]["uri"] = "data:application/octet-stream;base64," + base64.b64encode(blob).decode()
    (tmp_path / "inline.gltf").write_text(json.dumps(gltf))
    gltf["buffers"][0]["uri"] = "a%20b.bin"
    (tmp_path / "a b.bin").write_bytes(blob)
    (tmp_path / "side.gltf").write_text(json.dumps(gltf))
    for name in ("inline.gltf", "side.gltf"):
        back, rig = load_rigged_glb(tmp_path / name)
        assert torch.equal(back.means, g.means) and torch.equal(back.colors, g.colors) and rig.num_joints == 6
    (tmp_path / "a b.bin").unlink()
    with pytest.raises(ValueError, match="missing"):
        load_gaussians(tmp_path / "side.gltf")


def test_glb_reads_in_pygltflib(tmp_path):
    pygltflib = pytest.importorskip("pygltflib")
    save_gaussians(tmp_path / "a.glb", random_gaussians(50, joints=3),
                   Rig(["root", "a", "b"], torch.tensor([-1, 0, 1]), torch.randn(3, 3), "anny"))
    doc = pygltflib.GLTF2().load(str(tmp_path / "a.glb"))
    assert len(doc.skins[0].joints) == 3 and doc.nodes[2].name == "a" and doc.meshes[0].primitives[0].mode == 0
    assert doc.extras["sigman"]["joint_names"] == ["root", "a", "b"]
    assert len(doc.binary_blob()) >= 50 * 4 * 12


def test_glb_with_many_joints_uses_unsigned_short(tmp_path):
    g = random_gaussians(40, joints=300)
    save_gaussians(tmp_path / "a.glb", g, chain_rig(300))
    gltf, _ = read_gltf(tmp_path / "a.glb")
    assert gltf["accessors"][gltf["meshes"][0]["primitives"][0]["attributes"]["JOINTS_0"]]["componentType"] == 5123
    back, rig = load_rigged_glb(tmp_path / "a.glb")
    top = g.skin_weights.topk(8, dim=1)
    torch.testing.assert_close(back.skin_weights.gather(1, top.indices), top.values / top.values.sum(1, keepdim=True))
    assert rig.num_joints == 300


def test_static_glb(tmp_path):
    g = random_gaussians(20).with_(skin_weights=None)
    save_gaussians(tmp_path / "s.glb", g)
    gltf, _ = read_gltf(tmp_path / "s.glb")
    assert "skins" not in gltf and "JOINTS_0" not in gltf["meshes"][0]["primitives"][0]["attributes"]
    back = load_gaussians(tmp_path / "s.glb")
    assert back.skin_weights is None and torch.equal(back.colors, g.colors) and torch.equal(back.scales, g.scales)
    with pytest.raises(ValueError, match="no sigman rig"):
        load_rigged_glb(tmp_path / "s.glb")
    with pytest.raises(ValueError, match="skin_weights"):
        save_gaussians(tmp_path / "r.glb", g, chain_rig(6))


def test_glb_from_another_writer(tmp_path):
    """A KHR_gaussian_splatting file made with pygltflib: quantised rotation and opacity, no sigman
    extras; pre-release log-space scales are recognised by their negative values."""
    pygltflib = pytest.importorskip("pygltflib")

    g = random_gaussians(16)
    rot = np.round(g.quats[:, [1, 2, 3, 0]].numpy() * 32767).astype(np.int16)
    opacity = np.round(g.opacities.numpy() * 255).astype(np.uint8)
    sh0 = ((g.colors.numpy() - 0.5) / C0).astype(np.float32)

    def build(scales):
        arrays = [(g.means.numpy(), "VEC3", 5126, False), (rot, "VEC4", 5122, True), (scales, "VEC3", 5126, False),
                  (opacity, "SCALAR", 5121, True), (sh0, "VEC3", 5126, False)]
        blob, views, accessors = b"", [], []
        for i, (array, kind, component, normalized) in enumerate(arrays):
            data = np.ascontiguousarray(array).tobytes()
            data += b"\0" * (-len(data) % 4)
            views.append(pygltflib.BufferView(buffer=0, byteOffset=len(blob), byteLength=len(data)))
            accessors.append(pygltflib.Accessor(bufferView=i, componentType=component, count=16, type=kind,
                                                normalized=normalized or None))
            blob += data
        names = ["POSITION", ATTR_ROTATION, ATTR_SCALE, ATTR_OPACITY, ATTR_SH0]
        prim = pygltflib.Primitive(mode=0, extensions={EXTENSION: {"kernel": "ellipse", "colorSpace": "srgb_rec709_display"}})
        prim.attributes = pygltflib.Attributes(POSITION=0, **{names[i]: i for i in range(1, 5)})
        doc = pygltflib.GLTF2(scene=0, scenes=[pygltflib.Scene(nodes=[0])], nodes=[pygltflib.Node(mesh=0)],
                              meshes=[pygltflib.Mesh(primitives=[prim])], accessors=accessors, bufferViews=views,
                              buffers=[pygltflib.Buffer(byteLength=len(blob))], extensionsUsed=[EXTENSION])
        doc.set_binary_blob(blob)
        return doc

    build(g.scales.numpy()).save_binary(str(tmp_path / "linear.glb"))
    back = load_gaussians(tmp_path / "linear.glb")
    assert torch.equal(back.means, g.means) and torch.equal(back.scales, g.scales) and back.skin_weights is None
    assert (back.quats * g.quats).sum(-1).abs().min() > 0.9999
    torch.testing.assert_close(back.opacities, g.opacities, atol=0.5 / 255 + 1e-6, rtol=0)
    torch.testing.assert_close(back.colors, g.colors, atol=1e-6, rtol=0)
    build(np.log(g.scales.numpy())).save_binary(str(tmp_path / "log.glb"))
    torch.testing.assert_close(load_gaussians(tmp_path / "log.glb").scales, g.scales, rtol=1e-6, atol=0)
    gaussians, rig = load_glb(tmp_path / "log.glb")
    assert rig is None


def test_corrupt_glb(tmp_path):
    g = random_gaussians(20, joints=2)
    rig = Rig(["r", "a"], torch.tensor([-1, 0]), torch.zeros(2, 3), "anny")
    save_gaussians(tmp_path / "a.glb", g, rig)
    raw = (tmp_path / "a.glb").read_bytes()
    (tmp_path / "t.glb").write_bytes(raw[:-100])
    with pytest.raises(ValueError, match="truncated"):
        load_rigged_glb(tmp_path / "t.glb")
    bad = bytearray(raw)
    bad[20:30] = b"##########"
    (tmp_path / "j.glb").write_bytes(bytes(bad))
    with pytest.raises(ValueError, match="corrupt JSON"):
        load_rigged_glb(tmp_path / "j.glb")
    (tmp_path / "n.glb").write_bytes(b"not a glb at all, not at all")
    with pytest.raises(ValueError, match="not a glTF"):
        load_gaussians(tmp_path / "n.glb")

    def edited(change):
        json_len = struct.unpack_from("<I", raw, 12)[0]
        gltf = json.loads(raw[20:20 + json_len])
        change(gltf)
        text = json.dumps(gltf).encode()
        text += b" " * (-len(text) % 4)
        rest = raw[20 + json_len:]
        path = tmp_path / "edited.glb"
        path.write_bytes(struct.pack("<III", 0x46546C67, 2, 20 + len(text) + len(rest))
                         + struct.pack("<II", len(text), 0x4E4F534A) + text + rest)
        return path

    attrs = lambda d: d["meshes"][0]["primitives"][0]["attributes"]
    with pytest.raises(ValueError, match="no 'KHR_gaussian_splatting:OPACITY' attribute"):
        load_gaussians(edited(lambda d: attrs(d).pop(ATTR_OPACITY)))
    with pytest.raises(ValueError, match="reads past the end"):
        load_gaussians(edited(lambda d: d["accessors"][0].update(count=10_000)))
    with pytest.raises(ValueError, match="JOINTS_0 names joint"):
        load_gaussians(edited(lambda d: d["extras"]["sigman"].update(joint_names=["r"], parents=[-1], rest_joints=[[0, 0, 0]])))
    with pytest.raises(ValueError, match="malformed"):
        load_gaussians(edited(lambda d: d.pop("accessors")))
    with pytest.raises(ValueError, match="newer sigman"):
        load_gaussians(edited(lambda d: d["extras"]["sigman"].update(version=99)))


def test_rig_validation():
    with pytest.raises(ValueError, match="cycle"):
        Rig(["a", "b", "c"], torch.tensor([2, 0, 1]), torch.zeros(3, 3), "anny")
    with pytest.raises(ValueError, match="invalid parent"):
        Rig(["a", "b"], torch.tensor([-1, 5]), torch.zeros(2, 3), "anny")
    with pytest.raises(ValueError, match="rest_joints"):
        Rig(["a", "b"], torch.tensor([-1, 0]), torch.zeros(3, 3), "anny")
    with pytest.raises(ValueError, match="both vertices and faces"):
        Rig(["a"], torch.tensor([-1]), torch.zeros(1, 3), "anny", vertices=torch.zeros(3, 3))


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


def test_ply_reads_as_the_original_3dgs_loader_reads_it(tmp_path):
    """What Inria's GaussianModel.load_ply does, through plyfile: f_rest_* by index, exactly
    3 * ((3 + 1) ** 2 - 1) = 45 of them (it asserts so), and SIBR's fixed 248-byte records."""
    plyfile = pytest.importorskip("plyfile")
    g = random_gaussians(40)
    save_gaussians(tmp_path / "a.ply", g)
    vertex = plyfile.PlyData.read(str(tmp_path / "a.ply")).elements[0]
    names = [p.name for p in vertex.properties]
    rest = sorted((n for n in names if n.startswith("f_rest_")), key=lambda n: int(n.split("_")[-1]))
    assert len(rest) == 3 * (3 + 1) ** 2 - 3 and vertex.data.dtype.itemsize == 248
    xyz = np.stack([vertex["x"], vertex["y"], vertex["z"]], axis=1)
    means, quats = in_file_frame(g)
    assert np.array_equal(xyz, means)
    assert np.array_equal(np.stack([vertex[f"rot_{i}"] for i in range(4)], 1), quats)
    features = np.stack([vertex[n] for n in rest], 1).reshape(-1, 3, 15)  # the loader's (N, 3, (deg+1)^2 - 1)
    assert not features.any()
    np.testing.assert_allclose(0.5 + C0 * np.stack([vertex[f"f_dc_{i}"] for i in range(3)], 1), g.colors.numpy(), atol=1e-6)
    np.testing.assert_allclose(np.exp(np.stack([vertex[f"scale_{i}"] for i in range(3)], 1)), g.scales.numpy(), rtol=1e-5)
    np.testing.assert_allclose(1 / (1 + np.exp(-vertex["opacity"])), g.opacities.numpy(), atol=1e-6)


def test_sigman_viewer_opens_a_ply_upright(tmp_path):
    """sigman's viewer (+Y up) reads the +Y-down .ply back into sigman's frame: head on top."""
    from viewer.avatar import load_avatar

    g = random_gaussians(30)
    save_gaussians(tmp_path / "a.ply", g)
    shown = load_avatar(tmp_path / "a.ply").gaussians
    assert torch.equal(shown.means, g.means) and torch.equal(shown.quats, g.quats)
