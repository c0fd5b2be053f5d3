"""Contact sheet of synthetic people: each subject's front and back, rendered by the synthetic generator
(the project renderer, shading included) with the body turned to face the front camera.

    python scripts/dev/people_sheet.py --people rich --count 16 --seed 0 --out assets/readme/synthetic_people.png

Cells are cropped to the middle of each square render (the body is narrow); subjects run left to right,
``--columns`` per row, each as a front | back pair.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from sigman.data.synthetic import SyntheticConfig, SyntheticGenerator  # noqa: E402
from sigman.render import image_grid, write_image  # noqa: E402


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--people", choices=["basic", "rich", "mixed"], default="rich")
    p.add_argument("--count", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=256, help="render size (square) before cropping")
    p.add_argument("--columns", type=int, default=4, help="subjects per row")
    p.add_argument("--out", type=Path, default=Path("outputs/synthetic_people.png"))
    p.add_argument("--colors", type=int, default=256, help="palette colours of the PNG (0: full colour)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    config = SyntheticConfig(views=2, image_size=args.size, uv_resolution=64, render_uv_resolution=256,
                             elevations_deg=(0.0,), max_yaw_deg=0.0, people=args.people, batch_size=8)
    generator = SyntheticGenerator(config, device=args.device)
    cells = []
    for first in range(0, args.count, config.batch_size):
        batch = generator.make_batch(list(range(first, min(args.count, first + config.batch_size))), args.seed)
        for item in batch:  # view 0 faces the front (+Z), view 1 the back
            lo, hi = args.size // 4, args.size - args.size // 4
            cells += [item.images[0][:, lo:hi], item.images[1][:, lo:hi]]
    grid = image_grid(np.stack(cells), ncols=2 * args.columns, spacing=2)
    if args.colors:  # a palette PNG: a fraction of the size, hardly different on flat-shaded people
        from PIL import Image

        args.out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(grid).quantize(colors=args.colors, method=Image.Quantize.MEDIANCUT,
                                       dither=Image.Dither.NONE).save(args.out, optimize=True)
        print(args.out)
    else:
        print(write_image(args.out, grid))


if __name__ == "__main__":
    main()
