"""Time the body fit (one photo, and per video frame) on a device.

    python scripts/bench_fit.py --device cuda          # the lead's GPU timing (target: <= 2 s per photo)
    python scripts/bench_fit.py --device cpu --threads 2

Each timing is the median of --repeats runs after one warm-up run, on a synthetic observation of
the 'walking' preset (512 x 512) and, with MediaPipe, on assets/examples/person_00.png.
The video rows fit 64 synthetic frames the way scripts/video_to_motion.py does (chunks of 8,
warm-started, no silhouette) and report frames per second of the fit alone.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402


VIEW_OPS = {"aten::as_strided", "aten::view", "aten::reshape", "aten::_reshape_alias", "aten::select",
            "aten::slice", "aten::expand", "aten::unsqueeze", "aten::squeeze", "aten::t", "aten::transpose",
            "aten::permute", "aten::detach", "aten::alias", "aten::empty", "aten::empty_strided",
            "aten::resolve_conj", "aten::resolve_neg", "aten::to", "aten::lift_fresh", "aten::unbind",
            "aten::split", "aten::chunk", "aten::narrow", "aten::_unsafe_view", "aten::empty_like",
            "aten::result_type", "aten::is_nonzero", "aten::item", "aten::_local_scalar_dense"}


def step_ops(body, observation, config) -> dict:
    """Tensor operations in one step of the fit (energy + gradient), from the profiler: ``all``
    aten calls and ``kernels``, the leaf calls that do arithmetic or copies (no views)."""
    import math

    from torch.profiler import ProfilerActivity, profile

    from sigman import fit as F

    model = F._model(body, config)
    device = body.rest_vertices.device
    t = F._targets([observation], config, device, config.silhouette)
    params = F._Params(torch.zeros(1, 3, device=device), model.neutral[None], model.basis.centre[model.basis.index][None],
                       torch.tensor([[0.0, 0.0, 3.0]], device=device), torch.tensor([math.log(500.0)], device=device))
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        loss, _, _ = F._evaluate(model, params, t, config, config.silhouette, None)
        loss.backward()
    events = [e for e in prof.events() if e.name.startswith("aten::")]
    leaves = [e for e in events if not any(c.name.startswith("aten::") for c in e.cpu_children)]
    return {"all": len(events), "kernels": sum(e.name not in VIEW_OPS for e in leaves)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads on the CPU (default: the fit's 1)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="write the numbers as JSON here")
    parser.add_argument("--sync-debug", action="store_true",
                        help="CUDA: warn on every host synchronisation during one fit (there should be none in a step)")
    args = parser.parse_args()

    from dataclasses import replace

    from sigman.body import load_body_model
    from sigman.fit import FitConfig, fit_body
    from sigman.presets import resolve_pose
    from sigman.synthetic_observation import front_camera, synthetic_observation
    from sigman.video_motion import VideoMotionConfig, motion_from_observations

    body = load_body_model("anny").to(args.device)
    cpu_body = load_body_model("anny")
    obs = synthetic_observation(cpu_body, resolve_pose("walking").frame(0), front_camera(3.0, azimuth_deg=20))
    config = FitConfig(num_threads=args.threads) if args.threads else FitConfig()
    results = {"device": args.device, "torch": torch.__version__,
               "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None}

    def timed(fn):
        fn()
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        runs = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            fn()
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            runs.append(time.perf_counter() - start)
        return statistics.median(runs)

    for name, sil in (("ops per step (silhouette)", True), ("ops per step (landmarks only)", False)):
        results[name] = step_ops(body, obs, replace(config, silhouette=sil))
        print(f"{name:30s} {results[name]['kernels']} compute ops ({results[name]['all']} aten calls)", flush=True)
    if args.sync_debug and args.device.startswith("cuda"):
        import warnings

        torch.cuda.set_sync_debug_mode("warn")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fit_body(body, obs, config)
        torch.cuda.set_sync_debug_mode("default")
        results["host syncs in one fit"] = len(caught)
        print(f"host syncs in one fit: {len(caught)}", flush=True)
    rows = [("photo (silhouette)", config), ("photo (landmarks only)", replace(config, silhouette=False))]
    if args.device.startswith("cuda"):  # the same without replaying the steps from a CUDA graph
        rows.append(("photo (silhouette, eager)", replace(config, cuda_graphs=False)))
    for name, cfg in rows:
        results[name] = timed(lambda: fit_body(body, obs, cfg))
        print(f"{name:30s} {results[name]:.3f} s", flush=True)
    try:
        import numpy as np

        from sigman.person import observe_person
        from sigman.preprocess import load_image

        rgb, _ = load_image(Path(__file__).resolve().parent.parent / "assets/examples/person_00.png")
        real = observe_person((np.clip(rgb * 255 + 0.5, 0, 255)).astype(np.uint8) if rgb.dtype != np.uint8 else rgb)
        results["person_00.png"] = timed(lambda: fit_body(body, real, config))
        print(f"{'person_00.png (silhouette)':26s} {results['person_00.png']:.3f} s", flush=True)
    except Exception as err:  # noqa: BLE001 - MediaPipe is optional here
        print(f"person_00.png skipped: {str(err).splitlines()[0]}")
    seq = resolve_pose("walk_cycle")
    frames = [synthetic_observation(cpu_body, seq.frame(i % seq.num_frames), front_camera(3.0, azimuth_deg=20))
              for i in range(64)]
    vcfg = VideoMotionConfig()
    vcfg = replace(vcfg, fit=replace(vcfg.fit, num_threads=config.num_threads),
                   first_fit=replace(vcfg.first_fit, num_threads=config.num_threads))
    seconds = timed(lambda: motion_from_observations(body, frames, 30.0, vcfg))
    results["video fit frames/s"] = 64 / seconds
    print(f"{'video fit (64 frames)':26s} {seconds:.3f} s = {64 / seconds:.1f} frames/s", flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
