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

Two more measures (:mod:`sigman.region_eval`):

- garment colour, on synthetic data (a ``synthetic_config.json`` next to ``items/``): each item's
  garment regions are regenerated from the dataset's seed and the item's index, rendered at the
  compared views with its true shape and pose, and the mean CIELAB colour of every region (at least
  ``--region-min-pixels`` pixels) is compared between the true and generated images (CIE76 delta E);
  reported: each item's worst region, the share of items whose every region is within delta E 10 and
  the share of (item, region) pairs within it. Real data is skipped with a note.
- ``--seeds N`` (N >= 2): each item is generated with seeds ``--seed`` .. ``--seed + N - 1`` and the
  mean per-pixel standard deviation over the seeds (RGB in [0, 1], inside the true mask) of the back
  view (facing away from the input view) is reported; ``--seed-grid`` writes those back views, one row
  per item: input photo | true back view | one column per seed. The PSNR / SSIM use ``--seed`` only.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import Tensor  # noqa: E402

from sigman.cli import OneLineParser, float_in, int_in, run_command  # noqa: E402
from sigman.data.dataset import LOAD_ERRORS, facing_direction, orbit_views  # noqa: E402
from sigman.gaussians import Gaussians  # noqa: E402
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
from sigman.region_eval import (  # noqa: E402
    MIN_REGION_PIXELS,
    RegionLabeller,
    SyntheticSource,
    back_view,
    item_index,
    region_delta_e,
    seed_std,
    summarise_region_errors,
)
from sigman.preprocess import ImageInputError  # noqa: E402
from sigman.render import image_grid, write_image  # noqa: E402
from sigman.sampling import GUIDANCE_SCHEDULES, SAMPLERS  # noqa: E402
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
    parser.add_argument("--guidance-schedule", default=None, choices=list(GUIDANCE_SCHEDULES),
                        help="how the guidance changes over the steps (default: the pipeline's)")
    parser.add_argument("--seed", type=int_in(0, MAX_SEED), default=0, help="sampling noise seed (the same for every item)")
    parser.add_argument("--save-grid", default=None, help="write a comparison picture (PNG) here")
    parser.add_argument("--grid-items", type=int_in(1, 64), default=4, help="rows of the comparison picture, 1..64")
    parser.add_argument("--grid-views", type=int_in(1, 32), default=3,
                        help="novel views per row of the comparison picture, 1..32")
    parser.add_argument("--seeds", type=int_in(1, 16), default=1,
                        help="seeds per item for the back view's seed diversity, 1..16 (1: not measured)")
    parser.add_argument("--seed-grid", default=None,
                        help="with --seeds >= 2: write the back views (PNG): input | truth | one column per seed")
    parser.add_argument("--region-min-pixels", type=int_in(1, 10**7), default=MIN_REGION_PIXELS,
                        help=f"pixels a garment region needs to be compared (default {MIN_REGION_PIXELS})")
    parser.add_argument("--threads", type=int_in(0, 256), default=0, help="CPU threads for torch (0: its default)")
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
def run_pipeline(pipe: SigmanPipeline, item: HeldOutItem, args: argparse.Namespace, seed: int):
    """The pipeline's output for an item's input photo with its true shape and pose, and noise ``seed``."""
    rgb, mask = read_views(item, [photo_view(item, args.input_view)])
    photo = photo_rgba(rgb[0], mask[0], pipe.config.background)
    shape = item_shape(item, pipe.body)
    return pipe(photo, item.pose, steps=args.steps, guidance=args.guidance, sampler=args.sampler, seed=seed,
                shape=None if shape is None else shape.to(pipe.device), num_views=0)


