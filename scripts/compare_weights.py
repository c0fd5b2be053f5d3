"""Two model folders side by side, raw model output (no photo refinement), the same seed:

- held-out items (``--data``, a seed-layout folder with the truth): input photo | true side | old side |
  new side | true back | old back | new back, at the item's own calibrated views;
- photos (``--photos``, e.g. the project's examples): photo | old front | new front | old back | new
  back, from the fitted camera of the photo (person observation + body fit, as the pipeline does).

    python scripts/compare_weights.py --old old_demo --new assets/weights/demo --data data/heldout \
        --photos assets/examples/*.png --out assets/readme/weights_comparison.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from sigman.evaluation import (comparison_grid, first_frame, item_shape, load_item, photo_rgba, read_views, render_at,  # noqa: E402
                               split_items, view_cameras)
from sigman.pipeline import SigmanPipeline  # noqa: E402
from sigman.region_eval import back_view  # noqa: E402
from sigman.render import write_image  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from refine_examples import behind, photo_arrays  # noqa: E402


def tensor(a: np.ndarray) -> torch.Tensor:
    """An image array ``[H, W, 3]`` (uint8, or float in [0, 1]) as ``[3, H, W]`` float in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(a)).float().permute(2, 0, 1) / (255.0 if a.dtype == np.uint8 else 1.0)


def on_white(rgb: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return rgb * mask + (1 - mask)


@torch.no_grad()
def heldout_rows(pipes: list[SigmanPipeline], data: str, limit: int, size: int,
                 seed: int) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    rows = []
    for root in split_items(data, "val", limit):
        item = load_item(root)
        source = item.front
        back = back_view(item.calibration.cameras.viewmats, source)
        side = (source + item.num_views // 4) % item.num_views if item.num_views >= 4 else back
        rgb, mask = read_views(item, [source, side, back], size)
        photo = photo_rgba(rgb[0], mask[0], 1.0)
        shape = item_shape(item, pipes[0].body)
        renders = []
        for pipe in pipes:
            out = pipe(photo, item.pose, seed=seed, shape=None if shape is None else shape.to(pipe.device), num_views=0)
            renders.append(render_at(first_frame(out.posed), view_cameras(item, [side, back], size))[0].cpu())
        truth = on_white(rgb, mask)
        sides = torch.stack([truth[1], renders[0][0], renders[1][0]])
        backs = torch.stack([truth[2], renders[0][1], renders[1][1]])
        rows.append((truth[0], sides, backs))  # comparison_grid's columns: input | 3 side views | 3 back views
    return rows


def photo_rows(pipes: list[SigmanPipeline], photos: list[str],
               seed: int) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    from sigman.fit import fit_body
    from sigman.person import observe_person
    from sigman.refine import posed_frame, render_input_view

    rows = []
    for path in photos:
        rgb, _ = photo_arrays(path)
        observation = observe_person(path)
        fit = fit_body(pipes[0].body, observation)  # the fit needs gradients; the rest does not
        fronts, backs = [], []
        with torch.no_grad():
            for pipe in pipes:
                out = pipe(path, fit.pose, shape=fit.shape.to(pipe.device), seed=seed, num_views=0)
                posed = posed_frame(out.canonical, pipe.body, out.rest_joints, fit.pose.to(pipe.device))
                centre = 0.5 * (posed.means.min(0).values + posed.means.max(0).values)
                camera_back = behind(fit.camera, centre.to(fit.camera.viewmats))
                for cams, store in ((fit.camera, fronts), (camera_back, backs)):
                    image = render_input_view(out.canonical, pipe.body, out.rest_joints, fit.pose, cams, (1.0, 1.0, 1.0))
                    store.append(image)
        rows.append((tensor(rgb), torch.stack([tensor(f) for f in fronts]), torch.stack([tensor(b) for b in backs])))
    return rows


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--old", required=True, help="model folder (before)")
    p.add_argument("--new", default=None, help="model folder (after; default: the shipped demo weights)")
    p.add_argument("--data", default=None, help="held-out seed-layout folder")
    p.add_argument("--limit", type=int, default=4)
    p.add_argument("--photos", nargs="*", default=[])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", default="outputs/weights_comparison.png")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    pipes = [SigmanPipeline.from_pretrained(args.old), SigmanPipeline.from_pretrained(args.new)]
    out = Path(args.out)
    if args.data:
        rows = heldout_rows(pipes, args.data, args.limit, args.size, args.seed)
        labels = ["input", "true side", "old side", "new side", "true back", "old back", "new back"]
        path = write_image(out.with_name(out.stem + "_heldout" + out.suffix), comparison_grid(rows, args.size, labels))
        print(f"held-out comparison: {path}")
    if args.photos:
        rows = photo_rows(pipes, args.photos, args.seed)
        labels = ["photo", "old front", "new front", "old back", "new back"]
        path = write_image(out.with_name(out.stem + "_photos" + out.suffix), comparison_grid(rows, args.size, labels))
        print(f"photo comparison: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
