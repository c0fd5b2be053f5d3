"""Fit cached pose cases (scripts/dev/pose_cases.py) and break the error down: size (true vs fitted
body height), lean (mean depth error of the joints), per-joint errors.

    python scripts/dev/pose_fit_cases.py outputs/pose_cases_s0.pkl --source mediapipe [--set w_world=0.2 ...]
"""

from __future__ import annotations

import argparse
import ast
import json
import pickle
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from eval_pose import aligned_errors, angle_error_deg, body_height_m, camera_frame, joint_selection  # noqa: E402
from sigman.body import load_body_model  # noqa: E402
from sigman.fit import CAMERA_ROTATION, FitConfig, fit_body  # noqa: E402
from sigman.pose import SMPLX_JOINT_NAMES  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("cases", type=Path)
    p.add_argument("--source", default="mediapipe")
    p.add_argument("--view", default="front")
    p.add_argument("--only", nargs="*", default=None)
    p.add_argument("--set", nargs="*", default=[], help="FitConfig overrides name=value")
    p.add_argument("--joints", action="store_true", help="print per-joint errors")
    p.add_argument("--true-shape", action="store_true", help="fix the body shape to the true one (upper bound)")
    p.add_argument("--save", type=Path, default=None, help="keep the fits (pickle) for pictures")
    args = p.parse_args()
    overrides = {k: ast.literal_eval(v) for k, v in (s.split("=", 1) for s in args.set)}
    config = replace(FitConfig(), **overrides)
    body = load_body_model("anny")
    sel = joint_selection(body)
    cases = [c for c in pickle.load(open(args.cases, "rb")) if c["view"] == args.view
             and (args.only is None or c["name"] in args.only)]
    rows, per_joint, kept, kept_bases = [], [], [], []
    for c in cases:
        obs = c[args.source]
        if obs is None:
            print(c["name"], "not detected")
            continue
        # the cases keep the observation as sigman.person returns it (world landmarks already debiased)
        t0 = time.perf_counter()
        basis = None
        if args.true_shape:
            from sigman.fit import ShapeBasis

            rv, rj = body.rest(c["shape"])
            basis = ShapeBasis(rv[0].float(), rj[0].float(), rv.new_zeros(0, *rv.shape[1:]), rj.new_zeros(0, *rj.shape[1:]),
                               c["shape"][0].float(), torch.zeros(0, dtype=torch.long), 0.0, 1.0)
        fit = fit_body(body, obs, config, shape_basis=basis)
        kept_bases.append(basis)
        sec = time.perf_counter() - t0
        pred = camera_frame(fit.joints[sel], CAMERA_ROTATION)
        gt = c["gt_cam"].float()
        m, s, pa = aligned_errors(pred, gt)
        ht, hf = body_height_m(body, c["shape"]), body_height_m(body, fit.shape)
        dz = float((pred[:, 2] - gt[:, 2]).mean() * 1000)
        per_joint.append((pred - gt).norm(dim=-1).numpy() * 1000)
        rows.append(dict(name=c["name"], mpjpe=m, s=s, pa=pa, angle=angle_error_deg(fit.pose, c["pose"]),
                         h_true=ht, h_fit=hf, dz=dz, reproj=fit.reprojection_px, sec=sec))
        kept.append(dict(name=c["name"], fit=fit))
        r = rows[-1]
        print(f"{r['name']:14s} MPJPE {m:6.1f} S {s:6.1f} PA {pa:6.1f} ang {r['angle']:5.1f}  H true {ht:.3f} fit {hf:.3f}  "
              f"dz {dz:6.1f} mm  reproj {r['reproj']:4.1f}  {sec:.1f} s", flush=True)
    keys = ("mpjpe", "s", "pa", "angle")
    mean = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    herr = float(np.mean([abs(r["h_true"] - r["h_fit"]) for r in rows]))
    print(f"MEAN n={len(rows)} MPJPE {mean['mpjpe']:.1f} S {mean['s']:.1f} PA {mean['pa']:.1f} ang {mean['angle']:.1f}  "
          f"|dH| {herr * 1000:.0f} mm  ({' '.join(args.set)})")
    if args.joints:
        pj = np.mean(per_joint, 0)
        for n, e in sorted(zip(SMPLX_JOINT_NAMES[:22], pj), key=lambda x: -x[1]):
            print(f"  {n:16s} {e:6.1f}")
    if args.save:
        with open(args.save, "wb") as f:
            pickle.dump(kept, f)
    print(json.dumps(mean))
    return 0


if __name__ == "__main__":
    sys.exit(main())
