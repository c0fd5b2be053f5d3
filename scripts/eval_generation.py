"""Photo -> 3D novel-view quality on held-out items: PSNR / SSIM of the generated avatar's renders at the
item's other calibrated views, over the full image and inside the true foreground mask (LPIPS too when
the ``lpips`` package and its weights are on the machine; never downloaded).

    python scripts/eval_generation.py --data data/synth --weights assets/weights/demo --limit 32 \
        --out outputs/eval_generation.json --save-grid assets/readme/comparison.png

For each item: one view's photo (``--input-view``, default the view facing the body's front; its RGB
composited on the pipeline's background, its mask as alpha) goes through the whole
:class:`~sigman.pipeline.SigmanPipeline` (preprocessing, image encoder, DiT sampling, VAE decoding)
with the item's true body shape and pose; the posed Gaussians are rendered on white at the item's
other calibrated views (``--views``) and compared with the true images. ``--save-grid`` writes a
picture: one row per item (``--grid-items``), columns input photo | true novel views | generated ones.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from sigman.cli import OneLineParser, float_in, int_in, run_command  # noqa: E402
from sigman.data.dataset import LOAD_ERRORS, facing_direction, orbit_views  # noqa: E402
from sigman.evaluation import (  # noqa: E402
    EvalError,
    HeldOutItem,
    MetricTable,
    add_eval_arguments,
    comparison_grid,
    default_device,
    first_frame,
    format_metrics,
    image_metrics,
    item_shape,
    load_body,
    load_item,
    optional_lpips,
    photo_rgba,
    read_views,
    render_at,
    select_views,
    split_items,
    view_cameras,
    write_json,
)
from sigman.pipeline import SigmanPipeline, load_pipeline_config  # noqa: E402
from sigman.preprocess import ImageInputError  # noqa: E402
from sigman.render import write_image  # noqa: E402
from sigman.sampling import SAMPLERS  # noqa: E402
from sigman.settings import MAX_GUIDANCE, MAX_SEED, MAX_STEPS  # noqa: E402

GridRow = tuple[Tensor, Tensor, Tensor]  # photo [3, h, w], truth [K, 3, S, S], generated [K, 3, S, S]


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_eval_arguments(parser, out_default="outputs/eval_generation.json")
    parser.add_argument("--input-view", default="front", help="the photo's view: 'front' or a view index")
    parser.add_argument("--steps", type=int_in(1, MAX_STEPS), default=None,
                        help=f"sampling steps, 1..{MAX_STEPS} (default: the pipeline's)")
    parser.add_argument("--guidance", type=float_in(0.0, MAX_GUIDANCE), default=None,
                        help=f"classifier-free guidance, 0..{MAX_GUIDANCE:g} (default: the pipeline's)")
    parser.add_argument("--sampler", default=None, choices=list(SAMPLERS))
    parser.add_argument("--seed", type=int_in(0, MAX_SEED), default=0, help="sampling noise seed (the same for every item)")
    parser.add_argument("--save-grid", default=None, help="write a comparison picture (PNG) here")
    parser.add_argument("--grid-items", type=int_in(1, 64), default=4, help="rows of the comparison picture, 1..64")
    parser.add_argument("--grid-views", type=int_in(1, 32), default=3,
                        help="novel views per row of the comparison picture, 1..32")
    return parser.parse_args(argv)


def photo_view(item: HeldOutItem, spec: str) -> int:
    """The view whose photo is the input: ``"front"`` or an index."""
    if spec == "front":
        return item.front
    try:
        view = int(spec)
    except ValueError:
        raise EvalError(f"--input-view must be 'front' or a view index, got {spec!r}") from None
    if not 0 <= view < item.num_views:
        raise EvalError(f"--input-view {view} out of range: the item has {item.num_views} views")
    return view


def grid_views(item: HeldOutItem, targets: list[int], count: int) -> list[int]:
    """Up to ``count`` of ``targets`` for the picture: the ones nearest to directions spread evenly
    around the body after its front (e.g. left, back, right), then the rest in order."""
    spread = orbit_views(item.calibration.cameras.viewmats, facing_direction(item.pose), count + 1)[1:]
    chosen = [v for v in spread if v in targets]
    chosen += [v for v in targets if v not in chosen]
    return chosen[:count]


@torch.no_grad()
def generate_item(pipe: SigmanPipeline, item: HeldOutItem, args: argparse.Namespace, size: int):
    """Generate one item's avatar from its photo and render it at its target views. Returns the target
    view ids, renders ``[V', 3, S, S]``, true images and masks (on the pipeline's device), and the
    preprocessed photo ``[3, s, s]``."""
    source = photo_view(item, args.input_view)
    targets = select_views(args.views, item.num_views, exclude=[source])
    rgb, mask = read_views(item, [source])
    photo = photo_rgba(rgb[0], mask[0], pipe.config.background)
    shape = item_shape(item, pipe.body)
    out = pipe(photo, item.pose, steps=args.steps, guidance=args.guidance, sampler=args.sampler, seed=args.seed,
               shape=None if shape is None else shape.to(pipe.device), num_views=0)
    pred, _ = render_at(first_frame(out.posed), view_cameras(item, targets, size))
    gt, gt_mask = read_views(item, targets, size)
    return targets, pred, gt.to(pred.device), gt_mask.to(pred.device), out.input_image[0]


def save_grid(path: str, rows: list[GridRow], size: int) -> Path:
    """The comparison picture of ``rows`` (cut to the fewest novel views any row has)."""
    k = min(t.shape[0] for _, t, _ in rows)
    rows = [(p, t[:k], g[:k]) for p, t, g in rows]
    labels = ["input"] + ["truth"] * k + ["generated"] * k
    return write_image(path, comparison_grid(rows, size, labels))


def evaluate(args: argparse.Namespace) -> tuple[dict, list[GridRow]]:
    device = args.device or default_device()
    start = time.perf_counter()
    items = split_items(args.data, args.split, args.limit)
    folder, config = load_pipeline_config(args.weights)
    body = load_body(config.body_model, args.shape_bank) if args.shape_bank else None
    pipe = SigmanPipeline.from_pretrained(folder, device=device, body=body)
    size = args.size or pipe.vae.config.render_size
    lpips_model, lpips_status = optional_lpips(pipe.device)
    if lpips_model is None:
        print(f"LPIPS skipped: {lpips_status}")
    table, skipped, grid_rows = MetricTable(), [], []
    for i, root in enumerate(items, 1):
        tick = time.perf_counter()
        try:
            item = load_item(root)
            targets, pred, gt, mask, photo = generate_item(pipe, item, args, size)
        except EvalError:
            raise
        except (*LOAD_ERRORS, ImageInputError) as err:
            skipped.append({"item": str(root), "error": f"{err.__class__.__name__}: {err}"})
            print(f"[{i}/{len(items)}] {Path(root).name}: skipped ({err.__class__.__name__}: {err})")
            continue
        names = [item.calibration.names[v] for v in targets]
        seconds = time.perf_counter() - tick
        row = table.add(str(root), names, image_metrics(pred, gt, mask, lpips_model),
                        input_view=item.calibration.names[photo_view(item, args.input_view)], seconds=seconds)
        print(f"[{i}/{len(items)}] {item.name}: {format_metrics(row)} ({len(names)} views, {seconds:.1f} s)")
        if args.save_grid and len(grid_rows) < args.grid_items:
            pick = [targets.index(v) for v in grid_views(item, targets, args.grid_views)]
            grid_rows.append((photo.float().cpu(), gt[pick].cpu(), pred[pick].cpu()))
    if not table.items:
        raise EvalError(f"none of the {len(items)} items could be evaluated (first problem: {skipped[0]['error']})")
    cfg = pipe.config
    result = {
        "kind": "image_to_3d_novel_views", "data": str(args.data), "split": args.split, "weights": str(folder),
        "device": str(pipe.device), "size": size, "views": args.views, "input_view": args.input_view,
        "steps": args.steps or cfg.steps, "guidance": cfg.guidance if args.guidance is None else args.guidance,
        "sampler": args.sampler or cfg.sampler, "seed": args.seed, "lpips": lpips_status,
        "num_items": len(table.items), "num_images": table.num_images, "skipped": skipped,
        "metrics": table.summary(), "items": table.items, "seconds": time.perf_counter() - start,
    }
    return result, grid_rows


def run(args: argparse.Namespace) -> int:
    try:
        result, grid_rows = evaluate(args)
    except ImportError as err:  # anny body shapes without the anny package
        raise EvalError(f"{err}: the items' body shapes need it, or pass --shape-bank with the bank the data was "
                        "generated from") from None
    grid = save_grid(args.save_grid, grid_rows, result["size"]) if args.save_grid else None
    path = write_json(args.out, {**result, "grid": None if grid is None else str(grid)})
    print(f"image -> 3D, {result['num_items']} items / {result['num_images']} novel views at {result['size']}px "
          f"on {result['device']}: {format_metrics(result['metrics'])} ({result['seconds']:.1f} s) -> {path}")
    if grid is not None:
        print(f"comparison picture: {grid}")
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    """Every user error (bad argument, data, weights, photo, file) is one ``error: ...`` line, exit code 2."""
    return run_command(lambda: parse_args(argv), run, expected=(EvalError,))


if __name__ == "__main__":
    sys.exit(main())
