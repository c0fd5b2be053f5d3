"""Data: seed layout, validation, dataset, UV projection and the synthetic generator (CPU, tiny sizes)."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from sigman.data import layout
from sigman.data.appearance import paint
from sigman.data.dataset import DatasetConfig, SeedDataset, orbit_views, subject_centre
from sigman.data.synthetic import SyntheticConfig, SyntheticGenerator, camera_rig, ring_sizes
from sigman.data.uv_projection import ProjectionConfig, project_to_uv, rasterize_depth
from sigman.gaussians import repose, surface_gaussians
from sigman.presets import standing
from sigman.render import Camera, orbit_cameras, render

TINY = SyntheticConfig(views=4, image_size=64, uv_resolution=64, render_uv_resolution=64, elevations_deg=(0.0,),
                       batch_size=3, writer_threads=2, projection=ProjectionConfig(zbuffer_size=128))


@pytest.fixture(scope="module")
def generator(anny_body):
    return SyntheticGenerator(TINY, device="cpu", body=anny_body)


@pytest.fixture(scope="module")
def dataset_dir(generator, tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    summary = generator.generate(out, count=3, seed=7, val_fraction=0.34)
    assert summary.count == 3 and summary.items_per_second > 0
    return out


# --- layout ------------------------------------------------------------------------------------

def test_generated_items_follow_the_layout(dataset_dir):
    train, val = layout.load_index(dataset_dir / "train.npy"), layout.load_index(dataset_dir / "val.npy")
    assert len(train) == 2 and len(val) == 1 and not set(train) & set(val)
    raw = np.load(dataset_dir / "train.npy", allow_pickle=False)
    assert raw.dtype.kind == "U" and all(not p.startswith("/") for p in raw.tolist())  # relative paths
    for item in train + val:
        assert layout.validate_item(item) == []
        assert layout.validate_item(item, deep=True) == []
        assert sorted(p.name for p in (item / "rgb_map").iterdir()) == ["0000.jpg", "0001.jpg", "0002.jpg", "0003.jpg"]
    report = layout.validate_dataset(dataset_dir / "train.npy")
    assert report.ok and len(report.good) == 2
    calib = json.loads((train[0] / layout.CAMERA_FILE).read_text())
    assert sorted(calib) == ["0000", "0001", "0002", "0003"]
    assert set(calib["0000"]) >= {"K", "R", "T", "height", "width", "weight"}  # the release's keys
    assert np.asarray(calib["0000"]["K"]).shape == (3, 3) and calib["0000"]["height"] == 64


def test_index_is_relative_to_its_folder(dataset_dir, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(dataset_dir, moved)
    items = layout.load_index(moved / "train.npy")
    assert all(str(p).startswith(str(moved)) for p in items)
    assert all(layout.validate_item(p) == [] for p in items)


def test_calibration_round_trip(tmp_path):
    cams = orbit_cameras(5, 2.5, 20.0, (0.0, 0.1, 0.0), 0.8713, 40, 30)
    layout.save_calibration(tmp_path / "c.json", cams)
    calib = layout.load_calibration(tmp_path / "c.json")
    assert calib.names == ["0000", "0001", "0002", "0003", "0004"]
    assert (calib.cameras.width, calib.cameras.height) == (40, 30)
    torch.testing.assert_close(calib.cameras.viewmats, cams.viewmats, atol=1e-6, rtol=0)
    torch.testing.assert_close(calib.cameras.Ks, cams.Ks)
    # the release's spelling of the width is read too
    data = json.loads((tmp_path / "c.json").read_text())
    for entry in data.values():
        del entry["width"]
    assert layout.calibration_from_json(data).cameras.width == 40


def test_validation_names_the_problems_and_the_dataset_skips_bad_items(dataset_dir, tmp_path):
    root = tmp_path / "broken"
    shutil.copytree(dataset_dir, root)
    items = layout.load_index(root / "train.npy")
    (items[0] / "rgb_map" / "0002.jpg").unlink()
    calib = items[1] / layout.CAMERA_FILE
    calib.write_text(calib.read_text()[:100])  # truncated json
    assert layout.validate_item(items[0]) == ["rgb_map/0002.jpg missing"]
    problems = layout.validate_item(items[1])
    assert len(problems) == 1 and problems[0].startswith("camera_full_calibration.json: ") and "JSON" in problems[0]
    report = layout.validate_dataset(root / "train.npy")
    assert report.good == [] and set(report.bad) == set(items)
    assert "rgb_map/0002.jpg missing" in report.summary()

    # a truncated pose and a truncated image are caught too
    val = layout.load_index(root / "val.npy")[0]
    (val / layout.POSE_FILE).write_bytes((val / layout.POSE_FILE).read_bytes()[:50])
    mask = val / "mask_map" / "0001.png"
    mask.write_bytes(mask.read_bytes()[:40])
    problems = layout.validate_item(val, deep=True)
    assert any(p.startswith("smplx.npz: ") for p in problems)
    assert any(p.startswith("mask_map/0001.png") for p in problems)

    # validation up front: bad items dropped with one warning; nothing usable left -> clear error
    index = layout.save_index(root / "mixed.npy", items + layout.load_index(dataset_dir / "train.npy")[:1])
    with pytest.warns(UserWarning, match="dropping bad items"):
        ds = SeedDataset(DatasetConfig(index=index, image_size=32, num_input_views=2, num_target_views=1,
                                       condition_size=32))
    assert len(ds) == 1
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="no usable item"):
        SeedDataset(DatasetConfig(index=root / "train.npy"))

    # without validation, a bad item is skipped mid-epoch with a warning and another one returned
    ds = SeedDataset(DatasetConfig(index=index, validate=False, image_size=32, num_input_views=2,
                                   num_target_views=1, condition_size=32))
    with pytest.warns(UserWarning, match="skipping bad item"):
        samples = [ds[i] for i in range(len(ds))]
    good = str(layout.load_index(dataset_dir / "train.npy")[0].name)
    assert all(s["item"].endswith(good) for s in samples)


# --- dataset -------------------------------------------------------------------------------------

def test_dataset_sample_shapes_and_determinism(dataset_dir):
    cfg = DatasetConfig(index=dataset_dir / "train.npy", image_size=48, num_input_views=2, num_target_views=3,
                        condition_size=40, uv_resolution=32, seed=3)
    ds = SeedDataset(cfg)
    s = ds[1]
    assert s["input_rgb"].shape == (2, 3, 48, 48) and s["input_mask"].shape == (2, 1, 48, 48)
    assert s["target_rgb"].shape == (3, 3, 48, 48) and s["target_mask"].shape == (3, 1, 48, 48)
    assert s["input_viewmats"].shape == (2, 4, 4) and s["target_Ks"].shape == (3, 3, 3)
    assert s["condition"].shape == (3, 40, 40)
    assert s["uv_texture"].shape == (3, 32, 32) and s["uv_mask"].shape == (1, 32, 32)
    assert s["pose"]["body_pose"].shape == (21, 3) and s["pose"]["betas"].shape == (10,)
    assert s["phenotype"].shape == (6,) and bool(s["has_phenotype"])
    assert 0 <= s["input_rgb"].min() and s["input_rgb"].max() <= 1 and s["input_mask"].max() == 1
    assert s["input_view_ids"][0] == s["front_view"]  # the first input is the front view
    assert not set(s["input_view_ids"].tolist()) & set(s["target_view_ids"][:2].tolist())  # 4 views: 2 + 2 distinct
    # intrinsics follow the resize: 64 px calibration -> 48 px images
    calib = layout.load_calibration(layout.load_index(dataset_dir / "train.npy")[1] / layout.CAMERA_FILE)
    torch.testing.assert_close(s["input_Ks"][0, :2], calib.cameras.Ks[0, :2] * 48 / 64)
    # deterministic given the seed (and epoch)
    again = SeedDataset(cfg)[1]
    for key in ("input_rgb", "target_view_ids", "condition", "uv_texture"):
        assert torch.equal(s[key], again[key])
    batch = torch.utils.data.default_collate([ds[0], ds[1]])
    assert batch["input_rgb"].shape == (2, 2, 3, 48, 48) and batch["pose"]["global_orient"].shape == (2, 3)


def test_front_view_follows_the_body_orientation():
    cams = camera_rig(8, 32, (0.0, 45.0), 2.5, 0.8713)
    assert torch.allclose(subject_centre(cams.viewmats), torch.zeros(3), atol=1e-5)
    front = torch.tensor([0.0, 0.0, 1.0])
    assert orbit_views(cams.viewmats, front, 4) == [0, 1, 2, 3]  # ring 0: front, left, back, right
    left = torch.tensor([1.0, 0.0, 0.0])  # the body turned to face +X: the +X camera is the front
    assert orbit_views(cams.viewmats, left, 1) == [1]
    assert ring_sizes(24, 3) == [8, 8, 8] and ring_sizes(4, 3) == [2, 1, 1]


# --- synthetic items -------------------------------------------------------------------------------

def test_saved_pose_and_phenotype_reproduce_the_rendered_body(dataset_dir, anny_body):
    item = layout.load_index(dataset_dir / "train.npy")[0]
    pose, phenotype = layout.load_item_pose(item / layout.POSE_FILE)
    assert phenotype is not None and phenotype.shape == (6,)
    vertices = anny_body(pose, phenotype[None]).vertices[0]
    centre = 0.5 * (vertices.min(0).values + vertices.max(0).values)
    assert centre.abs().max() < 1e-3  # the body is centred on the rig's target
    calib = layout.load_calibration(item / layout.CAMERA_FILE)
    pix = calib.cameras.project(vertices)  # [C, V, 2]
    for v, name in enumerate(calib.names):
        mask = layout.read_gray(layout.mask_path(item, name))[0] > 0.5
        p = pix[v].round().long().clamp(0, 63)
        inside = mask[p[:, 1], p[:, 0]].float().mean()
        assert inside > 0.97, (name, float(inside))


def test_generation_is_deterministic_and_seeds_differ(generator, dataset_dir):
    """The same seed gives the same item, whatever its batch: regenerating item 1 of the fixture's
    dataset (made in a batch of 3) alone reproduces its files exactly."""
    item = generator.make_batch([1], seed=7)[0]
    root = dataset_dir / "items" / "000001"
    for v in range(4):
        buf = io.BytesIO()
        Image.fromarray(item.images[v]).save(buf, format="JPEG", quality=layout.JPEG_QUALITY)
        assert buf.getvalue() == layout.rgb_path(root, layout.view_name(v)).read_bytes()
        assert np.array_equal(np.asarray(Image.open(layout.mask_path(root, layout.view_name(v)))), item.masks[v])
    texture, mask = layout.load_uv_maps(root)
    assert torch.equal(mask, item.uv_mask)
    assert (texture - item.uv_texture * item.uv_mask).abs().max() <= 0.5 / 255 + 1e-6
    _, phenotype = layout.load_item_pose(root / layout.POSE_FILE)
    assert torch.equal(phenotype, item.phenotype)

    phen_a, pose_a, look_a = generator.sample([0, 1, 2, 3], seed=7)
    phen_b, pose_b, look_b = generator.sample([0, 1, 2, 3], seed=8)
    phen_a2, pose_a2, look_a2 = generator.sample([0, 1, 2, 3], seed=7)
    assert torch.equal(look_a.top, look_a2.top) and torch.equal(look_a.bottom, look_a2.bottom)
    assert torch.equal(phen_a, phen_a2) and torch.equal(pose_a.body_pose, pose_a2.body_pose)
    assert not torch.allclose(look_a.top, look_b.top) and not torch.allclose(look_a.bottom, look_b.bottom)
    assert not torch.allclose(phen_a, phen_b) and not torch.allclose(pose_a.body_pose, pose_b.body_pose)
    assert len({tuple(c) for c in look_a.top.tolist()}) == 4  # items of one seed differ too
    colours_a = paint(generator.features, look_a)
    colours_b = paint(generator.features, look_b)
    assert (colours_a - colours_b).abs().mean() > 0.05
    assert torch.equal(colours_a, paint(generator.features, look_a2))


def test_phenotypes_and_poses_vary(generator):
    phenotypes, pose, _ = generator.sample(list(range(16)), seed=0)
    assert phenotypes.min() >= 0 and phenotypes.max() <= 1
    assert (phenotypes.std(0) > 0.1).all()  # every phenotype varies
    yaw = pose.global_orient[:, 1]
    assert yaw.std() > 0.5 and pose.body_pose.std(0).mean() > 0.05


# --- UV projection ---------------------------------------------------------------------------------

def test_rasterize_depth_matches_a_plane():
    verts = torch.tensor([[[-1.0, -1.0, 0.0], [1.0, -1.0, 0.0], [1.0, 1.0, 0.0], [-1.0, 1.0, 0.0]]])
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    cams = orbit_cameras(1, 2.0, 0.0, (0.0, 0.0, 0.0), 0.8713, 32, 32)
    depth = rasterize_depth(verts, faces, cams.viewmats, cams.Ks, 32, 32)
    assert depth.shape == (1, 1, 32, 32)
    assert torch.allclose(depth[0, 0, 8:24, 8:24], torch.full((16, 16), 2.0), atol=1e-5)
    tilted = verts.clone()
    tilted[..., 2] = 0.3 * verts[..., 0]  # z = 0.3 x: depth = 2 - 0.3 x, exact under perspective
    depth = rasterize_depth(tilted, faces, cams.viewmats, cams.Ks, 32, 32)[0, 0]
    k = cams.Ks[0]
    x_cam = (torch.arange(32) + 0.5 - k[0, 2]) / k[0, 0]  # x / z along each pixel column
    expected = 2.0 / (1.0 + 0.3 * x_cam)  # ray x = s z, plane z = 2 - 0.3 s z
    torch.testing.assert_close(depth[16, 10:22], expected[10:22], atol=1e-4, rtol=0)


def test_uv_projection_recovers_a_painted_texture(anny_body, uv64):
    pos = uv64.positions
    phase = torch.tensor([0.0, 2.0, 4.0])
    truth = 0.5 + 0.35 * torch.sin(4.0 * pos[:, [0, 1, 2]] + 3.0 * pos[:, [1, 2, 0]] + phase)  # smooth [N, 3]
    out = anny_body(standing())
    vertices = out.vertices
    g = repose(surface_gaussians(uv64).with_(colors=truth), out.transforms)
    centre = (0.5 * (vertices[0].min(0).values + vertices[0].max(0).values)).tolist()
    cams = orbit_cameras(6, 2.5, 0.0, centre, 0.8713, 96, 96)
    cams = Camera(torch.cat([cams.viewmats, orbit_cameras(2, 2.5, 40.0, centre, 0.8713, 96, 96).viewmats]),
                  torch.cat([cams.Ks, cams.Ks[:2]]), 96, 96)
    rendered = render(g, cams)
    images = rendered.rgb.permute(0, 3, 1, 2)
    masks = (rendered.alpha > 0.5).float().permute(0, 3, 1, 2)
    texture, mask = project_to_uv(uv64, vertices[0], images, cams, masks, ProjectionConfig(zbuffer_size=128))
    assert texture.shape == (3, 64, 64) and mask.shape == (1, 64, 64)
    covered = uv64.from_map(mask[None])[0, :, 0] > 0.5
    assert covered.float().mean() > 0.6, float(covered.float().mean())
    assert mask[:, ~uv64.mask].sum() == 0  # nothing outside the layout
    recovered = uv64.from_map(texture[None])[0]
    err = (recovered[covered] - truth[covered]).abs()
    assert err.mean() < 0.03 and torch.quantile(err.max(1).values, 0.95) < 0.1, (float(err.mean()),)
    # batched call == single call
    tex_b, mask_b = project_to_uv(uv64, vertices, images[None], cams, masks[None], ProjectionConfig(zbuffer_size=128))
    torch.testing.assert_close(tex_b[0], texture)
    assert torch.equal(mask_b[0], mask)


def test_uv_projection_respects_occlusion(anny_body, uv64):
    """A camera straight behind the body sees none of the front of the torso."""
    out = anny_body(standing())
    vertices = out.vertices
    centre = (0.5 * (vertices[0].min(0).values + vertices[0].max(0).values)).tolist()
    back = orbit_cameras(1, 2.5, 0.0, centre, 0.8713, 96, 96, start_azimuth_deg=180.0)
    images = torch.rand(1, 3, 96, 96)
    _, mask = project_to_uv(uv64, vertices[0], images, back)
    covered = uv64.from_map(mask[None])[0, :, 0] > 0.5
    normals = uv64.normals
    assert covered.any() and not (covered & (normals[:, 2] > 0.5)).any()
