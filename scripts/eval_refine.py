"""Photo-faithful refinement on held-out items: foreground PSNR / SSIM of the raw model output and of the
refined avatar, at the input view and at the item's other calibrated views, and the refinement's time.

    python scripts/make_synthetic_data.py --out outputs/heldout --count 8 --views 8 --size 256 --uv-res 128 \
        --seed 1000 --val-fraction 1
    python scripts/eval_refine.py --data outputs/heldout --out outputs/eval_refine.json \
        --save-grid assets/readme/refine_comparison.png

For each item: one view's photo (``--input-view``, default the front) goes through the whole pipeline
with the item's true body shape and pose (the raw avatar), then :func:`sigman.refine.refine_avatar`
with the *true* camera, pose and shape in place of a body fit (``--perturb-camera-deg / -cm`` and
``--perturb-pose-deg`` disturb them, as an imperfect fit would). Both avatars are rendered with the
true pose at the true cameras and compared with the true images inside the true masks;
``refined_own_fit`` is the refined avatar at the refinement's own fitted pose and camera, at the input view
only: the picture the user holds against the photo (``input_view.png``); ``raw_own_fit`` the raw avatar at
the fit's pose and camera (what ``--no-refine`` would show there). ``--fit estimated`` replaces the true
camera, pose and shape by the pipeline's own MediaPipe observation and body fit of the photo's RGB (its
mask found by MediaPipe, as for a user's photo); the "true pose" rows then pose an avatar built on the
fitted shape.
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
import roma  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from sigman.evaluation import (  # noqa: E402
    EvalError,
    add_eval_arguments,
    comparison_grid,
    default_device,
    image_metrics,
    item_shape,
    load_body,
    load_item,
    photo_rgba,
    read_views,
    render_at,
    select_views,
    split_items,
    view_cameras,
    write_json,
)
from sigman.data.dataset import facing_direction, orbit_views  # noqa: E402
from sigman.pipeline import SigmanPipeline, load_pipeline_config  # noqa: E402
from sigman.pose import SMPLXPose  # noqa: E402
from sigman.refine import RefineConfig, posed_frame, refine_avatar, refine_config_overrides  # noqa: E402
from sigman.render import Camera, write_image  # noqa: E402
from sigman.weights import WeightsError  # noqa: E402


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_eval_arguments(parser, out_default="outputs/eval_refine.json")
    parser.add_argument("--input-view", default="front", help="the photo's view: 'front' or a view index")
    parser.add_argument("--steps", type=int, default=None, help="DiT sampling steps (default: the pipeline's)")
    parser.add_argument("--sampler", default=None)
    parser.add_argument("--refine-steps", type=int, default=None, help="Adam steps (default: RefineConfig's for the device)")
    parser.add_argument("--render-size", type=int, default=None, help="refinement render long side (default: RefineConfig's)")
    parser.add_argument("--perturb-camera-deg", type=float, default=0.0, help="random camera rotation (degrees, per axis)")
    parser.add_argument("--perturb-camera-cm", type=float, default=0.0, help="random camera translation (cm, per axis)")
    parser.add_argument("--perturb-pose-deg", type=float, default=0.0, help="random body joint rotation (degrees, per axis)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--save-grid", default=None, help="write photo | raw | refined (front and back) here")
    parser.add_argument("--grid-items", type=int, default=4)
    parser.add_argument("--view-stride", type=int, default=0,
                        help="target views every STRIDE views round from the input view (0: --views decides)")
    parser.add_argument("--fit", choices=("true", "estimated"), default="true",
                        help="true: the item's camera, pose and shape (perturbed by --perturb-*); estimated: the "
                             "pipeline's own MediaPipe observation and body fit of the photo, as for a user's photo")
    parser.add_argument("--refine-set", nargs="*", default=[], metavar="NAME=VALUE",
                        help="RefineConfig fields to override, e.g. align_steps=120 w_align_pose=0.05")
    parser.add_argument("--only", default=None, help="comma-separated item positions (after --limit) to evaluate, e.g. 0,4,7")
    parser.add_argument("--fit-cache", default=None,
                        help="with --fit estimated: folder keeping each item's observation and fit (photo, mask, BodyFit), "
                             "so that a machine without MediaPipe can refine from fits made elsewhere")
    parser.add_argument("--raw-cache", default=None,
                        help="folder keeping each item's raw avatar (the model's output), reused when the settings match")
    return parser.parse_args(argv)


def refine_overrides(pairs: list[str]) -> dict:
    """``--refine-set`` pairs -> RefineConfig keyword arguments."""
    try:
        return refine_config_overrides(pairs)
    except ValueError as error:
        raise ValueError(f"--refine-set {error}") from None


def perturbed_fit(item, source: int, size: int, args, seed: int) -> tuple[SMPLXPose, Camera]:
    """The item's true pose and input camera, disturbed as ``args`` asks."""
    g = torch.Generator().manual_seed(seed)
    camera = view_cameras(item, [source], size)
    pose = item.pose.frame(0)
    if args.perturb_camera_deg or args.perturb_camera_cm:
        rot = roma.rotvec_to_rotmat(torch.randn(3, generator=g) * math.radians(args.perturb_camera_deg))
        delta = torch.eye(4)
        delta[:3, :3] = rot
        delta[:3, 3] = torch.randn(3, generator=g) * args.perturb_camera_cm / 100
        camera = Camera(delta @ camera.viewmats, camera.Ks, camera.width, camera.height)
    if args.perturb_pose_deg:
        noise = torch.randn(pose.body_pose.shape, generator=g) * math.radians(args.perturb_pose_deg)
        pose = dataclasses.replace(pose, body_pose=pose.body_pose + noise)
    return pose, camera


