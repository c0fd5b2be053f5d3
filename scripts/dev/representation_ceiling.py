"""What the demo's Gaussian layout can show at best, without any network: for each held-out item, one
Gaussian per UV texel on the item's own body (no offsets, the template's frames, opaque), with each
Gaussian's colour and size (one factor on its three scales, starting from ``--scale`` x the point
spacing) fitted by Adam to half of the item's calibrated views and scored on the other half
(foreground PSNR / SSIM, as ``scripts/eval_vae.py``). Also scores the colours sampled straight from
the item's partial UV texture (what the VAE gets as input).

    python scripts/dev/representation_ceiling.py --data data/heldout --limit 3 --steps 60

It tells how far the VAE's reconstruction (``scripts/eval_vae.py``) is from what its geometry allows.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils.data import default_collate  # noqa: E402

from sigman.evaluation import (MetricTable, format_metrics, image_metrics, input_views, load_body, load_item,  # noqa: E402
                               load_vae, select_views, split_items, vae_sample)
from sigman.gaussians import Gaussians, gaussians_from_attributes, repose  # noqa: E402
from sigman.models.vae import uv_to_grid  # noqa: E402
from sigman.render import Camera, render  # noqa: E402
from sigman.uv import build_uv_template  # noqa: E402
from train.vae_step import GaussianDecoderStep, batch_pose  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--limit", type=int, default=3)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--scale", type=float, default=0.5, help="Gaussian scale x point spacing")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    _, config, vae = load_vae(None, "cpu")
    body = load_body(config.body_model)
    step = GaussianDecoderStep(body, build_uv_template(body, config.gaussian_uv_resolution), vae.config, args.size)
    template = step.template
    tables = {"texture": MetricTable(), "fitted": MetricTable()}
    for root in split_items(args.data, "val", args.limit):
        tick = time.perf_counter()
        item = load_item(root)
        inputs = input_views(item, vae.config.num_views)
        targets = select_views("all", item.num_views, exclude=inputs)
        batch = default_collate([vae_sample(item, inputs, targets, args.size, vae.config.uv_size)])
        with torch.no_grad():
            rest_v, rest_j = step.shapes.get(batch["phenotype"])
            points = template.positions_for(rest_v)  # [1, N, 3]
            transforms, _ = body.pose_transforms(batch_pose(batch["pose"]), rest_j)
            grid = uv_to_grid(template.texel_uv)[None, None]  # [1, 1, N, 2]
            texture_rgb = F.grid_sample(batch["uv_texture"][:, :3], grid, align_corners=False)[:, :, 0].transpose(1, 2)
        n = points.shape[1]
        scale = (template.footprints[None, :, None] * args.scale).expand(1, n, 3)
        quats, opacity = step.template_quats.expand(1, n, 4), torch.ones(1, n)
        vm, ks = batch["target_viewmats"][0], batch["target_Ks"][0]
        truth, mask = batch["target_rgb"][0], batch["target_mask"][0]
        on_white = truth * mask + (1 - mask)
        fit_ids, test_ids = list(range(0, len(targets), 2)), list(range(1, len(targets), 2))

        log_size = torch.zeros(1, n, 1, requires_grad=True)

        def draw(colors: torch.Tensor, ids: list[int], sized: bool = True) -> torch.Tensor:
            scales = scale * log_size.exp() if sized else scale
            canonical = gaussians_from_attributes(points, torch.zeros_like(points), scales, quats, opacity, colors,
                                                  skin_weights=template.skin_weights)
            posed = repose(canonical, transforms)
            g = Gaussians(posed.means[0], posed.quats[0], posed.scales[0], posed.opacities[0], posed.colors[0])
            return render(g, Camera(vm[ids], ks[ids], args.size, args.size), background=(1.0, 1.0, 1.0)).rgb.permute(0, 3, 1, 2)

        logits = torch.logit(texture_rgb.clamp(0.02, 0.98)).requires_grad_(True)
        optimizer = torch.optim.Adam([logits, log_size], lr=0.05)
        for i in range(args.steps):
            ids = [fit_ids[(4 * i + k) % len(fit_ids)] for k in range(4)]
            loss = (draw(logits.sigmoid(), ids) - on_white[ids]).abs().mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        names = [item.calibration.names[targets[v]] for v in test_ids]
        rows = {}
        with torch.no_grad():
            for key, colors, sized in (("texture", texture_rgb, False), ("fitted", logits.sigmoid(), True)):
                pred = draw(colors, test_ids, sized).clamp(0, 1)
                rows[key] = tables[key].add(str(root), names, image_metrics(pred, truth[test_ids], mask[test_ids], None))
        print(f"{item.name}: texture {format_metrics(rows['texture'])} | fitted {format_metrics(rows['fitted'])} "
              f"({time.perf_counter() - tick:.0f} s)", flush=True)
    for key, table in tables.items():
        print(f"{key}: {format_metrics(table.summary())} over {len(table.items)} items, views not fitted")


if __name__ == "__main__":
    main()
