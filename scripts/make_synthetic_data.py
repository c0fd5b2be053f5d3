"""Generate a synthetic dataset in the seed layout (procedurally dressed anny bodies).

    python scripts/make_synthetic_data.py --out data/synth --count 2000 --views 24 --size 512 \
        --uv-res 256 --seed 0 --val-fraction 0.1 --device cuda

Writes ``OUT/items/000000 ...``, ``OUT/train.npy``, ``OUT/val.npy`` and ``OUT/synthetic_config.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from sigman.cli import OneLineParser, float_in, int_in, run_main  # noqa: E402
from sigman.data.synthetic import SyntheticConfig, SyntheticGenerator  # noqa: E402
from sigman.settings import check_device  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = OneLineParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--count", type=int_in(1, 10**7), default=100, help="number of items")
    p.add_argument("--views", type=int_in(1, 512), default=24, help="calibrated views per item, 1..512")
    p.add_argument("--size", type=int_in(16, 4096), default=512, help="render size in pixels (square), 16..4096")
    p.add_argument("--uv-res", type=int_in(16, 2048), default=256,
                   help="resolution of the saved partial UV texture, 16..2048")
    p.add_argument("--render-uv-res", type=int_in(16, 2048), default=None,
                   help="template resolution of the rendered Gaussians (default: max(--uv-res, 256))")
    p.add_argument("--elevations", type=float, nargs="+", default=[-30.0, 0.0, 45.0], help="camera rings, degrees")
    p.add_argument("--radius", type=float_in(0.5, 100.0), default=2.5,
                   help="camera distance to the body centre, metres (0.5..100)")
    p.add_argument("--seed", type=int_in(0, 2**31 - 1), default=0)
    p.add_argument("--val-fraction", type=float_in(0.0, 1.0), default=0.1,
                   help="share of the items held out, 0..1 (1: all)")
    p.add_argument("--batch-size", type=int_in(1, 4096), default=16, help="items processed together")
    p.add_argument("--writer-threads", type=int_in(1, 256), default=max(1, min(16, (os.cpu_count() or 2) - 1)),
                   help="image encoding threads")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--shape-bank", type=str, default=None,
                   help="a ShapeBank .npz (sigman.body.shape_bank): body shapes without the anny package")
    p.add_argument("--people", choices=["basic", "rich", "mixed"], default="basic",
                   help="appearance sampler: 'basic' (the original look), 'rich' (layered garments, dresses, "
                        "prints and text, hair styles, shoes, skin tones, baked light) or 'mixed' (each item "
                        "basic or rich, by its seed)")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    check_device(args.device)
    config = SyntheticConfig(
        views=args.views, image_size=args.size, uv_resolution=args.uv_res,
        render_uv_resolution=args.render_uv_res or max(args.uv_res, 256), elevations_deg=tuple(args.elevations),
        radius=args.radius, batch_size=args.batch_size, writer_threads=args.writer_threads,
        shape_bank=args.shape_bank, people=args.people,
    )
    try:  # anny loads warp, which announces itself on stdout; keep the progress bar clean
        import warp

        warp.config.log_level = warp.LOG_WARNING
    except ImportError:
        pass
    generator = SyntheticGenerator(config, device=args.device)
    with tqdm(total=args.count, unit="item", desc="synthetic") as bar:
        summary = generator.generate(args.out, args.count, seed=args.seed, val_fraction=args.val_fraction,
                                     progress=bar.update)
    print(f"{summary.count} items in {summary.seconds:.1f} s: {summary.items_per_second:.2f} items/s overall, "
          f"{summary.steady_items_per_second:.2f} items/s after the first batch ({summary.first_batch_seconds:.1f} s) "
          f"on {args.device}; train index {summary.train_index}, val index {summary.val_index}")


if __name__ == "__main__":
    sys.exit(run_main(main))