NAMES = ("raw", "projected", "refined", "raw_own_fit", "refined_own_fit")


def mean_of(values: list) -> float:
    """Mean of the finite values (NaN when there are none, e.g. the own-fit avatar's other views)."""
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def raw_avatar(pipe: SigmanPipeline, item, photo: np.ndarray, shape, args, pose: Optional[SMPLXPose] = None) -> tuple:
    """The model's canonical Gaussians and rest joints for ``item``'s photo (kept in ``--raw-cache``)."""
    key = f"{item.name}_{args.sampler}_{args.steps}_{args.input_view}_{photo.shape[0]}{'_fitted' if args.fit == 'estimated' else ''}.pt"
    path = Path(args.raw_cache) / key if args.raw_cache else None
    if path is not None and path.is_file():
        canonical, rest_joints = torch.load(path, weights_only=False)
        return canonical.to(pipe.device), rest_joints.to(pipe.device)
    out = pipe(photo, item.pose if pose is None else pose, steps=args.steps, sampler=args.sampler, seed=0, shape=shape,
               num_views=0)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save((out.canonical.to("cpu"), out.rest_joints.cpu()), path)
    return out.canonical, out.rest_joints


def estimated_fit(pipe: SigmanPipeline, item, photo: np.ndarray, args):
    """``(BodyFit, photo [H, W, 3], mask [H, W])`` from the pipeline's own observation and fit of the
    photo's RGB (kept in ``--fit-cache``), or the reason there is none."""
    path = Path(args.fit_cache) / f"{item.name}_{args.input_view}_{photo.shape[0]}_fit.pt" if args.fit_cache else None
    if path is not None and path.is_file():
        fit, photo_u8, mask_f16 = torch.load(path, weights_only=False)
        return fit, photo_u8.astype(np.float32) / 255.0, mask_f16.astype(np.float32)
    understood = pipe.understand_photo((photo[..., :3] * 255).round().astype(np.uint8), fit=True)
    if understood.fit is None:
        return "; ".join(understood.notes) or "no fit"
    from sigman.photo_stage import fit_to_device

    fit = fit_to_device(understood.fit, torch.device("cpu"))
    photo_u8 = (understood.photo * 255).round().astype(np.uint8)  # the photo was uint8: exact
    mask_f16 = understood.mask.astype(np.float16)
    if path is not None:  # small: the refinement needs the pose, shape and camera, not the fitted mesh
        path.parent.mkdir(parents=True, exist_ok=True)
        slim = dataclasses.replace(fit, vertices=torch.empty(0), markers_2d=torch.empty(0))
        torch.save((slim, photo_u8, mask_f16), path)
    return fit, photo_u8.astype(np.float32) / 255.0, mask_f16.astype(np.float32)