@torch.no_grad()
def generate_item(pipe: SigmanPipeline, item: HeldOutItem, args: argparse.Namespace, size: int):
    """Generate one item's avatar from its photo and render it at its target views. Returns the target
    view ids, renders ``[V', 3, S, S]``, true images and masks (on the pipeline's device), the
    preprocessed photo ``[3, s, s]`` and the posed avatar (frame 0)."""
    source = photo_view(item, args.input_view)
    targets = select_views(args.views, item.num_views, exclude=[source])
    out = run_pipeline(pipe, item, args, args.seed)
    avatar = first_frame(out.posed)
    pred, _ = render_at(avatar, view_cameras(item, targets, size))
    gt, gt_mask = read_views(item, targets, size)
    return targets, pred, gt.to(pred.device), gt_mask.to(pred.device), out.input_image[0], avatar


@torch.no_grad()
def back_views_over_seeds(pipe: SigmanPipeline, item: HeldOutItem, args: argparse.Namespace, size: int,
                          first: Gaussians):
    """The back view (facing away from the input view): its id, true image ``[3, S, S]`` and mask
    ``[1, S, S]``, and the renders of the avatars of seeds ``--seed .. --seed + N - 1`` ``[N, 3, S, S]``
    (``first``: the posed avatar of ``--seed``, already made)."""
    back = back_view(item.calibration.cameras.viewmats, photo_view(item, args.input_view))
    cameras = view_cameras(item, [back], size)
    avatars = [first] + [first_frame(run_pipeline(pipe, item, args, args.seed + k).posed) for k in range(1, args.seeds)]
    renders = [render_at(a, cameras)[0][0] for a in avatars]
    gt, gt_mask = read_views(item, [back], size)
    return back, gt[0], gt_mask[0], torch.stack(renders).cpu()


class RegionColour:
    """The garment-colour measure over the run: labels each synthetic item, skips real ones with a note."""

    def __init__(self, pipe: SigmanPipeline, args: argparse.Namespace) -> None:
        self.pipe, self.args = pipe, args
        self.labeller: Optional[RegionLabeller] = None
        self.results: list[dict] = []
        self.notes: list[str] = []

    def measure(self, item: HeldOutItem, targets: list[int], pred: Tensor, gt: Tensor, mask: Tensor, size: int):
        """Per-region delta E of one item (``None``, with a note, when it cannot be labelled)."""
        try:
            source = SyntheticSource.find(item.root)
            if source is None:
                return self._note(f"{item.name}: no synthetic_config.json (real data): garment colour skipped")
            if item.phenotype is None:
                return self._note(f"{item.name}: no anny phenotype: garment colour skipped")
            if self.labeller is None:
                body = self.pipe.body if self.pipe.body.name == "anny" else load_body("anny", self.args.shape_bank)
                self.labeller = RegionLabeller(body)
            labels = self.labeller.label_images(source, item_index(item.root), item.phenotype, item.pose,
                                                view_cameras(item, targets, size), mask)
        except ValueError as err:
            return self._note(f"{item.name}: garment colour skipped ({err})")
        regions = region_delta_e(gt.cpu(), pred.cpu(), labels, self.args.region_min_pixels)
        self.results.append(regions)
        return regions

    def _note(self, text: str) -> None:
        if len(self.notes) < 20:
            self.notes.append(text)
        return None

    def summary(self) -> dict:
        return {**summarise_region_errors(self.results), "min_pixels": self.args.region_min_pixels,
                "metric": "CIE76 delta E of mean CIELAB (D65) per garment region", "notes": self.notes}


