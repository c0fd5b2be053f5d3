"""Render the walk_cycle at 640 x 640 once (kept), then time video_to_motion's parts on it.

    python scripts/dev/profile_video.py --out outputs/video_profile [--frames 60] [--set chunk=16 ...]
"""

from __future__ import annotations

import argparse
import ast
import pickle
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from eval_pose import Scene, aligned_errors, angle_error_deg, camera_frame, centred, framing_camera, joint_selection  # noqa: E402
from sigman.fit import CAMERA_ROTATION, FitConfig, build_shape_basis  # noqa: E402
from sigman.presets import resolve_pose  # noqa: E402


def render_clip(out: Path, frames: int, size: int):
    import imageio.v2 as iio

    path, gt_path = out / f"walk_{size}.mp4", out / f"walk_{size}_gt.pkl"
    if path.is_file() and gt_path.is_file():
        return path, pickle.load(open(gt_path, "rb"))
    scene = Scene("cpu", 0)
    body = scene.body
    sel = joint_selection(body)
    seq = resolve_pose("walk_cycle")
    subject = scene.subject(1000)
    _, _, rest_j, _ = subject
    first = centred(body, seq.frame(0), rest_j)
    camera = framing_camera(body, first, rest_j, 20.0, size=size, fill=0.75)
    shift = first.transl - seq.frame(0).transl
    gts = []
    out.mkdir(parents=True, exist_ok=True)
    with iio.get_writer(str(path), fps=seq.fps, codec="libx264", quality=8, macro_block_size=16) as writer:
        for i in range(frames):
            pose = seq.frame(i % seq.num_frames)
            pose.transl = pose.transl + shift
            writer.append_data(scene.render(subject, pose, camera))
            _, gt = body.pose_transforms(pose, rest_j)
            gts.append((camera_frame(gt[0][sel], camera.viewmats[0, :3, :3]), pose))
    gt = dict(gts=gts, shape=subject[0].cpu())
    pickle.dump(gt, open(gt_path, "wb"))
    return path, gt


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, default=Path("outputs/video_profile"))
    p.add_argument("--frames", type=int, default=60)
    p.add_argument("--size", type=int, default=640)
    p.add_argument("--reuse-tracking", action="store_true", help="reuse the last run's observations (times the fit only)")
    p.add_argument("--max-people", type=int, default=1)
    p.add_argument("--end-to-end", action="store_true", help="time video_to_motion as one call (decode, track, fit)")
    p.add_argument("--set", nargs="*", default=[], help="VideoMotionConfig overrides name=value")
    p.add_argument("--first-set", nargs="*", default=[], help="FitConfig overrides of the first frame's fit")
    p.add_argument("--fit-set", nargs="*", default=[], help="FitConfig overrides of the per-chunk fit")
    args = p.parse_args()
    torch.set_num_threads(1)
    from sigman.body import load_body_model
    from sigman.person import VideoPersonTracker
    from sigman.video_motion import VideoMotionConfig, motion_from_observations, read_video

    path, gt = render_clip(args.out, args.frames, args.size)
    body = load_body_model("anny")
    cfg = VideoMotionConfig()
    over = {k: ast.literal_eval(v) for k, v in (s.split("=", 1) for s in args.set)}
    fit_over = {k: ast.literal_eval(v) for k, v in (s.split("=", 1) for s in args.fit_set)}
    cfg = replace(cfg, **over)
    if fit_over:
        cfg = replace(cfg, fit=replace(cfg.fit, **fit_over))
    first_over = {k: ast.literal_eval(v) for k, v in (s.split("=", 1) for s in args.first_set)}
    if first_over:
        cfg = replace(cfg, first_fit=replace(cfg.first_fit, **first_over))
    build_shape_basis(body, FitConfig())
    if args.end_to_end:  # what scripts/video_to_motion.py does, timed as one call (wall and CPU)
        from sigman.video_motion import video_to_motion

        w0, c0 = time.perf_counter(), time.process_time()
        motion = video_to_motion(path, None, body, cfg)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        n = motion.num_frames
        print(f"end to end: {n} frames in {wall:.2f} s = {n / wall:.1f} frames/s (CPU {cpu:.2f} s = {1000 * cpu / n:.0f} ms a frame)")
        return 0
    t0 = time.perf_counter()
    frames = read_video(path)
    t1 = time.perf_counter()
    ct1 = time.process_time()
    cached = args.out / f"walk_{args.size}_obs.pkl"
    if args.reuse_tracking and cached.is_file():
        obs = pickle.load(open(cached, "rb"))
    else:
        from sigman.person import PersonConfig

        tracker = VideoPersonTracker(PersonConfig(max_people=args.max_people), fps=frames.fps)
        obs = [tracker.track(f) for f in frames.frames]
        pickle.dump(obs, open(cached, "wb"))
    t2 = time.perf_counter()
    c2 = time.process_time()
    print(f"track: wall {t2 - t1:.2f} s, cpu {c2 - ct1:.2f} s ({1000 * (c2 - ct1) / len(obs):.0f} ms a frame)")
    motion = motion_from_observations(body, obs, frames.fps, cfg)
    t3 = time.perf_counter()
    c3 = time.process_time()
    first_s = next(f for f in motion.fits if f is not None).seconds["total"]
    print(f"fit: wall {t3 - t2:.2f} s, cpu {c3 - c2:.2f} s, first frame {first_s:.2f} s wall")
    n = len(frames.frames)
    print(f"{n} frames {args.size}px: decode {t1 - t0:.2f} s ({n / (t1 - t0):.0f}/s)  track {t2 - t1:.2f} s ({n / (t2 - t1):.1f}/s)  "
          f"fit {t3 - t2:.2f} s ({n / (t3 - t2):.1f}/s)  end to end {n / (t3 - t0):.1f} frames/s")
    sel = joint_selection(body)
    basis = build_shape_basis(body, FitConfig())
    first = next(f for f in motion.fits if f is not None)
    _, rj = basis.rest(first.shape[:, basis.index])
    _, joints = body.pose_transforms(motion.pose, rj.expand(motion.num_frames, -1, -1))
    e, raw, ang = [], [], []
    for i, (g, pose) in enumerate(gt["gts"][:n]):
        e.append(aligned_errors(camera_frame(joints[i][sel], CAMERA_ROTATION), g))
        if motion.fits[i] is not None:
            raw.append(aligned_errors(camera_frame(motion.fits[i].joints[sel], CAMERA_ROTATION), g))
        ang.append(angle_error_deg(motion.pose.frame(i), pose))
    e, raw = np.asarray(e), np.asarray(raw)
    print(f"smoothed MPJPE {e[:, 0].mean():.1f} S {e[:, 1].mean():.1f} PA {e[:, 2].mean():.1f} ang {np.mean(ang):.1f}   "
          f"raw fits MPJPE {raw[:, 0].mean():.1f} S {raw[:, 1].mean():.1f} PA {raw[:, 2].mean():.1f}")
    print("per-frame MPJPE:", " ".join(f"{x:.0f}" for x in e[:, 0]))
    v_t, _ = body.rest(gt["shape"])
    v_f, _ = body.rest(first.shape)
    print(f"height true {float(v_t[0, :, 1].max() - v_t[0, :, 1].min()):.3f} fit {float(v_f[0, :, 1].max() - v_f[0, :, 1].min()):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