def back_view(item, source: int, targets: list[int]) -> int:
    """The target view facing the body's back (the one farthest from the front)."""
    order = orbit_views(item.calibration.cameras.viewmats, facing_direction(item.pose), 2)
    return order[1] if order[1] in targets else targets[len(targets) // 2]


def evaluate(args: argparse.Namespace) -> tuple[dict, list]:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device or default_device()
    items = split_items(args.data, args.split, args.limit)
    folder, config = load_pipeline_config(args.weights)
    body = load_body(config.body_model, args.shape_bank) if args.shape_bank else None
    pipe = SigmanPipeline.from_pretrained(folder, device=device, body=body)
    fields = {"steps": args.refine_steps, "render_size": args.render_size}
    fields.update(refine_overrides(args.refine_set))  # --refine-set wins over --refine-steps / --render-size
    refine_config = RefineConfig(**fields)
    if args.only:
        try:
            keep = {int(k) for k in args.only.split(",")}
        except ValueError:
            raise EvalError(f"--only {args.only!r}: expected item positions such as 0,4,7") from None
        items = [root for k, root in enumerate(items) if k in keep]
    rows, grid_rows = [], []
    for i, root in enumerate(items):
        item = load_item(root)
        source = item.front if args.input_view == "front" else int(args.input_view)
        if args.view_stride > 0:
            targets = [(source + k) % item.num_views for k in range(args.view_stride, item.num_views, args.view_stride)]
        else:
            targets = select_views(args.views, item.num_views, exclude=[source])
        size = args.size or item.calibration.cameras.width
        rgb, mask = read_views(item, [source], size)
        photo = photo_rgba(rgb[0], mask[0], pipe.config.background)
        refine_photo, refine_mask = photo[..., :3], photo[..., 3]
        if args.fit == "estimated":  # as for a user's photo: the RGB alone, MediaPipe's mask, the body fit
            estimated = estimated_fit(pipe, item, photo, args)
            if isinstance(estimated, str):
                print(f"[{i + 1}/{len(items)}] {item.name}: skipped ({estimated})", flush=True)
                continue
            fit, refine_photo, refine_mask = estimated
            shape, pose, camera = fit.shape.to(pipe.device), fit.pose, fit.camera
            raw_canonical, rest_joints = raw_avatar(pipe, item, photo, shape, args, pose=pose)
        else:
            shape = item_shape(item, pipe.body)
            shape = None if shape is None else shape.to(pipe.device)
            raw_canonical, rest_joints = raw_avatar(pipe, item, photo, shape, args)
            pose, camera = perturbed_fit(item, source, size, args, seed=i)
        bar = tqdm(total=100, desc=f"[{i + 1}/{len(items)}] {item.name}", leave=False)
        cpu0 = time.process_time()
        result = refine_avatar(raw_canonical, pipe.body, pipe.template, rest_joints, shape, pose, camera,
                               refine_photo, refine_mask, refine_config,
                               progress=lambda f, stage: bar.update(round(100 * f) - bar.n))
        cpu = time.process_time() - cpu0
        bar.close()
        views = [source] + targets
        cams = view_cameras(item, views, size)
        gt, gt_mask = read_views(item, views, size)
        gt, gt_mask = gt.to(pipe.device), gt_mask.to(pipe.device)
        row = {"item": item.name, "input_view": item.calibration.names[source], "seconds": result.timings["total"],
               "cpu_seconds": cpu, "steps": result.config.steps, "render_size": result.config.render_size,
               "final_loss": result.losses[-1] if result.losses else None}
        renders = {}
        true_pose = item.pose.frame(0).to(pipe.device)
        for name, canonical, at_pose, at_cams in (
                ("raw", raw_canonical, true_pose, cams), ("projected", result.projected, true_pose, cams),
                ("refined", result.canonical, true_pose, cams),
                ("raw_own_fit", raw_canonical, pose.frame(0).to(pipe.device), camera),
                ("refined_own_fit", result.canonical, result.pose.to(pipe.device), result.camera)):
            posed = posed_frame(canonical, pipe.body, rest_joints, at_pose)
            pred, _ = render_at(posed, at_cams.to(pipe.device))
            m = image_metrics(pred, gt[:len(at_cams)], gt_mask[:len(at_cams)])
            renders[name] = pred
            nan = float("nan")
            row[name] = {"input_psnr_fg": float(m["psnr_fg"][0]), "input_ssim_fg": float(m["ssim_fg"][0]),
                         "other_psnr_fg": float(m["psnr_fg"][1:].nanmean()) if len(at_cams) > 1 else nan,
                         "other_ssim_fg": float(m["ssim_fg"][1:].nanmean()) if len(at_cams) > 1 else nan}
        rows.append(row)
        print(f"[{i + 1}/{len(items)}] {item.name}: input view PSNR_fg raw {row['raw']['input_psnr_fg']:.2f} -> "
              f"refined {row['refined']['input_psnr_fg']:.2f} dB; other views {row['raw']['other_psnr_fg']:.2f} -> "
              f"{row['refined']['other_psnr_fg']:.2f} dB; input view at the refinement's own pose and camera "
              f"{row['refined_own_fit']['input_psnr_fg']:.2f} dB; refine {result.timings['total']:.1f} s wall, {cpu:.1f} s CPU",
              flush=True)
        if args.save_grid and len(grid_rows) < args.grid_items:
            back = views.index(back_view(item, source, targets))
            truth = torch.stack([gt[0], gt[back]]).cpu()
            front = ("raw_own_fit", "projected", "refined_own_fit") if args.fit == "estimated" else ("raw", "projected", "refined")
            gen = torch.stack([renders[front[0]][0], renders[front[1]][0], renders[front[2]][0],
                               renders["raw"][back], renders["refined"][back]]).cpu()
            grid_rows.append((truth, gen))
    if not rows:
        raise EvalError("no item could be evaluated (see the skipped lines above)")
    summary = {}
    for name in NAMES:
        summary[name] = {k: mean_of([r[name][k] for r in rows]) for k in rows[0][name]}
    result = {"kind": "photo_refinement", "data": str(args.data), "device": str(pipe.device), "items": rows,
              "summary": summary, "refine_config": dataclasses.asdict(refine_config),
              "fit": args.fit, "perturb": {"camera_deg": args.perturb_camera_deg, "camera_cm": args.perturb_camera_cm,
                          "pose_deg": args.perturb_pose_deg},
              "mean_seconds": float(np.mean([r["seconds"] for r in rows])),
              "mean_cpu_seconds": float(np.mean([r["cpu_seconds"] for r in rows])),
              "threads": torch.get_num_threads()}
    return result, grid_rows


def crop_to_person(images: torch.Tensor, margin: float = 0.08) -> torch.Tensor:
    """Crop ``[K, 3, H, W]`` images (white background) to one square around every non-white pixel."""
    ink = (images < 0.98).any(dim=1).any(dim=0)  # [H, W]
    rows, cols = torch.nonzero(ink.any(1))[:, 0], torch.nonzero(ink.any(0))[:, 0]
    if rows.numel() == 0:
        return images
    h, w = ink.shape
    cy, cx = (rows[0] + rows[-1]).item() / 2, (cols[0] + cols[-1]).item() / 2
    half = max(rows[-1] - rows[0], cols[-1] - cols[0]).item() / 2 * (1 + margin) + 2
    y0, x0 = max(0, int(cy - half)), max(0, int(cx - half))
    y1, x1 = min(h, int(cy + half) + 1), min(w, int(cx + half) + 1)
    return images[..., y0:y1, x0:x1]


def save_grid(path: str, rows: list, cell: int = 256) -> Path:
    """photo | raw | projected | refined (input view), then true back | raw back | refined back, one row per item,
    each row cropped to the person."""
    grid_rows = []
    for truth, gen in rows:
        # photo, true back, raw, projected, refined, raw back, refined back
        cells = crop_to_person(torch.cat([truth, gen]))
        grid_rows.append((cells[0], cells[[2, 3, 4]], cells[[1, 5, 6]]))
    labels = ["photo", "raw", "projected", "refined", "true back", "raw back", "refined back"]
    return write_image(path, comparison_grid(grid_rows, cell, labels))


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    try:
        result, grid_rows = evaluate(args)
        if args.save_grid and grid_rows:
            result["grid"] = str(save_grid(args.save_grid, grid_rows))
    except (EvalError, WeightsError, OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    path = write_json(args.out, result)
    s = result["summary"]
    for name in NAMES:
        print(f"{name:15s} input view PSNR_fg {s[name]['input_psnr_fg']:.2f} SSIM_fg {s[name]['input_ssim_fg']:.4f} | "
              f"other views PSNR_fg {s[name]['other_psnr_fg']:.2f} SSIM_fg {s[name]['other_ssim_fg']:.4f}")
    print(f"refinement: {result['mean_seconds']:.1f} s wall, {result['mean_cpu_seconds']:.1f} s CPU per item "
          f"({result['threads']} threads) -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
