"""Make the example photos under ``assets/examples/``: synthetic people (sigman's own generator)
seen from the front, as RGBA PNGs (transparent background).

    python scripts/make_examples.py [--count 4] [--size 512] [--out assets/examples]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from sigman.data.synthetic import SyntheticConfig, SyntheticGenerator  # noqa: E402
from sigman.paths import assets_dir  # noqa: E402
from sigman.render import write_image  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=4)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=assets_dir() / "examples")
    args = parser.parse_args()
    config = SyntheticConfig(views=1, image_size=args.size, elevations_deg=(0.0,), max_yaw_deg=0.0,
                             pose_noise=0.08, adult_fraction=1.0, uv_resolution=64, render_uv_resolution=256)
    generator = SyntheticGenerator(config)
    args.out.mkdir(parents=True, exist_ok=True)
    for item in generator.make_batch(list(range(args.count)), seed=args.seed):
        rgba = np.concatenate([item.images[0], item.masks[0][..., None]], axis=-1)
        path = args.out / f"person_{item.index:02d}.png"
        write_image(path, rgba)
        print(path)


if __name__ == "__main__":
    main()
