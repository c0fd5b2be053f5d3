"""Render pose-evaluation cases once and keep what the fit needs (MediaPipe and oracle
observations, the true joints, shape and markers) so the fit can be iterated on without
re-rendering or re-detecting.

    python scripts/dev/pose_cases.py --seed 0 --out outputs/pose_cases_s0.pkl           # presets
    python scripts/dev/pose_cases.py --seed 7 --random 12 --no-presets --out outputs/pose_cases_s7.pkl
"""

from __future__ import annotations

import argparse
import pickle
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from eval_pose import (POPULATIONS, STATIC_PRESETS, Scene, camera_frame, centred, framing_camera,  # noqa: E402
                       joint_selection, random_poses)
from sigman.body.markers import body_markers  # noqa: E402
from sigman.presets import resolve_pose  # noqa: E402
from sigman.synthetic_observation import synthetic_observation  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--random", type=int, default=0)
    p.add_argument("--no-presets", action="store_true")
    p.add_argument("--poses", nargs="*", default=None)
    p.add_argument("--views", nargs="*", default=["front"])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--population", default="adults", choices=POPULATIONS)
    p.add_argument("--model-path", default=None, help="a pose_landmarker .task bundle (default: the shipped 'full')")
    args = p.parse_args()
    torch.set_num_threads(1)
    from sigman.person import PersonConfig, PersonDetector

    scene = Scene("cpu", args.seed, args.population)
    body = scene.body
    sel = joint_selection(body)
    markers = body_markers(body)
    names = [] if args.no_presets else list(args.poses or STATIC_PRESETS)
    poses = [(n, resolve_pose(n).frame(0)) for n in names] + random_poses(args.random, args.seed)
    detector = PersonDetector(PersonConfig(model_path=args.model_path))
    cases = []
    for k, (name, pose) in enumerate(poses):
        subject = scene.subject(k)
        shape, rest_v, rest_j, _ = subject
        pose = centred(body, pose, rest_j)
        transforms, gt = body.pose_transforms(pose, rest_j)
        marks = markers.posed(markers.canonical(rest_v, rest_j), transforms)[0]
        for view in args.views:
            az = {"front": 0.0, "side": 90.0, "back": 180.0}[view]
            camera = framing_camera(body, pose, rest_j, az)
            rot = camera.viewmats[0, :3, :3]
            t0 = time.perf_counter()
            image = scene.render(subject, pose, camera)
            t1 = time.perf_counter()
            obs = detector.detect(image)
            oracle = synthetic_observation(body, pose, camera, rest=(rest_v, rest_j))
            cases.append(dict(name=name, view=view, seed=args.seed, index=k, image=image, mediapipe=obs,
                              oracle=oracle, pose=pose, shape=shape.cpu(), gt_cam=camera_frame(gt[0][sel], rot),
                              markers_cam=(marks @ rot.T + camera.viewmats[0, :3, 3]).cpu(), camera=camera))
            print(f"{name} {view}: render {t1 - t0:.1f} s, detected {obs is not None}", flush=True)
    detector.close()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "wb") as f:
        pickle.dump(cases, f)
    print("->", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
