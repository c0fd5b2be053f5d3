"""Time the photo refinement (sigman.refine through SigmanPipeline.refine) on a device, at its
default settings for that device, on a rendered photo with a known camera and pose (the demo
configuration; random weights do not change the time). Median of --repeats after one warm-up.

    python scripts/dev/refine_timing.py --device cuda      # target: <= 3 s on the GPU machine
    python scripts/dev/refine_timing.py --device cpu       # target: <= 60 s on 2 CPU cores
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from sigman.gaussians import repose, surface_gaussians  # noqa: E402
from sigman.pipeline import PipelineConfig, SigmanPipeline  # noqa: E402
from sigman.pose import SMPLXPose  # noqa: E402
from sigman.presets import resolve_pose  # noqa: E402
from sigman.refine import RefineConfig, refine_config_overrides  # noqa: E402
from sigman.render import Camera, fit_orbit_to_points, render  # noqa: E402


@dataclass
class KnownFit:
    pose: SMPLXPose
    shape: torch.Tensor
    camera: Camera


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs after the warm-up (at least 1)")
    parser.add_argument("--weights", default=None,
                        help="a model folder (e.g. assets/weights/demo): its colours decide the garment pieces of the "
                             "unseen side, whose cost depends on them (default: the demo configuration, random weights)")
    parser.add_argument("--size", type=int, default=512, help="the photo's side in pixels")
    parser.add_argument("--refine-set", nargs="*", default=[], metavar="NAME=VALUE",
                        help="RefineConfig fields to override, e.g. steps=80 align_steps=40")
    args = parser.parse_args()
    try:
        config = RefineConfig(**refine_config_overrides(args.refine_set))
    except ValueError as error:
        parser.error(f"--refine-set {error}")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.weights:
        pipe = SigmanPipeline.from_pretrained(args.weights, device=args.device)
    else:
        pipe = SigmanPipeline.from_config(PipelineConfig(), device=args.device)
    pose = resolve_pose("waving").frame(0)
    # the "photo": the bare body, striped, rendered from a known camera
    g = surface_gaussians(pipe.template).to(args.device)
    stripes = (torch.sin(g.means[:, 1] * 60) > 0).float()[:, None]
    g = g.with_(colors=0.2 + 0.6 * stripes * torch.tensor([0.9, 0.3, 0.2], device=args.device))
    transforms, _ = pipe.body.pose_transforms(pose.to(args.device))
    posed = repose(g, transforms)
    posed = posed.with_(means=posed.means[0], quats=posed.quats[0], scales=posed.scales[0],
                        opacities=posed.opacities[0], colors=posed.colors[0], skin_weights=None)
    camera = fit_orbit_to_points(posed.means, n_views=1, width=args.size, height=args.size).to(args.device)
    shot = render(posed, camera, background=(1.0, 1.0, 1.0))
    photo = shot.rgb[0].clamp(0, 1).cpu().numpy().astype(np.float32)
    mask = shot.alpha[0, ..., 0].cpu().numpy().astype(np.float32)
    rgba = np.concatenate([photo, mask[..., None]], axis=-1)
    out = pipe(rgba, pose, steps=4, num_views=0)
    fit = KnownFit(pose, pipe.body.default_shape().cpu(), camera.to("cpu"))
    times = []
    for i in range(args.repeats + 1):
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        refined = pipe.refine(out, photo, mask, fit, config=config, num_views=0)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
        print(f"run {i}: {times[-1]:.2f} s  stages {({k: round(v, 2) for k, v in refined.refinement.timings.items()})}",
              flush=True)
    print(f"refinement on {args.device} ({torch.cuda.get_device_name() if args.device.startswith('cuda') else 'CPU'}), "
          f"{out.canonical.num_gaussians} Gaussians, {args.size}² photo: median {statistics.median(times[1:]):.2f} s "
          f"(first {times[0]:.2f} s) over {args.repeats} runs; steps {refined.refinement.config.align_steps} align + "
          f"{refined.refinement.config.steps} refine", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