def save_seed_grid(path: str, rows: list[list[Tensor]], size: int) -> Path:
    """Rows of ``[3, h, w]`` images (input | true back | seeds) resized to ``size`` and tiled."""
    cells = [F.interpolate(im[None].float(), size=(size, size), mode="bilinear", antialias=True,
                           align_corners=False)[0].clamp(0, 1).permute(1, 2, 0) for row in rows for im in row]
    return write_image(path, image_grid(cells, ncols=len(rows[0]), spacing=4))


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
    if args.guidance_schedule is not None:
        pipe.config.guidance_schedule = args.guidance_schedule
    size = args.size or pipe.vae.config.render_size
    lpips_model, lpips_status = optional_lpips(pipe.device)
    if lpips_model is None:
        print(f"LPIPS skipped: {lpips_status}")
    if args.threads:
        torch.set_num_threads(args.threads)
    regions, seed_rows, back_stds = RegionColour(pipe, args), [], []
    table, skipped, grid_rows = MetricTable(), [], []
    for i, root in enumerate(items, 1):
        tick = time.perf_counter()
        try:
            item = load_item(root)
            targets, pred, gt, mask, photo, avatar = generate_item(pipe, item, args, size)
        except EvalError:
            raise
        except (*LOAD_ERRORS, ImageInputError) as err:
            skipped.append({"item": str(root), "error": f"{err.__class__.__name__}: {err}"})
            print(f"[{i}/{len(items)}] {Path(root).name}: skipped ({err.__class__.__name__}: {err})")
            continue
        names = [item.calibration.names[v] for v in targets]
        extra = {}
        colour = regions.measure(item, targets, pred, gt, mask, size)
        if colour is not None:
            extra["region_delta_e"] = colour
            extra["worst_region_delta_e"] = max((v["delta_e"] for v in colour.values()), default=None)
        if args.seeds > 1:
            back, back_gt, back_mask, backs = back_views_over_seeds(pipe, item, args, size, avatar)
            extra["back_view"] = item.calibration.names[back]
            extra["back_seed_std"] = seed_std(backs, back_mask)
            back_stds.append(extra["back_seed_std"])
            if args.seed_grid and len(seed_rows) < args.grid_items:
                seed_rows.append([photo.float().cpu(), back_gt.cpu()] + list(backs))
        seconds = time.perf_counter() - tick
        row = table.add(str(root), names, image_metrics(pred, gt, mask, lpips_model),
                        input_view=item.calibration.names[photo_view(item, args.input_view)], seconds=seconds,
                        **extra)
        worst = extra.get("worst_region_delta_e")
        more = "" if worst is None else f" worst region dE {worst:.1f}"
        more += f" back seed std {extra['back_seed_std']:.4f}" if "back_seed_std" in extra else ""
        print(f"[{i}/{len(items)}] {item.name}: {format_metrics(row)}{more} ({len(names)} views, {seconds:.1f} s)")
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
        "guidance_schedule": cfg.guidance_schedule,
        "sampler": args.sampler or cfg.sampler, "seed": args.seed, "lpips": lpips_status,
        "num_items": len(table.items), "num_images": table.num_images, "skipped": skipped,
        "metrics": table.summary(), "region_colour": regions.summary(),
        "seed_diversity": None if args.seeds < 2 else {
            "seeds": list(range(args.seed, args.seed + args.seeds)), "view": "back (facing away from the input view)",
            "back_seed_std_mean": sum(back_stds) / len(back_stds) if back_stds else None,
            "statistic": "per-pixel population std over the seeds, mean over RGB and the true mask, RGB in [0, 1]"},
        "items": table.items, "seconds": time.perf_counter() - start,
    }
    if args.seed_grid and seed_rows:
        result["seed_grid"] = str(save_seed_grid(args.seed_grid, seed_rows, size))
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
    colour = result["region_colour"]
    if colour.get("num_items"):
        print(f"garment colour: {colour['items_all_regions_within']:.1%} of {colour['num_items']} items have every "
              f"region within dE {colour['threshold']:g}; {colour['pairs_within']:.1%} of {colour['num_pairs']} "
              f"(item, region) pairs; worst-region dE mean {colour['worst_delta_e_mean']:.1f}")
    else:
        print("garment colour: not measured (" + ("; ".join(colour["notes"][:2]) or "no item") + ")")
    if result["seed_diversity"]:
        print(f"seed diversity: back-view std over {args.seeds} seeds {result['seed_diversity']['back_seed_std_mean']:.4f}")
    if grid is not None:
        print(f"comparison picture: {grid}")
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    """Every user error (bad argument, data, weights, photo, file) is one ``error: ...`` line, exit code 2."""
    return run_command(lambda: parse_args(argv), run, expected=(EvalError,))


if __name__ == "__main__":
    sys.exit(main())
