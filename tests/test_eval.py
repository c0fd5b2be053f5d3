"""Evaluation (sigman/evaluation.py, scripts/eval_vae.py, scripts/eval_generation.py): metrics on known
cases, item cameras and poses that line up with the stored images, and both scripts end to end on
tiny synthetic data with random-weight models (CPU)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image

from sigman import evaluation as ev
from sigman.data.synthetic import SyntheticConfig, SyntheticGenerator, item_seed
from sigman.data.uv_projection import ProjectionConfig
from sigman.gaussians import repose, surface_gaussians
from sigman.pipeline import PipelineConfig, SigmanPipeline

ROOT = Path(__file__).resolve().parent.parent
SYNTH = SyntheticConfig(views=4, image_size=64, uv_resolution=64, render_uv_resolution=64, elevations_deg=(0.0,),
                        batch_size=3, writer_threads=2, projection=ProjectionConfig(zbuffer_size=128))
TINY = PipelineConfig(
    image_encoder="tiny", gaussian_uv_resolution=32, steps=2,
    vae_overrides=dict(num_views=2, image_size=32, uv_size=32, latent_size=4, encoder_channels=(8, 8, 8, 8),
                       decoder_channels=(8, 8, 8, 8), decoder_out_channels=16, norm_groups=4, attention_heads=2,
                       attention_head_dim=8, self_attention_layers=1, render_size=32),
    dit_overrides=dict(num_layers=1, num_heads=2, head_dim=16, sample_size=4, time_embed_dim=32,
                       condition_channels=32, condition_size=16, condition_patch_size=2),
)
SUMMARY_KEYS = {"psnr", "ssim", "psnr_fg", "ssim_fg"}


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"scripts_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def data_dir(anny_body, tmp_path_factory):
    """3 tiny items (4 views at 64 px): 2 train, 1 val."""
    out = tmp_path_factory.mktemp("synth")
    SyntheticGenerator(SYNTH, device="cpu", body=anny_body).generate(out, count=3, seed=7, val_fraction=0.34)
    return out


@pytest.fixture(scope="module")
def weights_dir(anny_body, tmp_path_factory):
    folder = tmp_path_factory.mktemp("model") / "tiny"
    SigmanPipeline.from_config(TINY, body=anny_body).save_pretrained(folder)
    return folder


# --- metrics ---------------------------------------------------------------------------------------

def test_metrics_on_known_cases():
    gt = torch.rand(2, 3, 24, 24) * 0.6 + 0.2
    same = ev.image_metrics(gt, gt, torch.ones(2, 1, 24, 24))
    assert torch.all(same["psnr"] >= 99) and torch.allclose(same["ssim"], torch.ones(2))
    assert torch.all(same["psnr_fg"] >= 99) and torch.allclose(same["ssim_fg"], torch.ones(2))
    # noise of +-0.1 everywhere: MSE 0.01, 20 dB
    sign = torch.randint(0, 2, gt.shape).float() * 2 - 1
    noisy = ev.image_metrics(gt + 0.1 * sign, gt)
    torch.testing.assert_close(noisy["psnr"], torch.full((2,), 20.0), atol=1e-3, rtol=0)
    assert torch.all(noisy["ssim"] < 0.9)
    # the same noise only inside the mask (the left half): 20 dB there, 10 log10(1 / 0.005) on the image
    mask = torch.zeros(2, 1, 24, 24)
    mask[..., :12] = 1
    half = ev.image_metrics(gt + 0.1 * sign * mask, gt, mask)
    torch.testing.assert_close(half["psnr_fg"], torch.full((2,), 20.0), atol=1e-3, rtol=0)
    torch.testing.assert_close(half["psnr"], torch.full((2,), 10 * math.log10(200.0)), atol=1e-3, rtol=0)
    # only the background wrong: the foreground metrics are perfect
    outside = ev.image_metrics(gt + 0.1 * sign * (1 - mask), gt, mask)
    assert torch.all(outside["psnr_fg"] >= 99) and torch.all(outside["psnr"] < 25)
    assert torch.all(outside["ssim_fg"] > outside["ssim"])
    # an empty mask has no foreground metric
    assert torch.isnan(ev.masked_psnr(gt, gt, torch.zeros(2, 1, 24, 24))).all()
    assert torch.isnan(ev.masked_ssim(gt, gt, torch.zeros(2, 1, 24, 24))).all()


def test_metric_table_pools_images_and_writes_clean_json(tmp_path):
    table = ev.MetricTable()
    table.add("a", ["0000", "0001"], {"psnr": torch.tensor([10.0, 20.0]), "psnr_fg": torch.tensor([30.0, math.nan])})
    row = table.add("b", ["0002"], {"psnr": torch.tensor([30.0]), "psnr_fg": torch.tensor([math.nan])})
    assert table.num_images == 3 and row["psnr_fg"] is None and row["psnr_per_view"] == [30.0]
    assert table.summary() == {"psnr": 20.0, "psnr_fg": 30.0}
    path = ev.write_json(tmp_path / "m" / "x.json", {"metrics": table.summary(), "bad": math.inf, "items": table.items})
    data = json.loads(path.read_text())  # strict JSON: no NaN / Infinity
    assert data["bad"] is None and data["items"][0]["psnr_fg_per_view"] == [30.0, None]
    assert "psnr 20.00" in ev.format_metrics(table.summary())


def test_view_selection():
    assert ev.select_views("heldout", 5, exclude=[0, 2]) == [1, 3, 4]
    assert ev.select_views("all", 3) == [0, 1, 2]
    assert ev.select_views("4, 1", 5, exclude=[1]) == [4, 1]
    for bad in ("7", "x,y", "heldout"):
        with pytest.raises(ev.EvalError):
            ev.select_views(bad, 2 if bad != "heldout" else 1, exclude=[0])


# --- items -------------------------------------------------------------------------------------------

def test_item_cameras_and_pose_reproduce_the_stored_silhouettes(data_dir, anny_body, uv64):
    """The body of an item's shape, posed with its pose and rendered at its cameras (resized), covers
    the stored masks: cameras, intrinsics scaling, pose and shape line up."""
    item = ev.load_item(ev.split_items(data_dir, "val")[0])
    assert item.num_views == 4 and item.phenotype is not None
    assert ev.input_views(item, 2)[0] == item.front and len(set(ev.input_views(item, 2))) == 2
    rest_vertices, rest_joints = anny_body.rest(ev.item_shape(item, anny_body))
    canonical = surface_gaussians(uv64, rest_vertices=rest_vertices[0])
    transforms, _ = anny_body.pose_transforms(item.pose, rest_joints)
    posed = ev.first_frame(repose(canonical, transforms))
    views = [0, 1, 2, 3]
    _, alpha = ev.render_at(posed, ev.view_cameras(item, views, 64))  # as stored
    _, mask = ev.read_views(item, views)
    hit, truth = alpha > 0.5, mask > 0.5
    iou = (hit & truth).flatten(1).sum(1) / (hit | truth).flatten(1).sum(1)
    assert alpha.shape == (4, 1, 64, 64) and torch.all(iou > 0.9)  # 5 cm off to the side: ~0.75
    # resized views: the silhouettes stay where the resized images have them
    _, small = ev.render_at(posed, ev.view_cameras(item, views, 32))
    _, small_mask = ev.read_views(item, views, 32)
    torch.testing.assert_close(centroids(small), centroids(small_mask), atol=0.75, rtol=0)


def centroids(masks: torch.Tensor) -> torch.Tensor:
    """``[V, 1, H, W]`` -> mask-weighted pixel centroids ``[V, 2]``."""
    h, w = masks.shape[-2:]
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    m = masks[:, 0]
    total = m.flatten(1).sum(1)
    return torch.stack([(m * xs).flatten(1).sum(1), (m * ys).flatten(1).sum(1)], dim=1) / total[:, None]


def test_missing_data_is_a_clear_error(tmp_path):
    with pytest.raises(ev.EvalError, match="data folder not found"):
        ev.split_items(tmp_path / "nope")
    with pytest.raises(ev.EvalError, match="no index"):
        ev.split_items(tmp_path, "val")


# --- the scripts -------------------------------------------------------------------------------------

def check_result(path: Path, num_items: int) -> dict:
    data = json.loads(path.read_text())
    assert data["num_items"] == num_items and data["num_images"] > 0 and data["skipped"] == []
    assert set(data["metrics"]) >= SUMMARY_KEYS
    assert all(math.isfinite(data["metrics"][k]) for k in SUMMARY_KEYS)
    assert 0 < data["metrics"]["psnr"] < 100 and -1 <= data["metrics"]["ssim"] <= 1
    for row in data["items"]:
        assert set(row) >= SUMMARY_KEYS | {"item", "views"} and all(math.isfinite(row[k]) for k in SUMMARY_KEYS)
    return data


def test_eval_vae_end_to_end(data_dir, weights_dir, tmp_path, capsys):
    script = load_script("eval_vae")
    out = tmp_path / "vae.json"
    assert script.main(["--data", str(data_dir), "--weights", str(weights_dir), "--out", str(out)]) == 0
    data = check_result(out, 1)
    assert data["size"] == 32 and data["input_views"] == 2
    assert len(data["items"][0]["views"]) == 2  # 4 views, 2 of them inputs
    text = capsys.readouterr().out
    assert "[1/1]" in text and "VAE reconstruction" in text
    assert ("LPIPS skipped" in text) == (data["lpips"] != "ok")
    # the garment-colour measure of the reconstruction (synthetic data)
    assert script.main(["--data", str(data_dir), "--weights", str(weights_dir), "--out", str(out),
                        "--region-min-pixels", "5"]) == 0
    colour = check_result(out, 1)["region_colour"]
    assert colour["num_items"] == 1 and 0 <= colour["pairs_within"] <= 1 and "skin" in colour["region_delta_e_mean"]
    assert "garment colour:" in capsys.readouterr().out
    # chosen views, and the train split with a limit
    assert script.main(["--data", str(data_dir), "--weights", str(weights_dir), "--out", str(out), "--split", "train",
                        "--limit", "1", "--views", "0,1,2,3", "--size", "24"]) == 0
    data = check_result(out, 1)
    assert data["items"][0]["views"] == ["0000", "0001", "0002", "0003"] and data["size"] == 24


def test_eval_generation_end_to_end_with_grid(data_dir, weights_dir, tmp_path, capsys):
    script = load_script("eval_generation")
    out, grid = tmp_path / "gen.json", tmp_path / "pictures" / "comparison.png"
    seeds = tmp_path / "pictures" / "seeds.png"
    argv = ["--data", str(data_dir), "--weights", str(weights_dir), "--split", "train", "--steps", "2",
            "--sampler", "dpmpp", "--seed", "3", "--out", str(out), "--save-grid", str(grid), "--grid-views", "2",
            "--seeds", "2", "--seed-grid", str(seeds), "--region-min-pixels", "5"]
    assert script.main(argv) == 0
    data = check_result(out, 2)
    assert data["steps"] == 2 and data["sampler"] == "dpmpp" and data["grid"] == str(grid)
    colour = data["region_colour"]
    assert colour["num_items"] == 2 and 0 <= colour["pairs_within"] <= 1 and "skin" in colour["region_delta_e_mean"]
    for row in data["items"]:
        assert row["worst_region_delta_e"] == max(v["delta_e"] for v in row["region_delta_e"].values())
        assert row["back_view"] not in (row["input_view"],) and row["back_seed_std"] >= 0
    assert data["seed_diversity"]["seeds"] == [3, 4] and data["seed_diversity"]["back_seed_std_mean"] >= 0
    with Image.open(seeds) as im:  # 2 rows: photo | true back | 2 seeds, 32 px cells, 4 px apart
        assert im.size == (4 * 32 + 3 * 4, 2 * 32 + 4)
    assert all(len(row["views"]) == 3 and row["input_view"] not in row["views"] for row in data["items"])
    # rows: 2 items; columns: photo | 2 true views | 2 generated views; 32 px cells
    with Image.open(grid) as im:
        assert im.size == (5 * 32 + 4 * ev.GRID_GAP, ev.LABEL_HEIGHT + 2 * 32 + ev.GRID_GAP)
    assert "image -> 3D" in capsys.readouterr().out


def test_scripts_name_a_missing_folder_in_one_line(data_dir, weights_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where the default --out would go
    for name in ("eval_vae", "eval_generation"):
        script = load_script(name)
        assert script.main(["--data", str(tmp_path / "nodata"), "--weights", str(weights_dir)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: data folder not found") and "\n" not in err
        assert script.main(["--data", str(data_dir), "--weights", str(tmp_path / "noweights")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: model folder not found") and "\n" not in err
    assert not (tmp_path / "outputs").exists()


def test_comparison_grid_layout():
    rows = [(torch.rand(3, 40, 40), torch.rand(3, 3, 16, 16), torch.rand(3, 3, 16, 16)) for _ in range(2)]
    grid = ev.comparison_grid(rows, 20, labels=["input"] + ["truth"] * 3 + ["generated"] * 3)
    assert grid.shape == (ev.LABEL_HEIGHT + 2 * 20 + ev.GRID_GAP, 7 * 20 + 6 * ev.GRID_GAP, 3)
    assert grid[:ev.LABEL_HEIGHT].min() < 128  # captions drawn
    assert ev.comparison_grid(rows, 20).shape[0] == 2 * 20 + ev.GRID_GAP
    with pytest.raises(ValueError):
        ev.comparison_grid([rows[0], (rows[1][0], rows[1][1][:2], rows[1][2][:2])], 20)


# --- garment colour and seed diversity (sigman/region_eval.py) ----------------------------------------

from sigman import region_eval as rg  # noqa: E402
from sigman.data import appearance as ap  # noqa: E402


def test_lab_conversion_matches_published_values_and_skimage():
    rgb = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 1.0], [0.5, 0.5, 0.5], [0.0, 0.0, 0.0]])
    published = torch.tensor([[53.24, 80.09, 67.20], [87.73, -86.18, 83.18], [32.30, 79.19, -107.86],
                              [100.0, 0.0, 0.0], [53.39, 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    assert torch.allclose(rg.srgb_to_lab(rgb), published, atol=0.02)
    skimage_color = pytest.importorskip("skimage.color")
    colours = torch.rand(500, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    colours[:20] *= 0.02  # the linear segment near black
    ref = torch.from_numpy(skimage_color.rgb2lab(colours.numpy()[None])[0])
    assert torch.allclose(rg.srgb_to_lab(colours), ref, atol=1e-3)


def test_region_delta_e_on_a_constructed_pair():
    truth = torch.ones(2, 3, 8, 8)  # white ...
    truth[:, :, :4] = 0.5  # ... over mid grey
    labels = torch.full((2, 8, 8), -1, dtype=torch.long)
    labels[:, :4] = ap.TOP
    labels[:, 4:, :4] = ap.BOTTOMS_REGION
    labels[:, 4:, 4:5] = ap.SHOES  # 8 pixels: under the minimum
    generated = truth.clone()
    generated[:, :, 4:] = 0.5  # the white bottoms come out grey
    out = rg.region_delta_e(truth, generated, labels, min_pixels=10)
    assert sorted(out) == ["bottoms", "top"]
    assert out["top"]["delta_e"] == pytest.approx(0.0, abs=1e-9) and out["top"]["pixels"] == 64
    assert out["bottoms"]["delta_e"] == pytest.approx(100.0 - 53.39, abs=0.02) and out["bottoms"]["pixels"] == 32
    summary = rg.summarise_region_errors([out, {"top": {"delta_e": 4.0}}, {}])
    assert summary["num_items"] == 2 and summary["items_all_regions_within"] == 0.5
    assert summary["pairs_within"] == pytest.approx(2 / 3) and summary["region_count"] == {"top": 2, "bottoms": 1}
    with pytest.raises(ValueError):
        rg.region_delta_e(truth, generated[:1], labels)


def test_back_view_and_seed_std():
    from sigman.data.synthetic import camera_rig

    rig = camera_rig(12, 32, (0.0, 30.0), 2.5, 0.8)  # two rings of 6, view 0 at the front
    assert rg.back_view(rig.viewmats, 0) == 3 and rg.back_view(rig.viewmats, 1) == 4
    assert rg.back_view(rig.viewmats, 7) == 10  # the same ring
    images = torch.stack([torch.zeros(3, 4, 4), torch.ones(3, 4, 4)])
    mask = torch.zeros(1, 4, 4)
    mask[:, :2] = 1
    images[1, :, 2:] = 0  # no spread outside the mask's rows
    assert rg.seed_std(images, mask) == pytest.approx(0.5)
    assert rg.seed_std(torch.stack([images[0]] * 3), mask) == 0.0


def test_region_labels_line_up_with_a_generated_item(data_dir, anny_body, tmp_path):
    item = ev.load_item(data_dir / "items" / "000001")
    source = rg.SyntheticSource.find(item.root)
    assert source is not None and source.seed == 7 and source.people == "basic"
    views = list(range(item.num_views))
    rgb, mask = ev.read_views(item, views)
    labels = rg.RegionLabeller(anny_body).label_images(source, 1, item.phenotype, item.pose,
                                                        ev.view_cameras(item, views, 64), mask)
    inside = mask[:, 0] > 0.5
    assert float((labels[inside] >= 0).float().mean()) > 0.97 and bool((labels[~inside] == -1).all())
    look = ap.sample_appearance([item_seed(7, 1, 1)], item.phenotype[None])
    for region, colour in ((ap.SHOES, look.shoes[0]), (ap.SKIN, look.skin[0])):
        sel = labels == region
        if int(sel.sum()) >= 20:  # the painted colour, up to folds, fabric noise and edges
            mean = rgb.permute(0, 2, 3, 1)[sel].mean(0)
            assert float(rg.delta_e76(rg.srgb_to_lab(mean), rg.srgb_to_lab(colour))) < 12, ap.REGION_NAMES[region]
    assert rg.SyntheticSource.find(tmp_path / "items" / "000001") is None  # real data: no synthetic_config.json


def test_rich_people_datasets_record_their_kind_and_label_every_pixel(anny_body, tmp_path):
    from dataclasses import replace

    rich = replace(SYNTH, people="rich", views=2, batch_size=1)
    SyntheticGenerator(rich, device="cpu", body=anny_body).generate(tmp_path, count=1, seed=4, val_fraction=0.0)
    item = ev.load_item(tmp_path / "items" / "000000")
    source = rg.SyntheticSource.find(item.root)
    assert source.people == "rich" and source.seed == 4 and source.render_uv_resolution == 64
    rgb, mask = ev.read_views(item, [0, 1])
    labels = rg.RegionLabeller(anny_body).label_images(source, 0, item.phenotype, item.pose,
                                                        ev.view_cameras(item, [0, 1], 64), mask)
    assert float((labels[mask[:, 0] > 0.5] >= 0).float().mean()) > 0.97
    basic = rg.RegionLabeller(anny_body).texel_labels(replace(source, people="basic"), 0, item.phenotype)
    assert not torch.equal(basic, rg.RegionLabeller(anny_body).texel_labels(source, 0, item.phenotype))
