"""VAE reconstruction quality on held-out items: PSNR / SSIM (full image and foreground), and LPIPS
when the ``lpips`` package and its weights are on the machine (never downloaded), and on synthetic data the
garment-colour measure of ``scripts/eval_generation.py`` (CIE76 dE of each garment region's mean colour):
what the VAE itself allows the generation to reach.

    python scripts/eval_vae.py --data data/synth --weights assets/weights/demo --split val --limit 64 \
        --out outputs/eval_vae.json

Each item goes through the VAE exactly as in ``train/train_vae.py`` (its ``GaussianDecoderStep``):
the item's front-orbit input views (Plücker rays) and partial UV texture are encoded, the posterior
mean is decoded into Gaussians on the item's own body shape, posed with its pose by linear blend
skinning and rendered on white at the item's held-out calibrated views (``--views``), at the VAE's
render size (``--size``); the renders are compared with the true images. Prints one line per item and
a summary; writes everything (per item and per view too) to ``--out``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from torch.utils.data import default_collate  # noqa: E402

from sigman.cli import OneLineParser, run_command  # noqa: E402
from sigman.data.dataset import LOAD_ERRORS  # noqa: E402
from sigman.evaluation import (  # noqa: E402
    EvalError,
    HeldOutItem,
    MetricTable,
    add_eval_arguments,
    default_device,
    format_metrics,
    image_metrics,
    input_views,
    load_body,
    load_item,
    load_vae,
    optional_lpips,
    select_views,
    split_items,
    vae_sample,
    view_cameras,
    write_json,
)
from sigman.region_eval import (MIN_REGION_PIXELS, RegionLabeller, SyntheticSource, item_index,  # noqa: E402
                                region_delta_e, summarise_region_errors)
from sigman.uv import build_uv_template  # noqa: E402
from train.common import to_device  # noqa: E402
from train.vae_step import GaussianDecoderStep  # noqa: E402


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_eval_arguments(parser, out_default="outputs/eval_vae.json")
    parser.add_argument("--region-min-pixels", type=int, default=MIN_REGION_PIXELS,
                        help=f"pixels a garment region needs to be compared (default {MIN_REGION_PIXELS})")
    return parser.parse_args(argv)


@torch.no_grad()
def reconstruct(step: GaussianDecoderStep, vae, item: HeldOutItem, views: str, size: int,
                device: torch.device) -> tuple[list[str], torch.Tensor, torch.Tensor, torch.Tensor, list[int]]:
    """Posterior-mean reconstruction of one item at its target views: view names, renders
    ``[V', 3, S, S]``, true images ``[V', 3, S, S]``, true masks ``[V', 1, S, S]`` and the view indices."""
    inputs = input_views(item, vae.config.num_views)
    targets = select_views(views, item.num_views, exclude=inputs)
    batch = default_collate([vae_sample(item, inputs, targets, size, vae.config.uv_size)])
    phenotypes = batch["phenotype"]
    batch = to_device(batch, device)
    out = step(vae, batch, phenotypes, sample_posterior=False)
    names = [item.calibration.names[v] for v in targets]
    return names, out["rgb"][0].clamp(0, 1), batch["target_rgb"][0], batch["target_mask"][0], targets


def region_colour(labeller: RegionLabeller, item: HeldOutItem, targets: list[int], pred, gt, mask,
                  size: int, min_pixels: int) -> Optional[dict]:
    """Per-garment-region dE of one synthetic item (``None`` for real data or an item without a phenotype)."""
    source = SyntheticSource.find(item.root)
    if source is None or item.phenotype is None:
        return None
    labels = labeller.label_images(source, item_index(item.root), item.phenotype, item.pose,
                                   view_cameras(item, targets, size), mask.cpu())
    return region_delta_e(gt.cpu(), pred.cpu(), labels, min_pixels)


def evaluate(args: argparse.Namespace) -> dict:
    device = torch.device(args.device or default_device())
    start = time.perf_counter()
    items = split_items(args.data, args.split, args.limit)
    folder, config, vae = load_vae(args.weights, device)
    body = load_body(config.body_model, args.shape_bank).to(device)
    size = args.size or vae.config.render_size
    step = GaussianDecoderStep(body, build_uv_template(body, config.gaussian_uv_resolution), vae.config, size)
    lpips_model, lpips_status = optional_lpips(device)
    labeller = RegionLabeller(body.cpu() if body.name == "anny" else load_body("anny", args.shape_bank)) \
        if SyntheticSource.find(Path(items[0])) is not None else None
    regions: list[dict] = []
    if lpips_model is None:
        print(f"LPIPS skipped: {lpips_status}")
    table, skipped = MetricTable(), []
    for i, root in enumerate(items, 1):
        tick = time.perf_counter()
        try:
            item = load_item(root)
            names, pred, gt, mask, targets = reconstruct(step, vae, item, args.views, size, device)
        except EvalError:
            raise
        except LOAD_ERRORS as err:
            skipped.append({"item": str(root), "error": f"{err.__class__.__name__}: {err}"})
            print(f"[{i}/{len(items)}] {Path(root).name}: skipped ({err.__class__.__name__}: {err})")
            continue
        seconds = time.perf_counter() - tick
        row = table.add(str(root), names, image_metrics(pred, gt, mask, lpips_model), seconds=seconds)
        colour = region_colour(labeller, item, targets, pred, gt, mask, size, args.region_min_pixels) if labeller else None
        if colour:  # None for real data, {} when no region has enough pixels
            regions.append(colour)
            row["region_delta_e"] = colour
        print(f"[{i}/{len(items)}] {item.name}: {format_metrics(row)} ({len(names)} views, {seconds:.1f} s)")
    if not table.items:
        raise EvalError(f"none of the {len(items)} items could be evaluated (first problem: {skipped[0]['error']})")
    return {
        "kind": "vae_reconstruction", "data": str(args.data), "split": args.split,
        "weights": str(folder), "device": str(device), "size": size,
        "views": args.views, "input_views": vae.config.num_views, "lpips": lpips_status,
        "num_items": len(table.items), "num_images": table.num_images, "skipped": skipped,
        "metrics": table.summary(), "items": table.items, "seconds": time.perf_counter() - start,
        "region_colour": ({**summarise_region_errors(regions), "min_pixels": args.region_min_pixels,
                           "metric": "CIE76 delta E of mean CIELAB (D65) per garment region"} if regions else None),
    }


def run(args: argparse.Namespace) -> int:
    result = evaluate(args)
    path = write_json(args.out, result)
    print(f"VAE reconstruction, {result['num_items']} items / {result['num_images']} views at {result['size']}px "
          f"on {result['device']}: {format_metrics(result['metrics'])} ({result['seconds']:.1f} s) -> {path}")
    colour = result["region_colour"]
    if colour:
        print(f"garment colour: {colour['items_all_regions_within']:.1%} of {colour['num_items']} items have every "
              f"region within dE 10, {colour['pairs_within']:.1%} of (item, region) pairs; per region "
              + ", ".join(f"{k} {v:.1f}" for k, v in colour["region_delta_e_mean"].items()))
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    """Every user error (bad argument, data, weights, file) is one ``error: ...`` line, exit code 2."""
    return run_command(lambda: parse_args(argv), run, expected=(EvalError,))


if __name__ == "__main__":
    sys.exit(main())
