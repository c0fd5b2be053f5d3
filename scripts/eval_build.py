#!/usr/bin/env python
"""How well the photo fit recovers a person's build: the fitted body shape against the true one on
held-out generated subjects (anny bodies with known phenotypes).

    python scripts/eval_build.py --data /path/to/heldout --limit 16 --out outputs/eval_build.json
    python scripts/eval_build.py --data ... --labels gender height weight proportions

For each item the front view's RGB goes through what a user's photo goes through (MediaPipe's
observation of the RGB alone, then :func:`sigman.fit.fit_body`). The fitted rest body
(``body.rest(fit.shape)``, anny's own module) is compared with the item's true rest body:

- ``build_mm``: mean vertex distance after the best scale and translation (one photo shows no size,
  so the comparison is of the shape at the true body's size), in mm;
- ``height_m``: the fitted and the true standing height (for the record: not observable from one
  photo);
- ``ratios``: shoulder width, hip width and leg length over torso length, fitted vs true.

The default body (every phenotype 0.5) is the baseline: a fit that does not read the build scores
the same as it.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from sigman.evaluation import EvalError, item_shape, load_item, photo_rgba, read_views, split_items, write_json  # noqa: E402
from sigman.fit import FitConfig, fit_body  # noqa: E402

# the anny bones (heads) the build measures use
_BONES = {"pelvis": "root", "neck": "neck01", "left_hip": "upperleg01.L", "right_hip": "upperleg01.R",
          "left_ankle": "foot.L", "left_shoulder": "upperarm01.L", "right_shoulder": "upperarm01.R"}


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="held-out folder in the seed layout (anny items with phenotypes)")
    parser.add_argument("--split", default="val")
    parser.add_argument("--limit", type=int, default=16, help="the first N items (0: all)")
    parser.add_argument("--labels", nargs="*", default=None,
                        help="anny phenotypes the fit moves (default: FitConfig's)")
    parser.add_argument("--w-shape-prior", type=float, default=None, help="FitConfig.w_shape_prior (default: FitConfig's)")
    parser.add_argument("--w-silhouette", type=float, default=None, help="FitConfig.w_silhouette (default: FitConfig's)")
    parser.add_argument("--true-mask", action="store_true",
                        help="give the fit the render's own person mask instead of MediaPipe's (what a perfect mask would give)")
    parser.add_argument("--observation-cache", default=None, help="folder keeping each item's MediaPipe observation")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None, help="JSON to write")
    return parser.parse_args(argv)


def aligned_distance(pred: torch.Tensor, true: torch.Tensor) -> float:
    """Mean distance (m) between ``pred [V, 3]`` and ``true [V, 3]`` after the least-squares scale and
    translation of ``pred``."""
    p, t = pred - pred.mean(0), true - true.mean(0)
    scale = (p * t).sum() / p.square().sum()
    return float((scale * p - t).norm(dim=-1).mean())


def proportions(vertices: torch.Tensor, joints: torch.Tensor, names: list[str]) -> dict[str, float]:
    """Scale-free build measures of a rest body ``vertices [V, 3]``, ``joints [J, 3]`` (anny bone heads
    named ``names``): shoulder width, hip width and leg length over the torso length (pelvis to neck)."""
    j = {key: joints[names.index(bone)] for key, bone in _BONES.items()}
    torso = float((j["neck"] - j["pelvis"]).norm())
    # the body's width at the hip joints' height, within the hips' reach (the hands hang beside them)
    hips_x = float((j["left_hip"] - j["right_hip"]).norm())
    band = ((vertices[:, 1] - 0.5 * (j["left_hip"][1] + j["right_hip"][1])).abs() < 0.03) & (vertices[:, 0].abs() < 1.6 * hips_x)
    hips = float(vertices[band, 0].max() - vertices[band, 0].min()) if band.any() else float("nan")
    return {"shoulders": float((j["left_shoulder"] - j["right_shoulder"]).norm()) / torso, "hips": hips / torso,
            "legs": float((j["left_hip"] - j["left_ankle"]).norm()) / torso}


def observe(detector, item, photo_u8: np.ndarray, cache: Optional[str]):
    path = Path(cache) / f"{item.name}_front_observation.pt" if cache else None
    if path is not None and path.is_file():
        return torch.load(path, weights_only=False)
    observation = detector.observe(photo_u8)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(observation, path)
    return observation


def evaluate(args: argparse.Namespace) -> dict:
    from sigman.body import load_body_model
    from sigman.person import PersonDetector

    torch.set_num_threads(args.threads)
    body = load_body_model("anny")
    config = FitConfig()
    if args.labels is not None:
        config.anny_shape_labels = tuple(args.labels)
    if args.w_shape_prior is not None:
        config.w_shape_prior = args.w_shape_prior
    if args.w_silhouette is not None:
        config.w_silhouette = args.w_silhouette
    default_v, default_j = body.rest(None)
    names = list(body.joint_names)
    rows = []
    with PersonDetector() as detector:
        for root in split_items(args.data, args.split, args.limit):
            item = load_item(root)
            shape = item_shape(item, body)
            if shape is None:
                raise EvalError(f"{item.name} has no anny phenotypes: eval_build needs anny items")
            rgb, mask = read_views(item, [item.front], item.calibration.cameras.width)
            photo = (photo_rgba(rgb[0], mask[0], 1.0)[..., :3] * 255).round().astype(np.uint8)
            observation = observe(detector, item, photo, args.observation_cache)
            if args.true_mask:
                observation = dataclasses.replace(observation, mask=mask[0, 0].numpy().astype(np.float32))
            tick = time.perf_counter()
            fit = fit_body(body, observation, config)
            seconds = time.perf_counter() - tick
            true_v, true_j = (t[0].float() for t in body.rest(shape))
            fit_v, fit_j = (t[0].float() for t in body.rest(fit.shape.float()))
            dv, dj = default_v[0].float(), default_j[0].float()
            row = {"item": item.name, "seconds": seconds,
                   "true_phenotypes": [round(float(v), 3) for v in shape[0]],
                   "fit_phenotypes": [round(float(v), 3) for v in fit.shape[0]],
                   "build_mm": {"fit": 1000 * aligned_distance(fit_v, true_v), "default": 1000 * aligned_distance(dv, true_v)},
                   "height_m": {"true": float(true_v[:, 1].max() - true_v[:, 1].min()),
                                "fit": float(fit_v[:, 1].max() - fit_v[:, 1].min())},
                   "ratios": {"true": proportions(true_v, true_j, names), "fit": proportions(fit_v, fit_j, names),
                              "default": proportions(dv, dj, names)}}
            rows.append(row)
            print(f"{item.name}: build {row['build_mm']['fit']:.1f} mm (default body {row['build_mm']['default']:.1f}); "
                  f"height {row['height_m']['fit']:.2f} m for {row['height_m']['true']:.2f}; fit {seconds:.1f} s", flush=True)
    if not rows:
        raise EvalError("no items evaluated")
    summary = {"build_mm_fit": float(np.mean([r["build_mm"]["fit"] for r in rows])),
               "build_mm_default": float(np.mean([r["build_mm"]["default"] for r in rows])),
               "fit_better_than_default": int(sum(r["build_mm"]["fit"] < r["build_mm"]["default"] for r in rows)),
               "items": len(rows)}
    for key in ("shoulders", "hips", "legs"):
        for source in ("fit", "default"):
            summary[f"{key}_ratio_error_{source}"] = float(np.mean(
                [abs(r["ratios"][source][key] - r["ratios"]["true"][key]) for r in rows]))
    print(f"build (scale-aligned rest mesh): fit {summary['build_mm_fit']:.1f} mm, default body "
          f"{summary['build_mm_default']:.1f} mm; the fit is better on {summary['fit_better_than_default']} of {len(rows)}")
    print("ratio errors fit / default: " + ", ".join(
        f"{k} {summary[f'{k}_ratio_error_fit']:.3f} / {summary[f'{k}_ratio_error_default']:.3f}" for k in ("shoulders", "hips", "legs")))
    return {"kind": "build", "data": str(args.data), "labels": list(config.anny_shape_labels),
            "w_shape_prior": config.w_shape_prior, "summary": summary, "items": rows}


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    try:
        result = evaluate(args)
    except EvalError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.out:
        write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
