"""Raw model output against the photo-refined avatar on real photos (no ground truth): person mask and
landmarks (:mod:`sigman.person`), body fit (:mod:`sigman.fit`), the pipeline on the fitted pose and
shape, then :func:`sigman.refine.refine_avatar`. One row per photo: photo | raw | refined, from the
fitted camera, then raw and refined from behind.

    python scripts/refine_examples.py assets/examples/*.png --out assets/readme/refine_examples.png
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from sigman.evaluation import comparison_grid  # noqa: E402
from sigman.pipeline import SigmanPipeline  # noqa: E402
from sigman.preprocess import ImageInputError, load_image  # noqa: E402
from sigman.girth import thickness_change  # noqa: E402
from sigman.refine import RefineConfig, posed_frame, refine_avatar, refine_config_overrides, render_input_view  # noqa: E402
from sigman.render import Camera, fit_orbit_to_points, write_image  # noqa: E402
from sigman.weights import WeightsError  # noqa: E402


def behind(camera: Camera, points: torch.Tensor) -> Camera:
    """A camera opposite ``camera`` (half way round the vertical axis) that frames all of ``points [N, 3]``
    (the whole posed avatar, also where the photo shows only part of the person), at ``camera``'s size."""
    centre = 0.5 * (points.min(0).values + points.max(0).values)
    rel = camera.positions[0].to(points) - centre
    azimuth = math.degrees(math.atan2(float(rel[0]), float(rel[2]))) + 180.0
    return fit_orbit_to_points(points.float(), n_views=1, width=camera.width, height=camera.height, fill=0.92,
                               start_azimuth_deg=azimuth).to(camera.viewmats.device)


def photo_arrays(path: str) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """RGB float ``[H, W, 3]`` (composited on white when it has alpha) and the alpha (or ``None``)."""
    rgb, alpha = load_image(path)
    if alpha is not None:
        return rgb * alpha[..., None] + (1 - alpha[..., None]), alpha
    return rgb, None


def run(paths: list[str], out: str, steps: Optional[int], threads: int, seed: int, hair: bool = True,
        overrides: Optional[dict] = None) -> Path:
    from sigman.fit import fit_body
    from sigman.person import observe_person

    if threads:
        torch.set_num_threads(threads)
    pipe = SigmanPipeline.from_pretrained()
    rows = []
    for path in paths:
        rgb, _ = photo_arrays(path)
        observation = observe_person(path)
        mask = observation.mask  # what a real photo gives (the examples' alpha is not used)
        fit = fit_body(pipe.body, observation)
        output = pipe(path, fit.pose, shape=fit.shape.to(pipe.device), seed=seed, num_views=0)
        bar = tqdm(total=100, desc=Path(path).name, leave=False)
        config = RefineConfig(**{"steps": steps, **(overrides or {})})
        config = dataclasses.replace(config, projection=dataclasses.replace(config.projection, hair=hair))
        tick = time.perf_counter()
        result = refine_avatar(output.canonical, pipe.body, pipe.template, output.rest_joints, fit.shape, fit.pose,
                               fit.camera, rgb, mask, config,
                               progress=lambda f, stage: bar.update(round(100 * f) - bar.n),
                               landmarks=observation.landmarks, landmark_visibility=observation.visibility)
        bar.close()
        build = ""
        if result.girth is not None:
            mean, low, high = thickness_change(result.girth, output.canonical.skin_weights)
            build = f", thickness change {100 * mean:+.1f} % (5-95 %: {100 * low:+.1f} to {100 * high:+.1f} %)"
        steps_text = f"{int(result.timings['refine_steps_run'])} of {result.config.steps} steps"
        if result.hair is not None:
            rgb8 = [round(255 * float(v)) for v in result.hair.color]
            build += f", hair colour {rgb8} (confidence {float(result.hair.confidence):.2f})"
        print(f"{path}: refinement {time.perf_counter() - tick:.1f} s ({steps_text}), final loss {result.losses[-1]['total']:.4f}{build}"
              if result.losses else f"{path}: projection only")
        bg = result.background
        raw_front = render_input_view(output.canonical, pipe.body, output.rest_joints, fit.pose, fit.camera, bg)
        ref_front = render_input_view(result.canonical, pipe.body, output.rest_joints, result.pose, result.camera, bg)
        posed = posed_frame(result.canonical, pipe.body, output.rest_joints, result.pose.to(pipe.device))
        back = behind(result.camera, posed.means.to(result.camera.viewmats))
        raw_back = render_input_view(output.canonical, pipe.body, output.rest_joints, fit.pose, back, bg)
        ref_back = render_input_view(result.canonical, pipe.body, output.rest_joints, result.pose, back, bg)
        to_t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).float().permute(2, 0, 1) / (255.0 if a.dtype == np.uint8 else 1.0)
        rows.append((to_t(rgb), torch.stack([to_t(raw_front), to_t(ref_front)]), torch.stack([to_t(raw_back), to_t(ref_back)])))
    labels = ["photo", "raw", "refined", "raw back", "refined back"]
    return write_image(out, comparison_grid(rows, 256, labels))


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+")
    parser.add_argument("--out", default="outputs/refine_examples.png")
    parser.add_argument("--refine-steps", type=int, default=None)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-hair", action="store_true",
                        help="leave the back of the head to the colour matching alone (PhotoProjectionConfig.hair=False)")
    parser.add_argument("--refine-set", nargs="*", default=[], metavar="NAME=VALUE",
                        help="RefineConfig fields to override (projection.NAME for PhotoProjectionConfig's), "
                             "e.g. projection.garment_palette_distance=15")
    args = parser.parse_args(argv)
    try:
        overrides = refine_config_overrides(args.refine_set)
        path = run(args.images, args.out, args.refine_steps, args.threads, args.seed, hair=not args.no_hair,
                   overrides=overrides)
    except (ImageInputError, WeightsError, OSError, ImportError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"comparison picture: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
